#!/bin/bash
# User-space CPU work in the guest, Ember's software CPU (--accel interp) against QEMU's TCG,
# in one run, alternating boots: the default guest (ELF vmlinux, busybox initramfs, stock
# arguments only; see bench/lib.sh) runs
#   busybox tools on 4 MiB of text-like data made by `ember-cpubench gen` (deterministic):
#     gzip, gunzip, sha256sum, md5sum, `gzip -c | sha256sum`, sort (lines);
#   the static benchmark resources/guest-tools/ember-cpubench.c:
#     hash (hash table), sort (quicksort of integers), interp (a bytecode interpreter),
#     matmul (double-precision matrix product).
# Each workload is timed inside the guest (CLOCK_MONOTONIC, by ember-cpubench), so boot time
# is left out, and also on the host from the arrival of its start and end lines on the
# console, which holds even when a busy host has made the guest drop the TSC as its clock
# source (guest times from such a boot are left out; see CLOCKSOURCE in lib.sh). Prints each round, then per workload the medians and the ratio Ember / QEMU
# (at most 1.0: Ember as fast as QEMU's TCG or faster). Also checks that both VMMs' guests
# computed the same checksums.
# Usage: bench/cpu.sh [ROUNDS]   (default 3)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
bench_setup

B=ember-cpubench
RUN="cd /tmp; $B gen 4194304 > d; $B run gzip 'gzip -c d > d.gz'; \
$B run gunzip 'gunzip -c d.gz > d.out'; $B run sha256sum 'sha256sum d'; \
$B run md5sum 'md5sum d'; $B run gzip+sha256sum 'gzip -c d | sha256sum'; \
$B run busybox-sort 'sort d > d.sorted'; cmp d d.out && echo EMBER-CPU-ROUNDTRIP-OK; \
echo EMBER-CPU-SUMS \$(md5sum d.gz d.sorted | cut -c1-32); \
$B hash; $B sort; $B interp; $B matmul; $CLOCKSOURCE"
WORKLOADS=(gzip gunzip sha256sum md5sum gzip+sha256sum busybox-sort hash sort interp matmul)

declare -A vals hvals
for r in $(seq "$ROUNDS"); do
  for vmm in ember qemu; do
    vmm_command "$vmm" build/guest/vmlinux build/guest/initramfs.cpio "$RUN"
    log=$OUT/cpu-$vmm-$r.log
    timed_run "$log" "${CMD[@]}"
    line="round $r $vmm (guest/host seconds; guest clock $(after "$log" EMBER-CLOCKSOURCE)):"
    for w in "${WORKLOADS[@]}"; do
      t=nan
      guest_clock_ok "$log" &&
        t=$(awk -v w="$w" '$2 == "cpubench" && $3 == w {print $4; f = 1; exit} END {if (!f) print "nan"}' "$log")
      h=$(span "$log" "$w")
      vals[$vmm-$w]+=" $t" hvals[$vmm-$w]+=" $h"
      line+=" $w $t/$h"
    done
    echo "$line"
    # What the guest computed: the checksums printed by the tools and the workloads.
    awk '$2 == "cpubench" && NF == 5 {print $3, $5; next}
         (length($2) >= 32 && $2 ~ /^[0-9a-f]+$/) || $2 ~ /^EMBER-CPU-/ {$1 = ""; print}' \
      "$log" > "$log.sums"
  done
done

echo
printf '%-16s %24s %24s\n' '' 'guest clock (s)' 'host clock (s)'
printf '%-16s %8s %8s %6s %8s %8s %6s\n' workload ember qemu ratio ember qemu ratio
for w in "${WORKLOADS[@]}"; do
  # shellcheck disable=SC2086 # the values are words
  e=$(median ${vals[ember-$w]}) q=$(median ${vals[qemu-$w]})
  # shellcheck disable=SC2086
  he=$(median ${hvals[ember-$w]}) hq=$(median ${hvals[qemu-$w]})
  printf '%-16s %8s %8s %6s %8s %8s %6s\n' "$w" "$e" "$q" "$(ratio "$e" "$q")" \
    "$he" "$hq" "$(ratio "$he" "$hq")"
done
echo "(medians of $ROUNDS; ratio: Ember / QEMU; guest clock: CLOCK_MONOTONIC in the guest, only" \
  "from boots whose clock source stayed the TSC; host clock: between the arrivals of the" \
  "start and end lines on the console; logs in $OUT/cpu-*.log;" \
  "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
status=0
for f in "$OUT"/cpu-*.log.sums; do
  if ! cmp -s "$f" "$OUT/cpu-qemu-1.log.sums"; then
    echo "results differ: $f and $OUT/cpu-qemu-1.log.sums"; status=1
  fi
done
grep -q EMBER-CPU-ROUNDTRIP-OK "$OUT/cpu-qemu-1.log.sums" || { echo "gunzip did not give the data back"; status=1; }
exit "$status"
