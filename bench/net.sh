#!/bin/bash
# TCP stream throughput over virtio-net, guest to host and host to guest, on Ember's software
# CPU and under QEMU's TCG in the same run: QEMU's microvm machine with a virtio-mmio
# virtio-net-device on the same tap (user-space backend, vhost=off), the same kernel,
# initramfs and boot arguments. microvm describes its virtio-mmio devices in ACPI by
# default, which is how Debian's kernel finds them (it cannot take them from the command
# line). In the guest `ember-tcp` streams with 256 KiB system calls; on the host a python3
# helper does, timing from accept or connect until the other side has everything.
# Everything runs in a network namespace made for the run (deleted on exit).
# Usage: bench/net.sh [ROUNDS] [MIB]   (default 3 rounds of 256 MiB each way)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"   # STOCK_ARGS, QEMU_CPU, TSC_KHZ
ROUNDS=${1:-3}
MIB=${2:-256}
BYTES=$((MIB << 20))
KERNEL=build/guest/vmlinux
INITRD=build/guest/initramfs.cpio
cargo build --release -q -p vmm
resources/build-guest.sh >/dev/null
command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >/dev/null; }

NS=ember-bench-$$
OUT=build/bench/net
mkdir -p "$OUT"
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" tuntap add dev tap0 mode tap
ip -n "$NS" addr add 10.0.0.1/24 dev tap0
ip -n "$NS" link set tap0 up
in_ns() { ip netns exec "$NS" "$@"; }

# Host side: "sink PORT" takes one connection to 10.0.0.1:PORT; "source PORT BYTES" connects
# to the guest (retrying until it listens) and sends. Each prints MB/s (10^6 bytes a second).
cat > "$OUT/host.py" <<'PY'
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "sink":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.0.0.1", port)); s.listen(1); s.settimeout(180)
    c, _ = s.accept(); c.settimeout(180); start = time.time(); n = 0
    while True:
        d = c.recv(1 << 20)
        if not d: break
        n += len(d)
else:
    n = int(sys.argv[3]); buf = bytes(1 << 20); deadline = time.time() + 180
    while True:
        try: c = socket.create_connection(("10.0.0.2", port), timeout=2); break
        except OSError:
            if time.time() > deadline: raise
            time.sleep(0.1)
    c.settimeout(180); start = time.time(); left = n
    while left > 0:
        k = min(left, len(buf)); c.sendall(buf[:k]); left -= k
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536): pass
print(f"{n / (time.time() - start) / 1e6:.1f}")
PY

RUN="ip link set eth0 up; ip addr add 10.0.0.2/24 dev eth0; ember-tcp send 10.0.0.1 5000 $BYTES; ember-tcp recv 5001 >/dev/null"
MAC=06:00:0a:00:00:02
cat > "$OUT/vm.json" <<JSON
{"boot-source": {"kernel_image_path": "$PWD/$KERNEL", "initrd_path": "$PWD/$INITRD",
  "boot_args": "$STOCK_ARGS ember_run=\"$RUN\""},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
 "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "$MAC"}]}
JSON

ember() {
  in_ns timeout 300 target/release/ember --no-api --config-file "$OUT/vm.json" --accel interp
}
qemu() {
  in_ns timeout 300 qemu-system-x86_64 -M microvm -accel tcg -cpu "$QEMU_CPU" -m 256 -nodefaults \
    -no-user-config -nographic -serial stdio -no-reboot -kernel "$KERNEL" -initrd "$INITRD" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off \
    -device virtio-net-device,netdev=n0,mac=$MAC \
    -append "$STOCK_ARGS tsc_early_khz=$TSC_KHZ ember_run=\"$RUN\""
}

# One boot of VMM ($1): prints "guest-to-host host-to-guest" in MB/s ("fail" where it failed).
measure() {
  in_ns python3 "$OUT/host.py" sink 5000 > "$OUT/g2h" 2>&1 &
  local sink=$!
  in_ns python3 "$OUT/host.py" source 5001 "$BYTES" > "$OUT/h2g" 2>&1 &
  local source=$!
  "$1" </dev/null > "$OUT/$1.console" 2>&1 || true
  wait "$sink" || echo fail > "$OUT/g2h"
  wait "$source" || echo fail > "$OUT/h2g"
  echo "$(tail -1 "$OUT/g2h") $(tail -1 "$OUT/h2g")"
}

declare -a eg eh qg qh
for r in $(seq "$ROUNDS"); do
  read -r a b < <(measure ember)
  read -r c d < <(measure qemu)
  printf 'round %d: guest to host: ember %s MB/s, qemu-tcg %s MB/s; host to guest: ember %s MB/s, qemu-tcg %s MB/s\n' \
    "$r" "$a" "$c" "$b" "$d"
  eg+=("$a"); eh+=("$b"); qg+=("$c"); qh+=("$d")
done
median() { printf '%s\n' "$@" | grep -v fail | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
for dir in "guest to host:eg:qg" "host to guest:eh:qh"; do
  IFS=: read -r name e q <<<"$dir"
  declare -n E=$e Q=$q
  em=$(median "${E[@]}"); qm=$(median "${Q[@]}")
  printf 'median %s: ember %s MB/s, qemu-tcg %s MB/s, ratio %.2f\n' "$name" "$em" "$qm" \
    "$(echo "$em / $qm" | bc -l)"
done
fails=$(printf '%s\n' "${eg[@]}" "${eh[@]}" | grep -c fail || true)
[ "$fails" -eq 0 ]
