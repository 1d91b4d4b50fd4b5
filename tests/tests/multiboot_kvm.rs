//! Tiny Multiboot guests (tests/guests) under KVM: mode switches, paging, exceptions, serial
//! input and output, unassigned I/O, and exit statuses carried from the debug-exit port.

use std::time::Duration;

use ember_tests::{
    boot, config_json, host_memory_mib, kvm_could_not_emulate, kvm_or_skip, note_skip, scratch_dir,
    test_guest, write_config, Run,
};

const LIMIT: Duration = Duration::from_secs(60);

fn run_guest(name: &str, boot_args: &str, stdin: &[u8], extra: &[&str]) -> Run {
    run_guest_with(name, boot_args, 64, stdin, extra)
}

fn run_guest_with(name: &str, boot_args: &str, mem_mib: u64, stdin: &[u8], extra: &[&str]) -> Run {
    let dir = scratch_dir(&format!("mb-{name}-{mem_mib}"));
    let config = write_config(
        &dir,
        &config_json(&test_guest(name), None, boot_args, 1, mem_mib),
    );
    let mut args = vec!["--accel", "kvm"];
    args.extend_from_slice(extra);
    boot(&config, &args, stdin, LIMIT)
}

#[test]
fn modes_guest_switches_modes_and_its_exit_code_becomes_the_status() {
    if !kvm_or_skip("modes_guest_switches_modes_and_its_exit_code_becomes_the_status") {
        return;
    }
    let run = run_guest("modes", "exit=42", b"", &[]);
    assert_eq!(
        run.stdout, "pm32: ok\nreal: ok\nlong: ok\nexit code 42\n",
        "{run:#?}"
    );
    assert_eq!(run.code(), (42 << 1) | 1, "{run:#?}");
}

#[test]
fn modes_guest_without_exit_argument_exits_zero() {
    if !kvm_or_skip("modes_guest_without_exit_argument_exits_zero") {
        return;
    }
    let run = run_guest("modes", "", b"", &[]);
    assert!(run.stdout.ends_with("exit code 0\n"), "{run:#?}");
    assert_eq!(run.code(), 1);
}

#[test]
fn guest_with_16_gib_of_memory_above_the_mmio_gap_runs() {
    const TEST: &str = "guest_with_16_gib_of_memory_above_the_mmio_gap_runs";
    if !kvm_or_skip(TEST) {
        return;
    }
    // Ember refuses more guest memory than the host has; the guest touches little of it.
    let host_mib = host_memory_mib();
    if host_mib < 16 << 10 {
        note_skip(
            TEST,
            &format!("skipped, this host has {host_mib} MiB of RAM, under 16 GiB"),
        );
        return;
    }
    let run = run_guest_with("modes", "exit=3", 16 << 10, b"", &[]);
    assert!(run.stdout.ends_with("exit code 3\n"), "{run:#?}");
    assert_eq!(run.code(), 7);
}

#[test]
fn paging_guest_sees_faults_with_right_cr2_and_error_codes() {
    if !kvm_or_skip("paging_guest_sees_faults_with_right_cr2_and_error_codes") {
        return;
    }
    let run = run_guest("paging", "", b"", &[]);
    assert!(run.stdout.contains("err=0x11"), "{run:#?}");
    assert!(run.stdout.ends_with("paging: PASS\n"), "{run:#?}");
    assert!(!run.stdout.contains("FAIL"), "{run:#?}");
    assert_eq!(run.code(), 1);
}

#[test]
fn unassigned_port_and_mmio_read_all_ones_and_are_logged_once() {
    if !kvm_or_skip("unassigned_port_and_mmio_read_all_ones_and_are_logged_once") {
        return;
    }
    let run = run_guest("probe", "", b"", &["--log-level", "info"]);
    assert!(
        run.stdout
            .contains("port 0x2f0: inb=0xff inw=0xffff inl=0xffffffff\n"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("mmio 0xd0000000: readb=0xff readw=0xffff readl=0xffffffff\n"),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr.matches("unassigned port 0x2f0").count(),
        1,
        "{run:#?}"
    );
    assert_eq!(
        run.stderr
            .matches("unassigned MMIO address 0xd0000000")
            .count(),
        1,
        "{run:#?}"
    );
    assert_eq!(run.code(), 1);
}

#[test]
fn serial_input_reaches_the_guest() {
    if !kvm_or_skip("serial_input_reaches_the_guest") {
        return;
    }
    let run = run_guest("echo", "", b"hello\nq", &[]);
    assert!(run.stdout.starts_with("echo: ready\n"), "{run:#?}");
    assert!(run.stdout.contains("hello"), "{run:#?}");
    assert!(run.stdout.ends_with("bye\n"), "{run:#?}");
    assert_eq!(run.code(), 1);
}

/// On hardware KVM every exception test passes. A nested kvm_pvm host (and only such a host)
/// cannot run `int3`; there the VMM must stop at once and report it, registers and
/// instruction included.
#[test]
fn exceptions_guest_passes_or_the_failure_is_reported() {
    if !kvm_or_skip("exceptions_guest_passes_or_the_failure_is_reported") {
        return;
    }
    let run = run_guest("exceptions", "", b"", &[]);
    assert!(
        run.stdout
            .contains("#GP bad selector: vector=13 err=0x1000 rip=+0 ok"),
        "{run:#?}"
    );
    if kvm_could_not_emulate("exceptions_guest_passes_or_the_failure_is_reported", &run) {
        for needle in [
            "KVM_EXIT_INTERNAL_ERROR",
            "RIP 0x",
            "(64-bit mode)",
            "instruction: cc",
            "(int3)",
            "RAX 0x",
            "EFER 0x",
        ] {
            assert!(run.stderr.contains(needle), "missing {needle}: {run:#?}");
        }
    } else {
        assert!(run.stdout.ends_with("exceptions: PASS\n"), "{run:#?}");
        assert_eq!(run.code(), 1, "{run:#?}");
    }
}
