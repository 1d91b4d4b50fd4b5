//! The differential test's fast mode: random instruction sequences from a fixed seed run on
//! KVM and on Ember's software CPU, every architecturally defined result compared. Where
//! `/dev/kvm` is unusable, the software CPU is compared against the KVM results recorded in
//! `tests/data/difftest-corpus.bin` instead. `EMBER_DIFF_SEED=<n>` runs another seed (KVM
//! only); `EMBER_DIFF_CORPUS=1` uses the corpus even where KVM works. The soak mode is
//! `cargo run --release -p ember-tests --bin difftest`.

use ember_tests::difftest::corpus::{self, Corpus};
use ember_tests::difftest::gen;
use ember_tests::difftest::interp::InterpMachine;
use ember_tests::difftest::kvm::KvmMachine;
use ember_tests::difftest::session::{self, Options, Stats};
use ember_tests::difftest::{FAST_INSTRUCTIONS, FAST_SEED};
use ember_tests::kvm_or_skip;

fn seed() -> u64 {
    let Ok(s) = std::env::var("EMBER_DIFF_SEED") else {
        return FAST_SEED;
    };
    let s = s.trim().replace('_', "");
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("EMBER_DIFF_SEED={s} is not a number"))
}

fn shipped_corpus() -> Corpus {
    Corpus::load(&corpus::default_path())
        .unwrap_or_else(|e| panic!("{e} (record it: difftest --fast --record <file>)"))
}

fn check(stats: &Stats, what: &str, seed: u64) {
    println!("{what}: {stats}");
    assert!(
        stats.mismatches == 0,
        "{what}: the software CPU differs in {} of {} cases (seed {seed}; EMBER_DIFF_SEED={seed} \
         reproduces)\n\n{}",
        stats.mismatches,
        stats.cases,
        stats.reports.join("\n")
    );
    assert!(
        stats.instructions >= FAST_INSTRUCTIONS,
        "{what}: only {} instructions compared",
        stats.instructions
    );
}

fn replay(corpus: &Corpus) -> Stats {
    let mut interp = InterpMachine::new().expect("software CPU machine");
    session::run_corpus(corpus, &mut interp, 5)
}

#[test]
fn the_software_cpu_matches_kvm_or_its_recorded_results() {
    let seed = seed();
    println!("difftest seed {seed} ({seed:#x}); reproduce with EMBER_DIFF_SEED={seed}");
    let forced = std::env::var_os("EMBER_DIFF_CORPUS").is_some();
    let kvm = if forced {
        Err("EMBER_DIFF_CORPUS is set")
    } else if !kvm_or_skip("differential test against live KVM (the recorded corpus runs instead)")
    {
        Err("/dev/kvm is unusable")
    } else {
        Ok(KvmMachine::new().unwrap_or_else(|e| panic!("/dev/kvm answers, but: {e}")))
    };
    match kvm {
        Ok(mut kvm) => {
            println!("backend: KVM");
            let mut interp = InterpMachine::new().expect("software CPU machine");
            let opts = Options::new(seed, FAST_INSTRUCTIONS);
            // KVM that worked at the start and fails in the middle is a failure, not a reason
            // to compare against something else.
            let stats = session::run_kvm(&opts, &mut kvm, &mut interp)
                .unwrap_or_else(|e| panic!("KVM failed during the run: {e}"));
            check(&stats, "KVM vs software CPU", seed);
        }
        Err(why) => {
            println!("backend: recorded corpus ({why})");
            let corpus = shipped_corpus();
            assert_eq!(
                corpus.seed, seed,
                "the corpus was recorded with seed {}; other seeds need /dev/kvm",
                corpus.seed
            );
            check(
                &replay(&corpus),
                "recorded KVM results vs software CPU",
                seed,
            );
        }
    }
}

/// The corpus replays everywhere (where KVM works too), so a change that breaks it, or the
/// initial-state derivation it depends on, shows at once.
#[test]
fn the_recorded_corpus_replays_on_the_software_cpu() {
    let corpus = shipped_corpus();
    let config = gen::Config::default();
    assert_eq!(
        corpus.config, config,
        "the corpus was recorded with other generator settings"
    );
    let stale = corpus
        .entries
        .iter()
        .filter(|e| gen::generate(e.case.seed, &config).code != e.case.code)
        .count();
    if stale > 0 {
        println!(
            "note: {stale} of {} recorded cases differ from what the generator makes today; \
             they replay as recorded (re-record: difftest --fast --record <file>)",
            corpus.entries.len()
        );
    }
    check(
        &replay(&corpus),
        "recorded KVM results vs software CPU",
        corpus.seed,
    );
}
