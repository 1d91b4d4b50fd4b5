//! The digest of a final state that a corpus stores instead of the state itself: the exit,
//! RIP and RFLAGS exactly, the exception frame's RFLAGS image, CR2 for page faults, the
//! accessed/dirty bits of the case pages, MXCSR and FSW, and 64-bit hashes of the general
//! registers, of memory (data area, constant page, kernel stack, stack), of the XMM registers
//! and of the rest of the x87 state, with 8-bit fingerprints per register and per page that
//! point a mismatch at its field. RFLAGS values and FSW are kept as KVM gave them and masked
//! when compared, so a change in which flags count as undefined keeps a recording valid.

use super::compare::{self, Diff};
use super::layout::{self, PTE_A, PTE_D};
use super::state::{Exit, FinalState, GPR_NAMES};

/// FNV-1a, 64 bits.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The digest of a normalised final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// `Exit::code`.
    pub exit: u8,
    /// RIP.
    pub rip: u32,
    /// RFLAGS.
    pub rflags: u32,
    /// The exception frame's RFLAGS image (exceptions only; else 0).
    pub frame_rflags: u64,
    /// CR2 (page faults only; else 0).
    pub cr2: u64,
    /// Hash of all general registers.
    pub gpr_hash: u64,
    /// One byte of hash per general register.
    pub gpr_fp: [u8; 16],
    /// Hash of the data area, constant page, kernel stack and stack pages (with the exception
    /// frame's RFLAGS image zeroed: it is `frame_rflags`).
    pub mem_hash: u64,
    /// 8 bits of hash per page: 4 data pages, the constant page, the kernel stack page, 2
    /// stack pages.
    pub page_fp: [u8; 8],
    /// Accessed bits of the case pages (bit n: `CASE_PAGES[n]`).
    pub accessed: u16,
    /// Dirty bits of the case pages.
    pub dirty: u16,
    /// MXCSR.
    pub mxcsr: u32,
    /// Hash of XMM0..15.
    pub xmm_hash: u64,
    /// One byte of hash per XMM register (stored for SSE and x87 corpora only).
    pub xmm_fp: Option<[u8; 16]>,
    /// FSW.
    pub fsw: u16,
    /// Hash of FCW, FTW and ST0..7.
    pub x87_hash: u64,
}

fn pages(s: &FinalState) -> Vec<&[u8]> {
    let mut p: Vec<&[u8]> = s.data.chunks(4096).collect();
    p.push(&s.consts);
    p.push(&s.kstack);
    p.extend(s.stack.chunks(4096));
    p
}

fn x87_bytes(s: &FinalState) -> Vec<u8> {
    let x = &s.x87;
    let mut b = Vec::with_capacity(85);
    b.extend_from_slice(&x.fcw.to_le_bytes());
    b.push(x.ftw);
    for r in &x.st {
        b.extend_from_slice(r);
    }
    b
}

impl Digest {
    /// The digest of final state `s`.
    pub fn of(state: &FinalState) -> Self {
        let frame_rflags = compare::frame_rflags(state).unwrap_or(0);
        let s = &compare::with_frame_rflags(state, 0);
        let gpr_bytes: Vec<u8> = s.gpr.iter().flat_map(|r| r.to_le_bytes()).collect();
        let mut gpr_fp = [0u8; 16];
        for (fp, r) in gpr_fp.iter_mut().zip(s.gpr.iter()) {
            *fp = hash(&r.to_le_bytes()) as u8;
        }
        let mut mem = Vec::with_capacity(0x8000);
        let mut page_fp = [0u8; 8];
        for (fp, p) in page_fp.iter_mut().zip(pages(s)) {
            *fp = hash(p) as u8;
            mem.extend_from_slice(p);
        }
        let (mut accessed, mut dirty) = (0u16, 0u16);
        for (n, pte) in s.ptes.iter().enumerate() {
            accessed |= u16::from(pte & PTE_A != 0) << n;
            dirty |= u16::from(pte & PTE_D != 0) << n;
        }
        let xmm: Vec<u8> = s.xmm.iter().flatten().copied().collect();
        let mut xmm_fp = [0u8; 16];
        for (fp, r) in xmm_fp.iter_mut().zip(s.xmm.iter()) {
            *fp = hash(r) as u8;
        }
        Digest {
            exit: s.exit.code(),
            rip: s.rip as u32,
            rflags: s.rflags as u32,
            frame_rflags,
            cr2: if s.exit == Exit::Exception(14) {
                s.cr2
            } else {
                0
            },
            gpr_hash: hash(&gpr_bytes),
            gpr_fp,
            mem_hash: hash(&mem),
            page_fp,
            accessed,
            dirty,
            mxcsr: s.mxcsr,
            xmm_hash: hash(&xmm),
            xmm_fp: Some(xmm_fp),
            fsw: s.x87.fsw,
            x87_hash: hash(&x87_bytes(s)),
        }
    }

    /// How the interpreter's final state `s` differs from this recording where the flags
    /// `undefined` (iced bits) are undefined, most telling first. Hashed fields are named by
    /// their fingerprints where these differ.
    pub fn compare(&self, s: &FinalState, undefined: u32) -> Vec<Diff> {
        let mine = Digest::of(s);
        let flags = compare::ignored_rflags(undefined);
        let frame = compare::ignored_frame_rflags(undefined);
        let fsw = compare::ignored_fsw(undefined);
        let mut out = Vec::new();
        let mut d =
            |field: String, kvm: String, interp: String| out.push(Diff { field, kvm, interp });
        if self.exit != mine.exit {
            d(
                "exit".into(),
                format!("{:?}", Exit::from_code(self.exit)),
                format!("{:?}", s.exit),
            );
        }
        if self.rip != mine.rip {
            d(
                "rip".into(),
                format!("{:#x}", self.rip),
                format!("{:#x}", s.rip),
            );
        }
        if self.gpr_hash != mine.gpr_hash {
            let mut named = false;
            for (i, name) in GPR_NAMES.iter().enumerate() {
                if self.gpr_fp[i] != mine.gpr_fp[i] {
                    named = true;
                    d(
                        (*name).into(),
                        format!("(fingerprint {:#04x})", self.gpr_fp[i]),
                        format!("{:#x}", s.gpr[i]),
                    );
                }
            }
            if !named {
                d(
                    "general registers".into(),
                    format!("(hash {:#x})", self.gpr_hash),
                    format!("(hash {:#x})", mine.gpr_hash),
                );
            }
        }
        if (u64::from(self.rflags) ^ u64::from(mine.rflags)) & !flags != 0 {
            d(
                "rflags".into(),
                format!("{:#x}", self.rflags),
                format!("{:#x}", s.rflags),
            );
        }
        if (self.frame_rflags ^ mine.frame_rflags) & !frame != 0 {
            d(
                "RFLAGS image in the exception frame".into(),
                format!("{:#x}", self.frame_rflags),
                format!("{:#x}", mine.frame_rflags),
            );
        }
        if self.cr2 != mine.cr2 {
            d(
                "cr2".into(),
                format!("{:#x}", self.cr2),
                format!("{:#x}", s.cr2),
            );
        }
        if self.mem_hash != mine.mem_hash {
            let bases = [
                layout::DATA_BASE,
                layout::DATA_BASE + 0x1000,
                layout::DATA_BASE + 0x2000,
                layout::DATA_BASE + 0x3000,
                layout::CONST_BASE,
                layout::KSTACK_BASE,
                layout::STACK_BASE,
                layout::STACK_BASE + 0x1000,
            ];
            let mut named = false;
            for (n, base) in bases.iter().enumerate() {
                if self.page_fp[n] != mine.page_fp[n] {
                    named = true;
                    d(
                        format!("memory page {base:#x}"),
                        format!("(fingerprint {:#04x})", self.page_fp[n]),
                        format!("(fingerprint {:#04x})", mine.page_fp[n]),
                    );
                }
            }
            if !named {
                d(
                    "memory".into(),
                    format!("(hash {:#x})", self.mem_hash),
                    format!("(hash {:#x})", mine.mem_hash),
                );
            }
        }
        // Dirty bits exactly; accessed bits: the interpreter's must be a subset (code pages
        // aside).
        let extra = mine.accessed & !self.accessed & !layout::UNCOMPARED_ACCESSED;
        if self.dirty != mine.dirty || extra != 0 {
            d(
                "accessed/dirty bits of the case pages".into(),
                format!("A {:#05x} D {:#05x}", self.accessed, self.dirty),
                format!("A {:#05x} D {:#05x}", mine.accessed, mine.dirty),
            );
        }
        if self.mxcsr != mine.mxcsr {
            d(
                "mxcsr".into(),
                format!("{:#x}", self.mxcsr),
                format!("{:#x}", s.mxcsr),
            );
        }
        if self.xmm_hash != mine.xmm_hash {
            let mut named = false;
            if let (Some(a), Some(b)) = (self.xmm_fp, mine.xmm_fp) {
                for r in 0..16 {
                    if a[r] != b[r] {
                        named = true;
                        d(
                            format!("xmm{r}"),
                            format!("(fingerprint {:#04x})", a[r]),
                            super::compare::xmm_hex(&s.xmm[r]),
                        );
                    }
                }
            }
            if !named {
                d(
                    "xmm registers".into(),
                    format!("(hash {:#x})", self.xmm_hash),
                    format!("(hash {:#x})", mine.xmm_hash),
                );
            }
        }
        if (self.fsw ^ mine.fsw) & !fsw != 0 {
            d(
                "fsw".into(),
                format!("{:#x}", self.fsw),
                format!("{:#x}", mine.fsw),
            );
        }
        if self.x87_hash != mine.x87_hash {
            d(
                "x87 state".into(),
                format!("(hash {:#x})", self.x87_hash),
                format!("fsw {:#x} ftw {:#x}", s.x87.fsw, s.x87.ftw),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FinalState {
        FinalState::sample()
    }

    #[test]
    fn digests_name_the_differing_field() {
        let a = state();
        let g = Digest::of(&a);
        assert!(g.compare(&a, 0).is_empty());
        let mut b = a.clone();
        b.gpr[2] = 8;
        b.stack[0x1800] = 0;
        b.ptes[3] &= !PTE_D;
        let d = g.compare(&b, 0);
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rdx",
                "memory page 0x19000",
                "accessed/dirty bits of the case pages"
            ]
        );
    }

    #[test]
    fn undefined_flags_are_masked_when_compared_not_when_recorded() {
        use iced_x86::RflagsBits;
        let a = state();
        let g = Digest::of(&a);
        let mut b = a.clone();
        b.rflags ^= 0x10; // AF
        assert_eq!(g.compare(&b, 0).len(), 1);
        assert!(g.compare(&b, RflagsBits::AF).is_empty());
    }
}
