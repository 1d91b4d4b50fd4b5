#!/bin/bash
# Startup cost of the REST API. (1) API on, nothing to boot: wall and CPU milliseconds from
# exec until the socket accepts a connection, and resident memory then (Firecracker's
# SPECIFICATION.md: API socket within 8 CPU ms). (2) The same tiny test guest (it exits at
# once) booted with the API off (--no-api) and on: wall milliseconds to exit and peak RSS.
# Usage: bench/api.sh [ROUNDS]   (default 20); prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}
cargo build --release -q -p vmm -p ember-tests --tests
GUEST=$(find target/release/build -path '*/out/guests/modes.elf' | head -n 1)
[[ -n $GUEST ]] || { echo "bench/api.sh: no modes.elf; build the tests first" >&2; exit 1; }
mkdir -p build/bench
CONFIG=build/bench/api.json
echo "{\"boot-source\": {\"kernel_image_path\": \"$PWD/$GUEST\"}}" > "$CONFIG"
python3 - "$ROUNDS" "$CONFIG" <<'PY'
import os, socket, statistics, subprocess, sys, time, tempfile
rounds, config = int(sys.argv[1]), sys.argv[2]
ember = "target/release/ember"

def cpu_ms(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e6

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

walls, cpus, rsss = [], [], []
for _ in range(rounds):
    sock = os.path.join(tempfile.mkdtemp(), "api.sock")
    start = time.perf_counter()
    p = subprocess.Popen([ember, "--api-sock", sock], stdout=subprocess.DEVNULL)
    while True:
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(sock); s.close(); break
        except OSError:
            time.sleep(0.0002)
    walls.append((time.perf_counter() - start) * 1000)
    cpus.append(cpu_ms(p.pid)); rsss.append(rss_kib(p.pid))
    p.terminate(); p.wait()
med = statistics.median
print(f"API on, to socket: wall {med(walls):.1f} ms, CPU {med(cpus):.1f} ms, RSS {med(rsss)/1024:.1f} MiB")

def boot(args):
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", ember, *args, "--config-file", config],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = (time.perf_counter() - start) * 1000
    return wall, int(out.stderr.strip().splitlines()[-1])
for name, args in [("API off", ["--no-api"]), ("API on ", ["--api-sock", os.path.join(tempfile.mkdtemp(), "a.sock")])]:
    runs = [boot(args) for _ in range(rounds)]
    print(f"{name}, boot test guest to exit: wall {med(r[0] for r in runs):.1f} ms, peak RSS {med(r[1] for r in runs)/1024:.1f} MiB")
PY
