#!/bin/bash
# Build Ember's default guest from Debian 12 packages only:
#   vmlinuz            Debian cloud kernel, bzImage (LZ4 payload; XZ for the generic flavour)
#   vmlinux            the ELF kernel taken out of that bzImage (has the PVH entry note)
#   initramfs.cpio     busybox-static + virtio/vsock modules + /init (uncompressed newc)
#   rootfs.ext4        the same system without modules, as an ext4 root file system image
#   vm.json            example Firecracker --config-file using the files above
#   config-KVER        the kernel's .config, for reference
# Usage: build-guest.sh [BUILD_DIR]   (or EMBER_BUILD=DIR; default <repo>/build/guest)
# EMBER_KERNEL_FLAVOUR picks another Debian kernel flavour than cloud-amd64, e.g. amd64 (the
# generic kernel, which bench/boot.sh can compare too); use another BUILD_DIR for it.
# Needs root (apt-get install of missing tools, mknod /dev/console). A run with all outputs
# present and newer than this script does nothing; .debs are cached in BUILD_DIR/debs
# (delete them to pick up a newer kernel package).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$(realpath "${BASH_SOURCE[0]}")
OUT=$(realpath -m "${1:-${EMBER_BUILD:-$REPO/build/guest}}")
DEBS="$OUT/debs" WORK="$OUT/work"
OUTPUTS=(vmlinuz vmlinux initramfs.cpio rootfs.ext4 vm.json)
KFLAVOUR=${EMBER_KERNEL_FLAVOUR:-cloud-amd64}
# Modules the guest should have; built-in ones are dropped, dependencies are added.
WANT_MODULES=(virtio virtio_ring virtio_mmio virtio_pci virtio_blk virtio_net
  vmw_vsock_virtio_transport virtio_rng virtio_balloon
  crc32c_generic crc16 mbcache jbd2 ext4)
# Boot args for vm.json; resources/README.md says what each one is for.
BOOT_ARGS="console=ttyS0 reboot=k panic=1 pci=off quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check 8250.nr_uarts=1"

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$OUT" "$DEBS"
exec 9>"$OUT/.lock" && flock 9          # parallel callers wait for one build

TOOLS="$REPO/resources/guest-tools"
up_to_date() {
  [[ -e $OUT/.stamp && ! $SELF -nt $OUT/.stamp ]] || return 1
  [[ $(awk '{print $4}' "$OUT/.stamp") == "$KFLAVOUR" ]] || return 1
  for t in "$TOOLS"/*.c; do [[ ! $t -nt $OUT/.stamp ]] || return 1; done
  for f in "${OUTPUTS[@]}"; do [[ -s $OUT/$f ]] || return 1; done
}
if up_to_date; then log "up to date: $OUT"; exit 0; fi
rm -f "$OUT/.stamp"
[[ $EUID == 0 ]] || die "run as root (apt-get install, mknod)"

# --- host tools: install only what is missing ---------------------------------------
APT_UPDATED=
apt_update() { [[ -n $APT_UPDATED ]] || { apt-get update -q >/dev/null; APT_UPDATED=1; }; }
missing=()
for t in lz4:lz4 xz:xz-utils depmod:kmod modprobe:kmod cpio:cpio readelf:binutils gcc:gcc mkfs.ext4:e2fsprogs; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)   # static guest tools
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- packages (cached .debs) ------------------------------------------------------
# fetch PKG[=VERSION] -> prints the path of the cached .deb (downloads it if needed)
dl() { (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$1" >/dev/null); }
fetch() {
  local name=${1%%=*} ver= f
  [[ $1 == *=* ]] && ver=${1#*=}
  f=$(ls "$DEBS/${name}_${ver//:/%3a}"*.deb 2>/dev/null | tail -1 || true)
  if [[ -z $f ]]; then
    apt-cache show "$name" >/dev/null 2>&1 || apt_update
    dl "$1" || { apt_update; dl "$1"; } || return 1
    f=$(ls "$DEBS/${name}_${ver//:/%3a}"*.deb 2>/dev/null | tail -1 || true)
  fi
  [[ -n $f ]] && echo "$f"
}
META=$(fetch "linux-image-$KFLAVOUR") || die "cannot download linux-image-$KFLAVOUR"
# The meta package depends on the real one, e.g. "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
DEP=$(dpkg-deb -f "$META" Depends | tr ',' '\n' | grep -m1 -o "linux-image-[^ ]*-$KFLAVOUR *(= *[^)]*)") \
  || die "no kernel in Depends of $META"
KPKG=${DEP%% *} KPKGVER=$(echo "$DEP" | sed 's/.*= *//; s/)//')
KDEB=$(fetch "$KPKG=$KPKGVER") || die "cannot download $KPKG=$KPKGVER (delete $DEBS to refresh)"
BBDEB=$(fetch busybox-static) || die "cannot download busybox-static"
log "kernel package $KPKG $KPKGVER, $(basename "$BBDEB")"

rm -rf "$WORK"; mkdir -p "$WORK"
dpkg -x "$KDEB" "$WORK/kernel"
dpkg -x "$BBDEB" "$WORK/busybox"
KVER=$(ls "$WORK/kernel/lib/modules")
[[ $KVER == *-"$KFLAVOUR" ]] || die "unexpected module dir: $KVER"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
cp "$WORK/kernel/boot/config-$KVER" "$OUT/config-$KVER"

# --- vmlinux: decompress the bzImage payload -----------------------------------------
# Setup header: setup_sects @0x1f1 (u8), "HdrS" @0x202, payload_offset @0x248 and
# payload_length @0x24c (u32, relative to the protected-mode code at (setup_sects+1)*512).
u() { od -An -t "u$2" -j "$(($1))" -N "$2" "$3" | tr -d ' '; }   # u OFFSET BYTES FILE
BZ="$OUT/vmlinuz.tmp"
[[ $(od -An -c -j $((0x202)) -N 4 "$BZ" | tr -d ' ') == HdrS ]] || die "vmlinuz: no bzImage header"
SETUP=$(u 0x1f1 1 "$BZ"); ((SETUP)) || SETUP=4
PSTART=$(( (SETUP + 1) * 512 + $(u 0x248 4 "$BZ") )) PLEN=$(u 0x24c 4 "$BZ")
# The cloud kernel compresses it with LZ4 (legacy frame), the generic one with XZ.
case $(od -An -tx1 -j "$PSTART" -N 6 "$BZ" | tr -d ' ') in
  02214c18*) UNPACK=(lz4 -dc) ;;
  fd377a585a00) UNPACK=(xz -dc) ;;
  *) die "vmlinuz payload is neither LZ4 (legacy frame) nor XZ" ;;
esac
# The payload ends with a 4-byte little-endian uncompressed size (kernel's size_append);
# lz4 would read it as a block header and complain, so hand it the payload without it.
ULEN=$(u $((PSTART + PLEN - 4)) 4 "$BZ")
dd if="$BZ" bs=1M iflag=skip_bytes,count_bytes skip="$PSTART" count=$((PLEN - 4)) status=none \
  | "${UNPACK[@]}" > "$WORK/payload"
[[ $(stat -c %s "$WORK/payload") == "$ULEN" ]] || die "payload size mismatch"
# The payload is the stripped ELF followed by the relocation table for KASLR; cut the ELF
# at the end of its section header table (the last thing in the file) after checking that
# every segment and section lies before that point.
P="$WORK/payload"
[[ $(od -An -tx1 -N 4 "$P" | tr -d ' ') == 7f454c46 ]] || die "payload is not ELF"
ELFEND=$(( $(u 0x28 8 "$P") + $(u 0x3a 2 "$P") * $(u 0x3c 2 "$P") ))
MAXSEG=0 MAXSEC=0
while read -r typ off _ _ fsz _; do     # program headers: Type Offset VirtAddr PhysAddr FileSiz
  if [[ $typ == LOAD || $typ == NOTE ]] && ((off + fsz > MAXSEG)); then MAXSEG=$((off + fsz)); fi
done < <(readelf -lW "$P")
while read -r _ typ _ off size _; do    # sections: Name Type Address Off Size (hex, no 0x)
  [[ $typ != NOBITS && $off =~ ^[0-9a-f]+$ ]] || continue
  if ((16#$off + 16#$size > MAXSEC)); then MAXSEC=$((16#$off + 16#$size)); fi
done < <(readelf -SW "$P" | sed -n 's/^ *\[ *[0-9]*\] *//p' | grep -v '^NULL')
((MAXSEG <= ELFEND && MAXSEC <= ELFEND && ELFEND <= ULEN)) || die "unexpected ELF layout"
head -c "$ELFEND" "$P" > "$OUT/vmlinux.tmp"
readelf -h "$OUT/vmlinux.tmp" >/dev/null
# PVH entry: ELF note "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
readelf -nW "$OUT/vmlinux.tmp" | grep -Eq '^[[:space:]]*Xen[[:space:]]+0x[0-9a-f]+[[:space:]].*(\(0x00000012\)|PHYS32)' \
  || die "vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note"

# --- initramfs ---------------------------------------------------------------------
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc,lib/modules,newroot}
cp "$WORK/busybox/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list-full); do
  [[ -e $R/$a || -L $R/$a ]] || ln -s /bin/busybox "$R/$a"
done
mknod -m 600 "$R/dev/console" c 5 1     # the kernel opens it for init's stdio before /init runs
# Ember's own test tools (resources/guest-tools), static so they need nothing in the guest.
for t in "$TOOLS"/*.c; do
  gcc -static -O2 -s -o "$R/usr/bin/$(basename "$t" .c)" "$t" || die "cannot build $t (needs libc6-dev)"
done

# Debian signs its modules; checking a signature (RSA-4096) costs the guest ~10M instructions
# per module, about 150 ms of a ~0.55 s boot under TCG. The kernel does not enforce
# signatures (no MODULE_SIG_FORCE, no lockdown), so drop them: it only taints the kernel (E).
# Layout at the end of a signed .ko: PKCS#7 blob, 12-byte struct module_signature (sig_len is
# the big-endian u32 at offset 8), then the 28-byte marker "~Module signature appended~\n".
strip_sig() {
  local f=$1 n len
  n=$(stat -c %s "$f")
  [[ $(tail -c 28 "$f") == "~Module signature appended~" ]] || return 0
  len=$((16#$(od -An -tx1 -j $((n - 32)) -N 4 "$f" | tr -d ' \n')))
  truncate -s $((n - 28 - 12 - len)) "$f"
  [[ $(od -An -tx1 -N 4 "$f" | tr -d ' ') == 7f454c46 ]] || die "bad module after unsigning: $f"
}

# Modules: resolve dependencies on the full tree, copy only what is needed, re-run depmod.
K="$WORK/kernel" KM="lib/modules/$KVER"
depmod -b "$K" "$KVER"
load=() builtin=()
for m in "${WANT_MODULES[@]}"; do
  deps=$(modprobe -d "$K" -S "$KVER" --show-depends "$m") || die "module $m not found"
  if [[ $deps == "builtin "* ]]; then builtin+=("$m"); continue; fi
  load+=("$m")
  for p in $(awk '$1=="insmod"{print $2}' <<<"$deps"); do
    mkdir -p "$R/$(dirname "${p#"$K"/}")"; cp "$p" "$R/${p#"$K"/}"
    strip_sig "$R/${p#"$K"/}"
  done
done
cp "$K/$KM"/modules.{order,builtin,builtin.modinfo} "$R/$KM/"
depmod -b "$R" "$KVER"
printf '%s\n' "${load[@]}" > "$R/etc/ember-modules"
log "modules to load: ${load[*]}; built in: ${builtin[*]}"

# The guest's init, as /init in the initramfs and as /sbin/init on the root file system
# image. In the initramfs it loads the modules; if the kernel command line names a root
# device (root=, which Ember adds for a root drive) it mounts it and switches to its
# /sbin/init (Debian builds virtio as modules, so a root on virtio-blk needs this loader,
# as every Debian install has one); otherwise it goes on as the guest's init.
cat > "$R/init" <<'EOF'
#!/bin/sh
# Ember guest init (busybox sh). Prints EMBER-GUEST-INIT when ready (EMBER-ROOTFS-INIT when
# running from a root file system on a disk); then runs the kernel command line's
# ember_run="..." (passed to us as an environment variable) and prints EMBER-GUEST-EXIT
# <status>, or starts a shell on the console. Then powers the VM off.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /sys/kernel ] || mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
if [ ! -e /etc/ember-rootfs ]; then
    echo /sbin/modprobe > /proc/sys/kernel/modprobe
    while read -r m; do
        modprobe -q "$m" 2>/dev/null || echo "ember-init: module $m not loaded"
    done < /etc/ember-modules
    root=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^root=//p' | tail -n 1)
    if [ -n "$root" ]; then
        mode=rw; tr ' ' '\n' < /proc/cmdline | grep -qx ro && mode=ro
        for i in 1 2 3 4 5 6 7 8 9 10; do [ -b "$root" ] && break; sleep 0.2; done
        # A read-only device cannot replay a journal: fall back to not loading it.
        if mount -o "$mode" "$root" /newroot ||
           { [ "$mode" = ro ] && mount -o ro,noload "$root" /newroot; }; then
            mount --move /proc /newroot/proc
            mount --move /sys /newroot/sys
            mount --move /dev /newroot/dev
            exec switch_root /newroot /sbin/init
        fi
        echo "ember-init: cannot mount the root file system $root; staying in the initramfs"
    fi
fi
if [ -e /etc/ember-rootfs ]; then echo EMBER-ROOTFS-INIT; else echo EMBER-GUEST-INIT; fi
if [ -n "${ember_run+set}" ]; then
    sh -c "$ember_run"
    echo "EMBER-GUEST-EXIT $?"
else
    setsid cttyhack sh
fi
sync
# A clean root file system for the next boot, read-only ones included.
[ -e /etc/ember-rootfs ] && mount -o remount,ro / 2>/dev/null
# Without a power-off method (no ACPI S5) "poweroff -f" halts the CPU for good instead of
# returning, so use it only when ACPI offers S5; otherwise reboot (reboot=k / -no-reboot).
dmesg | grep -q 'ACPI: PM: (supports.* S5' && poweroff -f
reboot -f
EOF
chmod 755 "$R/init"
# Reproducible archive: fixed mtimes (the kernel image's), sorted names, no inode/dev numbers.
find "$R" -exec touch -h -r "$WORK/kernel/boot/vmlinuz-$KVER" {} +
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT/initramfs.cpio.tmp"

# --- rootfs.ext4: the same system as a root file system image for virtio-blk ------------
RFS="$WORK/rootfs"
rm -rf "$RFS"; cp -a "$R" "$RFS"
rm -rf "$RFS/lib/modules" "$RFS/etc/ember-modules"
rmdir "$RFS/newroot"; mkdir -p "$RFS/mnt"
mv "$RFS/init" "$RFS/sbin/init"
touch "$RFS/etc/ember-rootfs"
find "$RFS" -exec touch -h -r "$WORK/kernel/boot/vmlinuz-$KVER" {} +
mkfs.ext4 -q -F -d "$RFS" "$OUT/rootfs.ext4.tmp" 32M

# --- vm.json (Firecracker --config-file) -----------------------------------------------
cat > "$OUT/vm.json.tmp" <<EOF
{
  "boot-source": {
    "kernel_image_path": "$OUT/vmlinux",
    "initrd_path": "$OUT/initramfs.cpio",
    "boot_args": "$BOOT_ARGS"
  },
  "drives": [],
  "machine-config": {
    "vcpu_count": 1,
    "mem_size_mib": 256
  }
}
EOF

for f in "${OUTPUTS[@]}"; do mv -f "$OUT/$f.tmp" "$OUT/$f"; done
rm -rf "$WORK"
echo "$KPKG $KPKGVER $KVER $KFLAVOUR" > "$OUT/.stamp"
log "done: $OUT ($KVER)"
(cd "$OUT" && ls -l "${OUTPUTS[@]}" >&2)
