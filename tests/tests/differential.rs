//! The differential test's two suites (`difftest::suite`): random instruction sequences from a
//! fixed seed run on KVM and on Ember's software CPU, every architecturally defined result
//! compared. The fast suite draws integer, string, SSE and x87 instructions on random
//! operands; the floating-point suite draws SSE and x87 arithmetic on special operands in every
//! rounding and precision mode, with unmasked exceptions (#XM, #MF), so that the arithmetic
//! the software CPU runs on the host's FPU is checked against the guest-visible behaviour of
//! hardware. Both tiers of the software CPU run every suite: the interpreter, and the JIT with
//! every block translated before its first run. Where `/dev/kvm` is unusable, the software CPU is compared against the KVM
//! results recorded in `tests/data` instead. `EMBER_DIFF_SEED=<n>` runs another seed (KVM
//! only); `EMBER_DIFF_CORPUS=1` uses the corpus even where KVM works. The soak mode is
//! `cargo run --release -p ember-tests --bin difftest`.

use ember_tests::difftest::corpus::Corpus;
use ember_tests::difftest::gen;
use ember_tests::difftest::interp::{InterpMachine, Tier};
use ember_tests::difftest::kvm::KvmMachine;
use ember_tests::difftest::session::{self, Options, Stats};
use ember_tests::difftest::suite::{self, Suite};
use ember_tests::kvm_or_skip;

fn seed(suite: &Suite) -> u64 {
    let Ok(s) = std::env::var("EMBER_DIFF_SEED") else {
        return suite.seed;
    };
    let s = s.trim().replace('_', "");
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("EMBER_DIFF_SEED={s} is not a number"))
}

fn shipped_corpus(suite: &Suite) -> Corpus {
    Corpus::load(&suite.corpus_path())
        .unwrap_or_else(|e| panic!("{e} (record it: difftest {} --record <file>)", suite.flag))
}

fn check(stats: &Stats, what: &str, tier: Tier, seed: u64, suite: &Suite) {
    println!("{what} ({} suite, {tier}): {stats}", suite.name);
    assert!(
        stats.mismatches == 0,
        "{what}: the software CPU's {tier} differs in {} of {} cases (seed {seed}; \
         EMBER_DIFF_SEED={seed} reproduces)\n\n{}",
        stats.mismatches,
        stats.cases,
        stats.reports.join("\n")
    );
    assert!(
        stats.instructions >= suite.instructions,
        "{what}: only {} instructions compared",
        stats.instructions
    );
}

fn replay(corpus: &Corpus, tier: Tier) -> Stats {
    let mut interp = InterpMachine::with_tier(tier).expect("software CPU machine");
    session::run_corpus(corpus, &mut interp, 5)
}

/// Runs `suite` on KVM and the software CPU, or replays its recording where KVM is missing.
fn matches_kvm_or_its_recording(suite: &Suite) {
    let seed = seed(suite);
    println!("difftest seed {seed} ({seed:#x}); reproduce with EMBER_DIFF_SEED={seed}");
    let forced = std::env::var_os("EMBER_DIFF_CORPUS").is_some();
    let kvm = if forced {
        Err("EMBER_DIFF_CORPUS is set")
    } else if !kvm_or_skip(&format!(
        "differential test ({}) against live KVM (its recording runs instead)",
        suite.name
    )) {
        Err("/dev/kvm is unusable")
    } else {
        Ok(KvmMachine::new().unwrap_or_else(|e| panic!("/dev/kvm answers, but: {e}")))
    };
    match kvm {
        Ok(mut kvm) => {
            println!("backend: KVM");
            for tier in Tier::ALL {
                let mut interp = InterpMachine::with_tier(tier).expect("software CPU machine");
                let mut opts = Options::new(seed, suite.instructions);
                opts.config = suite.config;
                // KVM that worked at the start and fails in the middle is a failure, not a
                // reason to compare against something else.
                let stats = session::run_kvm(&opts, &mut kvm, &mut interp)
                    .unwrap_or_else(|e| panic!("KVM failed during the run: {e}"));
                check(&stats, "KVM vs software CPU", tier, seed, suite);
            }
        }
        Err(why) => {
            println!("backend: recorded corpus ({why})");
            let corpus = shipped_corpus(suite);
            assert_eq!(
                corpus.seed, seed,
                "the corpus was recorded with seed {}; other seeds need /dev/kvm",
                corpus.seed
            );
            for tier in Tier::ALL {
                check(
                    &replay(&corpus, tier),
                    "recorded KVM results vs software CPU",
                    tier,
                    seed,
                    suite,
                );
            }
        }
    }
}

/// The corpus of `suite` replays everywhere (where KVM works too), so a change that breaks
/// it, or the initial-state derivation it depends on, shows at once.
fn its_recording_replays(suite: &Suite) {
    let corpus = shipped_corpus(suite);
    assert_eq!(
        corpus.config, suite.config,
        "the corpus was recorded with other generator settings"
    );
    let stale = corpus
        .entries
        .iter()
        .filter(|e| gen::generate(e.case.seed, &suite.config).code != e.case.code)
        .count();
    if stale > 0 {
        println!(
            "note: {stale} of {} recorded cases differ from what the generator makes today; \
             they replay as recorded (re-record: difftest {} --record <file>)",
            corpus.entries.len(),
            suite.flag
        );
    }
    for tier in Tier::ALL {
        check(
            &replay(&corpus, tier),
            "recorded KVM results vs software CPU",
            tier,
            corpus.seed,
            suite,
        );
    }
}

#[test]
fn the_software_cpu_matches_kvm_or_its_recorded_results() {
    matches_kvm_or_its_recording(&suite::FAST);
}

#[test]
fn the_recorded_corpus_replays_on_the_software_cpu() {
    its_recording_replays(&suite::FAST);
}

#[test]
fn floating_point_matches_kvm_or_its_recorded_results() {
    matches_kvm_or_its_recording(&suite::FLOAT);
}

#[test]
fn the_recorded_floating_point_corpus_replays_on_the_software_cpu() {
    its_recording_replays(&suite::FLOAT);
}
