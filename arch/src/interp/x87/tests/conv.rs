//! Loads and stores (software conversions) against the host.

use super::super::host::oracle::{run_plain, Plain};
use super::super::ops;
use super::*;

/// The memory operand sizes and instructions checked here.
#[derive(Clone, Copy, Debug)]
enum Op {
    FldM32,
    FldM64,
    FldM80,
    Fild(u32),
    Fbld,
    Fst32(bool),
    Fst64(bool),
    FstpM80,
    Fist(u32, bool),
    Fisttp(u32),
    Fbstp,
}

fn plain(op: Op) -> Plain {
    match op {
        Op::FldM32 => Plain::FldM32,
        Op::FldM64 => Plain::FldM64,
        Op::FldM80 => Plain::FldM80,
        Op::Fild(16) => Plain::FildM16,
        Op::Fild(32) => Plain::FildM32,
        Op::Fild(_) => Plain::FildM64,
        Op::Fbld => Plain::Fbld,
        Op::Fst32(false) => Plain::FstM32,
        Op::Fst32(true) => Plain::FstpM32,
        Op::Fst64(false) => Plain::FstM64,
        Op::Fst64(true) => Plain::FstpM64,
        Op::FstpM80 => Plain::FstpM80,
        Op::Fist(16, false) => Plain::FistM16,
        Op::Fist(16, true) => Plain::FistpM16,
        Op::Fist(32, false) => Plain::FistM32,
        Op::Fist(32, true) => Plain::FistpM32,
        Op::Fist(_, _) => Plain::FistpM64,
        Op::Fisttp(16) => Plain::FisttpM16,
        Op::Fisttp(32) => Plain::FisttpM32,
        Op::Fisttp(_) => Plain::FisttpM64,
        Op::Fbstp => Plain::Fbstp,
    }
}

fn rand_op(r: &mut Rng) -> Op {
    let bits = [16, 32, 64][r.below(3) as usize];
    match r.below(11) {
        0 => Op::FldM32,
        1 => Op::FldM64,
        2 => Op::FldM80,
        3 => Op::Fild(bits),
        4 => Op::Fbld,
        5 => Op::Fst32(r.bool()),
        6 => Op::Fst64(r.bool()),
        7 => Op::FstpM80,
        8 => Op::Fist(bits, bits == 64 || r.bool()),
        9 => Op::Fisttp(bits),
        _ => Op::Fbstp,
    }
}

/// Random memory operand for loads: mostly the narrowing of a random F80 so
/// that denormals, NaNs and limits are well covered.
fn rand_mem(r: &mut Rng, op: Op) -> [u8; 10] {
    let mut m = [0u8; 10];
    for b in m.iter_mut() {
        *b = r.next() as u8;
    }
    let v = rand_f80(r);
    match op {
        Op::FldM32 if r.bool() => {
            m[..4].copy_from_slice(&f80::to_f32(v, 0x37F).value.to_le_bytes())
        }
        Op::FldM64 if r.bool() => {
            m[..8].copy_from_slice(&f80::to_f64(v, 0x37F).value.to_le_bytes())
        }
        Op::FldM32 => {
            let special = [
                0x0000_0001u32,
                0x807F_FFFF,
                0x7F80_0000,
                0x7FA0_0000,
                0xFFC0_0001,
                0x0080_0000,
            ];
            if r.bool() {
                m[..4].copy_from_slice(&special[r.below(6) as usize].to_le_bytes());
            }
        }
        Op::Fbld => {
            for b in m[..9].iter_mut() {
                if r.below(8) != 0 {
                    *b = ((r.below(10) as u8) << 4) | r.below(10) as u8;
                }
            }
        }
        _ => {}
    }
    m
}

/// Runs one op in software on `f`; returns the bytes stored (None: no store).
fn soft(f: &mut Fpu, op: Op, mem: &[u8; 10]) -> Option<Vec<u8>> {
    let le = |n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&mem[..n]);
        u64::from_le_bytes(b)
    };
    match op {
        Op::FldM32 => {
            let _ = ops::fld_f32(f, le(4) as u32);
            None
        }
        Op::FldM64 => {
            let _ = ops::fld_f64(f, le(8));
            None
        }
        Op::FldM80 => {
            let _ = ops::fld_f80(f, *mem);
            None
        }
        Op::Fild(bits) => {
            let v = match bits {
                16 => i64::from(le(2) as u16 as i16),
                32 => i64::from(le(4) as u32 as i32),
                _ => le(8) as i64,
            };
            let _ = ops::fild(f, v);
            None
        }
        Op::Fbld => {
            let _ = ops::fbld(f, *mem);
            None
        }
        Op::Fst32(p) => ops::fst_f32(f, p).value.map(|v| v.to_le_bytes().to_vec()),
        Op::Fst64(p) => ops::fst_f64(f, p).value.map(|v| v.to_le_bytes().to_vec()),
        Op::FstpM80 => ops::fst_f80(f, true).value.map(|v| v.to_vec()),
        Op::Fist(bits, p) => ops::fist(f, bits, p, false)
            .value
            .map(|v| v.to_le_bytes()[..bits as usize / 8].to_vec()),
        Op::Fisttp(bits) => ops::fist(f, bits, true, true)
            .value
            .map(|v| v.to_le_bytes()[..bits as usize / 8].to_vec()),
        Op::Fbstp => ops::fbstp(f).value.map(|v| v.to_vec()),
    }
}

fn store_len(op: Op) -> usize {
    match op {
        Op::Fst32(_) => 4,
        Op::Fst64(_) => 8,
        Op::Fist(b, _) | Op::Fisttp(b) => b as usize / 8,
        Op::FstpM80 | Op::Fbstp => 10,
        _ => 0,
    }
}

/// Returns a failure description or None.
fn check_one(r: &mut Rng, op: Op) -> Option<String> {
    let mut f = rand_state(r);
    // Give ST(0) an interesting value for stores.
    let p0 = super::super::stack::phys(&f, 0);
    f.regs[p0] = rand_f80(r);
    let mem = rand_mem(r, op);
    let before = copy(&f);
    let mut o = to_oracle(&f);
    o.mem[..10].copy_from_slice(&mem);
    run_plain(plain(op), &mut o);
    let hw = from_oracle(&o, &f);
    let stored = soft(&mut f, op, &mem);
    let mut msg = diff(&f, &hw).unwrap_or_default();
    let n = store_len(op);
    if n > 0 {
        let expect: Vec<u8> = stored.clone().unwrap_or_else(|| mem[..n].to_vec());
        if expect != o.mem[..n] {
            msg += &format!(
                " mem soft {:?} {} vs hw {}",
                stored.is_some(),
                hex(&expect),
                hex(&o.mem[..n])
            );
        }
    }
    (!msg.is_empty()).then(|| {
        format!(
            "{op:?} mem {}\n  before {}\n  diff:{msg}",
            hex(&mem),
            dump(&before)
        )
    })
}

fn run(s: u64, iters: usize, pick: impl Fn(&mut Rng) -> Op) {
    let mut r = Rng::new(seed(s));
    let mut fails = Vec::new();
    for _ in 0..super::iters(iters) {
        let op = pick(&mut r);
        if let Some(m) = check_one(&mut r, op) {
            fails.push(m);
        }
    }
    let n = fails.len();
    for m in fails.iter().take(12) {
        eprintln!("{m}");
    }
    assert_eq!(n, 0, "{n} mismatches");
}

#[test]
fn loads_and_stores_match_host() {
    run(0x1234_5678, 200_000, rand_op);
}

#[test]
fn narrowing_stores_match_host() {
    run(0xBEEF, 200_000, |r| {
        if r.bool() {
            Op::Fst32(r.bool())
        } else {
            Op::Fst64(r.bool())
        }
    });
}

#[test]
fn integer_and_bcd_stores_match_host() {
    run(0xF00D, 200_000, |r| {
        let bits = [16, 32, 64][r.below(3) as usize];
        match r.below(3) {
            0 => Op::Fist(bits, bits == 64 || r.bool()),
            1 => Op::Fisttp(bits),
            _ => Op::Fbstp,
        }
    });
}
