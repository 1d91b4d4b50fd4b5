#!/bin/bash
# virtio-blk throughput of the default guest on Ember's software CPU and under QEMU's TCG
# (microvm, virtio-mmio, found through ACPI), in the same run, with the same kernel,
# initramfs, disk image and guest tool (resources/guest-tools/ember-diskbench.c, O_DIRECT):
# sequential reads and writes of 1 MiB blocks over 64 MiB, random reads and writes of 4 KiB
# blocks over 8 MiB. Both VMMs back the disk with a file in the host's page cache. Boot
# arguments, QEMU's tsc_early_khz and CPU model as in bench/lib.sh.
# Each boot runs the four workloads twice: the first pass ("cold") right after boot, while
# both VMMs are still translating the guest kernel's block-layer code (a sequential pass
# lasts 50-90 ms), and the second ("warm") once they are done.
# Prints each workload's median MiB/s and IOPS per pass and Ember's throughput as a ratio of
# QEMU's (above 1: Ember is faster).
# Usage: bench/disk.sh [ROUNDS]   (default 3)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"   # STOCK_ARGS, QEMU_CPU, TSC_KHZ
ROUNDS=${1:-3}
cargo build --release -q -p vmm
resources/build-guest.sh >/dev/null
command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -q >/dev/null && apt-get install -y -q qemu-system-x86 >/dev/null; }
mkdir -p build/bench
DISK=$PWD/build/bench/disk.raw
KERNEL=$PWD/build/guest/vmlinux INITRD=$PWD/build/guest/initramfs.cpio
B='ember-diskbench /dev/vda'
PASS="$B read seq 1048576 67108864; $B write seq 1048576 67108864; $B read rand 4096 8388608; $B write rand 4096 8388608"
RUN="ember_run=\"$PASS; echo diskbench pass warm; $PASS\""
ARGS=$STOCK_ARGS
CONFIG=build/bench/disk.json
cat > "$CONFIG" <<JSON
{"boot-source": {"kernel_image_path": "$KERNEL", "initrd_path": "$INITRD",
  "boot_args": "$ARGS ${RUN//\"/\\\"}"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
 "drives": [{"drive_id": "bench", "path_on_host": "$DISK", "is_root_device": false}]}
JSON

fresh_disk() { dd if=/dev/zero of="$DISK" bs=1M count=128 status=none; }
ember_run() {
  fresh_disk
  timeout 600 target/release/ember --no-api --config-file "$CONFIG" --accel interp </dev/null 2>/dev/null |
    grep -a '^diskbench' || true
}
qemu_run() {
  fresh_disk
  timeout 600 qemu-system-x86_64 -M microvm -accel tcg -cpu "$QEMU_CPU" -m 256 -nodefaults \
    -no-user-config -nographic -serial stdio -no-reboot -kernel "$KERNEL" -initrd "$INITRD" \
    -drive id=d0,file="$DISK",format=raw,if=none -device virtio-blk-device,drive=d0 \
    -append "$ARGS tsc_early_khz=$TSC_KHZ $RUN" </dev/null 2>/dev/null | grep -a '^diskbench' || true
}

results=build/bench/disk.results
: > "$results"
# Each result line: VMM, pass (cold or warm), then the guest tool's line.
tag() { awk -v vmm="$1" -v pass=cold '/^diskbench pass warm/ {pass = "warm"; next} {print vmm, pass, $0}'; }
for r in $(seq "$ROUNDS"); do
  ember_run | tag ember >> "$results"
  qemu_run | tag qemu >> "$results"
  echo "round $r done" >&2
done
printf '%-21s %14s %14s %12s %12s %8s\n' workload "ember MiB/s" "qemu MiB/s" "ember IOPS" "qemu IOPS" ratio
for pass in cold warm; do
  for w in "read seq 1048576" "write seq 1048576" "read rand 4096" "write rand 4096"; do
    # shellcheck disable=SC2046 # the values are words
    sel() { median $(awk -v vmm="$1" -v p="$pass" -v w="$w" -v col="$2" \
      '$1 == vmm && $2 == p && ($4" "$5" "$6) == w {print $col}' "$results"); }
    em=$(sel ember 7) qm=$(sel qemu 7) ei=$(sel ember 8) qi=$(sel qemu 8)
    ratio=$(awk -v e="$em" -v q="$qm" 'BEGIN {if (q > 0) printf "%.2f", e / q; else print "nan"}')
    printf '%-21s %14s %14s %12s %12s %8s\n' "${w% *}, $pass" "$em" "$qm" "$ei" "$qi" "$ratio"
  done
done
