//! A vCPU always stops: whatever one long instruction or loop the guest is in (REP string
//! instructions over RAM, MMIO and ports with a 4 GiB count, `cli; hlt`, a `cli` loop),
//! SIGTERM ends the VMM with status 143 and every vCPU thread joins; and an interrupt reaches
//! the guest in the middle of a REP instruction, as on hardware.

use std::time::Duration;

use ember_tests::{
    boot, config_json, kvm_or_skip, run_ember_on_terminal, run_ember_signalled, scratch_dir,
    test_guest, write_config,
};

/// A hang guard: the stalls themselves would run for minutes to hours.
const LIMIT: Duration = Duration::from_secs(60);

/// Every stall kind of `tests/guests/stall.S` that never ends by itself.
const STALLS: [char; 7] = ['l', 'i', 'o', 's', 'm', 'h', 'j'];

fn config(kind: char, accel: &str) -> std::path::PathBuf {
    let dir = scratch_dir(&format!("stop-{kind}-{accel}"));
    write_config(
        &dir,
        &config_json(&test_guest("stall"), None, &format!("stall={kind}"), 1, 64),
    )
}

fn sigterm_stops(accel: &str) {
    for kind in STALLS {
        let config = config(kind, accel);
        let args = [
            "--no-api",
            "--config-file",
            config.to_str().unwrap(),
            "--accel",
            accel,
        ];
        let prompt = format!("stall: {kind}\n");
        let run = run_ember_signalled(&args, &prompt, libc::SIGTERM, LIMIT);
        assert_eq!(run.code(), 128 + libc::SIGTERM, "stall={kind}: {run:#?}");
        assert!(
            !run.stderr.contains("did not stop"),
            "stall={kind}: {run:#?}"
        );
        assert!(!run.stdout.contains("finished"), "stall={kind}: {run:#?}");
    }
}

#[test]
fn sigterm_stops_the_software_cpu_in_any_long_instruction() {
    sigterm_stops("interp");
}

#[test]
fn sigterm_stops_kvm_in_any_long_instruction() {
    if kvm_or_skip("sigterm_stops_kvm_in_any_long_instruction") {
        sigterm_stops("kvm");
    }
}

#[test]
fn the_timer_interrupt_arrives_in_the_middle_of_a_rep_instruction() {
    for accel in ["interp", "kvm"] {
        if accel == "kvm" && !kvm_or_skip("the timer interrupt mid-REP under KVM") {
            continue;
        }
        let run = boot(&config('q', accel), &["--accel", accel], b"", LIMIT);
        assert!(
            run.stdout.ends_with("stall: interrupted\n"),
            "{accel}: {run:#?}"
        );
        assert_eq!(run.code(), 1, "{accel}: {run:#?}");
    }
}

/// A guest that never reads its UART (`cli; hlt`) while the user types far more than the
/// UART and the terminal can hold: Ctrl-A x still quits, with status 0.
#[test]
fn ctrl_a_x_quits_while_the_guest_ignores_its_console() {
    let config = config('h', "interp");
    let args = [
        "--no-api",
        "--config-file",
        config.to_str().unwrap(),
        "--accel",
        "interp",
    ];
    let mut typed = vec![b'a'; 64 * 1024];
    typed.extend_from_slice(&[0x01, b'x']);
    let run = run_ember_on_terminal(&args, "stall: h\n", &typed, LIMIT);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stderr.contains("input dropped"), "{run:#?}");
}
