//! Host-independent expectations from the architecture manuals, and a
//! no-panic sweep over every public entry point with arbitrary state.

use super::super::compute::{self as c, ArithForm, ArithOp, BinaryOp, CmpSrc, Const, UnaryOp};
use super::super::f80::{B, C0, C1, C2, C3, ES, IE, INDEFINITE, PE, SF};
use super::super::image::{self as img, EnvFormat, FxFormat};
use super::super::ops;
use super::super::stack;
use super::*;

fn f(v: f64) -> F80 {
    f80::from_f64(v.to_bits()).value
}

fn with_rc(rc: u16) -> Fpu {
    Fpu {
        fcw: 0x037F | (rc << 10),
        ..Fpu::default()
    }
}

#[test]
fn integer_stores_follow_rounding_control() {
    // value, [nearest, down, up, zero]
    let cases: [(f64, [i64; 4]); 6] = [
        (2.5, [2, 2, 3, 2]),
        (3.5, [4, 3, 4, 3]),
        (-2.5, [-2, -3, -2, -2]),
        (-0.5, [0, -1, 0, 0]),
        (1.25, [1, 1, 2, 1]),
        (-7.75, [-8, -8, -7, -7]),
    ];
    for (v, want) in cases {
        for rc in 0..4u16 {
            let mut s = with_rc(rc);
            let _ = ops::fld_f80(&mut s, f(v));
            let st = ops::fist(&mut s, 32, true, false);
            assert_eq!(st.value, Some(want[rc as usize]), "{v} rc {rc}");
            assert_eq!(st.outcome.raised, PE);
            let up = want[rc as usize].unsigned_abs() as f64 > v.abs();
            assert_eq!(s.fsw & C1 != 0, up, "C1 for {v} rc {rc}");
            let _ = ops::fld_f80(&mut s, f(v));
            assert_eq!(
                ops::fist(&mut s, 16, true, true).value,
                Some(v.trunc() as i64),
                "fisttp {v}"
            );
        }
    }
}

#[test]
fn integer_overflow_gives_indefinite_or_no_store() {
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(40000.0));
    let st = ops::fist(&mut s, 16, false, false);
    assert_eq!(
        (st.value, st.outcome.raised, st.outcome.mf_pending),
        (Some(-32768), IE, false)
    );
    let _ = ops::fldcw(&mut s, 0x037E); // unmask IE: ES was set by the masked IE
    assert!(stack::mf_pending(&s));
    ops::fnclex(&mut s);
    let st = ops::fist(&mut s, 16, true, false);
    assert_eq!(st.value, None, "unmasked IE suppresses the store");
    assert!(st.outcome.mf_pending && s.fsw & (ES | B) == (ES | B));
    assert!(!stack::is_empty(&s, 0), "and the pop");
    let _ = ops::fld_f80(&mut s, f(-32768.4));
    let _ = ops::fldcw(&mut s, 0x037F);
    ops::fnclex(&mut s);
    assert_eq!(ops::fist(&mut s, 16, true, false).value, Some(-32768));
}

#[test]
fn stack_overflow_and_underflow() {
    let mut s = Fpu::default();
    for k in 0..8 {
        assert_eq!(ops::fild(&mut s, k).raised, 0);
    }
    assert_eq!(s.ftw, 0xFF);
    let o = ops::fld_f80(&mut s, f(1.0));
    assert_eq!(o.raised, IE | SF);
    assert!(s.fsw & C1 != 0, "C1 = 1 on overflow");
    assert_eq!(
        stack::st(&s, 0),
        INDEFINITE,
        "masked response pushes the indefinite"
    );
    // Unmasked: nothing changes, #MF pending.
    let mut s2 = Fpu {
        fcw: 0x037E,
        ftw: 0xFF,
        ..Fpu::default()
    };
    let before = copy(&s2);
    let o = ops::fld_f80(&mut s2, f(1.0));
    assert!(o.mf_pending);
    assert_eq!(
        (s2.regs, s2.ftw, stack::top(&s2)),
        (before.regs, before.ftw, 0)
    );
    // Underflow: empty operand.
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(2.0));
    let o = c::arith(&mut s, ArithOp::Add, ArithForm::St0Sti(3));
    assert_eq!(o.raised, IE | SF);
    assert!(s.fsw & C1 == 0, "C1 = 0 on underflow");
    assert_eq!(stack::st(&s, 0), INDEFINITE);
}

#[test]
fn arithmetic_basics_and_precision_control() {
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(1.0));
    let _ = c::arith(&mut s, ArithOp::Div, ArithForm::I16(3));
    let third = stack::st(&s, 0);
    assert_eq!(f80::unpack(third), (false, 0x3FFD, 0xAAAA_AAAA_AAAA_AAAB));
    // Precision control 24 bits, round toward zero.
    let mut s = Fpu {
        fcw: 0x0C7F,
        ..Fpu::default()
    };
    let _ = ops::fld_f80(&mut s, f(1.0));
    let _ = c::arith(&mut s, ArithOp::Divr, ArithForm::M64(3.0f64.to_bits()));
    assert_eq!(
        f80::unpack(stack::st(&s, 0)),
        (false, 0x4000, 0xC000_0000_0000_0000)
    );
    let _ = c::arith(&mut s, ArithOp::Div, ArithForm::M32(7.0f32.to_bits()));
    assert_eq!(f80::unpack(stack::st(&s, 0)).2, 0xDB6D_B600_0000_0000);
    // FSUBP ST(1), ST(0): ST(1) - ST(0), then pop.
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(10.0));
    let _ = ops::fld_f80(&mut s, f(4.0));
    let _ = c::arith(&mut s, ArithOp::Sub, ArithForm::StiSt0Pop(1));
    assert_eq!((stack::st(&s, 0), s.ftw.count_ones()), (f(6.0), 1));
    // Zero divide.
    let _ = ops::fld_f80(&mut s, f(0.0));
    let o = c::arith(&mut s, ArithOp::Divr, ArithForm::St0Sti(1));
    assert_eq!(o.raised, super::super::f80::ZE);
    assert_eq!(stack::st(&s, 0), f(f64::INFINITY));
}

#[test]
fn compares_and_classification() {
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(1.0));
    let _ = ops::fld_f80(&mut s, f(2.0));
    let _ = c::fcom(&mut s, CmpSrc::Reg(1), false, false);
    assert_eq!(s.fsw & (C0 | C2 | C3), 0, "2 > 1");
    let r = c::fcomi(&mut s, 1, false, false);
    assert_eq!(r.rflags, 0);
    let _ = c::fcom(&mut s, CmpSrc::M32(2.0f32.to_bits()), false, false);
    assert_eq!(s.fsw & (C0 | C2 | C3), C3);
    let _ = ops::fld_f64(&mut s, f64::NAN.to_bits());
    let r = c::fcomi(&mut s, 1, true, true);
    assert_eq!(
        (r.rflags, r.outcome.raised),
        (0x45, 0),
        "unordered QNaN: ZF PF CF, no IE for FUCOMI"
    );
    let r = c::fcomi(&mut s, 1, false, false);
    assert_eq!(r.rflags, 0, "after the pop: 2 > 1 clears ZF, PF, CF");
    let _ = ops::fxch(&mut s, 1);
    assert_eq!(
        c::fcomi(&mut s, 1, false, false).rflags,
        0x01,
        "1 < 2 sets CF"
    );
    // FXAM: empty register reports C3|C0.
    let mut s = Fpu::default();
    let _ = c::unary(&mut s, UnaryOp::Xam);
    assert_eq!(s.fsw & (C0 | C2 | C3), C3 | C0);
    let _ = c::fld_const(&mut s, Const::Pi);
    let _ = c::unary(&mut s, UnaryOp::Xam);
    assert_eq!(s.fsw & (C0 | C2 | C3), C2, "normal");
}

#[test]
fn tag_word_classes() {
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(0.0)); // R7 zero
    let _ = ops::fld_f80(&mut s, f(1.5)); // R6 valid
    let _ = ops::fld_f80(&mut s, f80::pack(false, 0, 1)); // R5 denormal: special
    let _ = ops::fld_f80(&mut s, f80::pack(false, 5, 1)); // R4 unnormal: special
    let _ = ops::fld_f80(&mut s, INDEFINITE); // R3 NaN: special
    assert_eq!(img::full_tag_word(&s), 0b01_00_10_10_10_11_11_11);
    assert_eq!(img::abridged_tag(img::full_tag_word(&s)), s.ftw);
}

#[test]
fn single_rounding_of_one_third() {
    let third = {
        let mut s = Fpu::default();
        let _ = ops::fld_f80(&mut s, f(1.0));
        let _ = c::arith(&mut s, ArithOp::Div, ArithForm::I32(3));
        stack::st(&s, 0)
    };
    let want = [0x3EAA_AAAB, 0x3EAA_AAAA, 0x3EAA_AAAB, 0x3EAA_AAAA];
    for rc in 0..4u16 {
        let r = f80::to_f32(third, 0x037F | (rc << 10));
        assert_eq!((r.value, r.flags), (want[rc as usize], PE), "rc {rc}");
    }
}

#[test]
fn bcd_round_trip() {
    let mut s = Fpu::default();
    let bcd = [0x89, 0x67, 0x45, 0x23, 0x01, 0x89, 0x67, 0x45, 0x23, 0x80];
    let _ = ops::fbld(&mut s, bcd);
    assert_eq!(stack::st(&s, 0), f80::from_i64(-234_567_890_123_456_789));
    assert_eq!(ops::fbstp(&mut s).value, Some(bcd));
    let _ = ops::fld_f80(&mut s, f(1e18));
    let st = ops::fbstp(&mut s);
    assert_eq!(
        (st.value, st.outcome.raised),
        (Some(f80::BCD_INDEFINITE), IE)
    );
}

#[test]
fn transcendental_results_are_sane() {
    let mut s = Fpu::default();
    let _ = c::fld_const(&mut s, Const::Pi);
    let _ = c::unary(&mut s, UnaryOp::Sincos);
    assert_eq!(s.ftw.count_ones(), 2);
    assert_eq!(stack::st(&s, 0), f(-1.0), "cos(pi)");
    let _ = c::binary(&mut s, BinaryOp::Patan);
    assert_eq!(s.ftw.count_ones(), 1);
    let _ = c::fld_const(&mut s, Const::One);
    let _ = c::unary(&mut s, UnaryOp::Ptan);
    assert_eq!(stack::st(&s, 0), f(1.0), "FPTAN pushes 1.0");
}

#[test]
fn no_panics_on_arbitrary_state() {
    let mut r = Rng::new(99);
    for n in 0..30_000u64 {
        let mut s = Fpu::default();
        for reg in s.regs.iter_mut() {
            for b in reg.iter_mut() {
                *b = r.next() as u8;
            }
        }
        s.fcw = r.next() as u16;
        s.fsw = r.next() as u16;
        s.ftw = r.next() as u8;
        let i = r.next() as u8;
        let v = r.next();
        let k = (n % 6) as usize;
        let ops6 = [
            ArithOp::Add,
            ArithOp::Mul,
            ArithOp::Sub,
            ArithOp::Subr,
            ArithOp::Div,
            ArithOp::Divr,
        ];
        let _ = c::arith(&mut s, ops6[k], ArithForm::StiSt0Pop(i));
        let _ = c::arith(&mut s, ops6[k], ArithForm::I16(v as i16));
        let _ = c::fcom(&mut s, CmpSrc::M64(v), true, true);
        let _ = c::fcompp(&mut s, n % 2 == 0);
        let _ = c::fcomi(&mut s, i, true, false);
        let _ = c::unary(
            &mut s,
            [
                UnaryOp::Sin,
                UnaryOp::Xtract,
                UnaryOp::Rndint,
                UnaryOp::Sqrt,
            ][k & 3],
        );
        let _ = c::binary(
            &mut s,
            [BinaryOp::Prem, BinaryOp::Scale, BinaryOp::Yl2xp1][k % 3],
        );
        let _ = c::fld_const(&mut s, Const::L2t);
        let _ = ops::fld_f32(&mut s, v as u32);
        let _ = ops::fbld(&mut s, [v as u8; 10]);
        let _ = ops::fld_st(&mut s, usize::from(i));
        let _ = ops::fst_f32(&mut s, true);
        let _ = ops::fist(&mut s, (v % 80) as u32, true, n % 3 == 0);
        let _ = ops::fbstp(&mut s);
        let _ = ops::fxch(&mut s, usize::from(i));
        let _ = ops::fcmov(&mut s, usize::from(i), n % 2 == 0);
        ops::ffreep(&mut s, usize::from(i));
        let bytes = img::fnsave(&mut s, EnvFormat::Real16);
        img::frstor(
            &mut s,
            &bytes[..(v % 120) as usize % 109],
            EnvFormat::Protected32,
        );
        img::fldenv(&mut s, &bytes[..3], EnvFormat::Real32);
        let mut fx = img::fxsave_image(&s, FxFormat::Legacy);
        fx[24..28].copy_from_slice(&(v as u32).to_le_bytes());
        let _ = img::fxrstor_image(&mut s, &fx, FxFormat::Bits64);
    }
}

#[test]
#[ignore = "timing report; run with --release --ignored --nocapture"]
fn timing() {
    let mut s = Fpu::default();
    let _ = ops::fld_f80(&mut s, f(1.0));
    let _ = ops::fld_f80(&mut s, f(3.0));
    let n = 1_000_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let _ = c::arith(&mut s, ArithOp::Mul, ArithForm::St0Sti(1));
    }
    let host = t.elapsed().as_nanos() as f64 / n as f64;
    let t = std::time::Instant::now();
    let mut acc = 0u64;
    for k in 0..n {
        let _ = ops::fld_f64(&mut s, k as u64);
        acc = acc.wrapping_add(ops::fst_f32(&mut s, true).value.unwrap_or(0).into());
    }
    let soft = t.elapsed().as_nanos() as f64 / n as f64;
    eprintln!("host arith {host:.1} ns/op; software fld m64 + fstp m32 {soft:.1} ns/pair ({acc})");
}
