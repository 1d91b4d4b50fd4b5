#!/bin/bash
# Guest MIPS of the software CPU and of KVM on the same loop, in one run.
# The loop guest (tests/guests/loop.S) executes 350,000,000 instructions; the time of a
# trivial guest (modes.S) with the same accelerator is subtracted as VMM start-up.
# Usage: bench/mips.sh [ROUNDS]   (default 3; prints the best round per accelerator)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
INSNS=350000000
OUT=build/bench
mkdir -p "$OUT"
cargo build --release -q -p vmm
make -s --no-print-directory -C tests/guests OUT="$PWD/$OUT/guests"
for g in loop modes; do
  printf '{"boot-source": {"kernel_image_path": "%s"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}\n' \
    "$PWD/$OUT/guests/$g.elf" > "$OUT/$g.json"
done

# Best-of-ROUNDS wall time, in seconds, of booting config $1 with --accel $2.
best() {
  local best=
  for _ in $(seq "$ROUNDS"); do
    local s e t
    s=$(date +%s.%N)
    target/release/ember --no-api --config-file "$1" --accel "$2" > /dev/null || [ $? -eq 1 ]
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  echo "$best"
}

declare -A mips
for accel in interp kvm; do
  if [ "$accel" = kvm ] && ! [ -r /dev/kvm ]; then echo "kvm: /dev/kvm not usable, skipped"; continue; fi
  loop=$(best "$OUT/loop.json" "$accel")
  base=$(best "$OUT/modes.json" "$accel")
  secs=$(echo "$loop - $base" | bc -l)
  mips[$accel]=$(echo "$INSNS / $secs / 1000000" | bc -l)
  printf '%-7s loop %.3f s, start-up %.3f s, %.0f guest MIPS\n' "$accel" "$loop" "$base" "${mips[$accel]}"
done
if [ -n "${mips[kvm]:-}" ]; then
  printf 'software CPU runs at %.1f%% of KVM speed on this loop\n' "$(echo "100 * ${mips[interp]} / ${mips[kvm]}" | bc -l)"
fi
