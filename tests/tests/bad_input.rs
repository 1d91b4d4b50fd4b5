//! Bad configs, images and flags: a non-zero exit status and a message naming the problem.

use std::time::Duration;

use ember_tests::{
    boot, config_json, default_guest, run_ember, scratch_dir, test_guest, write_config, Run,
};

const LIMIT: Duration = Duration::from_secs(30);
const EXIT_BAD_INPUT: i32 = 2;

fn boot_json(test: &str, json: &str) -> Run {
    let dir = scratch_dir(test);
    boot(
        &write_config(&dir, json),
        &["--accel", "interp"],
        b"",
        LIMIT,
    )
}

fn assert_refused(run: &Run, needles: &[&str]) {
    assert_eq!(run.code(), EXIT_BAD_INPUT, "{run:#?}");
    assert!(run.stdout.is_empty(), "nothing may run: {run:#?}");
    for needle in needles {
        assert!(run.stderr.contains(needle), "missing {needle:?}: {run:#?}");
    }
}

fn guest() -> String {
    test_guest("modes").display().to_string()
}

#[test]
fn unknown_key_is_named() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64, "cpus": 2}}}}"#,
        guest()
    );
    let run = boot_json("unknown-key", &json);
    assert_refused(&run, &["vm.json", "machine-config", "unknown field `cpus`"]);
}

#[test]
fn zero_vcpus_names_field_and_range() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}},
            "machine-config": {{"vcpu_count": 0, "mem_size_mib": 64}}}}"#,
        guest()
    );
    let run = boot_json("zero-vcpus", &json);
    assert_refused(&run, &["machine-config.vcpu_count", "1..=32"]);
}

#[test]
fn missing_kernel_names_the_path() {
    let json = r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#;
    let run = boot_json("missing-kernel", json);
    assert_refused(&run, &["/nonexistent/vmlinux", "No such file"]);
}

#[test]
fn missing_initrd_names_the_path() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "/nonexistent/initrd"}}}}"#,
        guest()
    );
    let run = boot_json("missing-initrd", &json);
    assert_refused(&run, &["initrd /nonexistent/initrd"]);
}

#[test]
fn malformed_json_gives_the_position() {
    let run = boot_json(
        "malformed",
        "{\"boot-source\": {\n  \"kernel_image_path\": }\n}",
    );
    assert_refused(&run, &["vm.json", "line 2"]);
}

#[test]
fn memory_beyond_the_host_names_field_and_range() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 100000000}}}}"#,
        guest()
    );
    let run = boot_json("huge-memory", &json);
    assert_refused(&run, &["machine-config.mem_size_mib", "out of range"]);
}

#[test]
fn sections_without_a_device_are_refused() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}},
            "mmds-config": {{"network_interfaces": ["eth0"]}}}}"#,
        guest()
    );
    let run = boot_json("mmds", &json);
    assert_refused(&run, &["mmds-config", "not supported yet"]);
}

#[test]
fn garbage_kernel_is_not_a_kernel() {
    let dir = scratch_dir("garbage-kernel");
    let kernel = dir.join("garbage");
    std::fs::write(&kernel, vec![0x42u8; 1 << 16]).unwrap();
    let config = write_config(&dir, &config_json(&kernel, None, "", 1, 64));
    let run = boot(&config, &["--accel", "interp"], b"", LIMIT);
    assert_refused(&run, &["garbage", "not a kernel image"]);
}

#[test]
fn truncated_kernel_is_refused_before_any_vcpu_runs() {
    let dir = scratch_dir("truncated-kernel");
    let full = std::fs::read(test_guest("modes")).unwrap();
    let kernel = dir.join("truncated.elf");
    std::fs::write(&kernel, &full[..full.len() / 2]).unwrap();
    let config = write_config(&dir, &config_json(&kernel, None, "", 1, 64));
    let run = boot(&config, &["--accel", "interp"], b"", LIMIT);
    assert_refused(&run, &["truncated.elf", "truncated"]);
}

#[test]
fn kernel_larger_than_memory_is_refused() {
    let dir = scratch_dir("kernel-too-big");
    // The Debian vmlinux loads at 16 MiB and is tens of MiB long.
    let vmlinux = default_guest("vmlinux");
    let config = write_config(&dir, &config_json(&vmlinux, None, "", 1, 24));
    let run = boot(&config, &["--accel", "interp"], b"", LIMIT);
    assert_refused(&run, &["vmlinux", "24 MiB", "mem_size_mib"]);
}

#[test]
fn missing_config_file_names_it() {
    let run = run_ember(
        &["--no-api", "--config-file", "/nonexistent/vm.json"],
        b"",
        LIMIT,
    );
    assert_refused(&run, &["/nonexistent/vm.json"]);
}

#[test]
fn no_api_needs_a_config_file_and_excludes_the_api_socket() {
    let run = run_ember(&["--no-api"], b"", LIMIT);
    assert_refused(&run, &["--no-api", "--config-file"]);
    let run = run_ember(&["--no-api", "--api-sock", "/tmp/ember.sock"], b"", LIMIT);
    assert_refused(&run, &["--api-sock"]);
}

#[test]
fn unusable_kvm_device_is_named() {
    let dir = scratch_dir("no-kvm");
    let config = write_config(&dir, &config_json(&test_guest("modes"), None, "", 1, 64));
    let run = boot(
        &config,
        &["--accel", "kvm", "--kvm-device", "/nonexistent/kvm"],
        b"",
        LIMIT,
    );
    assert_eq!(run.code(), 4, "{run:#?}");
    assert!(run.stderr.contains("/nonexistent/kvm"), "{run:#?}");
}

#[test]
fn help_explains_every_flag_and_version_prints() {
    let run = run_ember(&["--help"], b"", LIMIT);
    assert_eq!(run.code(), 0);
    for flag in [
        "--config-file",
        "--no-api",
        "--api-sock",
        "--accel",
        "--log-level",
        "--kvm-device",
        "--version",
        "Exit status",
    ] {
        assert!(run.stdout.contains(flag), "--help lacks {flag}: {run:#?}");
    }
    let run = run_ember(&["--version"], b"", LIMIT);
    assert_eq!(run.code(), 0);
    assert!(run.stdout.starts_with("ember "), "{run:#?}");
    let run = run_ember(&["--accel", "tcg"], b"", LIMIT);
    assert_eq!(run.code(), 2, "{run:#?}");
    assert!(run.stderr.contains("tcg"), "{run:#?}");
}

/// A FIFO in `dir` named `name` (nobody ever writes to it).
fn fifo(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
    path.display().to_string()
}

#[test]
fn config_files_that_are_not_small_regular_files_are_refused_without_hanging() {
    let dir = scratch_dir("config-not-a-file");
    let huge = dir.join("huge.json");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(1 << 30).unwrap(); // sparse: 1 GiB of apparent size, no disk
    for (path, why) in [
        (fifo(&dir, "vm.fifo"), "FIFO"),
        ("/dev/zero".to_string(), "character device"),
        (dir.display().to_string(), "directory"),
        (huge.display().to_string(), "more than the 1048576 allowed"),
    ] {
        let run = run_ember(&["--no-api", "--config-file", &path], b"", LIMIT);
        assert_refused(&run, &[&path, why]);
    }
}

#[test]
fn kernels_and_initrds_that_are_not_regular_files_are_refused_without_hanging() {
    let dir = scratch_dir("image-not-a-file");
    let fifo = fifo(&dir, "image.fifo");
    let image = |kernel: &str, initrd: Option<&str>| {
        let initrd = initrd
            .map(|p| format!(r#", "initrd_path": "{p}""#))
            .unwrap_or_default();
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{kernel}"{initrd}}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}}}"#
        )
    };
    for (json, path, why) in [
        (image(&fifo, None), fifo.as_str(), "FIFO"),
        (image("/dev/zero", None), "/dev/zero", "character device"),
        (image(&guest(), Some(&fifo)), fifo.as_str(), "FIFO"),
        (
            image(&guest(), Some("/dev/urandom")),
            "/dev/urandom",
            "character device",
        ),
    ] {
        let run = boot_json("image-not-a-file", &json);
        assert_refused(&run, &[path, why]);
    }
}
