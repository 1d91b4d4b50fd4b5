//! The chaos harness: boots the `chaos` test guest (random code at CPL 0, random writes to
//! every port and MMIO range Ember serves; see `tests/guests/chaos.S`) with a seed, lets it
//! run, stops the VMM with SIGTERM, and judges only the VMM: it must never panic, never die of
//! a signal, never hang while stopping, and end with a status that names a guest outcome.
//!
//! A seed fixes the random code, registers and port values; when the timer interrupts land
//! (and so which code runs how far) depends on the host, so a seed reproduces the inputs, not
//! an exact run.

use std::fmt;
use std::time::Duration;

use crate::{config_json, run_ember_for, scratch_dir, test_guest, write_config, Run};

/// Guest RAM: all of the 3 GiB below the MMIO gap, so that most random jumps land in RAM
/// (where random code goes on) rather than outside it (where fetching ends the VM). Only
/// what the guest touches is ever allocated.
const GUEST_MIB: u64 = 3072;

/// Longest a VMM may take to end after SIGTERM before the run counts as hung.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How a chaos run ended, when the VMM behaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running when SIGTERM came; the VMM stopped and exited 143.
    Stopped,
    /// The guest powered off or reset (random writes to the ACPI or i8042 ports): status 0.
    GuestEnded,
    /// The guest wrote the debug-exit port: an odd status.
    DebugExit(i32),
    /// The guest crashed itself (triple fault, a fetch from non-RAM, an instruction the
    /// hypervisor cannot run): status 4 with a vCPU fault report.
    GuestCrashed,
}

/// One run of the chaos guest.
#[derive(Debug)]
pub struct ChaosRun {
    /// The seed the guest ran.
    pub seed: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// How many times the guest restored its machine and started new random code (a lower
    /// bound: the guest reports every 256).
    pub resets: u64,
}

/// The VMM misbehaved: what it did, with everything it printed.
pub struct VmmFailure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub what: String,
    /// The VMM's standard error.
    pub stderr: String,
}

impl fmt::Display for VmmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos seed {}: {}\n--- VMM stderr ---\n{}",
            self.seed, self.what, self.stderr
        )
    }
}

/// Runs the chaos guest with `seed` on `accel` for about `run_for`, then stops it.
pub fn run_seed(seed: u64, accel: &str, run_for: Duration) -> Result<ChaosRun, VmmFailure> {
    let dir = scratch_dir(&format!("chaos-{accel}-{seed}"));
    let config = write_config(
        &dir,
        &config_json(
            &test_guest("chaos"),
            None,
            &format!("seed={seed}"),
            1,
            GUEST_MIB,
        ),
    );
    let args = [
        "--no-api",
        "--config-file",
        config.to_str().unwrap_or_default(),
        "--accel",
        accel,
    ];
    let run = run_ember_for(&args, "chaos: seed", run_for, run_for + STOP_GRACE);
    let _ = std::fs::remove_dir_all(&dir);
    judge(seed, &run)
}

fn judge(seed: u64, run: &Run) -> Result<ChaosRun, VmmFailure> {
    let fail = |what: String| VmmFailure {
        seed,
        what,
        stderr: run.stderr.clone(),
    };
    let Some(code) = run.status.code() else {
        return Err(fail(format!("the VMM died of a signal: {:?}", run.status)));
    };
    for sign in ["panicked", "did not stop within", "thread panicked"] {
        if run.stderr.contains(sign) {
            return Err(fail(format!("its stderr says {sign:?} (status {code})")));
        }
    }
    let outcome = match code {
        143 => Outcome::Stopped,
        0 => Outcome::GuestEnded,
        4 if run.stderr.contains("ember: vCPU 0 stopped:") => Outcome::GuestCrashed,
        c if c % 2 == 1 && c < 256 => Outcome::DebugExit(c),
        c => return Err(fail(format!("unexpected exit status {c}"))),
    };
    Ok(ChaosRun {
        seed,
        outcome,
        resets: reported_resets(&run.stdout),
    })
}

/// The last "chaos: K resets" count the guest printed (0 before the first).
fn reported_resets(console: &str) -> u64 {
    console
        .rmatch_indices(" resets\n")
        .find_map(|(end, _)| {
            let start = console[..end].rfind("chaos: ")? + "chaos: ".len();
            console[start..end].parse().ok()
        })
        .unwrap_or(0)
}

/// What a series of runs did, for the test's output and the soak's record.
#[derive(Debug, Default)]
pub struct Tally {
    /// Runs made.
    pub runs: u64,
    /// Resets reported over all runs.
    pub resets: u64,
    /// Runs per outcome: stopped, guest ended, debug exit, guest crashed.
    pub outcomes: [u64; 4],
}

impl Tally {
    /// Counts `run`.
    pub fn add(&mut self, run: &ChaosRun) {
        self.runs += 1;
        self.resets += run.resets;
        let i = match run.outcome {
            Outcome::Stopped => 0,
            Outcome::GuestEnded => 1,
            Outcome::DebugExit(_) => 2,
            Outcome::GuestCrashed => 3,
        };
        self.outcomes[i] += 1;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [stopped, ended, debug_exit, crashed] = self.outcomes;
        write!(
            f,
            "{} runs, at least {} resets; stopped by SIGTERM {stopped}, guest powered off or \
             reset {ended}, debug exit {debug_exit}, guest crashed itself {crashed}",
            self.runs, self.resets
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_reset_count_is_found_among_garbage() {
        let console = "chaos: seed 3\n\u{1}xchaos: 1024 resets\n\u{7f}chaos: 2048 resets\nzz";
        assert_eq!(reported_resets(console), 2048);
        assert_eq!(reported_resets("chaos: seed 3\n"), 0);
    }
}
