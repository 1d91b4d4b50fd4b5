//! Running many cases: against KVM (optionally recording a corpus) or against a recorded
//! corpus, with timing, an exit histogram and mismatch reports.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::compare::{self, Diff};
use super::corpus::{Corpus, Entry};
use super::digest::Digest;
use super::flags;
use super::gen::{self, Case, Config};
use super::interp::InterpMachine;
use super::kvm::{KvmError, KvmMachine};
use super::report::Mismatch;
use super::state::{Exit, FinalState, InitialState};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run seed; case `i` has seed `Case::seed_for(seed, i)`.
    pub seed: u64,
    /// Stop once this many instructions have been compared.
    pub instructions: u64,
    /// Generator configuration.
    pub config: Config,
    /// Full reports to keep (mismatches beyond are only counted).
    pub max_reports: usize,
    /// Find the first diverging instruction of a mismatch by running its prefixes (KVM only).
    pub bisect: bool,
    /// Print a progress line this often.
    pub progress: Option<Duration>,
    /// Keep every conclusive case's KVM digest (for `--record`).
    pub record: bool,
}

impl Options {
    /// Options for `instructions` instructions from `seed`, default groups, reports for the
    /// first 5 mismatches, bisected.
    pub fn new(seed: u64, instructions: u64) -> Self {
        Options {
            seed,
            instructions,
            config: Config::default(),
            max_reports: 5,
            bisect: true,
            progress: None,
            record: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Cases compared.
    pub cases: u64,
    /// Instructions executed and compared (up to the faulting one in faulting cases).
    pub instructions: u64,
    /// Time in the KVM backend (memory setup, ioctls, guest).
    pub kvm_time: Duration,
    /// Time in the interpreter backend (memory setup, a fresh CPU, execution).
    pub interp_time: Duration,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Cases KVM could not run (not compared).
    pub inconclusive: u64,
    /// How cases ended (on the reference side).
    pub exits: BTreeMap<String, u64>,
    /// Mismatching cases.
    pub mismatches: u64,
    /// Reports of the first mismatches.
    pub reports: Vec<String>,
    /// Recorded cases (with `Options::record`).
    pub recorded: Vec<Entry>,
}

fn rate(n: u64, t: Duration) -> String {
    let s = t.as_secs_f64();
    if s == 0.0 {
        "-".into()
    } else {
        format!("{:.2} M/s", n as f64 / s / 1e6)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} cases, {} instructions compared in {:.2} s; {} mismatching, {} inconclusive on KVM",
            self.cases,
            self.instructions,
            self.wall.as_secs_f64(),
            self.mismatches,
            self.inconclusive
        )?;
        writeln!(
            f,
            "  KVM side {:.2} s ({} instructions/s incl. setup), interpreter side {:.2} s ({})",
            self.kvm_time.as_secs_f64(),
            rate(self.instructions, self.kvm_time),
            self.interp_time.as_secs_f64(),
            rate(self.instructions, self.interp_time)
        )?;
        let exits: Vec<String> = self.exits.iter().map(|(k, v)| format!("{k} {v}")).collect();
        write!(f, "  exits: {}", exits.join(", "))
    }
}

/// Instructions of `case` that executed before it ended as `state` shows.
fn executed(case: &Case, state: &FinalState) -> u64 {
    let ins = case.instructions();
    match state.exit {
        Exit::End => ins.len() as u64,
        Exit::Exception(_) => compare::frame_rip(state)
            .and_then(|rip| ins.iter().position(|i| i.ip() == rip))
            .map_or(0, |n| n as u64 + 1),
        _ => 0,
    }
}

fn exit_name(e: &Exit) -> String {
    match e {
        Exit::End => "end".into(),
        Exit::Exception(v) => format!("#{v}"),
        Exit::Shutdown => "shutdown".into(),
        Exit::Other(s) => s.clone(),
    }
}

/// Both sides' final states of one case.
struct Outcome {
    /// KVM's state as it ended.
    kvm_raw: FinalState,
    /// KVM's state, normalised.
    kvm: FinalState,
    /// The interpreter's state, normalised.
    interp: FinalState,
    /// Flags undefined at the end.
    undefined: u32,
    /// Differences.
    diffs: Vec<Diff>,
}

/// Runs `case` on both sides and compares.
fn run_both(
    kvm: &mut KvmMachine,
    interp: &mut InterpMachine,
    case: &Case,
    init: &InitialState,
    stats: &mut Stats,
) -> Result<Outcome, KvmError> {
    let t = Instant::now();
    let k = kvm.run(case, init)?;
    stats.kvm_time += t.elapsed();
    let t = Instant::now();
    let s = interp.run(case, init);
    stats.interp_time += t.elapsed();
    let (points, end) = flags::trace(&case.code, case.code_addr);
    let undefined = compare::undefined_at_exit(&points, end, &k);
    let (kn, sn) = (
        compare::normalize(&k, undefined),
        compare::normalize(&s, undefined),
    );
    let diffs = compare::compare(&kn, &sn);
    Ok(Outcome {
        kvm_raw: k,
        kvm: kn,
        interp: sn,
        undefined,
        diffs,
    })
}

/// The first prefix of `case` whose end states differ: the index of its last instruction.
fn bisect(
    kvm: &mut KvmMachine,
    interp: &mut InterpMachine,
    case: &Case,
    init: &InitialState,
) -> Option<usize> {
    let mut scratch = Stats::default();
    let n = case.instructions().len();
    (1..=n).find_map(|k| {
        let p = case.prefix(k);
        match run_both(kvm, interp, &p, init, &mut scratch) {
            Ok(o) if !o.diffs.is_empty() => Some(k - 1),
            _ => None,
        }
    })
}

/// Runs cases from `opts.seed` on KVM and the interpreter until `opts.instructions` have
/// been compared.
pub fn run_kvm(
    opts: &Options,
    kvm: &mut KvmMachine,
    interp: &mut InterpMachine,
) -> Result<Stats, KvmError> {
    let start = Instant::now();
    let mut last = start;
    let mut stats = Stats::default();
    let mut index = 0u64;
    while stats.instructions < opts.instructions {
        let seed = Case::seed_for(opts.seed, index);
        let case = gen::generate(seed, &opts.config);
        let init = InitialState::from_seed(seed, opts.config.groups);
        index += 1;
        let o = match run_both(kvm, interp, &case, &init, &mut stats) {
            Ok(o) => o,
            Err(KvmError::Inconclusive(why)) => {
                stats.inconclusive += 1;
                if stats.inconclusive > 100 && stats.inconclusive > stats.cases {
                    return Err(KvmError::Setup(format!(
                        "KVM could not run {} of {} cases (last: {why})",
                        stats.inconclusive,
                        stats.inconclusive + stats.cases
                    )));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        stats.cases += 1;
        stats.instructions += executed(&case, &o.kvm);
        *stats.exits.entry(exit_name(&o.kvm.exit)).or_default() += 1;
        if opts.record {
            stats.recorded.push(Entry {
                case: case.clone(),
                digest: Digest::of(&o.kvm_raw),
            });
        }
        if !o.diffs.is_empty() {
            stats.mismatches += 1;
            if stats.reports.len() < opts.max_reports {
                let culprit = if opts.bisect {
                    bisect(kvm, interp, &case, &init)
                } else {
                    None
                };
                let m = Mismatch {
                    case: &case,
                    init: &init,
                    origin: (opts.seed, index - 1),
                    groups: opts.config.groups,
                    kvm: Some(&o.kvm),
                    interp: &o.interp,
                    undefined: o.undefined,
                    diffs: &o.diffs,
                    culprit,
                };
                stats.reports.push(m.render());
            }
        }
        if let Some(every) = opts.progress {
            if last.elapsed() >= every {
                last = Instant::now();
                stats.wall = start.elapsed();
                eprintln!("{stats}");
            }
        }
    }
    stats.wall = start.elapsed();
    Ok(stats)
}

/// Replays every case of `corpus` on the interpreter and compares with the recorded digests.
pub fn run_corpus(corpus: &Corpus, interp: &mut InterpMachine, max_reports: usize) -> Stats {
    let start = Instant::now();
    let mut stats = Stats::default();
    for (index, entry) in corpus.entries.iter().enumerate() {
        let case = &entry.case;
        let init = InitialState::from_seed(case.seed, corpus.config.groups);
        let t = Instant::now();
        let s = interp.run(case, &init);
        stats.interp_time += t.elapsed();
        let (points, end) = flags::trace(&case.code, case.code_addr);
        let undefined = compare::undefined_at_exit(&points, end, &s);
        let diffs = entry.digest.compare(&s, undefined);
        let s = compare::normalize(&s, undefined);
        stats.cases += 1;
        stats.instructions += executed(case, &s);
        *stats
            .exits
            .entry(exit_name(&Exit::from_code(entry.digest.exit)))
            .or_default() += 1;
        if !diffs.is_empty() {
            stats.mismatches += 1;
            if stats.reports.len() < max_reports {
                let m = Mismatch {
                    case,
                    init: &init,
                    origin: (corpus.seed, index as u64),
                    groups: corpus.config.groups,
                    kvm: None,
                    interp: &s,
                    undefined,
                    diffs: &diffs,
                    culprit: None,
                };
                stats.reports.push(m.render());
            }
        }
    }
    stats.wall = start.elapsed();
    stats
}
