//! Recorded KVM results, so machines without `/dev/kvm` compare the interpreter against
//! hardware too.
//!
//! A corpus holds, per case, its seed (the initial state is derived from it), its code bytes
//! (replayed as recorded, whatever the generator does today) and the [`Digest`] of KVM's
//! final state.
//!
//! Format (little-endian): the magic `EMBDIFF` and a version byte; the run's seed (u64),
//! groups (u32), minimum and maximum case length (u32 each), case count (u32), then the
//! length (u32) of the cases, zlib-compressed (DEFLATE with an Adler-32 check). Per case:
//! seed (u64), code address minus `CODE_BASE` (u16), code length (u16) and bytes, exit code
//! (u8), RIP (u32), RFLAGS (u32), the RFLAGS image of the exception frame (u64, exceptions
//! only), CR2 (u64, page faults only), GPR hash (u64) and 16 fingerprints (u8), memory hash
//! (u64) and 8 page fingerprints (u8), A and D bits of the case pages (u16 each), MXCSR
//! (u32), XMM hash (u64) and, when the SSE or x87 group is on, 16 fingerprints (u8), FSW
//! (u16), hash of the rest of the x87 state (u64). The initial-state derivation (`state.rs`,
//! `rng.rs`) and the hash (`digest.rs`) are part of the format: changing them needs a new
//! version and a new recording.

use std::fmt;
use std::path::Path;

use super::digest::Digest;
use super::gen::{Case, Config, Groups};
use super::layout;

const MAGIC: &[u8; 7] = b"EMBDIFF";
const VERSION: u8 = 1;
/// The most bytes the compressed cases may expand to (a guard against corrupt files).
const MAX_PAYLOAD: usize = 64 << 20;

/// One recorded case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The case as it ran.
    pub case: Case,
    /// KVM's normalised final state.
    pub digest: Digest,
}

/// A recorded corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// The run seed the cases were generated from.
    pub seed: u64,
    /// The generator configuration.
    pub config: Config,
    /// The cases.
    pub entries: Vec<Entry>,
}

/// Why a corpus could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusError(pub String);

impl fmt::Display for CorpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "difftest corpus: {}", self.0)
    }
}

impl std::error::Error for CorpusError {}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorpusError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| CorpusError(format!("truncated at byte {}", self.at)))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorpusError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CorpusError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CorpusError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CorpusError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CorpusError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Whether XMM fingerprints are stored: for runs with a vector or x87 group.
fn wide(config: &Config) -> bool {
    config.groups.intersects(Groups::SSE)
        || config.groups.intersects(Groups::X87)
        || config.groups.intersects(Groups::FLOAT)
}

impl Corpus {
    /// The binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC);
        o.push(VERSION);
        o.extend_from_slice(&self.seed.to_le_bytes());
        o.extend_from_slice(&self.config.groups.bits().to_le_bytes());
        o.extend_from_slice(&self.config.min_len.to_le_bytes());
        o.extend_from_slice(&self.config.max_len.to_le_bytes());
        o.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let payload = miniz_oxide::deflate::compress_to_vec_zlib(&self.cases(), 10);
        o.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        o.extend_from_slice(&payload);
        o
    }

    /// The cases, uncompressed.
    fn cases(&self) -> Vec<u8> {
        let mut o = Vec::new();
        for e in &self.entries {
            let (c, g) = (&e.case, &e.digest);
            o.extend_from_slice(&c.seed.to_le_bytes());
            o.extend_from_slice(&((c.code_addr - layout::CODE_BASE) as u16).to_le_bytes());
            o.extend_from_slice(&(c.code.len() as u16).to_le_bytes());
            o.extend_from_slice(&c.code);
            o.push(g.exit);
            o.extend_from_slice(&g.rip.to_le_bytes());
            o.extend_from_slice(&g.rflags.to_le_bytes());
            if g.exit < 32 {
                o.extend_from_slice(&g.frame_rflags.to_le_bytes());
            }
            if g.exit == 14 {
                o.extend_from_slice(&g.cr2.to_le_bytes());
            }
            o.extend_from_slice(&g.gpr_hash.to_le_bytes());
            o.extend_from_slice(&g.gpr_fp);
            o.extend_from_slice(&g.mem_hash.to_le_bytes());
            o.extend_from_slice(&g.page_fp);
            o.extend_from_slice(&g.accessed.to_le_bytes());
            o.extend_from_slice(&g.dirty.to_le_bytes());
            o.extend_from_slice(&g.mxcsr.to_le_bytes());
            o.extend_from_slice(&g.xmm_hash.to_le_bytes());
            if wide(&self.config) {
                o.extend_from_slice(&g.xmm_fp.unwrap_or_default());
            }
            o.extend_from_slice(&g.fsw.to_le_bytes());
            o.extend_from_slice(&g.x87_hash.to_le_bytes());
        }
        o
    }

    /// Parses the binary form; any malformed input is an error, never a panic.
    pub fn decode(buf: &[u8]) -> Result<Self, CorpusError> {
        let mut r = Reader { buf, at: 0 };
        if r.take(7)? != MAGIC {
            return Err(CorpusError("not a difftest corpus (bad magic)".into()));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(CorpusError(format!(
                "format version {version}, this build reads version {VERSION}: re-record it"
            )));
        }
        let seed = r.u64()?;
        let groups = Groups::from_bits(r.u32()?)
            .ok_or_else(|| CorpusError("unknown instruction groups".into()))?;
        let config = Config {
            groups,
            min_len: r.u32()?,
            max_len: r.u32()?,
        };
        let count = r.u32()? as usize;
        let len = r.u32()? as usize;
        let compressed = r.take(len)?;
        if r.at != buf.len() {
            return Err(CorpusError(format!(
                "{} bytes after the cases",
                buf.len() - r.at
            )));
        }
        let cases =
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed, MAX_PAYLOAD)
                .map_err(|e| CorpusError(format!("corrupt compressed cases: {e:?}")))?;
        let mut r = Reader { buf: &cases, at: 0 };
        let mut entries = Vec::with_capacity(count.min(1 << 16));
        for n in 0..count {
            let case_seed = r.u64()?;
            let code_addr = layout::CODE_BASE + u64::from(r.u16()?);
            let len = usize::from(r.u16()?);
            let code = r.take(len)?.to_vec();
            let case = Case {
                seed: case_seed,
                code_addr,
                code,
            };
            if !case.fits() {
                return Err(CorpusError(format!("case {n} does not fit the code pages")));
            }
            let exit = r.u8()?;
            let rip = r.u32()?;
            let rflags = r.u32()?;
            let frame_rflags = if exit < 32 { r.u64()? } else { 0 };
            let cr2 = if exit == 14 { r.u64()? } else { 0 };
            let digest = Digest {
                exit,
                rip,
                rflags,
                frame_rflags,
                cr2,
                gpr_hash: r.u64()?,
                gpr_fp: r.array()?,
                mem_hash: r.u64()?,
                page_fp: r.array()?,
                accessed: r.u16()?,
                dirty: r.u16()?,
                mxcsr: r.u32()?,
                xmm_hash: r.u64()?,
                xmm_fp: if wide(&config) {
                    Some(r.array()?)
                } else {
                    None
                },
                fsw: r.u16()?,
                x87_hash: r.u64()?,
            };
            entries.push(Entry { case, digest });
        }
        if r.at != cases.len() {
            return Err(CorpusError(format!(
                "{} bytes after the last case",
                cases.len() - r.at
            )));
        }
        Ok(Corpus {
            seed,
            config,
            entries,
        })
    }

    /// Reads a corpus file.
    pub fn load(path: &Path) -> Result<Self, CorpusError> {
        let buf = std::fs::read(path)
            .map_err(|e| CorpusError(format!("reading {}: {e}", path.display())))?;
        Self::decode(&buf).map_err(|e| CorpusError(format!("{}: {}", path.display(), e.0)))
    }

    /// Writes a corpus file.
    pub fn save(&self, path: &Path) -> Result<(), CorpusError> {
        std::fs::write(path, self.encode())
            .map_err(|e| CorpusError(format!("writing {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::state::FinalState;

    fn state() -> FinalState {
        FinalState::sample()
    }

    fn corpus(config: Config) -> Corpus {
        let case = crate::difftest::gen::generate(11, &config);
        let mut digest = Digest::of(&state());
        if !wide(&config) {
            digest.xmm_fp = None;
        }
        Corpus {
            seed: 5,
            config,
            entries: vec![Entry { case, digest }],
        }
    }

    #[test]
    fn corpora_round_trip() {
        let c = corpus(Config::default());
        assert_eq!(Corpus::decode(&c.encode()), Ok(c));
        let config = Config {
            groups: Groups::parse("int,sse").unwrap(),
            ..Config::default()
        };
        let c = corpus(config);
        assert_eq!(Corpus::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn malformed_corpora_are_errors() {
        let bytes = corpus(Config::default()).encode();
        for cut in [0, 3, 8, 20, 40, bytes.len() - 1] {
            assert!(Corpus::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x55;
        assert!(Corpus::decode(&flipped).is_err(), "corrupt payload");
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Corpus::decode(&extra).is_err());
        let mut bad = bytes.clone();
        bad[7] = 99;
        assert!(Corpus::decode(&bad).unwrap_err().0.contains("version 99"));
        let mut huge = bytes;
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Corpus::decode(&huge).is_err());
    }
}
