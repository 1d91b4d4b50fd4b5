//! Host-executed x87 instructions: arithmetic, compares, classification,
//! transcendentals and constants, bit-exact because the host x87 executes
//! the very same instruction with the guest's control word (see
//! [`super::host`]). This module maps guest registers onto the host's ST(0)
//! and ST(1), runs the instruction, and copies back results, tags, stack
//! movement, condition codes and exception flags.
//!
//! Stack underflow/overflow, unmasked-exception responses (no pop, destination
//! unchanged, biased results) and undefined-but-real condition-code values all
//! come from the host, so they match the host CPU exactly.

use super::f80::{C0, C1, C2, C3};
use super::host::{self, HostIn, HostOp, HostOut};
use super::stack::{is_empty, phys, raise, set_tag, set_top, st, top, Outcome};
use super::state::Fpu;

/// The two-operand arithmetic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    /// FADD/FADDP/FIADD.
    Add,
    /// FMUL/FMULP/FIMUL.
    Mul,
    /// FSUB/FSUBP/FISUB: destination - source.
    Sub,
    /// FSUBR/FSUBRP/FISUBR: source - destination.
    Subr,
    /// FDIV/FDIVP/FIDIV: destination / source.
    Div,
    /// FDIVR/FDIVRP/FIDIVR: source / destination.
    Divr,
}

/// Operand form of an arithmetic instruction (register indices modulo 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithForm {
    /// `OP ST(0), ST(i)` (D8 /r): ST(0) = ST(0) op ST(i).
    St0Sti(u8),
    /// `OP ST(i), ST(0)` (DC /r): ST(i) = ST(i) op ST(0).
    StiSt0(u8),
    /// `OPP ST(i), ST(0)` (DE /r): ST(i) = ST(i) op ST(0), then pop.
    StiSt0Pop(u8),
    /// `OP m32fp` (D8 /m) with the raw memory bits.
    M32(u32),
    /// `OP m64fp` (DC /m).
    M64(u64),
    /// `FIOP m16int` (DE /m).
    I16(i16),
    /// `FIOP m32int` (DA /m).
    I32(i32),
}

/// Source of an FCOM-family compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpSrc {
    /// `ST(i)`.
    Reg(u8),
    /// m32fp (FCOM/FCOMP only).
    M32(u32),
    /// m64fp (FCOM/FCOMP only).
    M64(u64),
    /// m16int (FICOM/FICOMP).
    I16(i16),
    /// m32int (FICOM/FICOMP).
    I32(i32),
}

/// One-operand instructions working in place on `ST(0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// FCHS.
    Chs,
    /// FABS.
    Abs,
    /// FSQRT.
    Sqrt,
    /// FRNDINT.
    Rndint,
    /// F2XM1.
    F2xm1,
    /// FSIN.
    Sin,
    /// FCOS.
    Cos,
    /// FTST (sets C0/C2/C3 from ST(0) vs +0.0).
    Tst,
    /// FXAM (sets C0-C3 to the class of ST(0), also for an empty register).
    Xam,
    /// FSINCOS: ST(0) = sin, then push cos.
    Sincos,
    /// FPTAN: ST(0) = tan, then push 1.0.
    Ptan,
    /// FXTRACT: ST(0) = exponent, then push significand.
    Xtract,
}

/// Instructions on `ST(0)` and `ST(1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// FPREM: ST(0) = partial remainder (C0, C1, C3 = quotient bits, C2 = incomplete).
    Prem,
    /// FPREM1: IEEE partial remainder.
    Prem1,
    /// FSCALE: ST(0) = ST(0) * 2^trunc(ST(1)).
    Scale,
    /// FYL2X: ST(1) = ST(1) * log2(ST(0)), pop.
    Yl2x,
    /// FYL2XP1: ST(1) = ST(1) * log2(ST(0) + 1), pop.
    Yl2xp1,
    /// FPATAN: ST(1) = atan(ST(1) / ST(0)), pop.
    Patan,
}

/// Constants pushed by FLD1 ... FLDZ (rounded per FCW.RC like the hardware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Const {
    /// FLD1: +1.0.
    One,
    /// FLDL2T: log2(10).
    L2t,
    /// FLDL2E: log2(e).
    L2e,
    /// FLDPI: pi.
    Pi,
    /// FLDLG2: log10(2).
    Lg2,
    /// FLDLN2: ln(2).
    Ln2,
    /// FLDZ: +0.0.
    Zero,
}

/// Result of FCOMI/FCOMIP/FUCOMI/FUCOMIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "RFLAGS must be updated"]
pub struct Comi {
    /// Exception report.
    pub outcome: Outcome,
    /// New values of ZF, PF and CF (OF, SF and AF are 0): the interpreter sets
    /// `rflags = (rflags & !COMI_RFLAGS_MASK) | self.rflags`. The hardware
    /// writes these flags even when an unmasked invalid operation is raised
    /// (unordered: ZF = PF = CF = 1).
    pub rflags: u64,
}

/// RFLAGS bits written by FCOMI-family instructions: CF, PF, AF, ZF, SF, OF.
pub const COMI_RFLAGS_MASK: u64 = 0x08D5;

/// Runs `op` on the host with guest `ST(regs[k])` as host `ST(k)`, and commits
/// the result. `dest` is the host slot written last when two slots alias the
/// same guest register.
fn exec(fpu: &mut Fpu, op: HostOp, regs: [usize; 2], mem: [u8; 8], dest: usize) -> HostOut {
    let n = op.arity();
    let pushes = matches!(
        op,
        HostOp::Sincos
            | HostOp::Ptan
            | HostOp::Xtract
            | HostOp::Ld1
            | HostOp::Ldl2t
            | HostOp::Ldl2e
            | HostOp::Ldpi
            | HostOp::Ldlg2
            | HostOp::Ldln2
            | HostOp::Ldz
    );
    let input = HostIn {
        fcw: fpu.fcw,
        fsw: fpu.fsw,
        st: [st(fpu, regs[0]), st(fpu, regs[1])],
        empty: [is_empty(fpu, regs[0]), is_empty(fpu, regs[1])],
        st7_full: pushes && !is_empty(fpu, 7),
        mem,
    };
    let out = host::run(op, &input);
    commit(fpu, &out, n, regs, dest);
    out
}

/// Copies the host's post-instruction state back into the guest.
fn commit(fpu: &mut Fpu, out: &HostOut, n: usize, regs: [usize; 2], dest: usize) {
    let pops = usize::from(out.delta.unsigned_abs()) * usize::from(out.delta < 0);
    let pushes = usize::from(out.delta > 0);
    // Host ST index after the instruction of the register that was slot `s`.
    let after = |s: usize| {
        if s >= pops {
            s - pops + pushes
        } else {
            8 - pops + s
        }
    };
    let write = |fpu: &mut Fpu, s: usize| {
        let p = phys(fpu, regs[s & 1]);
        let h = after(s) & 7;
        fpu.regs[p] = out.st[h];
        set_tag(fpu, p, out.valid & (1 << h) != 0);
    };
    for s in (0..n.min(2)).filter(|&s| s != dest) {
        write(fpu, s);
    }
    if dest < n.min(2) {
        write(fpu, dest);
    }
    // Popped slots are always the leading ones; their tags win over aliases.
    for s in 0..pops.min(n) {
        let p = phys(fpu, regs[s & 1]);
        set_tag(fpu, p, out.valid & (1 << (after(s) & 7)) != 0);
    }
    let new_top = (top(fpu) + pops + 8 - pushes) & 7;
    set_top(fpu, new_top);
    if pushes == 1 {
        let p = phys(fpu, 0);
        fpu.regs[p] = out.st[0];
        set_tag(fpu, p, out.valid & 1 != 0);
    }
    let cc = C0 | C1 | C2 | C3;
    fpu.fsw = (fpu.fsw & !cc) | (out.fsw & cc);
}

fn finish(fpu: &mut Fpu, out: &HostOut) -> Outcome {
    raise(fpu, out.fsw)
}

/// FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR in all operand forms, including the
/// popping and integer-memory variants, with the guest's precision and
/// rounding control.
pub fn arith(fpu: &mut Fpu, op: ArithOp, form: ArithForm) -> Outcome {
    use HostOp::*;
    // Tables below are in `ArithOp` declaration order.
    let k = op as usize;
    let pick = |t: [HostOp; 6]| t[k];
    let (hop, regs, mem, dest) = match form {
        ArithForm::St0Sti(i) => (
            pick([
                AddSt0St1, MulSt0St1, SubSt0St1, SubrSt0St1, DivSt0St1, DivrSt0St1,
            ]),
            [0, usize::from(i & 7)],
            [0; 8],
            0,
        ),
        ArithForm::StiSt0(i) => (
            pick([
                AddSt1St0, MulSt1St0, SubSt1St0, SubrSt1St0, DivSt1St0, DivrSt1St0,
            ]),
            [0, usize::from(i & 7)],
            [0; 8],
            1,
        ),
        ArithForm::StiSt0Pop(i) => (
            pick([
                AddpSt1St0,
                MulpSt1St0,
                SubpSt1St0,
                SubrpSt1St0,
                DivpSt1St0,
                DivrpSt1St0,
            ]),
            [0, usize::from(i & 7)],
            [0; 8],
            1,
        ),
        ArithForm::M32(v) => (
            pick([AddM32, MulM32, SubM32, SubrM32, DivM32, DivrM32]),
            [0, 0],
            mem8(&v.to_le_bytes()),
            0,
        ),
        ArithForm::M64(v) => (
            pick([AddM64, MulM64, SubM64, SubrM64, DivM64, DivrM64]),
            [0, 0],
            v.to_le_bytes(),
            0,
        ),
        ArithForm::I16(v) => (
            pick([AddI16, MulI16, SubI16, SubrI16, DivI16, DivrI16]),
            [0, 0],
            mem8(&v.to_le_bytes()),
            0,
        ),
        ArithForm::I32(v) => (
            pick([AddI32, MulI32, SubI32, SubrI32, DivI32, DivrI32]),
            [0, 0],
            mem8(&v.to_le_bytes()),
            0,
        ),
    };
    let out = exec(fpu, hop, regs, mem, dest);
    finish(fpu, &out)
}

/// Zero-extends a little-endian memory operand to the 8-byte host buffer.
fn mem8(bytes: &[u8]) -> [u8; 8] {
    let mut m = [0u8; 8];
    for (d, s) in m.iter_mut().zip(bytes) {
        *d = *s;
    }
    m
}

/// FCOM/FCOMP (`unordered == false`) or FUCOM/FUCOMP (`unordered == true`,
/// register sources only; a memory source is always an ordered compare) of
/// `ST(0)` with `src`, popping once when `pop`. Sets C0/C2/C3.
pub fn fcom(fpu: &mut Fpu, src: CmpSrc, unordered: bool, pop: bool) -> Outcome {
    use HostOp::*;
    let (hop, regs, mem) = match (src, unordered, pop) {
        (CmpSrc::Reg(i), false, false) => (ComSt1, [0, usize::from(i & 7)], [0; 8]),
        (CmpSrc::Reg(i), false, true) => (ComPSt1, [0, usize::from(i & 7)], [0; 8]),
        (CmpSrc::Reg(i), true, false) => (UcomSt1, [0, usize::from(i & 7)], [0; 8]),
        (CmpSrc::Reg(i), true, true) => (UcomPSt1, [0, usize::from(i & 7)], [0; 8]),
        (CmpSrc::M32(v), _, p) => (
            if p { ComPM32 } else { ComM32 },
            [0, 0],
            mem8(&v.to_le_bytes()),
        ),
        (CmpSrc::M64(v), _, p) => (if p { ComPM64 } else { ComM64 }, [0, 0], v.to_le_bytes()),
        (CmpSrc::I16(v), _, p) => (
            if p { IcomPI16 } else { IcomI16 },
            [0, 0],
            mem8(&v.to_le_bytes()),
        ),
        (CmpSrc::I32(v), _, p) => (
            if p { IcomPI32 } else { IcomI32 },
            [0, 0],
            mem8(&v.to_le_bytes()),
        ),
    };
    let out = exec(fpu, hop, regs, mem, 0);
    finish(fpu, &out)
}

/// FCOMPP (`unordered == false`) / FUCOMPP: compares `ST(0)` with `ST(1)` and pops twice.
pub fn fcompp(fpu: &mut Fpu, unordered: bool) -> Outcome {
    let hop = if unordered {
        HostOp::UcomPP
    } else {
        HostOp::ComPP
    };
    let out = exec(fpu, hop, [0, 1], [0; 8], 0);
    finish(fpu, &out)
}

/// FCOMI/FCOMIP (`unordered == false`) and FUCOMI/FUCOMIP: compares `ST(0)`
/// with `ST(i)` into ZF/PF/CF, popping once when `pop`.
pub fn fcomi(fpu: &mut Fpu, i: u8, unordered: bool, pop: bool) -> Comi {
    let hop = match (unordered, pop) {
        (false, false) => HostOp::ComiSt1,
        (false, true) => HostOp::ComiPSt1,
        (true, false) => HostOp::UcomiSt1,
        (true, true) => HostOp::UcomiPSt1,
    };
    let out = exec(fpu, hop, [0, usize::from(i & 7)], [0; 8], 0);
    Comi {
        outcome: finish(fpu, &out),
        rflags: u64::from(out.eflags) & COMI_RFLAGS_MASK,
    }
}

/// FCHS, FABS, FSQRT, FRNDINT, F2XM1, FSIN, FCOS, FTST, FXAM on `ST(0)`, and
/// FSINCOS, FPTAN, FXTRACT which replace `ST(0)` and push a second result.
pub fn unary(fpu: &mut Fpu, op: UnaryOp) -> Outcome {
    let hop = match op {
        UnaryOp::Chs => HostOp::Chs,
        UnaryOp::Abs => HostOp::Abs,
        UnaryOp::Sqrt => HostOp::Sqrt,
        UnaryOp::Rndint => HostOp::Rndint,
        UnaryOp::F2xm1 => HostOp::F2xm1,
        UnaryOp::Sin => HostOp::Sin,
        UnaryOp::Cos => HostOp::Cos,
        UnaryOp::Tst => HostOp::Tst,
        UnaryOp::Xam => HostOp::Xam,
        UnaryOp::Sincos => HostOp::Sincos,
        UnaryOp::Ptan => HostOp::Ptan,
        UnaryOp::Xtract => HostOp::Xtract,
    };
    let out = exec(fpu, hop, [0, 0], [0; 8], 0);
    finish(fpu, &out)
}

/// FPREM, FPREM1, FSCALE (result in `ST(0)`) and FYL2X, FYL2XP1, FPATAN
/// (result in `ST(1)`, then pop) on `ST(0)` and `ST(1)`.
pub fn binary(fpu: &mut Fpu, op: BinaryOp) -> Outcome {
    let (hop, dest) = match op {
        BinaryOp::Prem => (HostOp::Prem, 0),
        BinaryOp::Prem1 => (HostOp::Prem1, 0),
        BinaryOp::Scale => (HostOp::Scale, 0),
        BinaryOp::Yl2x => (HostOp::Yl2x, 1),
        BinaryOp::Yl2xp1 => (HostOp::Yl2xp1, 1),
        BinaryOp::Patan => (HostOp::Patan, 1),
    };
    let out = exec(fpu, hop, [0, 1], [0; 8], dest);
    finish(fpu, &out)
}

/// FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ (with stack-overflow handling).
pub fn fld_const(fpu: &mut Fpu, c: Const) -> Outcome {
    let hop = match c {
        Const::One => HostOp::Ld1,
        Const::L2t => HostOp::Ldl2t,
        Const::L2e => HostOp::Ldl2e,
        Const::Pi => HostOp::Ldpi,
        Const::Lg2 => HostOp::Ldlg2,
        Const::Ln2 => HostOp::Ldln2,
        Const::Zero => HostOp::Ldz,
    };
    let out = exec(fpu, hop, [0, 0], [0; 8], 0);
    finish(fpu, &out)
}
