//! virtio-blk and virtio-rng with the default Debian guest: an ext4 image made on the host is
//! mounted, read and written by the guest and read back on the host; a read-only drive
//! refuses writes and stays byte-identical; DISCARD punches holes and WRITE_ZEROES zeroes;
//! GET_ID gives the drive ID; the guest reads /dev/hwrng. Bad drives are refused, naming the
//! drive and the file. The guest runs on the software CPU, and on KVM where this host's KVM
//! can run it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ember_tests::{
    boot, default_guest, kvm_runs_debian_or_skip, note_skip, scratch_dir, sha256, Run,
};

/// A hang guard: a boot with a few commands takes seconds.
const LIMIT: Duration = Duration::from_secs(240);
/// What the host puts in the image for the guest to read.
const HOST_TEXT: &str = "written by the host before boot";

/// An ext4 image of `mib` MiB holding `hello.txt`, made with `mkfs.ext4 -d`.
fn ext4_image(dir: &Path, name: &str, mib: u32) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), HOST_TEXT).unwrap();
    let image = dir.join(format!("{name}.ext4"));
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&image)
        .arg(format!("{mib}M"))
        .output()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(out.status.success(), "mkfs.ext4: {out:?}");
    image
}

/// A file's contents inside an ext4 image, read on the host with debugfs.
fn read_from_image(image: &Path, file: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs: {out:?}");
    out.stdout
}

/// Blocks of 512 bytes the file occupies on the host's disk.
fn allocated_sectors(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks()
}

/// Boots the default guest on `accel` with `drives` (JSON array body) and an entropy
/// device, running `command`.
fn boot_with_drives(dir: &Path, accel: &str, drives: &str, command: &str) -> Run {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}",
              "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet ember_run=\"{}\""}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 256}},
            "drives": [{drives}],
            "entropy": {{}}}}"#,
        default_guest("vmlinux").display(),
        default_guest("initramfs.cpio").display(),
        command
    );
    let config = dir.join("vm.json");
    std::fs::write(&config, json).unwrap();
    boot(&config, &["--accel", accel], b"", LIMIT)
}

/// The guest's commands: each line it prints starts with a tag the test looks for.
const GUEST_COMMANDS: &str = "mkdir -p /mnt/rw /mnt/ro; \
    mount /dev/vda /mnt/rw && echo READ-RW $(cat /mnt/rw/hello.txt); \
    dd if=/dev/hwrng of=/mnt/rw/random.bin bs=4096 count=256 2>/dev/null; \
    echo GUEST-SHA $(sha256sum /mnt/rw/random.bin); \
    echo guest-text > /mnt/rw/guest.txt; sync; umount /mnt/rw; \
    mount /dev/vdb /mnt/ro && echo READ-RO $(cat /mnt/ro/hello.txt); \
    touch /mnt/ro/new 2>/dev/null || echo RO-TOUCH-REFUSED; \
    dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null || echo RO-DD-REFUSED; \
    echo SERIALS $(cat /sys/block/vda/serial) $(cat /sys/block/vdb/serial); \
    blkdiscard -o 0 -l 4194304 /dev/vdc && echo DISCARDED; \
    ember-zeroout /dev/vdc 4194304 4194304 && echo ZEROED; \
    echo ZERO-SHA $(dd if=/dev/vdc bs=1M skip=4 count=4 2>/dev/null | sha256sum); \
    echo RNG $(head -c 32 /dev/hwrng | wc -c) $(head -c 32 /dev/hwrng | md5sum) \
    $(head -c 32 /dev/hwrng | md5sum)";

fn disks_work_on(accel: &str) {
    let dir = scratch_dir(&format!("virtio-blk-{accel}"));
    let rw = ext4_image(&dir, "rw", 32);
    let ro = ext4_image(&dir, "ro", 16);
    let ro_before = std::fs::read(&ro).unwrap();
    let scratch = dir.join("scratch.raw");
    std::fs::write(&scratch, vec![0xa5u8; 8 << 20]).unwrap();
    let drives = format!(
        r#"{{"drive_id": "rootish", "path_on_host": "{}", "is_root_device": false}},
           {{"drive_id": "frozen", "path_on_host": "{}", "is_root_device": false,
             "is_read_only": true}},
           {{"drive_id": "scratch", "path_on_host": "{}", "is_root_device": false}}"#,
        rw.display(),
        ro.display(),
        scratch.display()
    );
    let before_discard = allocated_sectors(&scratch);
    let run = boot_with_drives(&dir, accel, &drives, GUEST_COMMANDS);
    assert_eq!(run.code(), 0, "{run:#?}");
    let out = &run.stdout;
    assert!(out.contains(&format!("READ-RW {HOST_TEXT}")), "{run:#?}");
    assert!(out.contains(&format!("READ-RO {HOST_TEXT}")), "{run:#?}");
    assert!(out.contains("RO-TOUCH-REFUSED"), "{run:#?}");
    assert!(out.contains("RO-DD-REFUSED"), "{run:#?}");
    assert!(out.contains("SERIALS rootish frozen"), "{run:#?}");
    assert!(
        out.contains("DISCARDED") && out.contains("ZEROED"),
        "{run:#?}"
    );

    // What the guest wrote is on the host's disk after power-off: the same bytes.
    assert_eq!(read_from_image(&rw, "/guest.txt"), b"guest-text\n");
    let random = read_from_image(&rw, "/random.bin");
    assert_eq!(random.len(), 1 << 20);
    let guest_sha = out
        .lines()
        .find_map(|l| l.strip_prefix("GUEST-SHA "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no GUEST-SHA line: {run:#?}"));
    assert_eq!(
        guest_sha,
        sha256(&random),
        "the guest's file differs on the host"
    );
    assert!(
        random.iter().any(|&b| b != 0),
        "the entropy device gave zeros"
    );

    // The read-only image is untouched, byte for byte.
    assert!(
        std::fs::read(&ro).unwrap() == ro_before,
        "the read-only image changed"
    );

    // DISCARD punched a hole (where the host file system can) and WRITE_ZEROES zeroed.
    let scratch_now = std::fs::read(&scratch).unwrap();
    assert!(
        scratch_now[..4 << 20].iter().all(|&b| b == 0),
        "discarded range"
    );
    assert!(
        scratch_now[4 << 20..].iter().all(|&b| b == 0),
        "zeroed range"
    );
    assert!(
        allocated_sectors(&scratch) < before_discard,
        "no space was given back: {} then {} sectors",
        before_discard,
        allocated_sectors(&scratch)
    );
    let zero_sha = sha256(&vec![0u8; 4 << 20]);
    assert!(out.contains(&format!("ZERO-SHA {zero_sha}")), "{run:#?}");
    let rng: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("RNG "))
        .unwrap_or_else(|| panic!("no RNG line: {run:#?}"))
        .split_whitespace()
        .collect();
    // "32", then two md5sum outputs ("<hash> -") of two reads, which differ.
    assert_eq!(rng.len(), 5, "{rng:?}");
    assert_eq!(rng[0], "32", "{rng:?}");
    assert_ne!(
        rng[1], rng[3],
        "two reads of /dev/hwrng were equal: {rng:?}"
    );
}

#[test]
fn disks_and_entropy_work_on_the_software_cpu() {
    disks_work_on("interp");
}

#[test]
fn disks_and_entropy_work_on_kvm() {
    const TEST: &str = "disks_and_entropy_work_on_kvm";
    if !kvm_runs_debian_or_skip(TEST) {
        return;
    }
    disks_work_on("kvm");
}

/// One config and the message its refusal must contain.
fn refused(dir: &Path, drives: &str, needles: &[&str]) {
    let run = boot_with_drives(dir, "interp", drives, "true");
    assert_eq!(run.code(), 2, "{run:#?}");
    for needle in needles {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {run:#?}");
    }
    assert!(!run.stdout.contains("EMBER-GUEST-INIT"), "{run:#?}");
}

#[test]
fn unusable_drives_are_refused_naming_drive_and_file() {
    let dir = scratch_dir("virtio-blk-bad");
    let odd = dir.join("odd.raw");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let good = dir.join("good.raw");
    std::fs::write(&good, vec![0u8; 1 << 20]).unwrap();
    let drive = |id: &str, path: &Path, extra: &str| {
        format!(
            r#"{{"drive_id": "{id}", "path_on_host": "{}", "is_root_device": false{extra}}}"#,
            path.display()
        )
    };
    refused(
        &dir,
        &drive("odd", &odd, ""),
        &["odd", "odd.raw", "not a multiple of 512"],
    );
    refused(
        &dir,
        &format!("{}, {}", drive("one", &good, ""), drive("two", &good, "")),
        &["two", "good.raw", "in use"],
    );
    // A file nobody may write (immutable, which binds root too), configured writable.
    let frozen = dir.join("immutable.raw");
    std::fs::write(&frozen, vec![0u8; 1 << 20]).unwrap();
    let chattr = |flag: &str| Command::new("chattr").arg(flag).arg(&frozen).status();
    if chattr("+i").is_ok_and(|s| s.success()) {
        refused(
            &dir,
            &drive("frozen", &frozen, ""),
            &["frozen", "immutable.raw", "for writing"],
        );
        let _ = chattr("-i");
    } else {
        note_skip(
            "unusable_drives_are_refused_naming_drive_and_file",
            "the writable-but-read-only-file case: chattr +i does not work on this file system",
        );
    }
    refused(
        &dir,
        &drive("gone", &dir.join("missing.raw"), ""),
        &["drives[0].path_on_host", "missing.raw"],
    );
}

/// Boots the guest with `rootfs` as its root drive (the initramfs only loads the virtio
/// modules and switches to `root=`, which the VMM adds), running `command` from the disk.
fn boot_from_disk(dir: &Path, rootfs: &Path, read_only: bool, command: &str) -> Run {
    let drive = format!(
        r#"{{"drive_id": "rootfs", "path_on_host": "{}", "is_root_device": true,
             "is_read_only": {read_only}}}"#,
        rootfs.display()
    );
    boot_with_drives(dir, "interp", &drive, command)
}

/// The root file system is the guest's disk: `/` is /dev/vda, writable, and what the guest
/// writes there is in the image afterwards; a read-only root drive is mounted read-only.
#[test]
fn the_guest_runs_from_a_root_file_system_on_virtio_blk() {
    let dir = scratch_dir("virtio-blk-rootfs");
    let rootfs = dir.join("rootfs.ext4");
    std::fs::copy(default_guest("rootfs.ext4"), &rootfs).unwrap();
    let run = boot_from_disk(
        &dir,
        &rootfs,
        false,
        "grep ^/dev/vda /proc/mounts; echo from-the-rootfs > /written.txt",
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("EMBER-ROOTFS-INIT"), "{run:#?}");
    assert!(run.stdout.contains("/dev/vda / ext4 rw"), "{run:#?}");
    assert_eq!(
        read_from_image(&rootfs, "/written.txt"),
        b"from-the-rootfs\n"
    );

    let before = std::fs::read(&rootfs).unwrap();
    let run = boot_from_disk(
        &dir,
        &rootfs,
        true,
        "grep ^/dev/vda /proc/mounts; touch /x 2>/dev/null || echo ROOT-READ-ONLY",
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("/dev/vda / ext4 ro"), "{run:#?}");
    assert!(run.stdout.contains("ROOT-READ-ONLY"), "{run:#?}");
    assert!(
        std::fs::read(&rootfs).unwrap() == before,
        "a read-only root changed"
    );
}

/// A number the guest printed after `tag` (the first word after it).
fn tagged_number(run: &Run, tag: &str, word: usize) -> f64 {
    run.stdout
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(tag))
        .and_then(|l| l.split_whitespace().nth(word))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number {word} after {tag:?}: {run:#?}"))
}

/// A drive with a bandwidth rate limiter delivers every byte, no faster than its token bucket
/// refills: the guest reads the whole 6 MiB drive with O_DIRECT (so every byte comes from the
/// device) through a 1 MiB bucket refilled in 500 ms. The bucket holds at most 1 MiB when the
/// read starts, so the other 5 MiB take at least 2.5 s of the guest's clock; the test asks
/// for 2 s. Only this lower bound is checked, never an upper one, and only while the guest
/// keeps the TSC as its clock: on a host too busy to deliver its timer ticks on time, the
/// guest kernel's watchdog can switch it to jiffies, which then lose time.
#[test]
fn a_bandwidth_rate_limiter_holds_reads_to_its_rate() {
    const TEST: &str = "a_bandwidth_rate_limiter_holds_reads_to_its_rate";
    const MIB: usize = 1 << 20;
    let dir = scratch_dir("virtio-blk-limiter");
    let image = dir.join("limited.raw");
    let data: Vec<u8> = (0..6 * MIB as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    std::fs::write(&image, &data).unwrap();
    let drive = format!(
        r#"{{"drive_id": "limited", "path_on_host": "{}", "is_root_device": false,
             "rate_limiter": {{"bandwidth": {{"size": {MIB}, "refill_time": 500}}}}}}"#,
        image.display()
    );
    // Only dd is timed: the checksum is slow on the software CPU.
    let command = "read -r t0 _ < /proc/uptime; \
        dd if=/dev/vda of=/tmp/vda bs=1M iflag=direct 2>/dev/null; \
        read -r t1 _ < /proc/uptime; echo LIMITED-TIME $t0 $t1; \
        echo LIMITED-SHA $(sha256sum < /tmp/vda); \
        echo LIMITED-CLOCK $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)";
    let run = boot_with_drives(&dir, "interp", &drive, command);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("LIMITED-SHA {} -", sha256(&data))),
        "the guest did not read the drive's 6 MiB: {run:#?}"
    );
    let seconds = tagged_number(&run, "LIMITED-TIME ", 1) - tagged_number(&run, "LIMITED-TIME ", 0);
    let clock = run
        .stdout
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("LIMITED-CLOCK "))
        .unwrap_or_else(|| panic!("no LIMITED-CLOCK line: {run:#?}"));
    if !clock.starts_with("tsc") {
        note_skip(
            TEST,
            &format!("the time check: the guest's clock source became {clock} (host too busy)"),
        );
        return;
    }
    assert!(
        seconds >= 2.0,
        "6 MiB read in {seconds} s through a 2 MiB/s limiter: {run:#?}"
    );
}
