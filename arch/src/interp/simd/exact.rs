//! Whether an IEEE operation's result is exact when rounded to its format's precision with an
//! unbounded exponent range.
//!
//! That decides the precision flag (PE) of an SSE result lane whose overflow or underflow
//! exception is unmasked: the processor then reports PE only if the significand had to be
//! rounded, not because the masked response (an infinity, a denormal) would have been inexact.
//! Integer arithmetic on the significands; no floating-point operation is involved.

/// A binary interchange format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    /// binary32.
    F32,
    /// binary64.
    F64,
}

impl Fmt {
    /// Fraction bits (the precision is one more).
    const fn frac_bits(self) -> u32 {
        match self {
            Fmt::F32 => 23,
            Fmt::F64 => 52,
        }
    }

    /// Exponent bits.
    const fn exp_bits(self) -> u32 {
        match self {
            Fmt::F32 => 8,
            Fmt::F64 => 11,
        }
    }
}

/// An operation whose result can overflow or underflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// `x / y`.
    Div,
    /// `x` (binary64) rounded to binary32.
    Narrow,
}

/// A finite nonzero value as `(-1)^neg * m * 2^e` with an integer `m`.
struct Parts {
    neg: bool,
    m: u128,
    e: i32,
}

/// The parts of `bits` in `fmt`; None for zero (and for a denormal under DAZ), infinities and
/// NaNs.
fn parts(bits: u64, fmt: Fmt, daz: bool) -> Option<Parts> {
    let (fb, eb) = (fmt.frac_bits(), fmt.exp_bits());
    let max = (1u64 << eb) - 1;
    let bias = (max >> 1) as i32;
    let exp = (bits >> fb) & max;
    let frac = bits & ((1 << fb) - 1);
    let neg = (bits >> (fb + eb)) & 1 == 1;
    match exp {
        0 if frac == 0 || daz => None,
        0 => Some(Parts {
            neg,
            m: u128::from(frac),
            e: 1 - bias - fb as i32,
        }),
        e if e == max => None,
        e => Some(Parts {
            neg,
            m: u128::from(frac | (1 << fb)),
            e: e as i32 - bias - fb as i32,
        }),
    }
}

/// Bits from the highest to the lowest set bit of `v`.
fn span(v: u128) -> u32 {
    if v == 0 {
        0
    } else {
        128 - v.leading_zeros() - v.trailing_zeros()
    }
}

/// `v` without its trailing zero bits.
fn odd(v: u128) -> u128 {
    v >> v.trailing_zeros()
}

/// Whether `op(x, y)` on `fmt` values (`y` unused for [`Op::Narrow`], whose `x` is binary64)
/// is exact at the precision of its result with an unbounded exponent range; `daz` treats
/// denormal operands as zeros. Zero, infinite and NaN operands give exact results.
pub fn exact(op: Op, fmt: Fmt, x: u64, y: u64, daz: bool) -> bool {
    let precision = match op {
        Op::Narrow => Fmt::F32.frac_bits() + 1,
        _ => fmt.frac_bits() + 1,
    };
    let Some(a) = parts(x, fmt, daz) else {
        return true;
    };
    if op == Op::Narrow {
        return span(a.m) <= precision;
    }
    let Some(b) = parts(y, fmt, daz) else {
        return true;
    };
    match op {
        Op::Mul => span(a.m * b.m) <= precision,
        Op::Div => {
            let (n, d) = (odd(a.m), odd(b.m));
            n % d == 0 && span(n / d) <= precision
        }
        _ => {
            let b_neg = b.neg ^ (op == Op::Sub);
            let low = a.e.min(b.e);
            let (sa, sb) = ((a.e - low) as u32, (b.e - low) as u32);
            // With the operands further apart, the sum spans more bits than any precision.
            if sa.max(sb) > 64 {
                return false;
            }
            let value = |m: u128, shift: u32, neg: bool| {
                let v = (m << shift) as i128;
                if neg {
                    -v
                } else {
                    v
                }
            };
            let sum = value(a.m, sa, a.neg) + value(b.m, sb, b_neg);
            span(sum.unsigned_abs()) <= precision
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f32) -> u64 {
        u64::from(v.to_bits())
    }

    fn d(v: f64) -> u64 {
        v.to_bits()
    }

    #[test]
    fn products_and_quotients() {
        let max = f32::MAX;
        assert!(exact(Op::Mul, Fmt::F32, f(max), f(2.0), false));
        assert!(!exact(Op::Mul, Fmt::F32, f(max), f(1.5), false));
        assert!(exact(Op::Mul, Fmt::F32, f(1.5), f(1.5), false));
        assert!(exact(Op::Div, Fmt::F32, f(max), f(0.5), false));
        assert!(!exact(Op::Div, Fmt::F32, f(max), f(0.3), false));
        assert!(exact(Op::Div, Fmt::F32, f(3.0), f(1.5), false));
        assert!(!exact(Op::Div, Fmt::F32, f(1.0), f(3.0), false));
        // 24 significant bits stay exact, 25 do not.
        let wide = f32::from_bits(1f32.to_bits() | 1);
        assert!(exact(Op::Mul, Fmt::F32, f(wide), f(2f32.powi(-120)), false));
        assert!(!exact(Op::Mul, Fmt::F32, f(wide), f(1.5), false));
        assert!(exact(Op::Mul, Fmt::F64, d(f64::MAX), d(4.0), false));
        assert!(!exact(Op::Mul, Fmt::F64, d(f64::MAX), d(f64::MAX), false));
    }

    #[test]
    fn sums_and_differences() {
        let max = f32::MAX;
        assert!(exact(Op::Add, Fmt::F32, f(max), f(max), false));
        assert!(!exact(
            Op::Add,
            Fmt::F32,
            f(max),
            f(max * 2f32.powi(-23)),
            false
        ));
        assert!(exact(Op::Sub, Fmt::F32, f(1.5), f(1.25), false));
        assert!(exact(Op::Sub, Fmt::F32, f(1.0), f(1.0), false));
        assert!(exact(Op::Add, Fmt::F32, f(1.0), f(-1.0), false));
        assert!(!exact(Op::Add, Fmt::F32, f(1.0), f(2f32.powi(-30)), false));
        assert!(!exact(Op::Add, Fmt::F32, f(1.0), f(2f32.powi(-100)), false));
        assert!(exact(
            Op::Sub,
            Fmt::F32,
            f(2f32.powi(-126) * 1.5),
            f(2f32.powi(-126)),
            false
        ));
        assert!(!exact(Op::Add, Fmt::F64, d(1.0), d(2f64.powi(-53)), false));
        assert!(exact(Op::Add, Fmt::F64, d(1.0), d(2f64.powi(-52)), false));
    }

    #[test]
    fn zeros_denormals_and_narrowing() {
        let den = f32::from_bits(3);
        assert!(exact(Op::Add, Fmt::F32, f(den), f(0.0), false));
        assert!(exact(Op::Add, Fmt::F32, f(1.0), f(den), true), "DAZ: 1 + 0");
        assert!(!exact(Op::Add, Fmt::F32, f(1.0), f(den), false));
        assert!(
            exact(Op::Mul, Fmt::F32, f(den), f(0.5), false),
            "3 * 2^-150 at precision 24"
        );
        assert!(exact(Op::Narrow, Fmt::F64, d(2f64.powi(200)), 0, false));
        assert!(exact(
            Op::Narrow,
            Fmt::F64,
            d(1.5 * 2f64.powi(-140)),
            0,
            false
        ));
        assert!(!exact(Op::Narrow, Fmt::F64, d(1e300), 0, false));
        assert!(exact(Op::Mul, Fmt::F32, f(f32::INFINITY), f(2.0), false));
        assert!(exact(Op::Div, Fmt::F32, f(f32::NAN), f(3.0), false));
    }
}
