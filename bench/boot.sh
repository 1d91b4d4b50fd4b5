#!/bin/bash
# Boot time of the default guest on Ember's software CPU and under QEMU's TCG, in the same
# run: wall seconds from start to the guest's "EMBER-GUEST-EXIT" line (the kernel boots, the
# initramfs runs `uname -a`). Both get the same kernel, initramfs and boot arguments; QEMU
# also gets the host TSC frequency (tsc_early_khz), without which its guest often fails to
# calibrate the TSC here and hangs.
# Usage: bench/boot.sh [ROUNDS] [KERNEL]   (default 5 rounds, build/guest/vmlinux)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
KERNEL=${2:-build/guest/vmlinux}
INITRD=build/guest/initramfs.cpio
cargo build --release -q -p vmm
resources/build-guest.sh >/dev/null
ARGS='pci=off cryptomgr.notests mitigations=off tsc=reliable no_timer_check 8250.nr_uarts=1'
RUN='ember_run="uname -a"'
TSC_KHZ=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
CONFIG=build/bench/boot.json
mkdir -p build/bench
cat > "$CONFIG" <<JSON
{"boot-source": {"kernel_image_path": "$PWD/$KERNEL", "initrd_path": "$PWD/$INITRD",
  "boot_args": "console=ttyS0 reboot=k panic=-1 quiet $ARGS ${RUN//\"/\\\"}"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 256}}
JSON

# Seconds until the marker from ember, or "hang".
ember_boot() {
  local start line
  start=$(date +%s.%N)
  coproc E { exec timeout 120 target/release/ember --no-api --config-file "$CONFIG" --accel interp </dev/null 2>/dev/null; }
  while IFS= read -r line <&"${E[0]}"; do
    if [[ $line == *EMBER-GUEST-EXIT* ]]; then
      echo "$(date +%s.%N) - $start" | bc
      wait "$E_PID" 2>/dev/null || true
      return
    fi
  done
  echo hang
}

e_times=() q_times=()
for r in $(seq "$ROUNDS"); do
  e=$(ember_boot)
  q=$(MARK=EMBER-GUEST-EXIT /work/shared/bench/qemu-baseline.sh "$KERNEL" "$INITRD" \
        "$ARGS tsc_early_khz=$TSC_KHZ $RUN" 2>/dev/null | awk '{print $2}') || q=hang
  printf 'round %2d: ember %s s, qemu-tcg %s s\n' "$r" "$e" "$q"
  e_times+=("$e"); q_times+=("$q")
done
median() { printf '%s\n' "$@" | grep -v hang | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
em=$(median "${e_times[@]}"); qm=$(median "${q_times[@]}")
hangs=$(printf '%s\n' "${e_times[@]}" | grep -c hang || true)
printf 'median: ember %s s, qemu-tcg %s s, ratio %.2f; ember boots that did not finish: %s of %s\n' \
  "$em" "$qm" "$(echo "$em / $qm" | bc -l)" "$hangs" "$ROUNDS"
[ "$hangs" -eq 0 ]
