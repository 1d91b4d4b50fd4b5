# shellcheck shell=bash
# Shared by bench/boot.sh and bench/cpu.sh (sourced, not run): the same guest on Ember's
# software CPU and under QEMU's TCG, with the same kernel, initramfs and stock boot arguments.
#
# What the two VMMs get, and why:
# - Boot arguments: only `console=ttyS0 reboot=k panic=-1` plus the initramfs's
#   `ember_run="..."` (the command /init runs). No flag that makes the guest skip work.
# - QEMU alone also gets `tsc_early_khz=<host kHz>`: without it its guest fails to calibrate
#   the TSC on this host about one boot in ten and hangs (../shared/HOST-NOTES.md). It only
#   tells the kernel a frequency that Ember's guest reads from CPUID leaves 0x15/0x16.
# - QEMU's CPU model is Nehalem-v1 plus the extra features Ember's software CPU advertises
#   (docs/SOFTWARE-CPU.md), so that both guests see nearly the same CPUID flags and pick the
#   same code paths (crypto self-tests and implementations, string functions). QEMU's default
#   qemu64 lacks SSSE3/SSE4.x/POPCNT and would skip work that Ember's guest does.
#   The remaining differences: Ember also shows tsc_deadline_timer, 3dnowprefetch and
#   nonstop_tsc; QEMU shows mce/mca.
# - 1 vCPU, 256 MiB, the microvm machine for QEMU (no PCI, virtio-mmio through ACPI), which is
#   the closest to Ember's machine.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STOCK_ARGS='console=ttyS0 reboot=k panic=-1'
QEMU_CPU=Nehalem-v1,+movbe,+rdrand,+erms,+smep,+smap,+umip,+pku,+rdtscp,+pdpe1gb,+abm
MEM_MIB=256
TIMEOUT=${TIMEOUT:-600}
OUT=build/bench
TSC_KHZ=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)

# Builds Ember and the default guest, and installs what is missing.
bench_setup() {
  mkdir -p "$OUT"
  cargo build --release -q -p vmm
  resources/build-guest.sh >/dev/null
  local need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  [ -x /usr/bin/time ] || need+=(time)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
}

# ember_config FILE KERNEL INITRD RUN: an Ember config booting KERNEL and INITRD with the
# stock arguments and ember_run="RUN".
ember_config() {
  cat > "$1" <<JSON
{"boot-source": {"kernel_image_path": "$PWD/$2", "initrd_path": "$PWD/$3",
  "boot_args": "$STOCK_ARGS ember_run=\\"${4//\"/\\\"}\\""},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": $MEM_MIB}}
JSON
}

# vmm_command ember|qemu KERNEL INITRD RUN: the command line (in the array CMD) booting that
# guest; for Ember the config is written to $OUT/<basename of KERNEL>.json.
# shellcheck disable=SC2034 # CMD is for the caller
vmm_command() {
  case $1 in
  ember)
    local config
    config=$OUT/$(basename "$2").json
    ember_config "$config" "$2" "$3" "$4"
    CMD=(target/release/ember --no-api --config-file "$config" --accel interp) ;;
  qemu)
    CMD=(qemu-system-x86_64 -M microvm -accel tcg -cpu "$QEMU_CPU" -m "$MEM_MIB" -nodefaults
      -no-user-config -nographic -serial stdio -no-reboot -kernel "$2" -initrd "$3"
      -append "$STOCK_ARGS tsc_early_khz=$TSC_KHZ ember_run=\"$4\"") ;;
  esac
}

# timed_run LOG CMD...: runs CMD to its end with no input; writes each line of its output to
# LOG prefixed with the wall seconds since the start, then "EXIT <status>" and
# "PEAK-RSS-KB <n>" (the VMM's peak resident set, from /usr/bin/time). Lines are stamped with
# the host's clock as they arrive (bash's $EPOCHREALTIME: no process per line) and made
# relative to the start afterwards.
timed_run() {
  local log=$1 start status=0 line
  shift
  start=$EPOCHREALTIME
  {
    timeout "$TIMEOUT" /usr/bin/time -q -f %M -o "$log.rss" "$@" </dev/null 2>/dev/null ||
      status=$?
    echo "EXIT $status"
  } | while IFS= read -r line; do
    printf '%s %s\n' "$EPOCHREALTIME" "${line%$'\r'}"
  done | awk -v s="$start" '{t = $1; sub(/^[^ ]* /, ""); printf "%.3f %s\n", t - s, $0}' > "$log"
  echo "0 PEAK-RSS-KB $(tail -n 1 "$log.rss" 2>/dev/null || echo nan)" >> "$log"
}

# at LOG MARK: the wall seconds at the first line of LOG containing MARK ("nan" if none).
at() { awk -v m="$2" 'index($0, m) {print $1; found = 1; exit} END {if (!found) print "nan"}' "$1"; }

# after LOG TAG [N]: the Nth word (default 1) after TAG in the first line of LOG whose text
# starts with the word TAG ("nan" if none).
after() {
  awk -v t="$2" -v n="${3:-1}" '$2 == t {print $(2 + n); found = 1; exit}
                                END {if (!found) print "nan"}' "$1"
}

# span LOG WORDS...: wall seconds, as the host saw the lines arrive, from the first line of
# LOG whose text is "cpubench-start WORDS" to the first one that starts with "cpubench WORDS"
# (the ember-cpubench protocol); "nan" if either is missing.
span() {
  local log=$1
  shift
  awk -v w="$*" '{t = $1; $1 = ""; sub(/^ /, "")}
    !s && $0 == "cpubench-start " w {s = t}
    s && index($0, "cpubench " w " ") == 1 {printf "%.3f\n", t - s; e = 1; exit}
    END {if (!e) print "nan"}' "$log"
}

# The guest's clock source, printed by its command line (see CLOCKSOURCE below). The guest's
# own times (uptime, CLOCK_MONOTONIC) count only when it is the TSC: a guest whose TSC the
# kernel's watchdog marked unstable (when the host is too busy to deliver its timer ticks on
# time) falls back to jiffies, whose time can run fast or slow. (tsc-early is the TSC before
# the kernel has refined its frequency: it counts.)
# shellcheck disable=SC2016,SC2034 # for the guest's shell; used by the callers
CLOCKSOURCE='echo EMBER-CLOCKSOURCE $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)'
guest_clock_ok() { case $(after "$1" EMBER-CLOCKSOURCE) in tsc | tsc-early) ;; *) false ;; esac; }

# median VALUES...: the median, ignoring "nan" ("nan" if nothing is left).
median() {
  printf '%s\n' "$@" | { grep -v nan || true; } | sort -g |
    awk '{a[NR] = $1} END {if (!NR) print "nan"; else if (NR % 2) print a[(NR + 1) / 2];
                           else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# ratio A B: A / B with two decimals ("nan" if either is missing).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.2f\n", a / b}'; }
