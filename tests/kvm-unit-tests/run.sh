#!/bin/bash
# Runs the x86 tests of an already built kvm-unit-tests tree under QEMU's TCG and under
# Ember's software CPU (and, with --kvm, under Ember on KVM), and prints one Markdown table
# row per unittests.cfg entry. It never builds the suite: build it first as its README says.
#
# Usage: tests/kvm-unit-tests/run.sh [options] KUT_DIR
#   --ember PATH     the ember binary (default: target/release/ember of this repository)
#   --kvm            add a column for Ember with --accel kvm
#   --no-tcg         leave out the QEMU TCG column
#   --only A,B,...   run only these unittests.cfg entries
#   --timeout SECS   per-run timeout instead of each entry's own (default 90 s)
#   --logs DIR       keep each run's console output and stderr here (default: a temporary
#                    directory, named at the end)
#
# A cell is PASS, FAIL, SKIP (the test skipped itself: status 77), TIMEOUT, ABORT (the test
# died of an unexpected exception), VM FAILED (Ember stopped the VM: triple fault or an
# instruction it cannot run), or n/a (the backend cannot run the entry, and why), with the
# suite's SUMMARY line in brackets. QEMU's isa-debug-exit and Ember both exit with
# (v << 1) | 1 for a value v written to port 0xf4, so status 1 is PASS, 3 FAIL and 77 SKIP.
# Entries are skipped on every backend when they are for the other architecture, manual-only
# (group nodefault), KVM-only (unless --kvm), or their host check fails.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
ember="$repo/target/release/ember"
run_tcg=1
run_kvm=0
only=""
timeout_override=""
logs=""

usage() {
	sed -n '5,13s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case "$1" in
	--ember) ember=$2; shift 2 ;;
	--kvm) run_kvm=1; shift ;;
	--no-tcg) run_tcg=0; shift ;;
	--only) only=",$2,"; shift 2 ;;
	--timeout) timeout_override=$2; shift 2 ;;
	--logs) logs=$2; shift 2 ;;
	-h | --help) usage ;;
	-*) echo "unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || usage
kut=$(cd "$1" 2>/dev/null && pwd) || { echo "no directory $1" >&2; exit 2; }

cfg="$kut/x86/unittests.cfg"
if [ ! -f "$cfg" ]; then
	echo "$kut is not a kvm-unit-tests tree (no x86/unittests.cfg)" >&2
	exit 2
fi
if [ ! -f "$kut/config.mak" ] || ! ls "$kut"/x86/*.flat >/dev/null 2>&1; then
	echo "$kut is not built: configure and build it for x86 as its README.md says" \
		"(./configure --arch=x86_64 && make); this script does not build it" >&2
	exit 2
fi
suite_arch=$(sed -n 's/^ARCH=//p' "$kut/config.mak")
if [ ! -x "$ember" ]; then
	echo "no ember binary at $ember: cargo build --release -p vmm, or pass --ember" >&2
	exit 2
fi
if [ "$run_tcg" = 1 ] && ! command -v qemu-system-x86_64 >/dev/null; then
	echo "installing qemu-system-x86 for the TCG column" >&2
	apt-get install -y -q qemu-system-x86 >&2 || { echo "cannot install QEMU" >&2; exit 2; }
fi

# Ember takes the debug-exit port only where it is asked for, once it has that option.
ember_opts=(--no-api)
if "$ember" --help 2>&1 | grep -q -- '--debug-exit'; then
	ember_opts+=(--debug-exit)
fi

if [ -z "$logs" ]; then
	logs=$(mktemp -d /tmp/kut-logs.XXXXXX)
fi
mkdir -p "$logs"

# Expands a unittests.cfg value as the suite does (quotes, backquoted commands), without
# filename globbing.
expand() {
	set -f
	eval "printf '%s' $1"
	set +f
}

# Splits the QEMU parameters of an entry into $qemu_extra, taking out the guest's command
# line (-append, in older unittests.cfg files) into $args, reading guest RAM (-m) into $mib
# and naming an extra device (-device), which Ember does not have, in $missing.
split_qemu_params() {
	local -a words
	local i
	set -f
	eval "words=($1)"
	set +f
	qemu_extra=()
	mib=128
	missing=""
	for ((i = 0; i < ${#words[@]}; i++)); do
		case "${words[i]}" in
		-device)
			[ -z "$missing" ] && missing="no ${words[i + 1]%%,*} device on Ember"
			qemu_extra+=(-device "${words[i + 1]}")
			i=$((i + 1)) ;;
		-append) args="$args${args:+ }${words[i + 1]}"; i=$((i + 1)) ;;
		-m) mib=$(mebibytes "${words[i + 1]}"); qemu_extra+=(-m "${words[i + 1]}"); i=$((i + 1)) ;;
		*) qemu_extra+=("${words[i]}") ;;
		esac
	done
}

# Mebibytes of a QEMU -m value (plain numbers are MiB; k, m, g and t suffixes).
mebibytes() {
	local v=${1,,}
	case "$v" in
	*g) echo $((${v%g} * 1024)) ;;
	*t) echo $((${v%t} * 1024 * 1024)) ;;
	*m) echo "${v%m}" ;;
	*k) echo $((${v%k} / 1024)) ;;
	*) echo "$v" ;;
	esac
}

# The text of the first line of a console log that names the summary, trimmed.
summary_of() {
	grep -a -m1 '^SUMMARY:' "$1" | sed 's/^SUMMARY: //; s/\r//; s/[[:space:]]*$//'
}

# One table cell from an exit status, the console log and the stderr log of a run.
cell() {
	local status=$1 out=$2 err=$3 vmm=$4 summary verdict
	summary=$(summary_of "$out")
	case "$status" in
	1)
		if [ "$vmm" = qemu ] && grep -qvi warning "$err"; then
			echo "n/a: $(grep -vi warning "$err" | head -n1 | sed 's/^qemu-system-x86_64: //; s/|/\\|/g')"
			return
		fi
		verdict=PASS ;;
	3) verdict=FAIL ;;
	77) verdict=SKIP ;;
	124 | 137) verdict=TIMEOUT ;;
	4)
		if [ "$vmm" = ember ]; then
			verdict="VM FAILED: $(grep -a -m1 'stopped: ' "$err" |
				sed 's/.*stopped: //; s/^software CPU: //; s/|/\\|/g')"
		else
			verdict="status 4"
		fi ;;
	0) verdict="no debug exit (status 0: reset or triple fault)" ;;
	127) verdict="ABORT (unhandled exception)" ;;
	*) verdict="status $status" ;;
	esac
	[ -n "$summary" ] && verdict="$verdict ($summary)"
	echo "$verdict"
}

# Runs the entry on QEMU's TCG with the QEMU arguments in $qemu_extra.
run_qemu() {
	local name=$1 smp=$2 args=$3 t=$4
	timeout -k 1 "$t" qemu-system-x86_64 --no-reboot -nodefaults -display none \
		-device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4 \
		-device pci-testdev -serial stdio -machine accel=tcg \
		-kernel "$kut/x86/$file" -smp "$smp" -append "$args" "${qemu_extra[@]}" \
		</dev/null >"$logs/$name.tcg.out" 2>"$logs/$name.tcg.err"
	cell $? "$logs/$name.tcg.out" "$logs/$name.tcg.err" qemu
}

# Runs the entry on Ember with --accel $6, the environment file giving the vCPU count.
run_ember() {
	local name=$1 smp=$2 args=$3 mib=$4 t=$5 accel=$6
	local env="$logs/$name.env" json="$logs/$name.$accel.json"
	printf 'NR_CPUS=%s\nMEMSIZE=%s\n' "$smp" "$mib" >"$env"
	args=${args//\\/\\\\}
	args=${args//\"/\\\"}
	cat >"$json" <<EOF
{"boot-source": {"kernel_image_path": "$kut/x86/$file", "initrd_path": "$env",
                 "boot_args": "$args"},
 "machine-config": {"vcpu_count": $smp, "mem_size_mib": $mib}}
EOF
	timeout -k 1 "$t" "$ember" "${ember_opts[@]}" --config-file "$json" --accel "$accel" \
		</dev/null >"$logs/$name.$accel.out" 2>"$logs/$name.$accel.err"
	cell $? "$logs/$name.$accel.out" "$logs/$name.$accel.err" ember
}

# Why an entry is not run on any backend here, or nothing when it runs.
skip_reason() {
	local p path value
	if [ -n "$arch" ] && [ "$arch" != "$suite_arch" ]; then
		echo "$arch only; this tree is built for $suite_arch"
		return
	fi
	if [[ " $groups " == *" nodefault "* ]]; then
		echo "manual runs only (group nodefault)"
		return
	fi
	if [ "$accel" = kvm ] && [ "$run_kvm" = 0 ]; then
		echo "KVM only"
		return
	fi
	for p in $check; do
		path=${p%%=*}
		value=${p#*=}
		if [ ! -f "$path" ] || [ "$(cat "$path")" != "$value" ]; then
			echo "host check $path=$value not met"
			return
		fi
	done
	if [ ! -f "$kut/x86/$file" ]; then
		echo "x86/$file not built"
	fi
}

header="| test | vCPUs | QEMU TCG | Ember interp |"
rule="| --- | --- | --- | --- |"
if [ "$run_kvm" = 1 ]; then
	header="$header Ember KVM |"
	rule="$rule --- |"
fi
echo "kvm-unit-tests $(git -C "$kut" log -1 --format=%h 2>/dev/null || echo '(not a git tree)')," \
	"$suite_arch, $(date +%Y-%m-%d); $(qemu-system-x86_64 --version 2>/dev/null | head -n1)"
echo
echo "$header"
echo "$rule"

# Runs the entry whose fields are set, printing its row.
run_entry() {
	local reason args t tcg interp kvm row mib missing
	[ -z "$name" ] && return
	[ -n "$only" ] && [[ "$only" != *",$name,"* ]] && return
	reason=$(skip_reason)
	if [ -n "$reason" ]; then
		row="| $name | ${smp:-1} | skipped: $reason | skipped |"
		[ "$run_kvm" = 1 ] && row="$row skipped |"
		echo "$row"
		return
	fi
	args=$(expand "$test_args")
	split_qemu_params "$qemu_params"
	t=${timeout_override:-${timeout:-90}}
	t=${t%s}
	tcg="not run"
	if [ "$accel" = kvm ]; then
		tcg="skipped: KVM only"
	elif [[ " ${qemu_extra[*]} " == *" -enable-kvm "* ]]; then
		tcg="n/a: the entry asks QEMU for KVM (-enable-kvm)"
	elif [ "$run_tcg" = 1 ]; then
		tcg=$(run_qemu "$name" "$smp" "$args" "$t")
	fi
	interp="skipped: KVM only"
	[ -n "$missing" ] && interp="n/a: $missing"
	[ "$accel" != kvm ] && [ -z "$missing" ] &&
		interp=$(run_ember "$name" "$smp" "$args" "$mib" "$t" interp)
	row="| $name | $smp | $tcg | $interp |"
	if [ "$run_kvm" = 1 ]; then
		kvm="n/a: $missing"
		[ -z "$missing" ] && kvm=$(run_ember "$name" "$smp" "$args" "$mib" "$t" kvm)
		row="$row $kvm |"
	fi
	echo "$row"
}

name=""
while IFS= read -r line || [ -n "$line" ]; do
	line=${line%%#*}
	[[ "$line" =~ ^[[:space:]]*$ ]] && continue
	if [[ "$line" =~ ^\[(.*)\] ]]; then
		run_entry
		name=${BASH_REMATCH[1]}
		file="" smp=1 test_args="" qemu_params="" arch="" groups="" check="" accel="" timeout=""
		continue
	fi
	key=$(sed 's/[[:space:]]*=.*//' <<<"$line")
	value=$(sed 's/^[^=]*=[[:space:]]*//; s/[[:space:]]*$//' <<<"$line")
	case "$key" in
	file) file=$value ;;
	smp) smp=$(MAX_SMP=$(nproc) expand "$value") ;;
	test_args) test_args=$value ;;
	qemu_params | extra_params) qemu_params=$value ;;
	arch) arch=$value ;;
	groups) groups=$value ;;
	check) check=$value ;;
	accel) accel=$value ;;
	timeout) timeout=$value ;;
	esac
done <"$cfg"
run_entry

echo
echo "Console output and stderr of each run: $logs"
