//! The chaos test: hostile guests (random code at CPL 0 that keeps going through its own
//! exception handler, random writes to every port and MMIO range Ember serves) on the
//! software CPU and on KVM. The VMM never panics, never dies of a signal and never hangs on
//! stop. `EMBER_CHAOS_SEED=<n>` runs that one seed; the soak mode is
//! `cargo run --release -p ember-tests --bin chaos -- --help`.

use std::time::Duration;

use ember_tests::chaos::{run_seed, Tally};
use ember_tests::{kvm_is_pvm, kvm_or_skip, note_skip};

/// Seeds `make test` runs on each backend (fixed, so a failure reproduces).
const SEEDS: std::ops::Range<u64> = 1..13;
/// How long each run may go before SIGTERM.
const RUN_FOR: Duration = Duration::from_millis(1500);

fn seeds() -> Vec<u64> {
    match std::env::var("EMBER_CHAOS_SEED") {
        Ok(s) => vec![s.trim().parse().expect("EMBER_CHAOS_SEED is a number")],
        Err(_) => SEEDS.collect(),
    }
}

fn chaos_on(test: &str, accel: &str) {
    let mut tally = Tally::default();
    for seed in seeds() {
        match run_seed(seed, accel, RUN_FOR) {
            Ok(run) => {
                println!(
                    "{accel} seed {seed}: {:?}, {} resets",
                    run.outcome, run.resets
                );
                tally.add(&run);
            }
            Err(failure) => panic!("{failure}\n(EMBER_CHAOS_SEED={seed} reruns it)"),
        }
    }
    println!("{accel}: {tally}");
    if accel == "kvm" && kvm_is_pvm() && tally.resets == 0 {
        note_skip(
            test,
            "KVM chaos runs stopped at their first random instructions: this host's kvm_pvm \
             emulates CPL-0 code and cannot emulate most of it (hardware KVM runs it)",
        );
    } else if seeds().len() > 1 {
        assert!(
            tally.resets > 0,
            "the chaos guests never got going: {tally}"
        );
    }
}

#[test]
fn hostile_guests_never_break_the_software_cpu_vmm() {
    chaos_on("hostile_guests_never_break_the_software_cpu_vmm", "interp");
}

#[test]
fn hostile_guests_never_break_the_kvm_vmm() {
    const TEST: &str = "hostile_guests_never_break_the_kvm_vmm";
    if kvm_or_skip(TEST) {
        chaos_on(TEST, "kvm");
    }
}
