//! Register-stack primitives on [`Fpu`]: TOP, tags, `ST(i)` access, status
//! word updates and the exception-summary logic shared by all instructions.
//!
//! Indices `i` are always taken modulo 8, so no function here can panic.

use super::f80::{B, C1, ES, EXC_MASK, SF};
use super::state::{Fpu, F80};

/// Bits of the status word holding TOP.
pub const TOP_MASK: u16 = 0x3800;

/// What an instruction reports back to the interpreter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "an unmasked exception may now be pending (#MF on the next waiting instruction)"]
pub struct Outcome {
    /// Exception flags (IE, DE, ZE, OE, UE, PE, SF bit positions) raised by
    /// this instruction, masked or not.
    pub raised: u16,
    /// FSW.ES is set after the instruction: an unmasked exception is pending
    /// and the next *waiting* x87 instruction (or WAIT/FWAIT) must raise #MF
    /// before executing (see [`mf_pending`]). The instruction itself
    /// completed as the hardware does.
    pub mf_pending: bool,
}

/// True when FSW.ES is set, i.e. a waiting x87 instruction (everything except
/// FNINIT, FNCLEX, FNSTCW, FNSTSW, FNSTENV, FNSAVE) or FWAIT must raise #MF
/// (with CR0.NE=1; FERR# otherwise) instead of executing.
pub fn mf_pending(fpu: &Fpu) -> bool {
    fpu.fsw & ES != 0
}

/// Current TOP (0..=7).
pub fn top(fpu: &Fpu) -> usize {
    usize::from((fpu.fsw >> 11) & 7)
}

/// Sets TOP to `t % 8`.
pub fn set_top(fpu: &mut Fpu, t: usize) {
    fpu.fsw = (fpu.fsw & !TOP_MASK) | (((t & 7) as u16) << 11);
}

/// Physical register number of `ST(i)`.
pub fn phys(fpu: &Fpu, i: usize) -> usize {
    (top(fpu) + i) & 7
}

/// True when `ST(i)` is tagged empty.
pub fn is_empty(fpu: &Fpu, i: usize) -> bool {
    fpu.ftw & (1 << phys(fpu, i)) == 0
}

/// Contents of `ST(i)` (whatever the register holds, even when empty).
pub fn st(fpu: &Fpu, i: usize) -> F80 {
    fpu.regs[phys(fpu, i)]
}

/// Writes `ST(i)` and tags it in use.
pub fn set_st(fpu: &mut Fpu, i: usize, v: F80) {
    let p = phys(fpu, i);
    fpu.regs[p] = v;
    fpu.ftw |= 1 << p;
}

/// Sets the tag of physical register `p % 8`.
pub fn set_tag(fpu: &mut Fpu, p: usize, in_use: bool) {
    let bit = 1u8 << (p & 7);
    if in_use {
        fpu.ftw |= bit;
    } else {
        fpu.ftw &= !bit;
    }
}

/// Decrements TOP and stores `v` in the new `ST(0)` (no overflow check).
pub fn push(fpu: &mut Fpu, v: F80) {
    set_top(fpu, top(fpu).wrapping_sub(1));
    set_st(fpu, 0, v);
}

/// Tags `ST(0)` empty and increments TOP (the register keeps its contents).
pub fn pop(fpu: &mut Fpu) {
    let p = phys(fpu, 0);
    set_tag(fpu, p, false);
    set_top(fpu, top(fpu) + 1);
}

/// Sets or clears C1.
pub fn set_c1(fpu: &mut Fpu, on: bool) {
    fpu.fsw = if on { fpu.fsw | C1 } else { fpu.fsw & !C1 };
}

/// Sets ES and B exactly when an exception flag is set whose mask bit is clear
/// (the hardware recomputes the summary whenever flags or masks change).
pub fn update_summary(fpu: &mut Fpu) {
    if fpu.fsw & !fpu.fcw & EXC_MASK != 0 {
        fpu.fsw |= ES | B;
    } else {
        fpu.fsw &= !(ES | B);
    }
}

/// ORs the exception flags `flags` (IE..PE, SF) into the sticky FSW bits,
/// updates ES/B and reports the result.
pub fn raise(fpu: &mut Fpu, flags: u16) -> Outcome {
    let raised = flags & (EXC_MASK | SF);
    fpu.fsw |= raised;
    update_summary(fpu);
    Outcome {
        raised,
        mf_pending: mf_pending(fpu),
    }
}

/// True when every exception in `flags` is masked by the control word.
pub fn masked(fpu: &Fpu, flags: u16) -> bool {
    flags & EXC_MASK & !fpu.fcw == 0
}
