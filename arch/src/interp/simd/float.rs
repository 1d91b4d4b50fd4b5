//! Floating-point SSE/SSE2/SSE3/SSE4.1 instructions with bit-exact results and
//! MXCSR exception flags.
//!
//! Every arithmetic instruction is executed by the same instruction on the host
//! CPU (this crate only runs on x86-64 hosts), inside one inline-assembly block
//! that loads the guest's rounding control, FTZ and DAZ into the host MXCSR
//! with all exceptions masked and all flags clear, runs the instruction, reads
//! the raised flags back and restores the host MXCSR. Doing all of that in one
//! block matters: no compiled Rust code ever runs under a non-default floating
//! point environment (which the compiler assumes never happens), and the
//! compiler can neither reorder, constant-fold nor substitute the operation
//! (the `core::arch` intrinsics may be lowered to other instruction sequences,
//! e.g. ADDSUBPS to ADDPS + SUBPS + blend, which raises different flags).
//!
//! Results therefore match the host, including implementation-specific ones
//! (RCPPS/RSQRTPS approximations, which differ between Intel and AMD).
//!
//! Exceptions: the plain functions ([`float_op`], [`comis`], [`cvt_to_int`],
//! [`cvt_from_int`]) give the masked response, as if every exception were
//! masked, and OR the raised flags into the guest MXCSR. The `*_checked`
//! variants also honor the guest's mask bits: when an unmasked exception
//! occurs they return [`SimdFpException`] (the caller raises #XM, or #UD if
//! CR4.OSXMMEXCPT is clear) and the destination must be left unchanged.

use core::arch::asm;

use iced_x86::Mnemonic;

use super::super::hostcpu::HostCpu;
use super::lanes::{dwords, imm_table, qwords};

/// MXCSR invalid-operation flag.
pub const MXCSR_IE: u32 = 1 << 0;
/// MXCSR denormal-operand flag.
pub const MXCSR_DE: u32 = 1 << 1;
/// MXCSR divide-by-zero flag.
pub const MXCSR_ZE: u32 = 1 << 2;
/// MXCSR overflow flag.
pub const MXCSR_OE: u32 = 1 << 3;
/// MXCSR underflow flag.
pub const MXCSR_UE: u32 = 1 << 4;
/// MXCSR precision (inexact) flag.
pub const MXCSR_PE: u32 = 1 << 5;
/// All six MXCSR exception flags.
pub const MXCSR_FLAGS: u32 = 0x3f;
/// MXCSR denormals-are-zeros control.
pub const MXCSR_DAZ: u32 = 1 << 6;
/// All six MXCSR exception mask bits (bit 7 + flag bit).
pub const MXCSR_MASKS: u32 = 0x3f << 7;
/// MXCSR rounding-control field (bits 14:13).
pub const MXCSR_RC: u32 = 3 << 13;
/// MXCSR flush-to-zero control.
pub const MXCSR_FTZ: u32 = 1 << 15;

/// RFLAGS bits written by COMISS/COMISD/UCOMISS/UCOMISD: CF, PF, ZF (set per
/// result) and AF, SF, OF (cleared).
pub const COMIS_WRITTEN_FLAGS: u64 = 0x8d5;

/// A SIMD floating-point exception whose mask bit is clear in the guest MXCSR.
///
/// The flags have already been ORed into the guest MXCSR; the destination
/// must not be written and the caller delivers #XM (or #UD when
/// CR4.OSXMMEXCPT is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimdFpException {
    /// The MXCSR flag bits (5:0) this instruction raised.
    pub flags: u32,
}

/// Register image the host instruction runs on: `xmm0 = a`, `xmm1 = b`,
/// `rax = gpr`, MXCSR = `env` during the instruction; the raised flags end up
/// in `flags` and `host` holds the host MXCSR meanwhile.
#[repr(C, align(16))]
#[derive(Default)]
struct Frame {
    a: u128,
    b: u128,
    gpr: u64,
    env: u32,
    flags: u32,
    host: u32,
}

/// Runs the host instruction of a [`Frame`].
type HostFn = fn(&mut Frame);

/// Defines `fn $name(f: &mut Frame)` (or `fn $name<const I: u8>`, binding `{i}`
/// in the instruction text to `I`) that executes the instruction text with
/// `xmm0`, `xmm1`, `rax` and MXCSR taken from the frame, as described on
/// [`Frame`].
macro_rules! host_insn {
    ($name:ident, $insn:literal) => {
        fn $name(f: &mut Frame) {
            host_insn!(@asm f, $insn,);
        }
    };
    ($name:ident<I>, $insn:literal) => {
        fn $name<const I: u8>(f: &mut Frame) {
            host_insn!(@asm f, $insn, i = const I,);
        }
    };
    (@asm $f:ident, $insn:literal, $($args:tt)*) => {
        // SAFETY: `p` points to the `Frame` that `$f` exclusively borrows and
        // the block only accesses that frame (plus a push/pop of RFLAGS on the
        // stack for the compares). Every register it changes is declared as
        // clobbered. `env` only ever holds RC, FTZ, DAZ and the mask bits
        // (built by `host_env`; DAZ support is assumed, as Ember's MXCSR_MASK of
        // 0xffff already does), so LDMXCSR cannot fault, and the host MXCSR is
        // saved first and restored before the block ends, so no compiled code
        // runs under the guest's environment. Callers check that the host
        // supports the instruction (SSE3/SSE4.1) before calling.
        unsafe {
            asm!(
                "stmxcsr [{p} + 48]",
                "movdqu xmm0, [{p}]",
                "movdqu xmm1, [{p} + 16]",
                "mov rax, [{p} + 32]",
                "ldmxcsr [{p} + 40]",
                $insn,
                "stmxcsr [{p} + 44]",
                "ldmxcsr [{p} + 48]",
                "movdqu [{p}], xmm0",
                "mov [{p} + 32], rax",
                p = in(reg) core::ptr::from_mut($f),
                $($args)*
                out("xmm0") _,
                out("xmm1") _,
                out("rax") _,
            );
        }
    };
}

/// Expands to `[$f::<imm>, ...]` for the listed imm8 values.
macro_rules! imm_list {
    ($f:ident; $($imm:literal)*) => {
        [$($f::<$imm>),*]
    };
}

host_insn!(addps, "addps xmm0, xmm1");
host_insn!(addpd, "addpd xmm0, xmm1");
host_insn!(addss, "addss xmm0, xmm1");
host_insn!(addsd, "addsd xmm0, xmm1");
host_insn!(subps, "subps xmm0, xmm1");
host_insn!(subpd, "subpd xmm0, xmm1");
host_insn!(subss, "subss xmm0, xmm1");
host_insn!(subsd, "subsd xmm0, xmm1");
host_insn!(mulps, "mulps xmm0, xmm1");
host_insn!(mulpd, "mulpd xmm0, xmm1");
host_insn!(mulss, "mulss xmm0, xmm1");
host_insn!(mulsd, "mulsd xmm0, xmm1");
host_insn!(divps, "divps xmm0, xmm1");
host_insn!(divpd, "divpd xmm0, xmm1");
host_insn!(divss, "divss xmm0, xmm1");
host_insn!(divsd, "divsd xmm0, xmm1");
host_insn!(minps, "minps xmm0, xmm1");
host_insn!(minpd, "minpd xmm0, xmm1");
host_insn!(minss, "minss xmm0, xmm1");
host_insn!(minsd, "minsd xmm0, xmm1");
host_insn!(maxps, "maxps xmm0, xmm1");
host_insn!(maxpd, "maxpd xmm0, xmm1");
host_insn!(maxss, "maxss xmm0, xmm1");
host_insn!(maxsd, "maxsd xmm0, xmm1");
host_insn!(sqrtps, "sqrtps xmm0, xmm1");
host_insn!(sqrtpd, "sqrtpd xmm0, xmm1");
host_insn!(sqrtss, "sqrtss xmm0, xmm1");
host_insn!(sqrtsd, "sqrtsd xmm0, xmm1");
host_insn!(rcpps, "rcpps xmm0, xmm1");
host_insn!(rcpss, "rcpss xmm0, xmm1");
host_insn!(rsqrtps, "rsqrtps xmm0, xmm1");
host_insn!(rsqrtss, "rsqrtss xmm0, xmm1");
host_insn!(addsubps, "addsubps xmm0, xmm1");
host_insn!(addsubpd, "addsubpd xmm0, xmm1");
host_insn!(haddps, "haddps xmm0, xmm1");
host_insn!(haddpd, "haddpd xmm0, xmm1");
host_insn!(hsubps, "hsubps xmm0, xmm1");
host_insn!(hsubpd, "hsubpd xmm0, xmm1");
host_insn!(cvtps2pd, "cvtps2pd xmm0, xmm1");
host_insn!(cvtpd2ps, "cvtpd2ps xmm0, xmm1");
host_insn!(cvtdq2ps, "cvtdq2ps xmm0, xmm1");
host_insn!(cvtps2dq, "cvtps2dq xmm0, xmm1");
host_insn!(cvttps2dq, "cvttps2dq xmm0, xmm1");
host_insn!(cvtdq2pd, "cvtdq2pd xmm0, xmm1");
host_insn!(cvtpd2dq, "cvtpd2dq xmm0, xmm1");
host_insn!(cvttpd2dq, "cvttpd2dq xmm0, xmm1");
host_insn!(cvtss2sd, "cvtss2sd xmm0, xmm1");
host_insn!(cvtsd2ss, "cvtsd2ss xmm0, xmm1");
host_insn!(cmpps<I>, "cmpps xmm0, xmm1, {i}");
host_insn!(cmppd<I>, "cmppd xmm0, xmm1, {i}");
host_insn!(cmpss<I>, "cmpss xmm0, xmm1, {i}");
host_insn!(cmpsd<I>, "cmpsd xmm0, xmm1, {i}");
host_insn!(roundps<I>, "roundps xmm0, xmm1, {i}");
host_insn!(roundpd<I>, "roundpd xmm0, xmm1, {i}");
host_insn!(roundss<I>, "roundss xmm0, xmm1, {i}");
host_insn!(roundsd<I>, "roundsd xmm0, xmm1, {i}");
host_insn!(dpps<I>, "dpps xmm0, xmm1, {i}");
host_insn!(dppd<I>, "dppd xmm0, xmm1, {i}");
host_insn!(comiss, "comiss xmm0, xmm1\npushfq\npop rax");
host_insn!(comisd, "comisd xmm0, xmm1\npushfq\npop rax");
host_insn!(ucomiss, "ucomiss xmm0, xmm1\npushfq\npop rax");
host_insn!(ucomisd, "ucomisd xmm0, xmm1\npushfq\npop rax");
host_insn!(cvtss2si32, "cvtss2si eax, xmm1");
host_insn!(cvtss2si64, "cvtss2si rax, xmm1");
host_insn!(cvttss2si32, "cvttss2si eax, xmm1");
host_insn!(cvttss2si64, "cvttss2si rax, xmm1");
host_insn!(cvtsd2si32, "cvtsd2si eax, xmm1");
host_insn!(cvtsd2si64, "cvtsd2si rax, xmm1");
host_insn!(cvttsd2si32, "cvttsd2si eax, xmm1");
host_insn!(cvttsd2si64, "cvttsd2si rax, xmm1");
host_insn!(cvtsi2ss32, "cvtsi2ss xmm0, eax");
host_insn!(cvtsi2ss64, "cvtsi2ss xmm0, rax");
host_insn!(cvtsi2sd32, "cvtsi2sd xmm0, eax");
host_insn!(cvtsi2sd64, "cvtsi2sd xmm0, rax");

/// CMPxx predicates (legacy encodings use `imm8[2:0]`).
const CMPPS: [HostFn; 8] = imm_list!(cmpps; 0 1 2 3 4 5 6 7);
const CMPPD: [HostFn; 8] = imm_list!(cmppd; 0 1 2 3 4 5 6 7);
const CMPSS: [HostFn; 8] = imm_list!(cmpss; 0 1 2 3 4 5 6 7);
const CMPSD: [HostFn; 8] = imm_list!(cmpsd; 0 1 2 3 4 5 6 7);
/// ROUNDxx controls (`imm8[3:0]`).
const ROUNDPS: [HostFn; 16] = imm_list!(roundps; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
const ROUNDPD: [HostFn; 16] = imm_list!(roundpd; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
const ROUNDSS: [HostFn; 16] = imm_list!(roundss; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
const ROUNDSD: [HostFn; 16] = imm_list!(roundsd; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
/// DPPS uses the whole imm8.
static DPPS: [[HostFn; 16]; 16] = imm_table!(dpps);
/// DPPD uses `imm8[5:4]` and `imm8[1:0]`, indexed as `imm[1:0] | imm[5:4] << 2`.
const DPPD: [HostFn; 16] = imm_list!(dppd;
    0x00 0x01 0x02 0x03 0x10 0x11 0x12 0x13 0x20 0x21 0x22 0x23 0x30 0x31 0x32 0x33);

/// Host ISA extension an instruction needs beyond SSE2.
#[derive(Clone, Copy)]
enum Isa {
    Sse2,
    Sse3,
    Sse41,
}

impl Isa {
    /// True if the host can execute instructions of this extension. A guard against running
    /// an instruction the host lacks: the decoder already refuses (#UD) instructions above
    /// the vCPU's CPUID level, which never exceeds the host's (see `hostcpu`).
    fn available(self) -> bool {
        match self {
            Isa::Sse2 => true,
            Isa::Sse3 => HostCpu::detected().sse3,
            Isa::Sse41 => HostCpu::detected().sse41,
        }
    }
}

/// Which result lanes hold an arithmetic result that can underflow (where a
/// denormal result means "tiny" for an unmasked underflow exception).
#[derive(Clone, Copy)]
enum Tiny {
    /// The instruction cannot underflow.
    Never,
    /// All four single-precision lanes.
    Ps,
    /// Single-precision lane 0 only (scalar instructions).
    Ss,
    /// Both double-precision lanes.
    Pd,
    /// Double-precision lane 0 only.
    Sd,
}

impl Tiny {
    /// True if a checked lane of `r` holds a non-zero denormal.
    fn denormal_in(self, r: u128) -> bool {
        let s = |x: u32| x & 0x7f80_0000 == 0 && x & 0x007f_ffff != 0;
        let d = |x: u64| x & 0x7ff0_0000_0000_0000 == 0 && x & 0x000f_ffff_ffff_ffff != 0;
        match self {
            Tiny::Never => false,
            Tiny::Ps => dwords(r).into_iter().any(s),
            Tiny::Ss => s(r as u32),
            Tiny::Pd => qwords(r).into_iter().any(d),
            Tiny::Sd => d(r as u64),
        }
    }
}

/// How to execute one instruction on the host.
#[derive(Clone, Copy)]
struct Spec {
    run: HostFn,
    isa: Isa,
    tiny: Tiny,
}

/// Shorthand constructor for [`Spec`].
const fn spec(run: HostFn, isa: Isa, tiny: Tiny) -> Spec {
    Spec { run, isa, tiny }
}

/// A [`Spec`] for an SSE2 instruction that cannot underflow.
const fn sse2_never(run: HostFn) -> Spec {
    spec(run, Isa::Sse2, Tiny::Never)
}

/// Host instruction for the arithmetic mnemonics of SSE/SSE2.
fn sse2_spec(m: Mnemonic) -> Option<Spec> {
    use Isa::Sse2 as B;
    use Mnemonic as M;
    use Tiny::{Never as N, Pd, Ps, Sd, Ss};
    Some(match m {
        M::Addps => spec(addps, B, Ps),
        M::Addpd => spec(addpd, B, Pd),
        M::Addss => spec(addss, B, Ss),
        M::Addsd => spec(addsd, B, Sd),
        M::Subps => spec(subps, B, Ps),
        M::Subpd => spec(subpd, B, Pd),
        M::Subss => spec(subss, B, Ss),
        M::Subsd => spec(subsd, B, Sd),
        M::Mulps => spec(mulps, B, Ps),
        M::Mulpd => spec(mulpd, B, Pd),
        M::Mulss => spec(mulss, B, Ss),
        M::Mulsd => spec(mulsd, B, Sd),
        M::Divps => spec(divps, B, Ps),
        M::Divpd => spec(divpd, B, Pd),
        M::Divss => spec(divss, B, Ss),
        M::Divsd => spec(divsd, B, Sd),
        M::Minps => spec(minps, B, N),
        M::Minpd => spec(minpd, B, N),
        M::Minss => spec(minss, B, N),
        M::Minsd => spec(minsd, B, N),
        M::Maxps => spec(maxps, B, N),
        M::Maxpd => spec(maxpd, B, N),
        M::Maxss => spec(maxss, B, N),
        M::Maxsd => spec(maxsd, B, N),
        M::Sqrtps => spec(sqrtps, B, N),
        M::Sqrtpd => spec(sqrtpd, B, N),
        M::Sqrtss => spec(sqrtss, B, N),
        M::Sqrtsd => spec(sqrtsd, B, N),
        M::Rcpps => spec(rcpps, B, N),
        M::Rcpss => spec(rcpss, B, N),
        M::Rsqrtps => spec(rsqrtps, B, N),
        M::Rsqrtss => spec(rsqrtss, B, N),
        M::Cvtps2pd => spec(cvtps2pd, B, N),
        M::Cvtpd2ps => spec(cvtpd2ps, B, Ps),
        M::Cvtdq2ps => spec(cvtdq2ps, B, N),
        M::Cvtps2dq => spec(cvtps2dq, B, N),
        M::Cvttps2dq => spec(cvttps2dq, B, N),
        M::Cvtdq2pd => spec(cvtdq2pd, B, N),
        M::Cvtpd2dq => spec(cvtpd2dq, B, N),
        M::Cvttpd2dq => spec(cvttpd2dq, B, N),
        M::Cvtss2sd => spec(cvtss2sd, B, N),
        M::Cvtsd2ss => spec(cvtsd2ss, B, Ss),
        _ => return None,
    })
}

/// Host instruction for the SSE3 and SSE4.1 mnemonics and the compares, with
/// the imm8 applied.
fn imm_spec(m: Mnemonic, imm: u8) -> Option<Spec> {
    use Isa::{Sse2, Sse3, Sse41};
    use Mnemonic as M;
    use Tiny::{Never as N, Pd, Ps};
    let cmp = usize::from(imm & 7);
    let round = usize::from(imm & 15);
    Some(match m {
        M::Addsubps => spec(addsubps, Sse3, Ps),
        M::Addsubpd => spec(addsubpd, Sse3, Pd),
        M::Haddps => spec(haddps, Sse3, Ps),
        M::Haddpd => spec(haddpd, Sse3, Pd),
        M::Hsubps => spec(hsubps, Sse3, Ps),
        M::Hsubpd => spec(hsubpd, Sse3, Pd),
        M::Cmpps => spec(CMPPS[cmp], Sse2, N),
        M::Cmppd => spec(CMPPD[cmp], Sse2, N),
        M::Cmpss => spec(CMPSS[cmp], Sse2, N),
        M::Cmpsd => spec(CMPSD[cmp], Sse2, N),
        M::Roundps => spec(ROUNDPS[round], Sse41, N),
        M::Roundpd => spec(ROUNDPD[round], Sse41, N),
        M::Roundss => spec(ROUNDSS[round], Sse41, N),
        M::Roundsd => spec(ROUNDSD[round], Sse41, N),
        M::Dpps => spec(
            DPPS[usize::from(imm >> 4)][usize::from(imm & 15)],
            Sse41,
            Ps,
        ),
        M::Dppd => {
            let k = usize::from(imm & 3) | usize::from((imm >> 2) & 0xc);
            spec(DPPD[k], Sse41, Pd)
        }
        _ => return None,
    })
}

/// The bitwise "floating-point" logic instructions, which never touch MXCSR.
fn bitwise(m: Mnemonic, dst: u128, src: u128) -> Option<u128> {
    use Mnemonic as M;
    Some(match m {
        M::Andps | M::Andpd => dst & src,
        M::Andnps | M::Andnpd => !dst & src,
        M::Orps | M::Orpd => dst | src,
        M::Xorps | M::Xorpd => dst ^ src,
        _ => return None,
    })
}

/// The host MXCSR value to run a guest instruction under: the guest's rounding
/// control, FTZ and DAZ, every exception masked and every flag clear. FTZ is
/// dropped when `honor_ue` (underflow unmasked: hardware then ignores FTZ).
fn host_env(guest: u32, honor_ue: bool) -> u32 {
    let ftz = if honor_ue { 0 } else { MXCSR_FTZ };
    (guest & (MXCSR_RC | MXCSR_DAZ | ftz)) | MXCSR_MASKS
}

/// Executes `spec` on `a` (xmm0, the destination), `b` (xmm1) and `gpr`
/// (rax) under the guest `mxcsr`, ORs the raised flags into it and returns
/// the resulting `(xmm0, rax)`.
///
/// With `honor_masks` the guest's mask bits apply: a pre-computation
/// exception (IE, DE, ZE) that is unmasked suppresses the post-computation
/// ones (OE, UE, PE); an unmasked underflow is also detected for exact tiny
/// results; any unmasked exception gives `Err`.
fn execute(
    spec: Spec,
    a: u128,
    b: u128,
    gpr: u64,
    mxcsr: &mut u32,
    honor_masks: bool,
) -> Result<(u128, u64), SimdFpException> {
    let guest = *mxcsr;
    let unmasked = if honor_masks {
        !(guest >> 7) & MXCSR_FLAGS
    } else {
        0
    };
    let honor_ue = unmasked & MXCSR_UE != 0;
    let mut f = Frame {
        a,
        b,
        gpr,
        env: host_env(guest, honor_ue),
        ..Frame::default()
    };
    (spec.run)(&mut f);
    let mut raised = f.flags & MXCSR_FLAGS;
    let pre = raised & (MXCSR_IE | MXCSR_DE | MXCSR_ZE);
    if pre & unmasked != 0 {
        *mxcsr |= pre;
        return Err(SimdFpException { flags: pre });
    }
    if honor_ue && spec.tiny.denormal_in(f.a) {
        raised |= MXCSR_UE;
    }
    *mxcsr |= raised;
    if raised & unmasked != 0 {
        return Err(SimdFpException { flags: raised });
    }
    Ok((f.a, f.gpr))
}

/// Result of the floating-point instruction `m` in its `xmm1 = op(xmm1,
/// xmm2/mem[, imm8])` form, `dst` being xmm1 and `src` xmm2 or the loaded
/// memory operand (m32/m64 operands in the low bits), under the guest `mxcsr`,
/// whose exception flags receive the raised exceptions (masked response; see
/// [`float_op_checked`] for unmasked exceptions).
///
/// Covers ADD/SUB/MUL/DIV/MIN/MAX/SQRT (PS/PD/SS/SD), RCPPS/RCPSS/RSQRTPS/
/// RSQRTSS, AND/ANDN/OR/XOR (PS/PD), CMPPS/PD/SS/SD (`imm8[2:0]`), ADDSUBPS/PD,
/// HADDPS/PD, HSUBPS/PD, ROUNDPS/PD/SS/SD (`imm8[3:0]`), DPPS/DPPD (imm8) and
/// CVTPS2PD, CVTPD2PS, CVTDQ2PS, CVTPS2DQ, CVTTPS2DQ, CVTDQ2PD, CVTPD2DQ,
/// CVTTPD2DQ, CVTSS2SD, CVTSD2SS. Results are bit-identical to the host
/// instruction, including the upper lanes of scalar forms (kept from `dst`)
/// and the zeroed upper halves of the narrowing conversions.
///
/// Returns `None` for other mnemonics, or if the host lacks the instruction's
/// extension (SSE3/SSE4.1).
#[must_use]
pub fn float_op(m: Mnemonic, dst: u128, src: u128, imm: u8, mxcsr: &mut u32) -> Option<u128> {
    float_op_impl(m, dst, src, imm, mxcsr, false).map(|r| r.unwrap_or(dst))
}

/// [`float_op`] honoring the guest's exception masks: `Err` means an unmasked
/// exception occurred, its flags are already in `mxcsr`, and the destination
/// must stay `dst` (the caller raises #XM).
///
/// Modelled on the SDM's rules (unmasked faults cannot be compared against
/// the host in-process): an unmasked pre-computation exception (invalid,
/// denormal, divide-by-zero) in any lane suppresses the post-computation flags
/// of all lanes; an unmasked underflow is also reported for exact tiny results
/// and ignores FTZ. Known approximations: on an unmasked overflow/underflow
/// fault PE is reported as in the masked response, and an exact tiny
/// intermediate product of DPPS/DPPD is not detected as an underflow.
#[must_use]
pub fn float_op_checked(
    m: Mnemonic,
    dst: u128,
    src: u128,
    imm: u8,
    mxcsr: &mut u32,
) -> Option<Result<u128, SimdFpException>> {
    float_op_impl(m, dst, src, imm, mxcsr, true)
}

/// Shared body of [`float_op`] and [`float_op_checked`].
fn float_op_impl(
    m: Mnemonic,
    dst: u128,
    src: u128,
    imm: u8,
    mxcsr: &mut u32,
    honor_masks: bool,
) -> Option<Result<u128, SimdFpException>> {
    if let Some(r) = bitwise(m, dst, src) {
        return Some(Ok(r));
    }
    let spec = sse2_spec(m).or_else(|| imm_spec(m, imm))?;
    if !spec.isa.available() {
        return None;
    }
    Some(execute(spec, dst, src, 0, mxcsr, honor_masks).map(|(r, _)| r))
}

/// Host instruction and operand size for the COMIS/UCOMIS mnemonics.
fn comis_spec(m: Mnemonic) -> Option<HostFn> {
    use Mnemonic as M;
    Some(match m {
        M::Comiss => comiss,
        M::Comisd => comisd,
        M::Ucomiss => ucomiss,
        M::Ucomisd => ucomisd,
        _ => return None,
    })
}

/// COMISS/COMISD/UCOMISS/UCOMISD of the low lanes of `a` (xmm1) and `b`
/// (xmm2/mem): the new RFLAGS arithmetic bits, i.e. ZF, PF and CF set per the
/// result (unordered 111, less 001, equal 100, greater 000) with OF, SF and AF
/// clear; only bits in [`COMIS_WRITTEN_FLAGS`] can be set. The raised MXCSR
/// flags (IE for SNaN, or any NaN for COMIS; DE) are ORed into `mxcsr`
/// (masked response). Other mnemonics return 0 and change nothing.
#[must_use]
pub fn comis(m: Mnemonic, a: u128, b: u128, mxcsr: &mut u32) -> u64 {
    comis_impl(m, a, b, mxcsr, false).unwrap_or(0)
}

/// [`comis`] honoring the guest's exception masks.
///
/// # Errors
///
/// An unmasked IE or DE: the flags are already in `mxcsr` and RFLAGS must
/// stay unchanged (the caller raises #XM).
pub fn comis_checked(
    m: Mnemonic,
    a: u128,
    b: u128,
    mxcsr: &mut u32,
) -> Result<u64, SimdFpException> {
    comis_impl(m, a, b, mxcsr, true)
}

/// Shared body of [`comis`] and [`comis_checked`].
fn comis_impl(
    m: Mnemonic,
    a: u128,
    b: u128,
    mxcsr: &mut u32,
    honor_masks: bool,
) -> Result<u64, SimdFpException> {
    let Some(run) = comis_spec(m) else {
        return Ok(0);
    };
    execute(sse2_never(run), a, b, 0, mxcsr, honor_masks)
        .map(|(_, rflags)| rflags & COMIS_WRITTEN_FLAGS)
}

/// Host instruction for a float-to-integer conversion of `bits` (32 or 64).
fn to_int_spec(m: Mnemonic, bits: u32) -> Option<HostFn> {
    use Mnemonic as M;
    let wide = bits == 64;
    Some(match (m, wide) {
        (M::Cvtss2si, false) => cvtss2si32,
        (M::Cvtss2si, true) => cvtss2si64,
        (M::Cvttss2si, false) => cvttss2si32,
        (M::Cvttss2si, true) => cvttss2si64,
        (M::Cvtsd2si, false) => cvtsd2si32,
        (M::Cvtsd2si, true) => cvtsd2si64,
        (M::Cvttsd2si, false) => cvttsd2si32,
        (M::Cvttsd2si, true) => cvttsd2si64,
        _ => return None,
    })
}

/// CVTSS2SI/CVTTSS2SI/CVTSD2SI/CVTTSD2SI of the low lane of `src` to a
/// `bits`-wide integer (64 for REX.W, anything else means 32), rounded per
/// MXCSR.RC (or truncated for the CVTT forms); out-of-range and NaN inputs
/// give the integer indefinite value (0x8000_0000 or 0x8000_0000_0000_0000)
/// and IE. The 32-bit result is returned zero-extended, as a 32-bit register
/// write leaves RAX. Flags are ORed into `mxcsr` (masked response). Other
/// mnemonics return 0 and change nothing.
#[must_use]
pub fn cvt_to_int(m: Mnemonic, src: u128, bits: u32, mxcsr: &mut u32) -> u64 {
    cvt_to_int_impl(m, src, bits, mxcsr, false).unwrap_or(0)
}

/// [`cvt_to_int`] honoring the guest's exception masks.
///
/// # Errors
///
/// An unmasked exception (IE for NaN/out-of-range inputs, DE, PE): the flags
/// are already in `mxcsr` and the destination register must stay unchanged.
pub fn cvt_to_int_checked(
    m: Mnemonic,
    src: u128,
    bits: u32,
    mxcsr: &mut u32,
) -> Result<u64, SimdFpException> {
    cvt_to_int_impl(m, src, bits, mxcsr, true)
}

/// Shared body of [`cvt_to_int`] and [`cvt_to_int_checked`].
fn cvt_to_int_impl(
    m: Mnemonic,
    src: u128,
    bits: u32,
    mxcsr: &mut u32,
    honor_masks: bool,
) -> Result<u64, SimdFpException> {
    let Some(run) = to_int_spec(m, bits) else {
        return Ok(0);
    };
    execute(sse2_never(run), 0, src, 0, mxcsr, honor_masks).map(|(_, r)| r)
}

/// Host instruction for an integer-to-float conversion of `bits` (32 or 64).
fn from_int_spec(m: Mnemonic, bits: u32) -> Option<HostFn> {
    use Mnemonic as M;
    Some(match (m, bits == 64) {
        (M::Cvtsi2ss, false) => cvtsi2ss32,
        (M::Cvtsi2ss, true) => cvtsi2ss64,
        (M::Cvtsi2sd, false) => cvtsi2sd32,
        (M::Cvtsi2sd, true) => cvtsi2sd64,
        _ => return None,
    })
}

/// CVTSI2SS/CVTSI2SD: `dst` with its low lane replaced by the signed integer
/// `value` (its low 32 bits unless `bits` is 64) converted per MXCSR.RC, upper
/// lanes kept; PE is ORed into `mxcsr` when inexact (masked response). Other
/// mnemonics return `dst` unchanged.
#[must_use]
pub fn cvt_from_int(m: Mnemonic, dst: u128, value: u64, bits: u32, mxcsr: &mut u32) -> u128 {
    cvt_from_int_impl(m, dst, value, bits, mxcsr, false).unwrap_or(dst)
}

/// [`cvt_from_int`] honoring the guest's exception masks.
///
/// # Errors
///
/// An unmasked precision exception: PE is already in `mxcsr` and the
/// destination must stay `dst`.
pub fn cvt_from_int_checked(
    m: Mnemonic,
    dst: u128,
    value: u64,
    bits: u32,
    mxcsr: &mut u32,
) -> Result<u128, SimdFpException> {
    cvt_from_int_impl(m, dst, value, bits, mxcsr, true)
}

/// Shared body of [`cvt_from_int`] and [`cvt_from_int_checked`].
fn cvt_from_int_impl(
    m: Mnemonic,
    dst: u128,
    value: u64,
    bits: u32,
    mxcsr: &mut u32,
    honor_masks: bool,
) -> Result<u128, SimdFpException> {
    let Some(run) = from_int_spec(m, bits) else {
        return Ok(dst);
    };
    execute(sse2_never(run), dst, 0, value, mxcsr, honor_masks).map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::super::lanes::{from_dwords, from_qwords, imm_table};
    use super::super::testutil::{expect_eq, refs, RefFn, RefTable, Regs, Rng};
    use super::*;

    /// Random cases per instruction without an immediate.
    const CASES: u32 = 4000;
    /// Random cases per imm8 value for instructions with an immediate.
    const CASES_PER_IMM: u32 = 24;

    /// Defines a reference `fn $name(r: &mut Regs)` (or `<const I: u8>`) that
    /// runs the instruction text on `xmm1 = r.x1`, `xmm2 = r.x2`, `rax =
    /// r.`g[0]`` with MXCSR `r.`g[1]``, storing xmm1, rax, the final MXCSR
    /// (`r.g[2]`) and RFLAGS (`r.g[3]`) back. Independent of `host_insn!`.
    macro_rules! hw_fp {
        ($name:ident, $insn:literal) => {
            fn $name(r: &mut Regs) {
                hw_fp!(@body r, $insn,);
            }
        };
        ($name:ident<I>, $insn:literal) => {
            fn $name<const I: u8>(r: &mut Regs) {
                hw_fp!(@body r, $insn, i = const I,);
            }
        };
        (@body $r:ident, $insn:literal, $($args:tt)*) => {
            // SAFETY: only the exclusively borrowed `Regs` is accessed, all
            // modified registers are clobbered, the test's MXCSR values only
            // use defined bits with every exception masked, and the host MXCSR
            // (saved in `x0`) is restored before the block ends.
            unsafe {
                asm!(
                    "stmxcsr [{p} + 32]",
                    "movdqu xmm1, [{p}]",
                    "movdqu xmm2, [{p} + 16]",
                    "mov rax, [{p} + 48]",
                    "ldmxcsr [{p} + 56]",
                    $insn,
                    "stmxcsr [{p} + 64]",
                    "pushfq",
                    "pop qword ptr [{p} + 72]",
                    "ldmxcsr [{p} + 32]",
                    "movdqu [{p}], xmm1",
                    "mov [{p} + 48], rax",
                    p = in(reg) core::ptr::from_mut($r),
                    $($args)*
                    out("xmm1") _, out("xmm2") _, out("rax") _,
                );
            }
        };
    }

    refs! {
        arith, hw_fp;
        Addps = "addps xmm1, xmm2";
        Addpd = "addpd xmm1, xmm2";
        Addss = "addss xmm1, xmm2";
        Addsd = "addsd xmm1, xmm2";
        Subps = "subps xmm1, xmm2";
        Subpd = "subpd xmm1, xmm2";
        Subss = "subss xmm1, xmm2";
        Subsd = "subsd xmm1, xmm2";
        Mulps = "mulps xmm1, xmm2";
        Mulpd = "mulpd xmm1, xmm2";
        Mulss = "mulss xmm1, xmm2";
        Mulsd = "mulsd xmm1, xmm2";
        Divps = "divps xmm1, xmm2";
        Divpd = "divpd xmm1, xmm2";
        Divss = "divss xmm1, xmm2";
        Divsd = "divsd xmm1, xmm2";
        Minps = "minps xmm1, xmm2";
        Minpd = "minpd xmm1, xmm2";
        Minss = "minss xmm1, xmm2";
        Minsd = "minsd xmm1, xmm2";
        Maxps = "maxps xmm1, xmm2";
        Maxpd = "maxpd xmm1, xmm2";
        Maxss = "maxss xmm1, xmm2";
        Maxsd = "maxsd xmm1, xmm2";
        Sqrtps = "sqrtps xmm1, xmm2";
        Sqrtpd = "sqrtpd xmm1, xmm2";
        Sqrtss = "sqrtss xmm1, xmm2";
        Sqrtsd = "sqrtsd xmm1, xmm2";
        Rcpps = "rcpps xmm1, xmm2";
        Rcpss = "rcpss xmm1, xmm2";
        Rsqrtps = "rsqrtps xmm1, xmm2";
        Rsqrtss = "rsqrtss xmm1, xmm2";
        Andps = "andps xmm1, xmm2";
        Andnps = "andnps xmm1, xmm2";
        Orps = "orps xmm1, xmm2";
        Xorps = "xorps xmm1, xmm2";
        Andpd = "andpd xmm1, xmm2";
        Andnpd = "andnpd xmm1, xmm2";
        Orpd = "orpd xmm1, xmm2";
        Xorpd = "xorpd xmm1, xmm2";
        Addsubps = "addsubps xmm1, xmm2";
        Addsubpd = "addsubpd xmm1, xmm2";
        Haddps = "haddps xmm1, xmm2";
        Haddpd = "haddpd xmm1, xmm2";
        Hsubps = "hsubps xmm1, xmm2";
        Hsubpd = "hsubpd xmm1, xmm2";
        Cvtps2pd = "cvtps2pd xmm1, xmm2";
        Cvtpd2ps = "cvtpd2ps xmm1, xmm2";
        Cvtdq2ps = "cvtdq2ps xmm1, xmm2";
        Cvtps2dq = "cvtps2dq xmm1, xmm2";
        Cvttps2dq = "cvttps2dq xmm1, xmm2";
        Cvtdq2pd = "cvtdq2pd xmm1, xmm2";
        Cvtpd2dq = "cvtpd2dq xmm1, xmm2";
        Cvttpd2dq = "cvttpd2dq xmm1, xmm2";
        Cvtss2sd = "cvtss2sd xmm1, xmm2";
        Cvtsd2ss = "cvtsd2ss xmm1, xmm2";
    }

    // Memory-operand forms for the scalar instructions, which read only 32 or
    // 64 bits (the operand is `g[0]`, the rest of `x2` must not matter).
    refs! {
        scalar_mem, hw_fp;
        Addss = "addss xmm1, dword ptr [{p} + 48]";
        Subsd = "subsd xmm1, qword ptr [{p} + 48]";
        Mulss = "mulss xmm1, dword ptr [{p} + 48]";
        Divsd = "divsd xmm1, qword ptr [{p} + 48]";
        Sqrtss = "sqrtss xmm1, dword ptr [{p} + 48]";
        Minsd = "minsd xmm1, qword ptr [{p} + 48]";
        Cvtss2sd = "cvtss2sd xmm1, dword ptr [{p} + 48]";
        Cvtsd2ss = "cvtsd2ss xmm1, qword ptr [{p} + 48]";
        Rsqrtss = "rsqrtss xmm1, dword ptr [{p} + 48]";
    }

    refs! {
        with_imm<I>, hw_fp;
        Cmpps = "cmpps xmm1, xmm2, {i}";
        Cmppd = "cmppd xmm1, xmm2, {i}";
        Cmpss = "cmpss xmm1, xmm2, {i}";
        Cmpsd = "cmpsd xmm1, xmm2, {i}";
        Roundps = "roundps xmm1, xmm2, {i}";
        Roundpd = "roundpd xmm1, xmm2, {i}";
        Roundss = "roundss xmm1, xmm2, {i}";
        Roundsd = "roundsd xmm1, xmm2, {i}";
        Dpps = "dpps xmm1, xmm2, {i}";
        Dppd = "dppd xmm1, xmm2, {i}";
    }

    refs! {
        compares, hw_fp;
        Comiss = "comiss xmm1, xmm2";
        Comisd = "comisd xmm1, xmm2";
        Ucomiss = "ucomiss xmm1, xmm2";
        Ucomisd = "ucomisd xmm1, xmm2";
    }

    refs! {
        to_int32, hw_fp;
        Cvtss2si = "cvtss2si eax, xmm2";
        Cvttss2si = "cvttss2si eax, xmm2";
        Cvtsd2si = "cvtsd2si eax, xmm2";
        Cvttsd2si = "cvttsd2si eax, xmm2";
    }

    refs! {
        to_int64, hw_fp;
        Cvtss2si = "cvtss2si rax, xmm2";
        Cvttss2si = "cvttss2si rax, xmm2";
        Cvtsd2si = "cvtsd2si rax, xmm2";
        Cvttsd2si = "cvttsd2si rax, xmm2";
    }

    refs! {
        from_int32, hw_fp;
        Cvtsi2ss = "cvtsi2ss xmm1, eax";
        Cvtsi2sd = "cvtsi2sd xmm1, eax";
    }

    refs! {
        from_int64, hw_fp;
        Cvtsi2ss = "cvtsi2ss xmm1, rax";
        Cvtsi2sd = "cvtsi2sd xmm1, rax";
    }

    /// True if the host runs every instruction these tests execute.
    fn host_ok() -> bool {
        let ok = is_x86_feature_detected!("sse3") && is_x86_feature_detected!("sse4.1");
        if !ok {
            eprintln!("host lacks SSE3/SSE4.1: skipping hardware comparison");
        }
        ok
    }

    /// Lane format of an instruction's source operand.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Kind {
        F32,
        F64,
        I32,
    }

    /// The source lane format of `m`, from its name (`...ps`/`...ss` single,
    /// `...pd`/`...sd` double, `cvtdq...` integer; conversions by their input).
    fn kind(m: Mnemonic) -> Kind {
        let name = format!("{m:?}").to_ascii_lowercase();
        let tail = name.trim_start_matches("cvtt").trim_start_matches("cvt");
        let key = if tail.len() < name.len() {
            &tail[..2]
        } else {
            &name[name.len() - 2..]
        };
        match key {
            "ps" | "ss" => Kind::F32,
            "dq" | "si" => Kind::I32,
            _ => Kind::F64,
        }
    }

    /// An interesting single-precision bit pattern.
    fn f32_bits(rng: &mut Rng) -> u32 {
        const SPECIAL: [u32; 24] = [
            0,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x3f80_0000,
            0xbf80_0000,
            0x0080_0000,
            0x8080_0000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x0000_0001,
            0x807f_ffff,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0xffbf_ffff,
            0x4f00_0000,
            0xcf00_0000,
            0x5f00_0000,
            0xdf00_0000,
            0x3f00_0000,
            0x3fc0_0000,
            0x4020_0000,
            0xbfc0_0000,
        ];
        let sign = (rng.next() as u32) & 0x8000_0000;
        let mant = (rng.next() as u32) & 0x007f_ffff;
        let exp = |e: u64| (e as u32) << 23;
        match rng.below(16) {
            0 | 1 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
            2 => sign | 0x7f80_0000 | mant.max(1),
            3 => sign | mant,
            4 => sign | exp(1 + rng.below(30)) | mant,
            5 => sign | exp(220 + rng.below(35)) | mant,
            6 => ((rng.below(4001) as f32 - 2000.0) / 2.0).to_bits(),
            7 => sign | exp(140 + rng.below(30)) | mant,
            8 => rng.next() as u32,
            _ => sign | exp(100 + rng.below(55)) | mant,
        }
    }

    /// An interesting double-precision bit pattern.
    fn f64_bits(rng: &mut Rng) -> u64 {
        const SPECIAL: [u64; 20] = [
            0,
            1 << 63,
            0x7ff0 << 48,
            0xfff0 << 48,
            0x3ff0 << 48,
            0xbff0 << 48,
            0x0010 << 48,
            0x7fef_ffff_ffff_ffff,
            0xffef_ffff_ffff_ffff,
            1,
            0x800f_ffff_ffff_ffff,
            0x7ff8 << 48,
            0xfff8 << 48,
            0x7ff0_0000_0000_0001,
            0x41e0 << 48,
            0xc1e0 << 48,
            0x43e0 << 48,
            0xc3e0 << 48,
            0x3fe0 << 48,
            0x47ef_ffff_e000_0000,
        ];
        let sign = rng.next() & (1 << 63);
        let mant = rng.next() & 0x000f_ffff_ffff_ffff;
        let exp = |e: u64| e << 52;
        match rng.below(16) {
            0 | 1 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
            2 => sign | exp(0x7ff) | mant.max(1),
            3 => sign | mant,
            4 => sign | exp(1 + rng.below(60)) | mant,
            5 => sign | exp(1990 + rng.below(57)) | mant,
            6 => ((rng.below(4001) as f64 - 2000.0) / 2.0).to_bits(),
            7 => sign | exp(1050 + rng.below(40)) | mant,
            8 => rng.next(),
            // Around the single-precision range limits (for CVTPD2PS).
            9 => sign | exp(1023 - 150 + rng.below(30)) | mant,
            10 => sign | exp(1023 + 120 + rng.below(10)) | mant,
            _ => sign | exp(900 + rng.below(250)) | mant,
        }
    }

    /// A vector of lanes of the given kind; `like` (if any) is reused or
    /// negated lane-wise now and then, so that cancellations and ties occur.
    fn vector(rng: &mut Rng, kind: Kind, like: Option<u128>) -> u128 {
        let v = match kind {
            Kind::F32 => from_dwords([(); 4].map(|_| f32_bits(rng))),
            Kind::F64 => from_qwords([(); 2].map(|_| f64_bits(rng))),
            Kind::I32 => rng.int_vec(),
        };
        match (like, rng.below(6)) {
            (Some(x), 0) if kind == Kind::F64 => x ^ (1 << 127),
            (Some(x), 0) => x ^ 0x8000_0000_0000_0000_8000_0000_0000_0000,
            (Some(x), 1) => x,
            (Some(x), 2) => x.wrapping_add(1),
            _ => v,
        }
    }

    /// A random guest MXCSR with every exception masked: random rounding,
    /// FTZ, DAZ and sticky flags.
    fn masked_env(rng: &mut Rng) -> u32 {
        let sticky = if rng.below(4) == 0 {
            rng.next() as u32 & MXCSR_FLAGS
        } else {
            0
        };
        MXCSR_MASKS | (rng.next() as u32 & (MXCSR_RC | MXCSR_FTZ | MXCSR_DAZ)) | sticky
    }

    /// Runs `reference` with `x1 = a`, `x2 = b`, `rax = g` under `env`.
    fn reference(f: RefFn, a: u128, b: u128, g: u64, env: u32) -> Regs {
        let mut r = Regs::xmm(a, b);
        r.g[0] = g;
        r.g[1] = u64::from(env);
        f(&mut r);
        r
    }

    #[test]
    fn arithmetic_matches_hardware() {
        if !host_ok() {
            return;
        }
        for (k, &(m, f)) in arith::TABLE.iter().enumerate() {
            let mut rng = Rng::new(0x7777 + k as u64);
            for _ in 0..CASES {
                let a = vector(&mut rng, kind(m), None);
                let b = vector(&mut rng, kind(m), Some(a));
                let env = masked_env(&mut rng);
                let want = reference(f, a, b, 0, env);
                let mut mxcsr = env;
                let got = float_op(m, a, b, rng.next() as u8, &mut mxcsr).expect("handled");
                let what = format!("{m:?}({a:#x}, {b:#x}) mxcsr {env:#x}");
                expect_eq(&what, got, want.x1);
                expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
            }
        }
        eprintln!("{} float ops x {CASES} cases", arith::TABLE.len());
    }

    #[test]
    fn scalar_memory_forms_match_hardware() {
        if !host_ok() {
            return;
        }
        for (k, &(m, f)) in scalar_mem::TABLE.iter().enumerate() {
            let mut rng = Rng::new(0x8888 + k as u64);
            for _ in 0..CASES {
                let a = vector(&mut rng, kind(m), None);
                let b = vector(&mut rng, kind(m), Some(a));
                let env = masked_env(&mut rng);
                let want = reference(f, a, rng.u128(), b as u64, env);
                let mut mxcsr = env;
                let got = float_op(m, a, b, 0, &mut mxcsr).expect("handled");
                let what = format!("{m:?}({a:#x}, m {b:#x}) mxcsr {env:#x}");
                expect_eq(&what, got, want.x1);
                expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
            }
        }
    }

    #[test]
    fn imm_ops_match_hardware() {
        if !host_ok() {
            return;
        }
        for (k, &(m, ref refs)) in with_imm::TABLE.iter().enumerate() {
            let mut rng = Rng::new(0x9999 + k as u64);
            for imm in 0..=255u8 {
                let f = refs[usize::from(imm >> 4)][usize::from(imm & 15)];
                for _ in 0..CASES_PER_IMM {
                    let a = vector(&mut rng, kind(m), None);
                    let b = vector(&mut rng, kind(m), Some(a));
                    let env = masked_env(&mut rng);
                    let want = reference(f, a, b, 0, env);
                    let mut mxcsr = env;
                    let got = float_op(m, a, b, imm, &mut mxcsr).expect("handled");
                    let what = format!("{m:?}({a:#x}, {b:#x}, {imm:#x}) mxcsr {env:#x}");
                    expect_eq(&what, got, want.x1);
                    expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
                }
            }
        }
        eprintln!(
            "{} float ops x 256 imm x {CASES_PER_IMM} cases",
            with_imm::TABLE.len()
        );
    }

    #[test]
    fn compares_match_hardware() {
        if !host_ok() {
            return;
        }
        for (k, &(m, f)) in compares::TABLE.iter().enumerate() {
            let mut rng = Rng::new(0xaaaa + k as u64);
            for _ in 0..CASES {
                let a = vector(&mut rng, kind(m), None);
                let b = vector(&mut rng, kind(m), Some(a));
                let env = masked_env(&mut rng);
                let want = reference(f, a, b, 0, env);
                let mut mxcsr = env;
                let got = comis(m, a, b, &mut mxcsr);
                let what = format!("{m:?}({a:#x}, {b:#x}) mxcsr {env:#x}");
                expect_eq(&what, got, want.g[3] & COMIS_WRITTEN_FLAGS);
                expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
            }
        }
    }

    #[test]
    fn conversions_to_int_match_hardware() {
        if !host_ok() {
            return;
        }
        for (bits, table) in [(32, to_int32::TABLE), (64, to_int64::TABLE)] {
            for (k, &(m, f)) in table.iter().enumerate() {
                let mut rng = Rng::new(0xbbbb + k as u64 + u64::from(bits));
                let m_kind = if matches!(m, Mnemonic::Cvtss2si | Mnemonic::Cvttss2si) {
                    Kind::F32
                } else {
                    Kind::F64
                };
                for _ in 0..CASES {
                    let src = vector(&mut rng, m_kind, None);
                    let env = masked_env(&mut rng);
                    let want = reference(f, 0, src, rng.next(), env);
                    let mut mxcsr = env;
                    let got = cvt_to_int(m, src, bits, &mut mxcsr);
                    let what = format!("{m:?}/{bits}({src:#x}) mxcsr {env:#x}");
                    expect_eq(&what, got, want.g[0]);
                    expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
                }
            }
        }
    }

    /// An integer with a random magnitude (so that both exact and inexact
    /// conversions occur), or an extreme value.
    fn int_value(rng: &mut Rng) -> u64 {
        match rng.below(6) {
            0 => [
                0,
                1,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
                1 << 31,
                (1 << 31) - 1,
                0xffff_ffff,
            ][rng.below(8) as usize],
            1 => rng.next(),
            _ => rng.next() >> rng.below(64),
        }
    }

    #[test]
    fn conversions_from_int_match_hardware() {
        if !host_ok() {
            return;
        }
        for (bits, table) in [(32, from_int32::TABLE), (64, from_int64::TABLE)] {
            for (k, &(m, f)) in table.iter().enumerate() {
                let mut rng = Rng::new(0xcccc + k as u64 + u64::from(bits));
                for _ in 0..CASES {
                    let dst = rng.u128();
                    let value = int_value(&mut rng);
                    let value = if rng.below(2) == 0 {
                        value.wrapping_neg()
                    } else {
                        value
                    };
                    let env = masked_env(&mut rng);
                    let want = reference(f, dst, 0, value, env);
                    let mut mxcsr = env;
                    let got = cvt_from_int(m, dst, value, bits, &mut mxcsr);
                    let what = format!("{m:?}/{bits}({value:#x}) mxcsr {env:#x}");
                    expect_eq(&what, got, want.x1);
                    expect_eq(&format!("MXCSR of {what}"), u64::from(mxcsr), want.g[2]);
                }
            }
        }
    }

    /// Guest MXCSR with all exceptions masked, rounding control `rc` and the
    /// given DAZ/FTZ bits.
    fn env(rc: u32, extra: u32) -> u32 {
        MXCSR_MASKS | (rc << 13) | extra
    }

    /// Low single-precision lane of `op(a, b)` under `mxcsr` and the flags it
    /// raised.
    fn scalar32(m: Mnemonic, a: f32, b: f32, mxcsr: u32) -> (u32, u32) {
        let mut csr = mxcsr;
        let r = float_op(m, a.to_bits().into(), b.to_bits().into(), 0, &mut csr).expect("handled");
        (r as u32, csr & MXCSR_FLAGS)
    }

    /// x86 NaN rule for two-operand arithmetic: the first NaN operand quieted.
    fn nan_propagation(a: u64, b: u64, a_nan: bool, b_nan: bool, quiet: u64) -> Option<u64> {
        match (a_nan, b_nan) {
            (true, _) => Some(a | quiet),
            (false, true) => Some(b | quiet),
            _ => None,
        }
    }

    #[test]
    fn default_mode_agrees_with_ieee_arithmetic() {
        use Mnemonic as M;
        let mut rng = Rng::new(42);
        for _ in 0..CASES {
            let a = vector(&mut rng, Kind::F32, None);
            let b = vector(&mut rng, Kind::F32, Some(a));
            let (x, y) = (a as u32, b as u32);
            let (fx, fy) = (f32::from_bits(x), f32::from_bits(y));
            for (m, want) in [
                (M::Addss, fx + fy),
                (M::Subss, fx - fy),
                (M::Mulss, fx * fy),
                (M::Divss, fx / fy),
                (M::Sqrtss, fy.sqrt()),
            ] {
                let (ax, ay) = if m == M::Sqrtss { (y, y) } else { (x, y) };
                let want = nan_propagation(
                    ax.into(),
                    ay.into(),
                    f32::from_bits(ax).is_nan(),
                    f32::from_bits(ay).is_nan(),
                    0x40_0000,
                )
                .map(|v| v as u32)
                .unwrap_or(if want.is_nan() {
                    0xffc0_0000
                } else {
                    want.to_bits()
                });
                let mut mxcsr = MXCSR_MASKS;
                let got = float_op(m, a, b, 0, &mut mxcsr).expect("handled");
                expect_eq(&format!("{m:?}({x:#x}, {y:#x})"), got as u32, want);
                expect_eq(&format!("{m:?} upper lanes"), got >> 32, a >> 32);
            }
            let a = vector(&mut rng, Kind::F64, None);
            let b = vector(&mut rng, Kind::F64, Some(a));
            let (x, y) = (a as u64, b as u64);
            let (fx, fy) = (f64::from_bits(x), f64::from_bits(y));
            for (m, want) in [
                (M::Addsd, fx + fy),
                (M::Subsd, fx - fy),
                (M::Mulsd, fx * fy),
                (M::Divsd, fx / fy),
                (M::Sqrtsd, fy.sqrt()),
            ] {
                let (ax, ay) = if m == M::Sqrtsd { (y, y) } else { (x, y) };
                let quiet = 1 << 51;
                let want = nan_propagation(
                    ax,
                    ay,
                    f64::from_bits(ax).is_nan(),
                    f64::from_bits(ay).is_nan(),
                    quiet,
                )
                .unwrap_or(if want.is_nan() {
                    0xfff8 << 48
                } else {
                    want.to_bits()
                });
                let mut mxcsr = MXCSR_MASKS;
                let got = float_op(m, a, b, 0, &mut mxcsr).expect("handled");
                expect_eq(&format!("{m:?}({x:#x}, {y:#x})"), got as u64, want);
                expect_eq(&format!("{m:?} upper lane"), got >> 64, a >> 64);
            }
        }
    }

    /// A random normal single-precision value with exponent in `exp`.
    fn normal32(rng: &mut Rng, exp: core::ops::Range<u64>) -> f32 {
        let e = exp.start + rng.below(exp.end - exp.start);
        f32::from_bits((rng.next() as u32 & 0x807f_ffff) | ((e as u32) << 23))
    }

    /// Checks the four rounding modes of one single-precision result against
    /// the exact value (computed exactly in `f64`), including PE.
    fn check_rounding(what: &str, exact: f64, r: [(u32, u32); 4]) {
        let [(near, fn_), (down, fd), (up, fu), (zero, fz)] =
            r.map(|(bits, flags)| (f64::from(f32::from_bits(bits)), flags));
        let inexact = down != up;
        assert!(
            down <= exact && exact <= up,
            "{what}: {down} <= {exact} <= {up}"
        );
        assert_eq!(exact == down, exact == up, "{what}: bracket");
        if inexact {
            let next = f32::from_bits(f32::from_bits(r[1].0).to_bits().wrapping_add(1));
            let next = if down < 0.0 {
                f32::from_bits(f32::from_bits(r[1].0).to_bits().wrapping_sub(1))
            } else {
                next
            };
            assert_eq!(f64::from(next), up, "{what}: neighbours");
        }
        assert_eq!(
            zero,
            if exact >= 0.0 { down } else { up },
            "{what}: toward zero"
        );
        let (dd, du) = (exact - down, up - exact);
        let want_near = match dd.partial_cmp(&du) {
            Some(core::cmp::Ordering::Less) => down,
            Some(core::cmp::Ordering::Greater) => up,
            // A tie goes to the neighbour with an even significand.
            _ if r[1].0 & 1 == 0 => down,
            _ => up,
        };
        assert_eq!(near, want_near, "{what}: nearest-even");
        for flags in [fn_, fd, fu, fz] {
            assert_eq!(flags == MXCSR_PE, inexact, "{what}: PE {flags:#x}");
            assert!(flags & !MXCSR_PE == 0, "{what}: flags {flags:#x}");
        }
    }

    #[test]
    fn rounding_modes_bracket_the_exact_result() {
        let mut rng = Rng::new(7);
        for _ in 0..CASES {
            let (a, b) = (normal32(&mut rng, 100..150), normal32(&mut rng, 100..150));
            let run = |m| [0, 1, 2, 3].map(|rc| scalar32(m, a, b, env(rc, 0)));
            let exact = f64::from(a) * f64::from(b);
            check_rounding(&format!("mulss {a:e} * {b:e}"), exact, run(Mnemonic::Mulss));
            // Exponents within 20 of each other: the f64 sum is exact.
            let c = normal32(&mut rng, 110..130);
            let exact = f64::from(a) + f64::from(c);
            if exact != 0.0 && a.abs().max(c.abs()) / a.abs().min(c.abs()) < 1e6 {
                let r = [0, 1, 2, 3].map(|rc| scalar32(Mnemonic::Addss, a, c, env(rc, 0)));
                check_rounding(&format!("addss {a:e} + {c:e}"), exact, r);
            }
        }
    }

    #[test]
    fn daz_and_ftz_behave_as_documented() {
        use Mnemonic as M;
        let mut rng = Rng::new(3);
        for _ in 0..CASES {
            let den = f32::from_bits((rng.next() as u32 & 0x807f_ffff).max(1));
            let zero = if den.is_sign_negative() { -0.0 } else { 0.0 };
            let x = normal32(&mut rng, 1..200);
            for m in [M::Addss, M::Mulss, M::Divss, M::Maxss, M::Subss] {
                let with_den = scalar32(m, den, x, env(0, MXCSR_DAZ));
                let with_zero = scalar32(m, zero, x, env(0, MXCSR_DAZ));
                assert_eq!(with_den, with_zero, "DAZ {m:?}({den:e}, {x:e})");
                let (_, flags) = scalar32(m, den, x, env(0, 0));
                if den != 0.0 {
                    assert!(
                        flags & MXCSR_DE != 0,
                        "DE without DAZ for {m:?}({den:e}, {x:e})"
                    );
                }
            }
            // Tiny products: exact ones give a denormal without flags, FTZ
            // flushes to a signed zero with UE and PE.
            let (a, b) = (normal32(&mut rng, 20..60), normal32(&mut rng, 40..60));
            let exact = f64::from(a) * f64::from(b);
            if exact.abs() < f64::from(f32::MIN_POSITIVE) {
                let (r, flags) = scalar32(M::Mulss, a, b, env(0, MXCSR_FTZ));
                assert_eq!(
                    r,
                    if exact < 0.0 { 0x8000_0000 } else { 0 },
                    "FTZ {a:e} * {b:e}"
                );
                assert_eq!(flags, MXCSR_UE | MXCSR_PE, "FTZ flags {a:e} * {b:e}");
                let (r, flags) = scalar32(M::Mulss, a, b, env(0, 0));
                let inexact = f64::from(f32::from_bits(r)) != exact;
                let want = if inexact { MXCSR_UE | MXCSR_PE } else { 0 };
                assert_eq!(flags, want, "underflow flags {a:e} * {b:e}");
            }
        }
        let (r, flags) = scalar32(M::Mulss, 2f32.powi(-100), 2f32.powi(-30), env(0, 0));
        assert_eq!((r, flags), (1 << 19, 0), "2^-130 is exact");
    }

    #[test]
    fn unmasked_exceptions_are_reported() {
        use Mnemonic as M;
        let one = u128::from(1f32.to_bits());
        let zero = u128::from(0f32.to_bits());
        let unmask = |bit: u32| MXCSR_MASKS & !(bit << 7);
        // Divide by zero.
        let mut csr = unmask(MXCSR_ZE);
        let r = float_op_checked(M::Divss, one, zero, 0, &mut csr).expect("handled");
        assert_eq!(r, Err(SimdFpException { flags: MXCSR_ZE }));
        assert_eq!(csr, unmask(MXCSR_ZE) | MXCSR_ZE);
        let mut csr = MXCSR_MASKS;
        let r = float_op_checked(M::Divss, one, zero, 0, &mut csr).expect("handled");
        assert_eq!(r, Ok(u128::from(f32::INFINITY.to_bits())));
        // An unmasked invalid operation suppresses the other lane's overflow.
        let a = from_dwords([0x7f80_0001, f32::MAX.to_bits(), 0, 0]);
        let b = from_dwords([one as u32, f32::MAX.to_bits(), 0, 0]);
        let mut csr = unmask(MXCSR_IE);
        let r = float_op_checked(M::Addps, a, b, 0, &mut csr).expect("handled");
        assert_eq!(r, Err(SimdFpException { flags: MXCSR_IE }));
        assert_eq!(csr & MXCSR_FLAGS, MXCSR_IE);
        let mut csr = unmask(MXCSR_OE);
        let r = float_op_checked(M::Addps, a, b, 0, &mut csr).expect("handled");
        assert_eq!(
            r,
            Err(SimdFpException {
                flags: MXCSR_IE | MXCSR_OE | MXCSR_PE
            })
        );
        // Unmasked underflow: exact tiny results fault too, FTZ is ignored.
        let (tiny_a, tiny_b) = (2f32.powi(-100).to_bits(), 2f32.powi(-30).to_bits());
        let mut csr = unmask(MXCSR_UE) | MXCSR_FTZ;
        let r = float_op_checked(M::Mulss, tiny_a.into(), tiny_b.into(), 0, &mut csr);
        assert_eq!(r, Some(Err(SimdFpException { flags: MXCSR_UE })));
        let mut csr = MXCSR_MASKS | MXCSR_FTZ;
        let r = float_op_checked(M::Mulss, tiny_a.into(), tiny_b.into(), 0, &mut csr);
        assert_eq!((r, csr & MXCSR_FLAGS), (Some(Ok(0)), MXCSR_UE | MXCSR_PE));
        // Unmasked precision.
        let three = u128::from(3f32.to_bits());
        let mut csr = unmask(MXCSR_PE);
        let r = float_op_checked(M::Divss, one, three, 0, &mut csr).expect("handled");
        assert_eq!(r, Err(SimdFpException { flags: MXCSR_PE }));
        let two = u128::from(2f32.to_bits());
        let r = float_op_checked(M::Divss, one, two, 0, &mut csr).expect("handled");
        assert_eq!(r, Ok(u128::from(0.5f32.to_bits())));
        // The plain function gives the masked response instead.
        let mut csr = unmask(MXCSR_PE);
        let r = float_op(M::Divss, one, three, 0, &mut csr).expect("handled");
        assert_eq!(r, u128::from((1f32 / 3.0).to_bits()));
        // Compares and conversions.
        let qnan = u128::from(0x7fc0_0000u32);
        let mut csr = unmask(MXCSR_IE);
        assert_eq!(
            comis_checked(M::Comiss, qnan, one, &mut csr),
            Err(SimdFpException { flags: MXCSR_IE })
        );
        assert_eq!(comis_checked(M::Ucomiss, qnan, one, &mut csr), Ok(0x45));
        assert_eq!(
            cvt_to_int_checked(M::Cvtss2si, qnan, 32, &mut csr),
            Err(SimdFpException { flags: MXCSR_IE })
        );
        let mut csr = MXCSR_MASKS;
        assert_eq!(cvt_to_int(M::Cvtss2si, qnan, 64, &mut csr), 1 << 63);
        let mut csr = unmask(MXCSR_PE);
        let big = (1u64 << 60) + 1;
        assert_eq!(
            cvt_from_int_checked(M::Cvtsi2ss, 0, big, 64, &mut csr),
            Err(SimdFpException { flags: MXCSR_PE })
        );
        assert_eq!(
            cvt_from_int_checked(M::Cvtsi2sd, 0, 3, 32, &mut csr),
            Ok(u128::from(3f64.to_bits()))
        );
    }

    #[test]
    fn checked_results_agree_with_masked_results() {
        let mut rng = Rng::new(0xdead);
        for (k, &(m, _)) in arith::TABLE.iter().enumerate() {
            for _ in 0..CASES / 4 {
                let a = vector(&mut rng, kind(m), None);
                let b = vector(&mut rng, kind(m), Some(a));
                let guest =
                    (masked_env(&mut rng) & !MXCSR_MASKS) | ((rng.next() as u32 & 0x3f) << 7);
                let unmasked = !(guest >> 7) & MXCSR_FLAGS;
                // The masked run, with FTZ off when underflow is unmasked.
                let ftz = if unmasked & MXCSR_UE != 0 {
                    MXCSR_FTZ
                } else {
                    0
                };
                let mut masked = (guest | MXCSR_MASKS) & !ftz;
                let want = float_op(m, a, b, 0, &mut masked).expect("handled");
                let raised = masked & MXCSR_FLAGS & !guest;
                let mut csr = guest;
                let got = float_op_checked(m, a, b, 0, &mut csr).expect("handled");
                let what = format!("#{k} {m:?}({a:#x}, {b:#x}) mxcsr {guest:#x}");
                match got {
                    Ok(r) => {
                        assert_eq!(r, want, "{what}");
                        assert_eq!(raised & unmasked, 0, "{what}");
                        assert_eq!(
                            csr,
                            masked & !MXCSR_MASKS | (guest & MXCSR_MASKS) | (guest & ftz),
                            "{what}"
                        );
                    }
                    Err(e) => {
                        assert!(e.flags & unmasked != 0, "{what}: {e:?}");
                        assert_eq!(csr & MXCSR_FLAGS, (guest | e.flags) & MXCSR_FLAGS, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn host_mxcsr_is_restored() {
        let mut csr = MXCSR_RC | MXCSR_FTZ | MXCSR_DAZ;
        let r = float_op(
            Mnemonic::Divss,
            1f32.to_bits().into(),
            3f32.to_bits().into(),
            0,
            &mut csr,
        );
        assert_eq!(r, Some(u128::from(0x3eaa_aaaa_u32)), "truncated 1/3");
        let third = core::hint::black_box(1f32) / core::hint::black_box(3f32);
        assert_eq!(third.to_bits(), 0x3eaa_aaab, "host rounds to nearest again");
        let tiny = core::hint::black_box(f32::MIN_POSITIVE) / core::hint::black_box(4f32);
        assert!(tiny > 0.0, "host does not flush to zero");
    }

    #[test]
    fn unknown_mnemonics_are_rejected() {
        let mut csr = MXCSR_MASKS;
        assert_eq!(float_op(Mnemonic::Paddb, 1, 2, 0, &mut csr), None);
        assert_eq!(float_op_checked(Mnemonic::Comiss, 1, 2, 0, &mut csr), None);
        assert_eq!(comis(Mnemonic::Addss, 1, 2, &mut csr), 0);
        assert_eq!(cvt_to_int(Mnemonic::Addss, 1, 64, &mut csr), 0);
        assert_eq!(cvt_from_int(Mnemonic::Addss, 7, 1, 64, &mut csr), 7);
        assert_eq!(csr, MXCSR_MASKS);
    }

    #[test]
    fn every_mnemonic_and_input_is_total() {
        let mut rng = Rng::new(3);
        for m in Mnemonic::values() {
            for _ in 0..16 {
                let (a, b) = (rng.u128(), rng.u128());
                // Any guest value, including reserved bits, must be safe.
                let mut csr = rng.next() as u32;
                let imm = rng.next() as u8;
                let _ = float_op(m, a, b, imm, &mut csr);
                let _ = float_op_checked(m, a, b, imm, &mut csr);
                let _ = comis(m, a, b, &mut csr);
                let _ = comis_checked(m, a, b, &mut csr);
                let bits = [0, 8, 32, 64, 128, u32::MAX][rng.below(6) as usize];
                let _ = cvt_to_int(m, a, bits, &mut csr);
                let _ = cvt_to_int_checked(m, a, bits, &mut csr);
                let _ = cvt_from_int(m, a, b as u64, bits, &mut csr);
                let _ = cvt_from_int_checked(m, a, b as u64, bits, &mut csr);
            }
        }
    }
}
