//! The operand tables of the floating-point groups (`ssefp`, `x87fp`), in the upper part of
//! the constant page (the x87 group's exact values are below): MXCSR values, x87 control
//! words, and single, double and extended-precision values of every class that matters to
//! IEEE arithmetic: signed zeros, infinities, quiet and signalling NaNs with payloads,
//! denormals, the smallest and largest normals, values that overflow or underflow when
//! multiplied or narrowed, integer-conversion limits, rounding ties and ordinary numbers.
//!
//! Values come in clusters of four related ones (x, -x, x's neighbour, x rescaled), so loads
//! from neighbouring offsets pair operands that cancel, tie or straddle a boundary. The tables
//! are part of the initial state (derived from the case seed) where a floating-point group is
//! on, so the generated code only names table entries.

use crate::difftest::layout;
use crate::difftest::rng::Rng;

/// Offset in the constant page of the MXCSR table (u32 entries), after the x87 group's.
pub const MXCSR_AT: usize = super::x87::TABLES_END;
/// MXCSR entries; the first [`MASKED`] mask every exception.
pub const MXCSRS: usize = 32;
/// Offset of the x87 control-word table (u16 entries).
pub const FCW_AT: usize = MXCSR_AT + 4 * MXCSRS;
/// Control-word entries; the first [`MASKED`] mask every exception.
pub const FCWS: usize = 32;
/// Entries of the MXCSR and control-word tables that mask every exception.
pub const MASKED: usize = 24;
/// Offset of the single-precision table (16-byte aligned, for packed operands).
pub const F32_AT: usize = FCW_AT + 2 * FCWS;
/// Single-precision entries.
pub const F32S: usize = 64;
/// Offset of the double-precision table.
pub const F64_AT: usize = F32_AT + 4 * F32S;
/// Double-precision entries.
pub const F64S: usize = 64;
/// Offset of the extended-precision table (one value per 16 bytes).
pub const F80_AT: usize = F64_AT + 8 * F64S;
/// Extended-precision entries: up to the end of the page.
pub const F80S: usize = (4096 - F80_AT) / 16;

/// A floating-point format of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// binary32.
    F32,
    /// binary64.
    F64,
    /// x87 extended precision.
    F80,
}

impl Format {
    /// Offset of the table, bytes per entry and entries.
    fn table(self) -> (usize, usize, usize) {
        match self {
            Format::F32 => (F32_AT, 4, F32S),
            Format::F64 => (F64_AT, 8, F64S),
            Format::F80 => (F80_AT, 16, F80S),
        }
    }

    /// The guest address of a random table position from which `bytes` bytes can be read,
    /// aligned to `align` bytes (1 or 16).
    pub fn pick(self, rng: &mut Rng, bytes: usize, align: usize) -> u64 {
        let (at, stride, n) = self.table();
        let step = stride.max(align);
        let room = (n * stride).saturating_sub(bytes) / step + 1;
        let off = at + step * rng.below(room as u64) as usize;
        layout::CONST_BASE + off as u64
    }
}

/// The guest address of a random MXCSR (`masked`: every exception masked, else at least one
/// unmasked).
pub fn mxcsr(rng: &mut Rng, masked: bool) -> u64 {
    let i = entry(rng, masked, MXCSRS);
    layout::CONST_BASE + (MXCSR_AT + 4 * i) as u64
}

/// The guest address of a random x87 control word (`masked` as for [`mxcsr`]).
pub fn fcw(rng: &mut Rng, masked: bool) -> u64 {
    let i = entry(rng, masked, FCWS);
    layout::CONST_BASE + (FCW_AT + 2 * i) as u64
}

fn entry(rng: &mut Rng, masked: bool, n: usize) -> usize {
    if masked {
        rng.below(MASKED as u64) as usize
    } else {
        MASKED + rng.below((n - MASKED) as u64) as usize
    }
}

/// Exception masks with at least one of the six cleared.
fn some_unmasked(rng: &mut Rng) -> u32 {
    let cleared = (rng.next_u64() as u32 & 0x3f) | (1 << rng.below(6));
    0x3f & !cleared
}

/// An MXCSR: any rounding, DAZ and FTZ, sometimes sticky flags; masks per `masked`.
fn mxcsr_value(rng: &mut Rng, masked: bool) -> u32 {
    let masks = if masked { 0x3f } else { some_unmasked(rng) };
    let sticky = if rng.chance(20) {
        rng.next_u64() as u32 & 0x3f
    } else {
        0
    };
    (masks << 7) | (rng.next_u64() as u32 & 0xe040) | sticky
}

/// An x87 control word: 24, 53 or 64-bit precision, any rounding; masks per `masked`.
fn fcw_value(rng: &mut Rng, masked: bool) -> u16 {
    let masks = if masked {
        0x3f
    } else {
        some_unmasked(rng) as u16
    };
    let precision = [0u16, 2, 3, 3][rng.below(4) as usize];
    0x0040 | masks | (precision << 8) | ((rng.below(4) as u16) << 10)
}

/// The parameters of a binary format: exponent bits and fraction bits (the x87 format's
/// explicit integer bit is added by [`cluster`]).
#[derive(Clone, Copy)]
struct Binary {
    exp_bits: u32,
    frac_bits: u32,
}

impl Binary {
    fn bias(self) -> u64 {
        (1 << (self.exp_bits - 1)) - 1
    }

    fn max_exp(self) -> u64 {
        (1 << self.exp_bits) - 1
    }

    fn pack(self, sign: bool, exp: u64, frac: u64) -> u128 {
        let frac = u128::from(frac & ((1 << self.frac_bits) - 1));
        (u128::from(sign) << (self.exp_bits + self.frac_bits))
            | (u128::from(exp.min(self.max_exp())) << self.frac_bits)
            | frac
    }
}

/// A base value of a random class: (sign, biased exponent, fraction).
fn base(rng: &mut Rng, f: Binary) -> (bool, u64, u64) {
    let sign = rng.chance(50);
    let frac = rng.next_u64() & ((1 << f.frac_bits) - 1);
    let quiet = 1 << (f.frac_bits - 1);
    let top = f.max_exp();
    let bias = f.bias() as i64;
    let jitter = rng.range(-2, 2);
    // A random offset in 0..=n.
    let mut up_to = |n: i64| rng.range(0, n);
    // The biased exponent of 2^(k + jitter), kept finite.
    let at = |k: i64| (bias + k + jitter).clamp(0, top as i64 - 1) as u64;
    // The fraction with only its top `n` bits (few significant bits: ties, exact values).
    let short = |n: u32| frac & !((1 << (f.frac_bits - n)) - 1);
    match up_to(19) {
        0 => (sign, 0, 0),
        1 => (sign, top, 0),
        2 => (sign, top, quiet | (frac & (quiet - 1))),
        3 => (sign, top, (frac & (quiet - 1)).max(1)),
        4 | 5 => (sign, 0, frac.max(1)),
        6 => (sign, 1 + up_to(1) as u64, frac),
        7 => (sign, top - 1 - up_to(1) as u64, frac),
        // Products and quotients that underflow or overflow.
        8 => (sign, at(-bias / 2 - up_to(bias / 8)), frac),
        9 => (sign, at(bias / 2 + up_to(bias / 8)), frac),
        // Integer-conversion limits (2^15, 2^31, 2^63) and values near them.
        10 => (sign, at([15, 31, 63][up_to(2) as usize]), 0),
        11 => (sign, at(31), short(3)),
        // Small numbers with halves and quarters: ties when rounded to integers.
        12 => (sign, at(1 + up_to(11)), short(12)),
        // The binary32 and binary64 range limits (overflow and underflow when narrowed).
        13 => (sign, at(127), frac),
        14 => (sign, at(-126 - up_to(28)), frac),
        15 => (sign, at(1023), frac),
        16 => (sign, at(-1022 - up_to(56)), frac),
        _ => (sign, at(up_to(40) - 20), frac),
    }
}

/// Four related values in the low bits of `u128`s: x, -x, x's neighbour, x rescaled.
fn cluster(rng: &mut Rng, f: Binary, explicit_one: bool) -> [u128; 4] {
    let (sign, exp, frac) = base(rng, f);
    let x = f.pack(sign, exp, frac);
    let neighbour = f.pack(sign, exp, frac.wrapping_add(1));
    let scaled = if exp == 0 || exp >= f.max_exp() {
        f.pack(!sign, exp, frac >> 1)
    } else {
        let shift = rng.range(-40, 40);
        let e = (exp as i64 + shift).clamp(1, f.max_exp() as i64 - 1) as u64;
        f.pack(sign, e, frac)
    };
    let neg = x ^ (1 << (f.exp_bits + f.frac_bits));
    let mut out = [x, neg, neighbour, scaled];
    if explicit_one {
        // The x87 format stores the integer bit: set for normals, infinities and NaNs.
        for v in &mut out {
            let exp = (*v >> f.frac_bits) & u128::from(f.max_exp());
            let frac = *v & ((1 << f.frac_bits) - 1);
            let sign = *v >> (f.exp_bits + f.frac_bits);
            let one = u128::from(exp != 0);
            *v = (sign << 79) | (exp << 64) | (one << 63) | frac;
        }
    }
    out
}

const F32: Binary = Binary {
    exp_bits: 8,
    frac_bits: 23,
};
const F64: Binary = Binary {
    exp_bits: 11,
    frac_bits: 52,
};
/// The x87 format without its integer bit.
const F80: Binary = Binary {
    exp_bits: 15,
    frac_bits: 63,
};

/// Fills the tables into the constant page `page`.
pub fn fill(page: &mut [u8], rng: &mut Rng) {
    for i in 0..MXCSRS {
        let at = MXCSR_AT + 4 * i;
        page[at..at + 4].copy_from_slice(&mxcsr_value(rng, i < MASKED).to_le_bytes());
    }
    for i in 0..FCWS {
        let at = FCW_AT + 2 * i;
        page[at..at + 2].copy_from_slice(&fcw_value(rng, i < MASKED).to_le_bytes());
    }
    for (at, bytes, n, f, explicit) in [
        (F32_AT, 4, F32S, F32, false),
        (F64_AT, 8, F64S, F64, false),
        (F80_AT, 10, F80S, F80, true),
    ] {
        let stride = if explicit { 16 } else { bytes };
        for c in 0..n / 4 {
            for (k, v) in cluster(rng, f, explicit).into_iter().enumerate() {
                let p = at + stride * (4 * c + k);
                page[p..p + bytes].copy_from_slice(&v.to_le_bytes()[..bytes]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seed: u64) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        fill(&mut p, &mut Rng::new(seed));
        p
    }

    #[test]
    fn tables_fit_the_constant_page_aligned() {
        assert_eq!(F80_AT + 16 * F80S, 4096);
        assert_eq!(
            F32_AT % 16 + F64_AT % 16,
            0,
            "packed operands need alignment"
        );
        assert_eq!(F32S % 4 + F64S % 4 + F80S % 4, 0, "whole clusters");
    }

    #[test]
    fn control_values_are_valid_and_masked_where_asked() {
        for seed in 0..50 {
            let p = page(seed);
            for i in 0..MXCSRS {
                let v = u32::from_le_bytes(p[MXCSR_AT + 4 * i..][..4].try_into().unwrap());
                assert_eq!(v & !0xffff, 0, "reserved MXCSR bits");
                assert_eq!(v >> 7 & 0x3f == 0x3f, i < MASKED, "{v:#x}");
            }
            for i in 0..FCWS {
                let v = u16::from_le_bytes(p[FCW_AT + 2 * i..][..2].try_into().unwrap());
                assert_ne!(v >> 8 & 3, 1, "reserved precision control");
                assert_eq!(v & 0x3f == 0x3f, i < MASKED, "{v:#x}");
            }
        }
    }

    #[test]
    fn every_class_occurs() {
        let (mut zero, mut inf, mut qnan, mut snan, mut denormal, mut normal) = (0, 0, 0, 0, 0, 0);
        for seed in 0..20 {
            let p = page(seed);
            for i in 0..F64S {
                let v = u64::from_le_bytes(p[F64_AT + 8 * i..][..8].try_into().unwrap());
                let (exp, frac) = (v >> 52 & 0x7ff, v & ((1 << 52) - 1));
                match (exp, frac) {
                    (0, 0) => zero += 1,
                    (0, _) => denormal += 1,
                    (0x7ff, 0) => inf += 1,
                    (0x7ff, f) if f >> 51 == 1 => qnan += 1,
                    (0x7ff, _) => snan += 1,
                    _ => normal += 1,
                }
            }
            for i in 0..F80S {
                let b = &p[F80_AT + 16 * i..];
                let mant = u64::from_le_bytes(b[..8].try_into().unwrap());
                let exp = u16::from_le_bytes([b[8], b[9]]) & 0x7fff;
                assert_eq!(
                    mant >> 63 == 1,
                    exp != 0,
                    "integer bit of {exp:#x}:{mant:#x}"
                );
            }
        }
        for (name, n) in [
            ("zero", zero),
            ("inf", inf),
            ("qnan", qnan),
            ("snan", snan),
            ("denormal", denormal),
            ("normal", normal),
        ] {
            assert!(n > 20, "{name}: {n}");
        }
    }
}
