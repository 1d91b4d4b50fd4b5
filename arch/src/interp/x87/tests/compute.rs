//! The host-executed families' plumbing against execution of the complete
//! instruction on the full state: how guest registers map onto the host's ST(0)
//! and ST(1) (any TOP, any ST(i), empty registers), stack motion, tags,
//! condition codes and RFLAGS. Not their arithmetic: both sides run the same host
//! instruction, so results and exception flags agree by construction. The
//! arithmetic is checked against hardware by the differential test's
//! floating-point suite (`tests/src/difftest`).

use super::super::compute::{self as c, ArithForm, ArithOp, BinaryOp, CmpSrc, Const, UnaryOp};
use super::super::host::oracle::{run_plain, run_reg, Plain, RegOp};
use super::*;

const OPS: [ArithOp; 6] = [
    ArithOp::Add,
    ArithOp::Mul,
    ArithOp::Sub,
    ArithOp::Subr,
    ArithOp::Div,
    ArithOp::Divr,
];
const ST0: [RegOp; 6] = [
    RegOp::FaddSt0,
    RegOp::FmulSt0,
    RegOp::FsubSt0,
    RegOp::FsubrSt0,
    RegOp::FdivSt0,
    RegOp::FdivrSt0,
];
const STI: [RegOp; 6] = [
    RegOp::FaddSti,
    RegOp::FmulSti,
    RegOp::FsubSti,
    RegOp::FsubrSti,
    RegOp::FdivSti,
    RegOp::FdivrSti,
];
const STP: [RegOp; 6] = [
    RegOp::Faddp,
    RegOp::Fmulp,
    RegOp::Fsubp,
    RegOp::Fsubrp,
    RegOp::Fdivp,
    RegOp::Fdivrp,
];
const UNARY: [(UnaryOp, Plain); 12] = [
    (UnaryOp::Chs, Plain::Fchs),
    (UnaryOp::Abs, Plain::Fabs),
    (UnaryOp::Sqrt, Plain::Fsqrt),
    (UnaryOp::Rndint, Plain::Frndint),
    (UnaryOp::F2xm1, Plain::F2xm1),
    (UnaryOp::Sin, Plain::Fsin),
    (UnaryOp::Cos, Plain::Fcos),
    (UnaryOp::Tst, Plain::Ftst),
    (UnaryOp::Xam, Plain::Fxam),
    (UnaryOp::Sincos, Plain::Fsincos),
    (UnaryOp::Ptan, Plain::Fptan),
    (UnaryOp::Xtract, Plain::Fxtract),
];
const BINARY: [(BinaryOp, Plain); 6] = [
    (BinaryOp::Prem, Plain::Fprem),
    (BinaryOp::Prem1, Plain::Fprem1),
    (BinaryOp::Scale, Plain::Fscale),
    (BinaryOp::Yl2x, Plain::Fyl2x),
    (BinaryOp::Yl2xp1, Plain::Fyl2xp1),
    (BinaryOp::Patan, Plain::Fpatan),
];
const CONSTS: [(Const, Plain); 7] = [
    (Const::One, Plain::Fld1),
    (Const::L2t, Plain::Fldl2t),
    (Const::L2e, Plain::Fldl2e),
    (Const::Pi, Plain::Fldpi),
    (Const::Lg2, Plain::Fldlg2),
    (Const::Ln2, Plain::Fldln2),
    (Const::Zero, Plain::Fldz),
];
const COMI: [RegOp; 4] = [RegOp::Fcomi, RegOp::Fcomip, RegOp::Fucomi, RegOp::Fucomip];

/// Runs `n` random instructions from family selector `fam` and compares.
fn run(s: u64, n: usize, fam: impl Fn(&mut Rng) -> u64) {
    let mut r = Rng::new(seed(s));
    let mut fails = Vec::new();
    for _ in 0..iters(n) {
        let mut f = rand_state(&mut r);
        let before = copy(&f);
        let mut o = to_oracle(&f);
        o.ah_in = (r.next() as u8 & 0xD5) | 2;
        o.of_in = r.next() as u8 & 1;
        let i = r.below(8) as usize;
        let k = r.below(6) as usize;
        let m32 = rand_small(&mut r);
        o.mem[..8].copy_from_slice(&m32.to_le_bytes());
        let sel = fam(&mut r);
        let mut extra = String::new();
        let name = match sel {
            0 => {
                run_reg(ST0[k], i, &mut o);
                let _ = c::arith(&mut f, OPS[k], ArithForm::St0Sti(i as u8));
                format!("{:?} st0,st{i}", OPS[k])
            }
            1 => {
                run_reg(STI[k], i, &mut o);
                let _ = c::arith(&mut f, OPS[k], ArithForm::StiSt0(i as u8));
                format!("{:?} st{i},st0", OPS[k])
            }
            2 => {
                run_reg(STP[k], i, &mut o);
                let _ = c::arith(&mut f, OPS[k], ArithForm::StiSt0Pop(i as u8));
                format!("{:?}p st{i},st0", OPS[k])
            }
            3 => {
                let (p, form) = match k & 3 {
                    0 => (Plain::FaddM32, (ArithOp::Add, ArithForm::M32(m32 as u32))),
                    1 => (Plain::FsubrM64, (ArithOp::Subr, ArithForm::M64(m32))),
                    2 => (Plain::FidivI16, (ArithOp::Div, ArithForm::I16(m32 as i16))),
                    _ => (Plain::FimulI32, (ArithOp::Mul, ArithForm::I32(m32 as i32))),
                };
                run_plain(p, &mut o);
                let _ = c::arith(&mut f, form.0, form.1);
                format!("{p:?} {m32:x}")
            }
            4 => {
                let (rop, unordered, pop) = [
                    (RegOp::Fcom, false, false),
                    (RegOp::Fcomp, false, true),
                    (RegOp::Fucom, true, false),
                    (RegOp::Fucomp, true, true),
                ][k & 3];
                run_reg(rop, i, &mut o);
                let _ = c::fcom(&mut f, CmpSrc::Reg(i as u8), unordered, pop);
                format!("{rop:?} st{i}")
            }
            5 => {
                let (p, src, pop) = match k {
                    0 => (Plain::FcomM32, CmpSrc::M32(m32 as u32), false),
                    1 => (Plain::FcompM64, CmpSrc::M64(m32), true),
                    2 => (Plain::FicompI16, CmpSrc::I16(m32 as i16), true),
                    3 => (Plain::Fcompp, CmpSrc::Reg(1), true),
                    _ => (Plain::Fucompp, CmpSrc::Reg(1), true),
                };
                run_plain(p, &mut o);
                match p {
                    Plain::Fcompp => {
                        let _ = c::fcompp(&mut f, false);
                    }
                    Plain::Fucompp => {
                        let _ = c::fcompp(&mut f, true);
                    }
                    _ => {
                        let _ = c::fcom(&mut f, src, false, pop);
                    }
                }
                format!("{p:?} {m32:x}")
            }
            6 => {
                let rop = COMI[k & 3];
                run_reg(rop, i, &mut o);
                let res = c::fcomi(&mut f, i as u8, k & 2 != 0, k & 1 != 0);
                let b = res.rflags;
                let (exp_ah, exp_of) = ((o.ah_in & !0xD5) | (b as u8 & 0xD5), (b >> 11) as u8 & 1);
                if (exp_ah, exp_of) != (o.ah_out, o.of_out) {
                    extra = format!(
                        " rflags soft {exp_ah:02x}/{exp_of} hw {:02x}/{}",
                        o.ah_out, o.of_out
                    );
                }
                format!("{rop:?} st{i} ah_in {:02x} of_in {}", o.ah_in, o.of_in)
            }
            7 => {
                let (u, p) = UNARY[r.below(12) as usize];
                run_plain(p, &mut o);
                let _ = c::unary(&mut f, u);
                format!("{u:?}")
            }
            8 => {
                let (b, p) = BINARY[k];
                run_plain(p, &mut o);
                let _ = c::binary(&mut f, b);
                format!("{b:?}")
            }
            _ => {
                let (cst, p) = CONSTS[r.below(7) as usize];
                run_plain(p, &mut o);
                let _ = c::fld_const(&mut f, cst);
                format!("{cst:?}")
            }
        };
        let hw = from_oracle(&o, &f);
        if let Some(d) = diff(&f, &hw)
            .map(|d| d + &extra)
            .or((!extra.is_empty()).then_some(extra))
        {
            fails.push(format!("{name}\n  before {}\n  diff:{d}", dump(&before)));
        }
    }
    let n = fails.len();
    for m in fails.iter().take(12) {
        eprintln!("{m}");
    }
    assert_eq!(n, 0, "{n} mismatches");
}

/// Memory operand bits: a narrowed random F80 or random bits.
fn rand_small(r: &mut Rng) -> u64 {
    match r.below(3) {
        0 => u64::from(f80::to_f32(rand_f80(r), 0x37F).value),
        1 => f80::to_f64(rand_f80(r), 0x37F).value,
        _ => r.next() >> r.below(64),
    }
}

#[test]
fn arithmetic_operands_map_as_in_full_state_execution() {
    run(1, 100_000, |r| r.below(4));
}

#[test]
fn compare_operands_map_as_in_full_state_execution() {
    run(2, 100_000, |r| 4 + r.below(3));
}

#[test]
fn unary_binary_and_constant_operands_map_as_in_full_state_execution() {
    run(3, 60_000, |r| 7 + r.below(3));
}
