#!/bin/bash
# Guest MIPS on one loop, in one run: Ember's software CPU (--accel interp), QEMU's TCG, and
# Ember on KVM where /dev/kvm is usable. The loop guest (tests/guests/loop.S, a Multiboot
# image) executes 350,000,000 instructions; the time of a trivial guest (modes.S) on the same
# VMM and accelerator is subtracted as start-up. QEMU loads the same Multiboot images with
# -kernel on its pc machine, with isa-debug-exit at port 0xf4 through which both guests exit
# (Ember always gives Multiboot images that port).
# Rounds alternate between the VMMs; each prints its best round, and the software CPU's time
# as a ratio of QEMU's TCG (at most 1.0: Ember as fast or faster).
# Usage: bench/mips.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
INSNS=350000000
OUT=build/bench
mkdir -p "$OUT"
cargo build --release -q -p vmm
make -s --no-print-directory -C tests/guests OUT="$PWD/$OUT/guests"
command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >/dev/null; }
for g in loop modes; do
  printf '{"boot-source": {"kernel_image_path": "%s"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}\n' \
    "$PWD/$OUT/guests/$g.elf" > "$OUT/$g.json"
done

VMMS=(interp qemu)
if [ -r /dev/kvm ]; then VMMS+=(kvm); else echo "kvm: /dev/kvm not usable, skipped"; fi

# Wall seconds of one run of guest $2 (loop or modes) on $1 (interp, kvm or qemu). Both
# VMMs exit with status 1 when the guest writes 0 to port 0xf4.
run() {
  local s status=0
  s=$EPOCHREALTIME
  case $1 in
  qemu)
    timeout 120 qemu-system-x86_64 -M pc -accel tcg -m 64 -nodefaults -no-user-config \
      -display none -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 \
      -kernel "$OUT/guests/$2.elf" </dev/null >/dev/null 2>&1 || status=$? ;;
  *)
    timeout 120 target/release/ember --no-api --config-file "$OUT/$2.json" --accel "$1" \
      </dev/null >/dev/null 2>&1 || status=$? ;;
  esac
  [ "$status" -eq 1 ] || { echo "$1 $2: exit status $status" >&2; exit 1; }
  echo "$EPOCHREALTIME - $s" | bc -l
}

declare -A best
for _ in $(seq "$ROUNDS"); do
  for vmm in "${VMMS[@]}"; do
    for g in loop modes; do
      t=$(run "$vmm" "$g")
      if [ -z "${best[$vmm-$g]:-}" ] || [ "$(echo "$t < ${best[$vmm-$g]}" | bc -l)" = 1 ]; then
        best[$vmm-$g]=$t
      fi
    done
  done
done

declare -A secs
for vmm in "${VMMS[@]}"; do
  loop=${best[$vmm-loop]} base=${best[$vmm-modes]}
  secs[$vmm]=$(echo "$loop - $base" | bc -l)
  printf '%-7s loop %.3f s, start-up %.3f s, %.0f guest MIPS\n' "$vmm" "$loop" "$base" \
    "$(echo "$INSNS / ${secs[$vmm]} / 1000000" | bc -l)"
done
printf 'software CPU / QEMU TCG time on the loop: %.2f (best of %s rounds; load average %s)\n' \
  "$(echo "${secs[interp]} / ${secs[qemu]}" | bc -l)" "$ROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${secs[kvm]:-}" ]; then
  printf 'software CPU runs at %.1f%% of KVM speed on this loop\n' "$(echo "100 * ${secs[kvm]} / ${secs[interp]}" | bc -l)"
fi
