//! Register moves and control instructions against the host.

use super::super::host::oracle::{run_plain, run_reg, Plain, RegOp};
use super::super::ops;
use super::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    FldSt(usize),
    FstSt(usize, bool),
    Fxch(usize),
    Ffree(usize),
    Ffreep(usize),
    Fcmov(usize, usize),
    Fincstp,
    Fdecstp,
    Fninit,
    Fnclex,
    Fldcw(u16),
}

const CMOV: [RegOp; 8] = [
    RegOp::Fcmovb,
    RegOp::Fcmove,
    RegOp::Fcmovbe,
    RegOp::Fcmovu,
    RegOp::Fcmovnb,
    RegOp::Fcmovne,
    RegOp::Fcmovnbe,
    RegOp::Fcmovnu,
];

/// Condition of FCMOV variant `k` for LAHF-layout flags `ah`.
fn cond(k: usize, ah: u8) -> bool {
    let cf = ah & 1 != 0;
    let pf = ah & 4 != 0;
    let zf = ah & 0x40 != 0;
    let c = match k & 3 {
        0 => cf,
        1 => zf,
        2 => cf || zf,
        _ => pf,
    };
    if k >= 4 {
        !c
    } else {
        c
    }
}

fn rand_op(r: &mut Rng) -> Op {
    let i = r.below(8) as usize;
    match r.below(10) {
        0 => Op::FldSt(i),
        1 => Op::FstSt(i, r.bool()),
        2 => Op::Fxch(i),
        3 if r.bool() => Op::Ffree(i),
        3 => Op::Ffreep(i),
        4 => Op::Fcmov(r.below(8) as usize, i),
        5 => Op::Fincstp,
        6 => Op::Fdecstp,
        7 => Op::Fninit,
        8 => Op::Fnclex,
        _ => Op::Fldcw(r.next() as u16),
    }
}

#[test]
fn moves_and_control_match_host() {
    let mut r = Rng::new(seed(77));
    let mut fails = Vec::new();
    for _ in 0..iters(200_000) {
        let op = rand_op(&mut r);
        let mut f = rand_state(&mut r);
        let before = copy(&f);
        let mut o = to_oracle(&f);
        o.ah_in = (r.next() as u8 & 0x45) | 2;
        match op {
            Op::FldSt(i) => run_reg(RegOp::FldSt, i, &mut o),
            Op::FstSt(i, false) => run_reg(RegOp::FstSt, i, &mut o),
            Op::FstSt(i, true) => run_reg(RegOp::FstpSt, i, &mut o),
            Op::Fxch(i) => run_reg(RegOp::Fxch, i, &mut o),
            Op::Ffree(i) => run_reg(RegOp::Ffree, i, &mut o),
            Op::Ffreep(i) => run_reg(RegOp::Ffreep, i, &mut o),
            Op::Fcmov(k, i) => run_reg(CMOV[k], i, &mut o),
            Op::Fincstp => run_plain(Plain::Fincstp, &mut o),
            Op::Fdecstp => run_plain(Plain::Fdecstp, &mut o),
            Op::Fninit => run_plain(Plain::Fninit, &mut o),
            Op::Fnclex => run_plain(Plain::Fnclex, &mut o),
            Op::Fldcw(cw) => {
                o.mem[..2].copy_from_slice(&cw.to_le_bytes());
                run_plain(Plain::Fldcw, &mut o)
            }
        }
        let hw = from_oracle(&o, &f);
        match op {
            Op::FldSt(i) => {
                let _ = ops::fld_st(&mut f, i);
            }
            Op::FstSt(i, p) => {
                let _ = ops::fst_st(&mut f, i, p);
            }
            Op::Fxch(i) => {
                let _ = ops::fxch(&mut f, i);
            }
            Op::Ffree(i) => ops::ffree(&mut f, i),
            Op::Ffreep(i) => ops::ffreep(&mut f, i),
            Op::Fcmov(k, i) => {
                let _ = ops::fcmov(&mut f, i, cond(k, o.ah_in));
            }
            Op::Fincstp => ops::fincstp(&mut f),
            Op::Fdecstp => ops::fdecstp(&mut f),
            Op::Fninit => ops::fninit(&mut f),
            Op::Fnclex => ops::fnclex(&mut f),
            Op::Fldcw(cw) => {
                let _ = ops::fldcw(&mut f, cw);
            }
        }
        if let Some(d) = diff(&f, &hw) {
            fails.push(format!(
                "{op:?} ah {:02x}\n  before {}\n  diff:{d}",
                o.ah_in,
                dump(&before)
            ));
        }
    }
    let n = fails.len();
    for m in fails.iter().take(12) {
        eprintln!("{m}");
    }
    assert_eq!(n, 0, "{n} mismatches");
}

#[test]
fn status_and_control_stores() {
    let mut r = Rng::new(seed(5));
    for _ in 0..iters(2000) {
        let f = rand_state(&mut r);
        let mut o = to_oracle(&f);
        run_plain(Plain::Fnstsw, &mut o);
        assert_eq!(u16::from_le_bytes([o.mem[0], o.mem[1]]), ops::fnstsw(&f));
        let mut o = to_oracle(&f);
        run_plain(Plain::Fnstcw, &mut o);
        assert_eq!(u16::from_le_bytes([o.mem[0], o.mem[1]]), ops::fnstcw(&f));
    }
}
