//! The lists of iced `Code`s each instruction category draws from, built once from iced's
//! tables: every 64-bit-mode legacy encoding of the category's mnemonics whose operand kinds
//! the operand filler supports, minus the exclusions below (each with its reason).

use std::sync::OnceLock;

use iced_x86::{Code, CpuidFeature, EncodingKind, Mnemonic};

use super::ops;
use super::Groups;

/// A kind of instruction, with its own list of codes and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// add/or/adc/sbb/and/sub/xor/cmp/test/inc/dec/neg/not.
    Alu,
    /// rol/ror/rcl/rcr/shl/sal/shr/sar/shld/shrd.
    Shift,
    /// mul and imul in all their forms.
    Mul,
    /// div/idiv.
    Div,
    /// bt/bts/btr/btc.
    BitTest,
    /// bsf/bsr/lzcnt/popcnt.
    BitScan,
    /// setcc/cmovcc.
    Cond,
    /// bswap/movbe.
    Swap,
    /// movzx/movsx/movsxd.
    Extend,
    /// xchg/xadd/cmpxchg/cmpxchg8b/cmpxchg16b.
    Atomic,
    /// lea.
    Lea,
    /// push/pop.
    Stack,
    /// cbw/cwde/cdqe/cwd/cdq/cqo, lahf/sahf, clc/stc/cmc.
    Misc,
    /// mov and multi-byte nop.
    Mov,
    /// String instructions (built by `string.rs`).
    String,
    /// SSE..SSE4.2 (built by `sse.rs`).
    Sse,
    /// x87 (built by `x87.rs`).
    X87,
    /// SSE floating-point arithmetic on special operands (built by `ssefp.rs`).
    SseFp,
    /// x87 arithmetic on special operands (built by `x87fp.rs`).
    X87Fp,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 19] = [
        Category::Alu,
        Category::Shift,
        Category::Mul,
        Category::Div,
        Category::BitTest,
        Category::BitScan,
        Category::Cond,
        Category::Swap,
        Category::Extend,
        Category::Atomic,
        Category::Lea,
        Category::Stack,
        Category::Misc,
        Category::Mov,
        Category::String,
        Category::Sse,
        Category::X87,
        Category::SseFp,
        Category::X87Fp,
    ];

    /// The group that enables this category.
    pub fn group(self) -> Groups {
        match self {
            Category::String => Groups::STRING,
            Category::Sse => Groups::SSE,
            Category::X87 => Groups::X87,
            Category::SseFp => Groups::SSE_FP,
            Category::X87Fp => Groups::X87_FP,
            _ => Groups::INT,
        }
    }

    /// Whether instructions of this category (mostly) write arithmetic flags.
    pub fn sets_flags(self) -> bool {
        matches!(
            self,
            Category::Alu
                | Category::Shift
                | Category::Mul
                | Category::BitTest
                | Category::BitScan
                | Category::Atomic
                | Category::Misc
        )
    }

    /// Relative frequency among enabled categories.
    pub fn weight(self) -> u32 {
        match self {
            Category::Alu => 24,
            Category::Shift => 12,
            Category::Mul => 4,
            Category::Div => 2,
            Category::BitTest => 5,
            Category::BitScan => 4,
            Category::Cond => 8,
            Category::Swap => 3,
            Category::Extend => 5,
            Category::Atomic => 6,
            Category::Lea => 4,
            Category::Stack => 6,
            Category::Misc => 5,
            Category::Mov => 5,
            Category::String => 6,
            Category::Sse => 60,
            Category::X87 => 60,
            Category::SseFp => 60,
            Category::X87Fp => 60,
        }
    }

    fn mnemonics(self) -> &'static [Mnemonic] {
        use Mnemonic as M;
        match self {
            Category::Alu => &[
                M::Add,
                M::Or,
                M::Adc,
                M::Sbb,
                M::And,
                M::Sub,
                M::Xor,
                M::Cmp,
                M::Test,
                M::Inc,
                M::Dec,
                M::Neg,
                M::Not,
            ],
            Category::Shift => &[
                M::Rol,
                M::Ror,
                M::Rcl,
                M::Rcr,
                M::Shl,
                M::Sal,
                M::Shr,
                M::Sar,
                M::Shld,
                M::Shrd,
            ],
            Category::Mul => &[M::Mul, M::Imul],
            Category::Div => &[M::Div, M::Idiv],
            Category::BitTest => &[M::Bt, M::Bts, M::Btr, M::Btc],
            // TZCNT is left out: the interpreter's CPUID has no BMI1, so F3 0F BC is BSF
            // there by design, while this host's KVM runs it as TZCNT.
            Category::BitScan => &[M::Bsf, M::Bsr, M::Lzcnt, M::Popcnt],
            Category::Cond => &[
                M::Seto,
                M::Setno,
                M::Setb,
                M::Setae,
                M::Sete,
                M::Setne,
                M::Setbe,
                M::Seta,
                M::Sets,
                M::Setns,
                M::Setp,
                M::Setnp,
                M::Setl,
                M::Setge,
                M::Setle,
                M::Setg,
                M::Cmovo,
                M::Cmovno,
                M::Cmovb,
                M::Cmovae,
                M::Cmove,
                M::Cmovne,
                M::Cmovbe,
                M::Cmova,
                M::Cmovs,
                M::Cmovns,
                M::Cmovp,
                M::Cmovnp,
                M::Cmovl,
                M::Cmovge,
                M::Cmovle,
                M::Cmovg,
            ],
            Category::Swap => &[M::Bswap, M::Movbe],
            Category::Extend => &[M::Movzx, M::Movsx, M::Movsxd],
            Category::Atomic => &[M::Xchg, M::Xadd, M::Cmpxchg, M::Cmpxchg8b, M::Cmpxchg16b],
            Category::Lea => &[M::Lea],
            Category::Stack => &[M::Push, M::Pop],
            Category::Misc => &[
                M::Cbw,
                M::Cwde,
                M::Cdqe,
                M::Cwd,
                M::Cdq,
                M::Cqo,
                M::Lahf,
                M::Sahf,
                M::Clc,
                M::Stc,
                M::Cmc,
            ],
            Category::Mov => &[M::Mov, M::Nop],
            Category::String
            | Category::Sse
            | Category::X87
            | Category::SseFp
            | Category::X87Fp => &[],
        }
    }
}

/// Codes that are excluded although their mnemonic is listed, and why.
fn excluded(code: Code) -> bool {
    matches!(
        code,
        // BSWAP of a 16-bit register: the result is undefined.
        Code::Bswap_r16
            // Plain NOP (90) and PAUSE forms are not the multi-byte NOPs meant here.
            | Code::Nopw
            | Code::Nopd
            | Code::Nopq
    )
}

/// SSE instructions excluded from the SSE group, and why.
fn sse_excluded(m: Mnemonic) -> bool {
    matches!(
        m,
        // Approximations whose low bits differ between implementations.
        Mnemonic::Rcpps | Mnemonic::Rcpss | Mnemonic::Rsqrtps | Mnemonic::Rsqrtss
            // Loads MXCSR from random memory (#GP on reserved bits) and unmasks exceptions.
            | Mnemonic::Ldmxcsr
            // Implicit store through RDI, outside the data-area rules.
            | Mnemonic::Maskmovdqu
            // Cache and ordering hints with nothing to compare (and CLFLUSH is not SSE).
            | Mnemonic::Lfence
            | Mnemonic::Sfence
            | Mnemonic::Mfence
            | Mnemonic::Prefetchnta
            | Mnemonic::Prefetcht0
            | Mnemonic::Prefetcht1
            | Mnemonic::Prefetcht2
    )
}

/// The SSE floating-point arithmetic, compare and conversion instructions (those whose
/// results depend on MXCSR), minus the approximations of [`sse_excluded`].
fn is_sse_float(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Addps
            | M::Addpd
            | M::Addss
            | M::Addsd
            | M::Subps
            | M::Subpd
            | M::Subss
            | M::Subsd
            | M::Mulps
            | M::Mulpd
            | M::Mulss
            | M::Mulsd
            | M::Divps
            | M::Divpd
            | M::Divss
            | M::Divsd
            | M::Minps
            | M::Minpd
            | M::Minss
            | M::Minsd
            | M::Maxps
            | M::Maxpd
            | M::Maxss
            | M::Maxsd
            | M::Sqrtps
            | M::Sqrtpd
            | M::Sqrtss
            | M::Sqrtsd
            | M::Cmpps
            | M::Cmppd
            | M::Cmpss
            | M::Cmpsd
            | M::Comiss
            | M::Comisd
            | M::Ucomiss
            | M::Ucomisd
            | M::Addsubps
            | M::Addsubpd
            | M::Haddps
            | M::Haddpd
            | M::Hsubps
            | M::Hsubpd
            | M::Roundps
            | M::Roundpd
            | M::Roundss
            | M::Roundsd
            | M::Dpps
            | M::Dppd
            | M::Cvtps2pd
            | M::Cvtpd2ps
            | M::Cvtdq2ps
            | M::Cvtps2dq
            | M::Cvttps2dq
            | M::Cvtdq2pd
            | M::Cvtpd2dq
            | M::Cvttpd2dq
            | M::Cvtss2sd
            | M::Cvtsd2ss
            | M::Cvtss2si
            | M::Cvttss2si
            | M::Cvtsd2si
            | M::Cvttsd2si
            | M::Cvtsi2ss
            | M::Cvtsi2sd
    )
}

fn is_sse(code: Code) -> bool {
    let f = code.cpuid_features();
    !f.is_empty()
        && f.iter().all(|c| {
            matches!(
                c,
                CpuidFeature::SSE
                    | CpuidFeature::SSE2
                    | CpuidFeature::SSE3
                    | CpuidFeature::SSSE3
                    | CpuidFeature::SSE4_1
                    | CpuidFeature::SSE4_2
            )
        })
}

/// Every category's codes.
pub struct Catalog {
    lists: Vec<(Category, Vec<Code>)>,
}

impl Catalog {
    /// The catalog (built on first use).
    pub fn get() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(Catalog::build)
    }

    fn build() -> Catalog {
        let usable = |code: Code| {
            let op = code.op_code();
            op.is_instruction()
                && op.mode64()
                && op.encoding() == EncodingKind::Legacy
                && op.op_kinds().iter().all(|&k| ops::supported(k))
                && !excluded(code)
        };
        let mut lists = Vec::new();
        for cat in Category::ALL {
            let codes: Vec<Code> = match cat {
                Category::Sse => Code::values()
                    .filter(|&c| usable(c) && is_sse(c) && !sse_excluded(c.mnemonic()))
                    .collect(),
                Category::SseFp => Code::values()
                    .filter(|&c| usable(c) && is_sse(c) && is_sse_float(c.mnemonic()))
                    .collect(),
                _ => Code::values()
                    .filter(|&c| usable(c) && cat.mnemonics().contains(&c.mnemonic()))
                    .collect(),
            };
            lists.push((cat, codes));
        }
        Catalog { lists }
    }

    /// The codes of `cat`.
    pub fn codes(&self, cat: Category) -> &[Code] {
        self.lists
            .iter()
            .find(|(c, _)| *c == cat)
            .map_or(&[], |(_, codes)| codes.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_category_has_codes_and_exclusions_hold() {
        let c = Catalog::get();
        for cat in Category::ALL {
            if !matches!(cat, Category::String | Category::X87 | Category::X87Fp) {
                assert!(!c.codes(cat).is_empty(), "{cat:?}");
            }
        }
        let alu = c.codes(Category::Alu);
        assert!(alu.contains(&Code::Add_rm8_r8) && alu.contains(&Code::Adc_RAX_imm32));
        assert!(
            !alu.contains(&Code::Add_rm8_imm8_82),
            "invalid in 64-bit mode"
        );
        assert!(!c.codes(Category::Swap).contains(&Code::Bswap_r16));
        assert!(!c.codes(Category::BitScan).contains(&Code::Tzcnt_r32_rm32));
        let sse = c.codes(Category::Sse);
        assert!(sse.contains(&Code::Addps_xmm_xmmm128));
        assert!(sse.contains(&Code::Pcmpistri_xmm_xmmm128_imm8));
        assert!(!sse.contains(&Code::Rcpps_xmm_xmmm128));
        let fp = c.codes(Category::SseFp);
        assert!(fp.contains(&Code::Dpps_xmm_xmmm128_imm8));
        assert!(fp.contains(&Code::Cvtsi2sd_xmm_rm64));
        assert!(!fp.contains(&Code::Rcpps_xmm_xmmm128) && !fp.contains(&Code::Cmpsd_m32_m32));
        assert!(!fp.contains(&Code::Cvtpi2ps_xmm_mmm64), "MMX operands");
        assert!(!sse.iter().any(|c| c.encoding() != EncodingKind::Legacy));
        assert!(c.codes(Category::Stack).contains(&Code::Pushq_imm8));
    }
}
