//! A hostile virtio driver (`tests/guests/virtio.S`) on both backends: it breaks the block
//! device in every way the transport and the chain walker refuse (a descriptor loop, a buffer
//! outside RAM, an avail index far ahead, a readable buffer after a writable one, an invalid
//! queue size, a feature never offered), while the entropy device carries on; each time the
//! device must say it needs a reset, and after a reset it must work again. Under KVM this also
//! runs the ioeventfd path of the queue notifications.

use std::time::Duration;

use ember_tests::{boot, kvm_could_not_emulate, kvm_or_skip, scratch_dir, test_guest, Run};

const LIMIT: Duration = Duration::from_secs(120);

/// The lines the guest prints when every check passes.
const EXPECTED: [&str; 11] = [
    "rng: ok",
    "blk: read ok",
    "blk: loop refused",
    "blk: outside RAM refused",
    "blk: avail jump refused",
    "blk: wrong order refused",
    "blk: bad queue refused",
    "blk: bad features refused",
    "rng: still ok",
    "blk: read ok after reset",
    "virtio: PASS",
];

fn run(accel: &str) -> Run {
    let dir = scratch_dir(&format!("hostile-virtio-{accel}"));
    let disk = dir.join("disk.raw");
    let mut image = vec![0x5au8; 512];
    image.resize(1 << 20, 0);
    std::fs::write(&disk, image).unwrap();
    let config = dir.join("vm.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}},
                "drives": [{{"drive_id": "hostile", "path_on_host": "{}",
                             "is_root_device": false}}],
                "entropy": {{}}}}"#,
            test_guest("virtio").display(),
            disk.display()
        ),
    )
    .unwrap();
    boot(&config, &["--accel", accel], b"", LIMIT)
}

fn check(accel: &str, run: &Run) {
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines, EXPECTED, "{accel}: {run:#?}");
    assert_eq!(run.code(), 1, "{accel}: {run:#?}");
    for reason in [
        "loop",
        "outside guest RAM",
        "available ring",
        "readable buffer after",
    ] {
        assert!(
            run.stderr.contains(reason),
            "{accel}: no log line about {reason}: {run:#?}"
        );
    }
}

#[test]
fn a_hostile_driver_breaks_only_its_device_on_the_software_cpu() {
    check("interp", &run("interp"));
}

#[test]
fn a_hostile_driver_breaks_only_its_device_under_kvm() {
    const TEST: &str = "a_hostile_driver_breaks_only_its_device_under_kvm";
    if !kvm_or_skip(TEST) {
        return;
    }
    let run = run("kvm");
    if !kvm_could_not_emulate(TEST, &run) {
        check("kvm", &run);
    }
}
