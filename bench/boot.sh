#!/bin/bash
# Boot to init, Ember's software CPU (--accel interp) against QEMU's TCG, in one run: the
# default guest's Debian kernel both as the ELF vmlinux (PVH entry) and as the bzImage it came
# in (which first decompresses itself), with the busybox initramfs and the stock arguments
# `console=ttyS0 reboot=k panic=-1` only (see bench/lib.sh for what QEMU gets besides, and
# why). The four boots of a round alternate: Ember vmlinux, QEMU vmlinux, Ember bzImage,
# QEMU bzImage.
#
# Per boot it records
#   init:   wall seconds from starting the VMM to the initramfs's EMBER-GUEST-INIT line
#           (the kernel has booted, /init has loaded its modules);
#   uptime: the guest's /proc/uptime read by the command /init then runs (guest clock since
#           the kernel started its clock: leaves out VMM start-up and bzImage decompression),
#           "nan" when the guest's clock source is not the TSC (see CLOCKSOURCE in lib.sh);
#   pre:    init - uptime: wall time before the guest kernel's clock starts (VMM start-up and,
#           for a bzImage, its decompression) plus the console's lag;
#   rss:    the VMM's peak resident set (MiB), over the whole run to power-off.
# and prints per round, then the medians and the ratio Ember / QEMU of each (at most 1.0:
# Ember as fast or as lean as QEMU's TCG or better).
# The default guest's kernel is Debian's cloud flavour (LZ4-compressed bzImage); FLAVOUR
# amd64 takes Debian's generic kernel instead (XZ-compressed, more built in, the kernel of
# issue 10's table), built by resources/build-guest.sh into build/bench/guest-amd64 with its
# own modules in the same busybox initramfs.
# Usage: bench/boot.sh [ROUNDS] [FLAVOUR]   (default 5 rounds, cloud-amd64)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-5}
FLAVOUR=${2:-cloud-amd64}
bench_setup
GUEST=build/guest
if [ "$FLAVOUR" != cloud-amd64 ]; then
  GUEST=$OUT/guest-$FLAVOUR
  EMBER_KERNEL_FLAVOUR=$FLAVOUR resources/build-guest.sh "$GUEST" 2>/dev/null
fi
INITRD=$GUEST/initramfs.cpio
# shellcheck disable=SC2016 # expanded by the guest's shell
RUN='read -r up _ < /proc/uptime; echo EMBER-UPTIME $up; '$CLOCKSOURCE

declare -A vals
for r in $(seq "$ROUNDS"); do
  for kernel in vmlinux vmlinuz; do
    for vmm in ember qemu; do
      vmm_command "$vmm" "$GUEST/$kernel" "$INITRD" "$RUN"
      log=$OUT/boot-$FLAVOUR-$vmm-$kernel-$r.log
      timed_run "$log" "${CMD[@]}"
      init=$(at "$log" EMBER-GUEST-INIT) up=$(after "$log" EMBER-UPTIME)
      clock=$(after "$log" EMBER-CLOCKSOURCE)
      guest_clock_ok "$log" || up=nan
      rss=$(after "$log" PEAK-RSS-KB | awk '{if ($1 == "nan") print "nan"; else printf "%.0f\n", $1 / 1024}')
      pre=$(awk -v i="$init" -v u="$up" 'BEGIN {if (i == "nan" || u == "nan") print "nan"; else printf "%.3f\n", i - u}')
      vals[$vmm-$kernel-init]+=" $init" vals[$vmm-$kernel-uptime]+=" $up" vals[$vmm-$kernel-rss]+=" $rss"
      vals[$vmm-$kernel-pre]+=" $pre"
      printf 'round %d %-7s %-5s init %6s s  uptime %6s s  peak RSS %4s MiB  (clock %s, exit %s)\n' \
        "$r" "$kernel" "$vmm" "$init" "$up" "$rss" "$clock" "$(after "$log" EXIT)"
    done
  done
done

echo
printf '%-8s %-7s %10s %10s %7s\n' kernel what ember qemu-tcg ratio
failed=0
for kernel in vmlinux vmlinuz; do
  for what in init uptime pre rss; do
    # shellcheck disable=SC2086 # the values are words
    e=$(median ${vals[ember-$kernel-$what]}) q=$(median ${vals[qemu-$kernel-$what]})
    printf '%-8s %-7s %10s %10s %7s\n' "$kernel" "$what" "$e" "$q" "$(ratio "$e" "$q")"
  done
  # shellcheck disable=SC2086 # the values are words
  misses=$(printf '%s\n' ${vals[ember-$kernel-init]} | grep -c nan || true)
  [ "$misses" -eq 0 ] || { echo "$kernel: $misses Ember boots did not reach init"; failed=1; }
done
echo "(kernel $(basename "$(ls "$GUEST"/config-*)" | sed 's/^config-//'); init, uptime, pre: seconds; rss: MiB; ratio: Ember / QEMU; logs in $OUT/boot-*.log;" \
  "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
exit "$failed"
