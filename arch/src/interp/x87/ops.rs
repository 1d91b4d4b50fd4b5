//! Software-implemented x87 instructions: loads, stores, register moves and
//! control instructions. The interpreter calls these after it has read any
//! memory operand and writes any returned value itself.
//!
//! Every function is total (indices are taken modulo 8), allocation-free and
//! leaves FOP/FIP/FDP alone: the interpreter records those for non-control
//! instructions. Each returns an [`Outcome`] telling whether an unmasked
//! exception is now pending (#MF on the next waiting instruction).

use super::f80::{self, Conv, IE, INDEFINITE, SF};
use super::stack::{self, is_empty, masked, pop, push, raise, set_c1, st, Outcome};
use super::state::{Fpu, F80};

/// Value an instruction wants written to memory, if the store happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the value must be written to the memory operand"]
pub struct Store<T> {
    /// `Some(v)`: write `v`; `None`: an unmasked exception suppressed the store
    /// (memory must be left unchanged).
    pub value: Option<T>,
    /// Exception report.
    pub outcome: Outcome,
}

/// Pushes the result of a load conversion, handling stack overflow (IE+SF,
/// C1=1; masked response: push the real indefinite) and an unmasked invalid
/// operation (nothing is pushed).
fn push_conv(fpu: &mut Fpu, c: Conv<F80>) -> Outcome {
    if !is_empty(fpu, 7) {
        set_c1(fpu, true);
        if masked(fpu, IE) {
            push(fpu, INDEFINITE);
        }
        return raise(fpu, IE | SF);
    }
    set_c1(fpu, false);
    // Only an unmasked invalid operation (SNaN source) suppresses the load;
    // a denormal source is loaded even when DE is unmasked.
    if masked(fpu, c.flags & IE) {
        push(fpu, c.value);
    }
    raise(fpu, c.flags)
}

/// FLD m80fp: pushes the value unchanged (no exception except overflow).
pub fn fld_f80(fpu: &mut Fpu, v: F80) -> Outcome {
    push_conv(
        fpu,
        Conv {
            value: v,
            flags: 0,
            round_up: false,
        },
    )
}

/// FLD m64fp: pushes the exactly widened value (IE for SNaN, DE for a
/// denormal; an unmasked IE suppresses the push, an unmasked DE does not).
pub fn fld_f64(fpu: &mut Fpu, bits: u64) -> Outcome {
    push_conv(fpu, f80::from_f64(bits))
}

/// FLD m32fp: as [`fld_f64`] for single precision.
pub fn fld_f32(fpu: &mut Fpu, bits: u32) -> Outcome {
    push_conv(fpu, f80::from_f32(bits))
}

/// FILD m16int/m32int/m64int (sign-extended by the caller): exact push.
pub fn fild(fpu: &mut Fpu, v: i64) -> Outcome {
    push_conv(
        fpu,
        Conv {
            value: f80::from_i64(v),
            flags: 0,
            round_up: false,
        },
    )
}

/// FBLD: pushes an 18-digit packed BCD value.
pub fn fbld(fpu: &mut Fpu, bcd: [u8; 10]) -> Outcome {
    push_conv(
        fpu,
        Conv {
            value: f80::from_bcd(bcd),
            flags: 0,
            round_up: false,
        },
    )
}

/// FLD ST(i): pushes a copy of `ST(i)`; an empty `ST(i)` is a stack
/// underflow (masked: the real indefinite is pushed).
pub fn fld_st(fpu: &mut Fpu, i: usize) -> Outcome {
    // An empty source is reported as underflow (C1 = 0) even when ST(7) is
    // also in use; otherwise push_conv handles overflow.
    if is_empty(fpu, i) {
        set_c1(fpu, false);
        if masked(fpu, IE) {
            push(fpu, INDEFINITE);
        }
        return raise(fpu, IE | SF);
    }
    let v = st(fpu, i);
    push_conv(
        fpu,
        Conv {
            value: v,
            flags: 0,
            round_up: false,
        },
    )
}

/// Common store path: stack underflow when `ST(0)` is empty (masked: store
/// `indefinite`), otherwise the conversion result; pops when `pop` and the
/// store was not suppressed by an unmasked exception.
fn store<T: Copy>(
    fpu: &mut Fpu,
    pop_after: bool,
    indefinite: T,
    conv: impl FnOnce(F80, u16) -> Conv<T>,
) -> Store<T> {
    if is_empty(fpu, 0) {
        set_c1(fpu, false);
        let ok = masked(fpu, IE);
        if ok && pop_after {
            pop(fpu);
        }
        let outcome = raise(fpu, IE | SF);
        return Store {
            value: ok.then_some(indefinite),
            outcome,
        };
    }
    let c = conv(st(fpu, 0), fpu.fcw);
    let ok = c.stores(fpu.fcw);
    set_c1(fpu, c.round_up && c.flags & f80::PE != 0);
    if ok && pop_after {
        pop(fpu);
    }
    let outcome = raise(fpu, c.flags);
    Store {
        value: ok.then_some(c.value),
        outcome,
    }
}

/// FST/FSTP m80fp: the raw register (no exception except underflow).
pub fn fst_f80(fpu: &mut Fpu, pop: bool) -> Store<F80> {
    store(fpu, pop, INDEFINITE, |v, _| Conv {
        value: v,
        flags: 0,
        round_up: false,
    })
}

/// FST/FSTP m64fp: `ST(0)` rounded to double under FCW.RC.
pub fn fst_f64(fpu: &mut Fpu, pop: bool) -> Store<u64> {
    store(fpu, pop, f80::F64_INDEFINITE, f80::to_f64)
}

/// FST/FSTP m32fp: `ST(0)` rounded to single under FCW.RC.
pub fn fst_f32(fpu: &mut Fpu, pop: bool) -> Store<u32> {
    store(fpu, pop, f80::F32_INDEFINITE, f80::to_f32)
}

/// FIST/FISTP (`truncate == false`) and FISTTP (`truncate == true`) to a
/// `bits`-bit integer (16, 32, 64). The returned value is sign-extended; the
/// caller stores its low `bits / 8` bytes. Out-of-range or NaN operands give
/// IE and, masked, the integer indefinite.
pub fn fist(fpu: &mut Fpu, bits: u32, pop: bool, truncate: bool) -> Store<i64> {
    let indefinite = f80::to_int(INDEFINITE, 0, bits, false).value;
    store(fpu, pop, indefinite, |v, fcw| {
        f80::to_int(v, fcw, bits, truncate)
    })
}

/// FBSTP: `ST(0)` rounded to an integer as 18-digit packed BCD, then pop.
pub fn fbstp(fpu: &mut Fpu) -> Store<[u8; 10]> {
    store(fpu, true, f80::BCD_INDEFINITE, f80::to_bcd)
}

/// FST ST(i) / FSTP ST(i): copies `ST(0)` to `ST(i)` (then pops when `pop`).
/// An empty `ST(0)` is a stack underflow (masked: `ST(i)` gets the indefinite).
pub fn fst_st(fpu: &mut Fpu, i: usize, pop_after: bool) -> Outcome {
    set_c1(fpu, false);
    if is_empty(fpu, 0) {
        if !masked(fpu, IE) {
            return raise(fpu, IE | SF);
        }
        stack::set_st(fpu, i, INDEFINITE);
        if pop_after {
            pop(fpu);
        }
        return raise(fpu, IE | SF);
    }
    let v = st(fpu, 0);
    stack::set_st(fpu, i, v);
    if pop_after {
        pop(fpu);
    }
    raise(fpu, 0)
}

/// FXCH ST(i): exchanges `ST(0)` and `ST(i)`. Empty operands are a stack
/// underflow (masked: they are first replaced by the indefinite).
pub fn fxch(fpu: &mut Fpu, i: usize) -> Outcome {
    set_c1(fpu, false);
    let mut flags = 0;
    if is_empty(fpu, 0) || is_empty(fpu, i) {
        flags = IE | SF;
        if !masked(fpu, IE) {
            return raise(fpu, flags);
        }
        for k in [0, i] {
            if is_empty(fpu, k) {
                stack::set_st(fpu, k, INDEFINITE);
            }
        }
    }
    let a = st(fpu, 0);
    let b = st(fpu, i);
    stack::set_st(fpu, 0, b);
    stack::set_st(fpu, i, a);
    raise(fpu, flags)
}

/// FCMOVcc ST(0), ST(i): copies `ST(i)` to `ST(0)` when `cond` holds (the
/// interpreter evaluates the condition from RFLAGS). Empty operands are a
/// stack underflow (C1 = 0; masked: `ST(0)` gets the indefinite); otherwise
/// C1 is left unchanged.
pub fn fcmov(fpu: &mut Fpu, i: usize, cond: bool) -> Outcome {
    if is_empty(fpu, 0) || is_empty(fpu, i) {
        set_c1(fpu, false);
        if masked(fpu, IE) {
            stack::set_st(fpu, 0, INDEFINITE);
        }
        return raise(fpu, IE | SF);
    }
    if cond {
        let v = st(fpu, i);
        stack::set_st(fpu, 0, v);
    }
    raise(fpu, 0)
}

/// FFREE ST(i): tags `ST(i)` empty and clears C1.
pub fn ffree(fpu: &mut Fpu, i: usize) {
    let p = stack::phys(fpu, i);
    stack::set_tag(fpu, p, false);
    set_c1(fpu, false);
}

/// FFREEP ST(i) (DF C0+i, undocumented): FFREE ST(i), then pop without
/// any stack check.
pub fn ffreep(fpu: &mut Fpu, i: usize) {
    ffree(fpu, i);
    pop(fpu);
}

/// FINCSTP: TOP + 1 (tags unchanged), C1 = 0.
pub fn fincstp(fpu: &mut Fpu) {
    stack::set_top(fpu, stack::top(fpu) + 1);
    set_c1(fpu, false);
}

/// FDECSTP: TOP - 1 (tags unchanged), C1 = 0.
pub fn fdecstp(fpu: &mut Fpu) {
    stack::set_top(fpu, stack::top(fpu) + 7);
    set_c1(fpu, false);
}

/// FNINIT: FCW = 0x037F, FSW = 0, all registers empty, FOP/FIP/FDP = 0
/// (register contents are kept).
pub fn fninit(fpu: &mut Fpu) {
    fpu.fcw = 0x037F;
    fpu.fsw = 0;
    fpu.ftw = 0;
    fpu.fop = 0;
    fpu.fip = 0;
    fpu.fdp = 0;
}

/// FNCLEX: clears the exception flags, SF, ES and B (C0-C3 and TOP are kept).
pub fn fnclex(fpu: &mut Fpu) {
    fpu.fsw &= !0x80FF;
}

/// FLDCW: loads the control word (reserved bits 13..15 read as 0, bit 6 as 1)
/// and recomputes ES/B, so unmasking a set flag makes #MF pending.
pub fn fldcw(fpu: &mut Fpu, cw: u16) -> Outcome {
    fpu.fcw = (cw & 0x1F3F) | 0x0040;
    raise(fpu, 0)
}

/// FNSTCW: the control word to store.
pub fn fnstcw(fpu: &Fpu) -> u16 {
    fpu.fcw
}

/// FNSTSW (m16 or AX): the status word to store, TOP included.
pub fn fnstsw(fpu: &Fpu) -> u16 {
    fpu.fsw
}
