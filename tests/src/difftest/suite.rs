//! The fixed runs the test suite compares: their seed, size and instruction groups, and the
//! file under `tests/data` their KVM results are recorded in (replayed where `/dev/kvm` is
//! missing).

use std::path::{Path, PathBuf};

use super::gen::{Config, Groups};

/// A fixed differential run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// What it covers, for messages.
    pub name: &'static str,
    /// The `difftest` flag that runs it.
    pub flag: &'static str,
    /// The run seed; case `i` has seed `Case::seed_for(seed, i)`.
    pub seed: u64,
    /// Instructions it compares, at least.
    pub instructions: u64,
    /// The generator configuration (changing it needs a new recording).
    pub config: Config,
    /// The corpus file's name under `tests/data`.
    pub corpus: &'static str,
}

impl Suite {
    /// The recorded corpus of this run.
    pub fn corpus_path(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(self.corpus)
    }
}

/// The fast mode: integer, string, SSE and x87 instructions on random operands.
pub const FAST: Suite = Suite {
    name: "fast",
    flag: "--fast",
    seed: 0x454d_4245_5244_4946,
    instructions: 100_000,
    config: Config {
        groups: Groups::DEFAULT,
        min_len: 48,
        max_len: 160,
    },
    corpus: "difftest-corpus.bin",
};

/// The floating-point mode: SSE and x87 arithmetic on special operands, in every rounding
/// and precision mode, with unmasked exceptions.
pub const FLOAT: Suite = Suite {
    name: "floating point",
    flag: "--float",
    seed: 0x454d_4245_5246_4c54,
    instructions: 30_000,
    config: Config {
        groups: Groups::FLOAT,
        min_len: 48,
        max_len: 160,
    },
    corpus: "difftest-float-corpus.bin",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_suite_uses_the_default_configuration() {
        assert_eq!(FAST.config, Config::default());
        assert_ne!(FAST.seed, FLOAT.seed);
        assert_ne!(FAST.corpus_path(), FLOAT.corpus_path());
        assert!(FLOAT
            .corpus_path()
            .ends_with("data/difftest-float-corpus.bin"));
    }
}
