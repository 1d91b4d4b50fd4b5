//! Tests: every software path (loads, stores and conversions, stack and
//! control instructions, save/restore images) is compared against the host x87
//! executing the same instruction on the same complete state (see
//! `host::oracle`); the host-executed arithmetic only for its operand plumbing
//! (`compute.rs`), since the host runs it on both sides; and known answers from
//! the manuals (`known.rs`).

mod compute;
mod conv;
mod images;
mod known;
mod stackops;

use super::f80::{self, pack};
use super::host::oracle::OFrame;
use super::image::{self, EnvFormat};
use super::state::{Fpu, F80};

/// Iteration count scaled by `X87_TEST_SCALE` (default 1) for soak runs.
pub fn iters(n: usize) -> usize {
    let scale = std::env::var("X87_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    n.saturating_mul(scale)
}

/// Seed mixed with `X87_TEST_SEED` (default 0) so soak runs explore new cases.
pub fn seed(s: u64) -> u64 {
    s ^ std::env::var("X87_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64)
}

pub(crate) use crate::interp::simd::testutil::Rng;

pub fn copy(f: &Fpu) -> Fpu {
    Fpu {
        regs: f.regs,
        fcw: f.fcw,
        fsw: f.fsw,
        ftw: f.ftw,
        fop: f.fop,
        fip: f.fip,
        fdp: f.fdp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
    }
}

/// Interesting 80-bit operands: every class, plus values near the f32/f64
/// and integer limits and rounding ties.
pub fn rand_f80(r: &mut Rng) -> F80 {
    let sign = r.bool();
    let m = r.next();
    let jm = m | (1 << 63);
    match r.below(24) {
        0 => pack(sign, 0, 0),
        1 => pack(sign, 0, m >> 1),                          // denormal
        2 => pack(sign, 0, jm),                              // pseudo-denormal
        3 => pack(sign, 1 + r.below(0x7FFE) as u16, m >> 1), // unnormal
        4 => pack(sign, 0x7FFF, 1 << 63),                    // infinity
        5 => pack(sign, 0x7FFF, jm | (1 << 62)),             // QNaN
        6 => pack(sign, 0x7FFF, (jm & !(1 << 62)) | 1),      // SNaN
        7 => pack(sign, 0x7FFF, m >> 1),                     // pseudo-NaN / pseudo-inf
        8 => f80::INDEFINITE,
        9 => pack(sign, 0x7FFE, u64::MAX),
        10 => pack(sign, 1, 1 << 63),
        // near the single-precision exponent range
        11 => pack(sign, (16383 - 150 + r.below(30)) as u16, jm),
        12 => pack(sign, (16383 + 120 + r.below(10)) as u16, jm),
        // near the double-precision exponent range
        13 => pack(sign, (16383 - 1080 + r.below(60)) as u16, jm),
        14 => pack(sign, (16383 + 1018 + r.below(10)) as u16, jm),
        // integers and half-integers around integer limits
        15 => {
            // integers (and halves) just around 2^15, 2^31, 2^63 and 10^18
            let base: u128 =
                [1 << 15, 1 << 31, 1 << 63, 1_000_000_000_000_000_000][r.below(4) as usize];
            let twice = (base * 2).wrapping_add(r.below(9) as u128).wrapping_sub(4);
            from_twice(sign, twice)
        }
        16 => {
            // small integers and exact halves (ties)
            let v = r.below(2000) as i64;
            let (_, e, mm) = f80::unpack(f80::from_i64(v * 2 + 1));
            pack(sign, e.saturating_sub(1).max(1), mm)
        }
        17 => f80::from_i64((r.next() as i64) >> r.below(64)),
        18 => pack(sign, (16383 + r.below(70)) as u16, jm), // around 1..2^70
        19 => pack(sign, (16383 - r.below(70)) as u16, jm), // fractions
        // mantissas ending exactly at the f32/f64 rounding boundary
        20 => pack(
            sign,
            (16383 + r.below(200)) as u16 - 100,
            (jm & !0xFF_FFFF_FFFF) | (1 << 39),
        ),
        21 => pack(
            sign,
            (16383 + r.below(200)) as u16 - 100,
            (jm & !0x7FF) | (1 << 10),
        ),
        22 => {
            let e = 16382 - 18 + r.below(40) as u16; // around 10^18 for BCD and 2^63
            pack(sign, e + 40, jm)
        }
        _ => pack(sign, r.below(0x8000) as u16, m),
    }
}

/// Exact-or-truncated F80 of `sign * twice / 2`.
pub fn from_twice(sign: bool, twice: u128) -> F80 {
    if twice == 0 {
        return pack(sign, 0, 0);
    }
    let lz = twice.leading_zeros();
    let norm = twice << lz; // bit 127 set
    pack(sign, (16383 + 127 - 1 - lz) as u16, (norm >> 64) as u64)
}

/// A random control word: any rounding and precision control, usually all
/// exceptions masked, sometimes random masks.
pub fn rand_fcw(r: &mut Rng) -> u16 {
    let masks = if r.below(3) == 0 {
        r.next() as u16 & 0x3F
    } else {
        0x3F
    };
    0x0040 | masks | ((r.next() as u16) & 0x0F00)
}

/// A random state: random TOP, tags, registers, control word and C0-C3; no
/// exception flags (so the host can load it without a pending exception).
pub fn rand_state(r: &mut Rng) -> Fpu {
    let mut f = Fpu::default();
    for reg in f.regs.iter_mut() {
        *reg = rand_f80(r);
    }
    f.ftw = match r.below(4) {
        0 => 0,
        1 => 0xFF,
        _ => r.next() as u8,
    };
    f.fcw = rand_fcw(r);
    f.fsw = ((r.below(8) as u16) << 11) | (r.next() as u16 & 0x4700);
    if r.below(4) == 0 {
        // sticky flags that are masked (no exception pending)
        f.fsw |= r.next() as u16 & f.fcw & 0x3F;
        f.fsw |= r.next() as u16 & 0x40;
    }
    f
}

/// Loads `f` into an oracle frame (32-bit protected-mode FNSAVE image).
pub fn to_oracle(f: &Fpu) -> OFrame {
    let mut o = OFrame::new();
    let mut c = copy(f);
    o.img = image::fnsave(&mut c, EnvFormat::Protected32);
    o
}

/// The state the oracle left, read raw from its FNSAVE image (FIP/FDP/FOP
/// taken from `like`, as the host's are meaningless).
pub fn from_oracle(o: &OFrame, like: &Fpu) -> Fpu {
    let mut f = copy(like);
    let g = |off: usize| u16::from_le_bytes([o.img[off], o.img[off + 1]]);
    f.fcw = g(0);
    f.fsw = g(4);
    f.ftw = image::abridged_tag(g(8));
    let top = usize::from((f.fsw >> 11) & 7);
    for i in 0..8 {
        f.regs[(top + i) & 7].copy_from_slice(&o.img[28 + 10 * i..38 + 10 * i]);
    }
    f
}

/// Describes a difference between two states, or None.
pub fn diff(a: &Fpu, b: &Fpu) -> Option<String> {
    let mut s = String::new();
    if a.fcw != b.fcw {
        s += &format!(" fcw {:04x} vs {:04x};", a.fcw, b.fcw);
    }
    if a.fsw != b.fsw {
        s += &format!(" fsw {:04x} vs {:04x};", a.fsw, b.fsw);
    }
    if a.ftw != b.ftw {
        s += &format!(" ftw {:02x} vs {:02x};", a.ftw, b.ftw);
    }
    for p in 0..8 {
        if a.regs[p] != b.regs[p] {
            s += &format!(" R{p} {} vs {};", hex(&a.regs[p]), hex(&b.regs[p]));
        }
    }
    (!s.is_empty()).then_some(s)
}

pub fn hex(v: &[u8]) -> String {
    v.iter().rev().map(|b| format!("{b:02x}")).collect()
}

pub fn dump(f: &Fpu) -> String {
    let mut s = format!("fcw {:04x} fsw {:04x} ftw {:02x} |", f.fcw, f.fsw, f.ftw);
    for p in 0..8 {
        s += &format!(" R{p}={}", hex(&f.regs[p]));
    }
    s
}
