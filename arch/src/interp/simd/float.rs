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
//! (RCPPS/RSQRTPS approximations, which differ between Intel and AMD). They are
//! checked against hardware by the differential test's floating-point suite (a
//! guest's instructions on KVM, or their recorded results), not against the
//! host instruction in-process, which would repeat the implementation; the unit
//! tests here check properties and known answers.
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
use super::exact::{self, Fmt, Op};
use super::lanes::imm_table;

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

/// How an instruction computes its result lanes, for the unmasked overflow and underflow
/// exceptions: which lanes can be tiny (a denormal result faults an unmasked underflow even
/// when exact) and, per lane, the operation whose exactness decides the precision flag.
#[derive(Clone, Copy)]
enum Lanes {
    /// No result lane can overflow or underflow.
    Never,
    /// `n` lanes of `fmt`, lane i = `op(dst[i], src[i])`.
    Each(Op, Fmt, u32),
    /// ADDSUBPS/PD: lane i = dst[i] - src[i] for even i, dst[i] + src[i] for odd i.
    AddSub(Fmt),
    /// HADDPS/PD, HSUBPS/PD: the low half from pairs of adjacent dst lanes, the high half
    /// from src's.
    Horizontal(Op, Fmt),
    /// CVTPD2PS/CVTSD2SS: `n` single-precision lanes narrowed from src's doubles.
    Narrow(u32),
    /// DPPS/DPPD: `n` lanes of dot products, whose operations are not modelled.
    Dot(Fmt, u32),
}

/// Lanes of `fmt` in a register.
const fn width(fmt: Fmt) -> u32 {
    match fmt {
        Fmt::F32 => 4,
        Fmt::F64 => 2,
    }
}

/// Lane `i` of `v` in `fmt` (zero-extended).
fn lane(v: u128, fmt: Fmt, i: u32) -> u64 {
    match fmt {
        Fmt::F32 => u64::from((v >> (32 * i)) as u32),
        Fmt::F64 => (v >> (64 * i)) as u64,
    }
}

/// True if `x` is a non-zero denormal of `fmt`.
fn is_denormal(x: u64, fmt: Fmt) -> bool {
    let (exp, frac) = match fmt {
        Fmt::F32 => (0x7f80_0000, 0x007f_ffff),
        Fmt::F64 => (0x7ff0_0000_0000_0000, 0x000f_ffff_ffff_ffff),
    };
    x & exp == 0 && x & frac != 0
}

impl Lanes {
    /// The result lanes' format and count (None: no lane can overflow or underflow).
    fn result(self) -> Option<(Fmt, u32)> {
        match self {
            Lanes::Never => None,
            Lanes::Each(_, fmt, n) | Lanes::Dot(fmt, n) => Some((fmt, n)),
            Lanes::AddSub(fmt) | Lanes::Horizontal(_, fmt) => Some((fmt, width(fmt))),
            Lanes::Narrow(n) => Some((Fmt::F32, n)),
        }
    }

    /// True if a result lane of `r` holds a non-zero denormal.
    fn denormal_in(self, r: u128) -> bool {
        self.result()
            .is_some_and(|(fmt, n)| (0..n).any(|i| is_denormal(lane(r, fmt, i), fmt)))
    }

    /// The operation giving result lane `i` from `dst` and `src`: (operation, operand
    /// format, x, y). None where it is not modelled.
    fn lane_op(self, i: u32, dst: u128, src: u128) -> Option<(Op, Fmt, u64, u64)> {
        Some(match self {
            Lanes::Each(op, fmt, _) => (op, fmt, lane(dst, fmt, i), lane(src, fmt, i)),
            Lanes::AddSub(fmt) => {
                let op = if i.is_multiple_of(2) {
                    Op::Sub
                } else {
                    Op::Add
                };
                (op, fmt, lane(dst, fmt, i), lane(src, fmt, i))
            }
            Lanes::Horizontal(op, fmt) => {
                let half = width(fmt) / 2;
                let (v, k) = if i < half {
                    (dst, 2 * i)
                } else {
                    (src, 2 * (i - half))
                };
                (op, fmt, lane(v, fmt, k), lane(v, fmt, k + 1))
            }
            Lanes::Narrow(_) => (Op::Narrow, Fmt::F64, lane(src, Fmt::F64, i), 0),
            Lanes::Never | Lanes::Dot(..) => return None,
        })
    }
}

/// The scalar host instruction computing `op` on `fmt` (CVTSD2SS for [`Op::Narrow`]).
fn scalar(op: Op, fmt: Fmt) -> HostFn {
    match (op, fmt) {
        (Op::Add, Fmt::F32) => addss,
        (Op::Add, Fmt::F64) => addsd,
        (Op::Sub, Fmt::F32) => subss,
        (Op::Sub, Fmt::F64) => subsd,
        (Op::Mul, Fmt::F32) => mulss,
        (Op::Mul, Fmt::F64) => mulsd,
        (Op::Div, Fmt::F32) => divss,
        (Op::Div, Fmt::F64) => divsd,
        (Op::Narrow, _) => cvtsd2ss,
    }
}

/// The precision flag of an instruction that raised an unmasked overflow or underflow:
/// hardware reports PE for a faulting lane only if its result, with an unbounded exponent,
/// is inexact, and for the other lanes as in the masked response. Each lane runs as a scalar
/// instruction under `env` to tell which lanes fault. `masked` (the masked response's PE) is
/// kept for instructions whose lanes are not modelled (DPPS/DPPD: a known approximation).
fn unmasked_precision(lanes: Lanes, dst: u128, src: u128, env: u32, unmasked: u32) -> Option<u32> {
    let (result_fmt, n) = lanes.result()?;
    let daz = env & MXCSR_DAZ != 0;
    let mut pe = 0;
    for i in 0..n {
        let (op, fmt, x, y) = lanes.lane_op(i, dst, src)?;
        // CVTSD2SS converts its second operand.
        let (a, b) = if op == Op::Narrow { (0, x) } else { (x, y) };
        let mut f = Frame {
            a: a.into(),
            b: b.into(),
            env,
            ..Frame::default()
        };
        (scalar(op, fmt))(&mut f);
        let tiny = unmasked & MXCSR_UE != 0 && is_denormal(lane(f.a, result_fmt, 0), result_fmt);
        let faults = f.flags & unmasked & (MXCSR_OE | MXCSR_UE) != 0 || tiny;
        pe |= match (faults, exact::exact(op, fmt, x, y, daz)) {
            (true, true) => 0,
            (true, false) => MXCSR_PE,
            (false, _) => f.flags & MXCSR_PE,
        };
    }
    Some(pe)
}

/// How to execute one instruction on the host.
#[derive(Clone, Copy)]
struct Spec {
    run: HostFn,
    isa: Isa,
    lanes: Lanes,
}

/// Shorthand constructor for [`Spec`].
const fn spec(run: HostFn, isa: Isa, lanes: Lanes) -> Spec {
    Spec { run, isa, lanes }
}

/// A [`Spec`] for an SSE2 instruction that cannot overflow or underflow.
const fn sse2_never(run: HostFn) -> Spec {
    spec(run, Isa::Sse2, Lanes::Never)
}

/// Host instruction for the arithmetic mnemonics of SSE/SSE2.
fn sse2_spec(m: Mnemonic) -> Option<Spec> {
    use Isa::Sse2 as B;
    use Lanes::Never as N;
    use Mnemonic as M;
    use Op::{Add, Div, Mul, Sub};
    let ps = |op| Lanes::Each(op, Fmt::F32, 4);
    let ss = |op| Lanes::Each(op, Fmt::F32, 1);
    let pd = |op| Lanes::Each(op, Fmt::F64, 2);
    let sd = |op| Lanes::Each(op, Fmt::F64, 1);
    Some(match m {
        M::Addps => spec(addps, B, ps(Add)),
        M::Addpd => spec(addpd, B, pd(Add)),
        M::Addss => spec(addss, B, ss(Add)),
        M::Addsd => spec(addsd, B, sd(Add)),
        M::Subps => spec(subps, B, ps(Sub)),
        M::Subpd => spec(subpd, B, pd(Sub)),
        M::Subss => spec(subss, B, ss(Sub)),
        M::Subsd => spec(subsd, B, sd(Sub)),
        M::Mulps => spec(mulps, B, ps(Mul)),
        M::Mulpd => spec(mulpd, B, pd(Mul)),
        M::Mulss => spec(mulss, B, ss(Mul)),
        M::Mulsd => spec(mulsd, B, sd(Mul)),
        M::Divps => spec(divps, B, ps(Div)),
        M::Divpd => spec(divpd, B, pd(Div)),
        M::Divss => spec(divss, B, ss(Div)),
        M::Divsd => spec(divsd, B, sd(Div)),
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
        M::Cvtpd2ps => spec(cvtpd2ps, B, Lanes::Narrow(2)),
        M::Cvtdq2ps => spec(cvtdq2ps, B, N),
        M::Cvtps2dq => spec(cvtps2dq, B, N),
        M::Cvttps2dq => spec(cvttps2dq, B, N),
        M::Cvtdq2pd => spec(cvtdq2pd, B, N),
        M::Cvtpd2dq => spec(cvtpd2dq, B, N),
        M::Cvttpd2dq => spec(cvttpd2dq, B, N),
        M::Cvtss2sd => spec(cvtss2sd, B, N),
        M::Cvtsd2ss => spec(cvtsd2ss, B, Lanes::Narrow(1)),
        _ => return None,
    })
}

/// Host instruction for the SSE3 and SSE4.1 mnemonics and the compares, with
/// the imm8 applied.
fn imm_spec(m: Mnemonic, imm: u8) -> Option<Spec> {
    use Isa::{Sse2, Sse3, Sse41};
    use Lanes::{AddSub, Dot, Horizontal, Never as N};
    use Mnemonic as M;
    use Op::{Add, Sub};
    let cmp = usize::from(imm & 7);
    let round = usize::from(imm & 15);
    Some(match m {
        M::Addsubps => spec(addsubps, Sse3, AddSub(Fmt::F32)),
        M::Addsubpd => spec(addsubpd, Sse3, AddSub(Fmt::F64)),
        M::Haddps => spec(haddps, Sse3, Horizontal(Add, Fmt::F32)),
        M::Haddpd => spec(haddpd, Sse3, Horizontal(Add, Fmt::F64)),
        M::Hsubps => spec(hsubps, Sse3, Horizontal(Sub, Fmt::F32)),
        M::Hsubpd => spec(hsubpd, Sse3, Horizontal(Sub, Fmt::F64)),
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
            Dot(Fmt::F32, 4),
        ),
        M::Dppd => {
            let k = usize::from(imm & 3) | usize::from((imm >> 2) & 0xc);
            spec(DPPD[k], Sse41, Dot(Fmt::F64, 2))
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
    if honor_ue && spec.lanes.denormal_in(f.a) {
        raised |= MXCSR_UE;
    }
    if raised & unmasked & (MXCSR_OE | MXCSR_UE) != 0 {
        if let Some(pe) = unmasked_precision(spec.lanes, a, b, f.env, unmasked) {
            raised = (raised & !MXCSR_PE) | pe;
        }
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
/// Modelled on the SDM's rules and checked against hardware by the differential
/// test (unmasked faults cannot be run on the host in-process): an unmasked
/// pre-computation exception (invalid, denormal, divide-by-zero) in any lane
/// suppresses the post-computation flags of all lanes; an unmasked underflow is
/// also reported for exact tiny results and ignores FTZ; a lane whose overflow
/// or underflow faults reports PE only if its result with an unbounded exponent
/// is inexact. Known approximations, for DPPS/DPPD only: PE on such a fault is
/// the masked response's, and an exact tiny intermediate product is not
/// detected as an underflow.
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
    use super::super::lanes::{from_dwords, from_qwords};
    use super::super::testutil::{expect_eq, Rng};
    use super::*;

    /// Random cases per instruction without an immediate.
    const CASES: u32 = 4000;

    /// The instructions without an immediate that [`float_op`] computes.
    const NO_IMM: [Mnemonic; 56] = {
        use Mnemonic as M;
        [
            M::Addps,
            M::Addpd,
            M::Addss,
            M::Addsd,
            M::Subps,
            M::Subpd,
            M::Subss,
            M::Subsd,
            M::Mulps,
            M::Mulpd,
            M::Mulss,
            M::Mulsd,
            M::Divps,
            M::Divpd,
            M::Divss,
            M::Divsd,
            M::Minps,
            M::Minpd,
            M::Minss,
            M::Minsd,
            M::Maxps,
            M::Maxpd,
            M::Maxss,
            M::Maxsd,
            M::Sqrtps,
            M::Sqrtpd,
            M::Sqrtss,
            M::Sqrtsd,
            M::Rcpps,
            M::Rcpss,
            M::Rsqrtps,
            M::Rsqrtss,
            M::Andps,
            M::Andnps,
            M::Orps,
            M::Xorps,
            M::Andpd,
            M::Andnpd,
            M::Orpd,
            M::Xorpd,
            M::Addsubps,
            M::Addsubpd,
            M::Haddps,
            M::Haddpd,
            M::Hsubps,
            M::Hsubpd,
            M::Cvtps2pd,
            M::Cvtpd2ps,
            M::Cvtdq2ps,
            M::Cvtps2dq,
            M::Cvttps2dq,
            M::Cvtdq2pd,
            M::Cvtpd2dq,
            M::Cvttpd2dq,
            M::Cvtss2sd,
            M::Cvtsd2ss,
        ]
    };

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

    /// x86's NaN rules for two-operand arithmetic, independent of the arithmetic itself: a NaN
    /// result is the first NaN operand quieted, else the default NaN; the upper lanes of a
    /// scalar instruction come from the destination.
    #[test]
    fn nan_results_follow_the_x86_rules() {
        use Mnemonic as M;
        // (lane format, instructions, exponent mask, fraction mask, quiet bit, default NaN)
        let formats: [(Kind, [Mnemonic; 5], u64, u64, u64, u64); 2] = [
            (
                Kind::F32,
                [M::Addss, M::Subss, M::Mulss, M::Divss, M::Sqrtss],
                0x7f80_0000,
                0x007f_ffff,
                1 << 22,
                0xffc0_0000,
            ),
            (
                Kind::F64,
                [M::Addsd, M::Subsd, M::Mulsd, M::Divsd, M::Sqrtsd],
                0x7ff0 << 48,
                (1 << 52) - 1,
                1 << 51,
                0xfff8 << 48,
            ),
        ];
        let mut rng = Rng::new(42);
        for _ in 0..CASES {
            for (kind, ops, exp, frac, quiet, default) in formats {
                // The low lane: sign, exponent and fraction.
                let low = u128::from(exp | frac | (exp << 1));
                let nan = |v: u64| v & exp == exp && v & frac != 0;
                let a = vector(&mut rng, kind, None);
                let b = vector(&mut rng, kind, Some(a));
                let (x, y) = ((a & low) as u64, (b & low) as u64);
                for m in ops {
                    let first = if matches!(m, M::Sqrtss | M::Sqrtsd) {
                        y
                    } else {
                        x
                    };
                    let mut mxcsr = MXCSR_MASKS;
                    let got = float_op(m, a, b, 0, &mut mxcsr).expect("handled");
                    let what = format!("{m:?}({x:#x}, {y:#x})");
                    expect_eq(&format!("{what} upper lanes"), got & !low, a & !low);
                    let r = (got & low) as u64;
                    if nan(first) || nan(y) {
                        let want = if nan(first) { first } else { y } | quiet;
                        expect_eq(&what, r, want);
                    } else if nan(r) {
                        expect_eq(&what, r, default);
                    }
                }
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
        // MAX + MAX is exact with an unbounded exponent: no PE with the overflow unmasked.
        let mut csr = unmask(MXCSR_OE);
        let r = float_op_checked(M::Addps, a, b, 0, &mut csr).expect("handled");
        assert_eq!(
            r,
            Err(SimdFpException {
                flags: MXCSR_IE | MXCSR_OE
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
        // PE of an unmasked overflow or underflow: whether the result is exact with an
        // unbounded exponent (values observed on hardware through the differential harness).
        let max = u128::from(f32::MAX.to_bits());
        let f = |v: f32| u128::from(v.to_bits());
        let ulp_above_one = f32::from_bits(1f32.to_bits() + 1);
        for (m, x, y, unmasked, flags) in [
            (M::Mulss, max, f(2.0), MXCSR_OE, MXCSR_OE),
            (M::Mulss, max, f(1.5), MXCSR_OE, MXCSR_OE | MXCSR_PE),
            (M::Divss, max, f(0.5), MXCSR_OE, MXCSR_OE),
            (M::Divss, max, f(0.3), MXCSR_OE, MXCSR_OE | MXCSR_PE),
            (
                M::Addss,
                max,
                f(f32::MAX * 2f32.powi(-23)),
                MXCSR_OE,
                MXCSR_OE | MXCSR_PE,
            ),
            (
                M::Mulss,
                f(ulp_above_one * 2f32.powi(-100)),
                f(2f32.powi(-30)),
                MXCSR_UE,
                MXCSR_UE,
            ),
            (
                M::Mulss,
                f(1.3 * 2f32.powi(-100)),
                f(1.7 * 2f32.powi(-30)),
                MXCSR_UE,
                MXCSR_UE | MXCSR_PE,
            ),
            // Lane 0 overflows exactly, lane 1 (3 * 1/3) is inexact.
            (
                M::Mulps,
                from_dwords([f32::MAX.to_bits(), 3f32.to_bits(), 0, 0]),
                from_dwords([2f32.to_bits(), (1f32 / 3.0).to_bits(), 0, 0]),
                MXCSR_OE,
                MXCSR_OE | MXCSR_PE,
            ),
        ] {
            let mut csr = unmask(unmasked);
            let r = float_op_checked(m, x, y, 0, &mut csr).expect("handled");
            assert_eq!(r, Err(SimdFpException { flags }), "{m:?}({x:#x}, {y:#x})");
        }
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
        for (k, &m) in NO_IMM.iter().enumerate() {
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
