//! The differential soak test: long runs of random instruction sequences on KVM and on
//! Ember's software CPU, compared state for state.
//!
//! ```text
//! difftest [--instructions N] [--seed N] [--groups int,string,sse,x87,ssefp,x87fp]
//!          [--record FILE] [--max-reports N] [--no-bisect] [--min-len N] [--max-len N]
//! difftest --case SEED [--groups ...]      one case, with its full report
//! difftest --corpus FILE                   replay a recorded corpus (no KVM needed)
//! difftest --fast --record tests/data/difftest-corpus.bin
//! difftest --float --record tests/data/difftest-float-corpus.bin
//!                                          re-record the corpora the tests ship with
//! ```
//!
//! `--fast` and `--float` run what the differential test's two suites run (their seed,
//! instruction count and groups; see `difftest::suite`).
//!
//! Exit status: 0 when everything matched, 1 on mismatches, 2 for bad usage, 3 when KVM or
//! the corpus is unusable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ember_tests::difftest::corpus::Corpus;
use ember_tests::difftest::gen::{self, Groups};
use ember_tests::difftest::interp::InterpMachine;
use ember_tests::difftest::kvm::KvmMachine;
use ember_tests::difftest::session::{self, Options};
use ember_tests::difftest::state::InitialState;
use ember_tests::difftest::suite::{self, Suite};
use ember_tests::difftest::{compare, flags, report};

const USAGE: &str = "usage: difftest [--instructions N] [--seed N] \
[--groups int,string,sse,x87,ssefp,x87fp] [--record FILE] [--max-reports N] [--no-bisect] \
[--min-len N] [--max-len N] [--fast | --float] | --case SEED | --corpus FILE";

/// Parsed command line.
#[derive(Debug)]
struct Args {
    opts: Options,
    record: Option<PathBuf>,
    case: Option<u64>,
    corpus: Option<PathBuf>,
}

fn number(s: &str) -> Result<u64, String> {
    let s = s.replace('_', "");
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a number"))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut args = Args {
        opts: Options::new(ember_tests::difftest::rng::mix64(seed) >> 16, 10_000_000),
        record: None,
        case: None,
        corpus: None,
    };
    args.opts.progress = Some(Duration::from_secs(10));
    args.opts.max_reports = 10;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--instructions" => args.opts.instructions = number(&value()?)?,
            "--seed" => args.opts.seed = number(&value()?)?,
            "--groups" => args.opts.config.groups = Groups::parse(&value()?)?,
            "--record" => args.record = Some(PathBuf::from(value()?)),
            "--max-reports" => args.opts.max_reports = number(&value()?)? as usize,
            "--no-bisect" => args.opts.bisect = false,
            "--min-len" => args.opts.config.min_len = number(&value()?)? as u32,
            "--max-len" => args.opts.config.max_len = number(&value()?)? as u32,
            "--case" => args.case = Some(number(&value()?)?),
            "--fast" => run_suite(&mut args.opts, &suite::FAST),
            "--float" => run_suite(&mut args.opts, &suite::FLOAT),
            "--corpus" => args.corpus = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let c = &args.opts.config;
    if c.min_len == 0 || c.min_len > c.max_len || c.max_len > 1000 {
        return Err("need 1 <= --min-len <= --max-len <= 1000".into());
    }
    args.opts.record = args.record.is_some();
    Ok(args)
}

/// Sets `opts` to run `suite`.
fn run_suite(opts: &mut Options, suite: &Suite) {
    opts.seed = suite.seed;
    opts.instructions = suite.instructions;
    opts.config = suite.config;
}

/// Runs one case and prints its report whether or not it matches.
fn one_case(seed: u64, opts: &Options) -> Result<bool, String> {
    let mut kvm = KvmMachine::new().map_err(|e| e.to_string())?;
    let mut interp = InterpMachine::new()?;
    let case = gen::generate(seed, &opts.config);
    let init = InitialState::from_seed(seed, opts.config.groups);
    let k = kvm.run(&case, &init).map_err(|e| e.to_string())?;
    let s = interp.run(&case, &init);
    let (points, end) = flags::trace(&case.code, case.code_addr);
    let undefined = compare::undefined_at_exit(&points, end, &k);
    let (k, s) = (
        compare::normalize(&k, undefined),
        compare::normalize(&s, undefined),
    );
    let diffs = compare::compare(&k, &s);
    let m = report::Mismatch {
        case: &case,
        init: &init,
        origin: (opts.seed, 0),
        groups: opts.config.groups,
        kvm: Some(&k),
        interp: &s,
        undefined,
        diffs: &diffs,
        culprit: None,
    };
    println!("{}", m.render());
    println!(
        "{}",
        if diffs.is_empty() {
            "case matches"
        } else {
            "case MISMATCHES"
        }
    );
    Ok(diffs.is_empty())
}

fn replay(path: &Path, max_reports: usize) -> Result<bool, String> {
    let corpus = Corpus::load(path).map_err(|e| e.to_string())?;
    let mut interp = InterpMachine::new()?;
    println!(
        "replaying {} ({} cases, run seed {}, groups {})",
        path.display(),
        corpus.entries.len(),
        corpus.seed,
        corpus.config.groups
    );
    let stats = session::run_corpus(&corpus, &mut interp, max_reports);
    for r in &stats.reports {
        println!("{r}");
    }
    println!("{stats}");
    Ok(stats.mismatches == 0)
}

fn soak(args: &Args) -> Result<bool, String> {
    let opts = &args.opts;
    let mut kvm = KvmMachine::new().map_err(|e| e.to_string())?;
    let mut interp = InterpMachine::new()?;
    println!(
        "difftest: seed {} ({:#x}), groups {}, {} instructions, case lengths {}..={}",
        opts.seed,
        opts.seed,
        opts.config.groups,
        opts.instructions,
        opts.config.min_len,
        opts.config.max_len
    );
    let stats = session::run_kvm(opts, &mut kvm, &mut interp).map_err(|e| e.to_string())?;
    for r in &stats.reports {
        println!("{r}");
    }
    println!("{stats}");
    if let Some(path) = &args.record {
        let c = Corpus {
            seed: opts.seed,
            config: opts.config,
            entries: stats.recorded,
        };
        c.save(path).map_err(|e| e.to_string())?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        println!(
            "recorded {} cases ({} bytes) to {}",
            c.entries.len(),
            size,
            path.display()
        );
    }
    Ok(stats.mismatches == 0)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("difftest: {e}");
            }
            eprintln!(
                "{USAGE}\n(the shipped corpora are {} and {})",
                suite::FAST.corpus_path().display(),
                suite::FLOAT.corpus_path().display()
            );
            return ExitCode::from(2);
        }
    };
    let result = if let Some(seed) = args.case {
        one_case(seed, &args.opts)
    } else if let Some(path) = &args.corpus {
        replay(path, args.opts.max_reports)
    } else {
        soak(&args)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("difftest: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_parse_and_bad_ones_are_refused() {
        let a = args(&[
            "--instructions",
            "1_000",
            "--seed",
            "0x10",
            "--groups",
            "int",
        ])
        .unwrap();
        assert_eq!((a.opts.instructions, a.opts.seed), (1000, 16));
        assert_eq!(a.opts.config.groups, Groups::INT);
        assert!(args(&["--seed"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("bogus"));
        assert!(args(&["--seed", "ten"]).is_err());
        assert!(args(&["--min-len", "9", "--max-len", "3"]).is_err());
        assert!(args(&["--record", "x.bin"]).unwrap().opts.record);
        let fast = args(&["--fast"]).unwrap().opts;
        assert_eq!(
            (fast.seed, fast.instructions, fast.config),
            (
                suite::FAST.seed,
                suite::FAST.instructions,
                suite::FAST.config
            )
        );
        let float = args(&["--float"]).unwrap().opts;
        assert_eq!(float.config.groups, Groups::FLOAT);
    }
}
