//! The 80-bit extended-precision format: field access, classification and
//! exact software conversions to and from the formats x87 loads and stores.
//!
//! All functions are total (no panics, no allocation). Conversions that can
//! raise exceptions return a [`Conv`] holding the *masked* response value, the
//! exception flags raised (FSW bit positions) and the C1 "rounded up" bit;
//! deciding whether an unmasked exception suppresses the store is the
//! caller's job ([`Conv::stores`]).

use super::state::F80;

/// Invalid operation (FSW bit 0).
pub const IE: u16 = 0x0001;
/// Denormal operand (FSW bit 1).
pub const DE: u16 = 0x0002;
/// Zero divide (FSW bit 2).
pub const ZE: u16 = 0x0004;
/// Overflow (FSW bit 3).
pub const OE: u16 = 0x0008;
/// Underflow (FSW bit 4).
pub const UE: u16 = 0x0010;
/// Precision / inexact (FSW bit 5).
pub const PE: u16 = 0x0020;
/// Stack fault (FSW bit 6).
pub const SF: u16 = 0x0040;
/// Exception summary (FSW bit 7).
pub const ES: u16 = 0x0080;
/// Condition code C0 (FSW bit 8).
pub const C0: u16 = 0x0100;
/// Condition code C1 (FSW bit 9).
pub const C1: u16 = 0x0200;
/// Condition code C2 (FSW bit 10).
pub const C2: u16 = 0x0400;
/// Condition code C3 (FSW bit 14).
pub const C3: u16 = 0x4000;
/// FPU busy (FSW bit 15, mirrors ES).
pub const B: u16 = 0x8000;
/// The six exception flag bits IE..PE.
pub const EXC_MASK: u16 = 0x003F;

/// The QNaN "real indefinite" (sign set, exponent all ones, significand 0xC000...).
pub const INDEFINITE: F80 = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF];
/// Single-precision real indefinite.
pub const F32_INDEFINITE: u32 = 0xFFC0_0000;
/// Double-precision real indefinite.
pub const F64_INDEFINITE: u64 = 0xFFF8_0000_0000_0000;
/// Packed-BCD indefinite (bytes 9..7 = FF FF C0, rest 0) as stored by FBSTP.
pub const BCD_INDEFINITE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF];

/// Builds an F80 from sign, 15-bit biased exponent and 64-bit significand.
pub const fn pack(sign: bool, exp: u16, mant: u64) -> F80 {
    let m = mant.to_le_bytes();
    let se = ((sign as u16) << 15) | (exp & 0x7FFF);
    let e = se.to_le_bytes();
    [m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], e[0], e[1]]
}

/// Splits an F80 into (sign, 15-bit biased exponent, 64-bit significand).
pub const fn unpack(v: F80) -> (bool, u16, u64) {
    let mant = u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
    let se = u16::from_le_bytes([v[8], v[9]]);
    (se & 0x8000 != 0, se & 0x7FFF, mant)
}

/// Classification of an 80-bit bit pattern (what FXAM and the tag word see).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// +/-0.
    Zero,
    /// Exponent 0, integer bit clear, non-zero fraction.
    Denormal,
    /// Exponent 0, integer bit set (valid operand, treated as exponent 1).
    PseudoDenormal,
    /// Integer bit set, exponent 1..=0x7FFE.
    Normal,
    /// Integer bit clear, exponent 1..=0x7FFE (unsupported: invalid operand).
    Unnormal,
    /// Exponent all ones, significand 0x8000_0000_0000_0000.
    Infinity,
    /// Quiet NaN (integer bit and bit 62 set).
    QNan,
    /// Signaling NaN (integer bit set, bit 62 clear, fraction non-zero).
    SNan,
    /// Exponent all ones with integer bit clear (pseudo-infinity/pseudo-NaN;
    /// unsupported: invalid operand).
    PseudoNan,
}

/// Classifies `v`. Total: every bit pattern has exactly one class.
pub const fn classify(v: F80) -> Class {
    let (_, exp, mant) = unpack(v);
    let j = mant >> 63 != 0;
    match exp {
        0 if mant == 0 => Class::Zero,
        0 if j => Class::PseudoDenormal,
        0 => Class::Denormal,
        0x7FFF if !j => Class::PseudoNan,
        0x7FFF if mant << 1 == 0 => Class::Infinity,
        0x7FFF if mant & (1 << 62) != 0 => Class::QNan,
        0x7FFF => Class::SNan,
        _ if j => Class::Normal,
        _ => Class::Unnormal,
    }
}

/// Rounding control, FCW bits 10..11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even.
    Nearest,
    /// Round toward negative infinity.
    Down,
    /// Round toward positive infinity.
    Up,
    /// Round toward zero (truncate).
    Zero,
}

impl Rounding {
    /// The rounding control selected by control word `fcw`.
    pub const fn from_fcw(fcw: u16) -> Self {
        match (fcw >> 10) & 3 {
            0 => Rounding::Nearest,
            1 => Rounding::Down,
            2 => Rounding::Up,
            _ => Rounding::Zero,
        }
    }
}

/// Result of a conversion: the masked-response value plus the exception
/// flags it raised (FSW bit positions) and whether it rounded up in magnitude
/// (the value of C1 when PE is raised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv<T> {
    /// Value to store when every raised exception is masked.
    pub value: T,
    /// Raised exception flags (subset of IE, DE, OE, UE, PE).
    pub flags: u16,
    /// True when the value's magnitude was rounded up.
    pub round_up: bool,
}

impl<T> Conv<T> {
    /// Whether a store to memory happens under control word `fcw`: an
    /// unmasked IE, DE, OE or UE suppresses it (an unmasked PE does not).
    pub const fn stores(&self, fcw: u16) -> bool {
        self.flags & !fcw & (IE | DE | ZE | OE | UE) == 0
    }
}

/// Rounds `mant / 2^drop` to an integer under `rc` for a value of sign `sign`.
/// Returns (quotient, inexact, magnitude rounded up).
const fn round_shift(sign: bool, mant: u64, drop: u32, rc: Rounding) -> (u64, bool, bool) {
    if drop == 0 {
        return (mant, false, false);
    }
    let (q, rem, half) = if drop >= 66 {
        // Everything is fraction, and strictly below one half.
        (0u64, mant as u128, u128::MAX)
    } else {
        let wide = mant as u128;
        (
            (wide >> drop) as u64,
            wide & ((1u128 << drop) - 1),
            1u128 << (drop - 1),
        )
    };
    if rem == 0 {
        return (q, false, false);
    }
    let up = match rc {
        Rounding::Nearest => rem > half || (rem == half && q & 1 == 1),
        Rounding::Down => sign,
        Rounding::Up => !sign,
        Rounding::Zero => false,
    };
    (q.wrapping_add(up as u64), true, up)
}

/// A finite non-zero operand as (sign, unbiased exponent of bit 63, normalised
/// significand with bit 63 set). Returns None for zero.
const fn normalise(v: F80) -> Option<(bool, i32, u64)> {
    let (sign, exp, mant) = unpack(v);
    if mant == 0 {
        return None;
    }
    let e = if exp == 0 { 1 } else { exp as i32 };
    let lz = mant.leading_zeros();
    Some((sign, e - 16383 - lz as i32, mant << lz))
}

/// Parameters of a binary interchange format.
struct Fmt {
    /// Precision in bits including the hidden bit.
    p: u32,
    /// Exponent bias (also the maximum unbiased exponent).
    bias: i32,
    /// Width of the exponent field.
    ebits: u32,
}

const SINGLE: Fmt = Fmt {
    p: 24,
    bias: 127,
    ebits: 8,
};
const DOUBLE: Fmt = Fmt {
    p: 53,
    bias: 1023,
    ebits: 11,
};

/// Narrows `v` to the interchange format `f` (FST/FSTP m32/m64 semantics).
fn to_binary(v: F80, fcw: u16, f: &Fmt) -> Conv<u64> {
    let rc = Rounding::from_fcw(fcw);
    let (sign, _, mant) = unpack(v);
    let frac_bits = f.p - 1;
    let sign_bit = (sign as u64) << (frac_bits + f.ebits);
    let exp_ones = ((2 * f.bias + 1) as u64) << frac_bits;
    let indefinite = if f.p == 24 {
        F32_INDEFINITE as u64
    } else {
        F64_INDEFINITE
    };
    let done = |value, flags, round_up| Conv {
        value,
        flags,
        round_up,
    };
    match classify(v) {
        Class::Unnormal | Class::PseudoNan => done(indefinite, IE, false),
        Class::Zero => done(sign_bit, 0, false),
        Class::Infinity => done(sign_bit | exp_ones, 0, false),
        Class::QNan | Class::SNan => {
            let frac = ((mant << 1) >> (64 - frac_bits)) | (1 << (frac_bits - 1));
            let flags = if matches!(classify(v), Class::SNan) {
                IE
            } else {
                0
            };
            done(sign_bit | exp_ones | frac, flags, false)
        }
        Class::Denormal | Class::PseudoDenormal | Class::Normal => {
            let Some((_, e, m)) = normalise(v) else {
                return done(sign_bit, 0, false);
            };
            let emin = 1 - f.bias;
            let drop_norm = 64 - f.p;
            // Tininess is detected after rounding (with unbounded exponent).
            let (qn, _, _) = round_shift(sign, m, drop_norm, rc);
            let e_rounded = if qn >> f.p != 0 { e + 1 } else { e };
            let tiny = e_rounded < emin;
            if e < emin {
                let drop = drop_norm + (emin - e).unsigned_abs().min(100);
                let (q, inexact, up) = round_shift(sign, m, drop, rc);
                if tiny && fcw & UE == 0 {
                    // Unmasked underflow: only UE; the store is suppressed.
                    return done(sign_bit | q, UE, false);
                }
                let flags = if inexact { PE } else { 0 };
                let flags = if tiny && inexact { flags | UE } else { flags };
                return done(sign_bit | q, flags, up);
            }
            let (mut q, inexact, up) = round_shift(sign, m, drop_norm, rc);
            let mut e = e;
            if q >> f.p != 0 {
                q >>= 1;
                e += 1;
            }
            if e > f.bias {
                if fcw & OE == 0 {
                    // Unmasked overflow: only OE; the store is suppressed.
                    return done(sign_bit | exp_ones, OE, false);
                }
                let to_inf = match rc {
                    Rounding::Nearest => true,
                    Rounding::Zero => false,
                    Rounding::Down => sign,
                    Rounding::Up => !sign,
                };
                let value = if to_inf {
                    sign_bit | exp_ones
                } else {
                    sign_bit | (exp_ones - 1)
                };
                return done(value, OE | PE, to_inf);
            }
            let biased = (e + f.bias) as u64;
            let value = sign_bit | (biased << frac_bits) | (q & ((1 << frac_bits) - 1));
            done(value, if inexact { PE } else { 0 }, up)
        }
    }
}

/// FST m32fp: rounds `v` to single precision under the rounding control of
/// `fcw` (precision control does not apply). Raises IE for SNaN (value: the
/// quieted NaN) and unsupported operands (value: indefinite); PE when
/// inexact; masked overflow gives OE+PE and infinity or the largest finite
/// value per RC; a result that is tiny after rounding gives UE only when it is
/// also inexact. With OE or UE unmasked only that flag is raised (no PE, no
/// round-up) and the store must be suppressed ([`Conv::stores`]).
pub fn to_f32(v: F80, fcw: u16) -> Conv<u32> {
    let c = to_binary(v, fcw, &SINGLE);
    Conv {
        value: c.value as u32,
        flags: c.flags,
        round_up: c.round_up,
    }
}

/// FST m64fp: as [`to_f32`] for double precision.
pub fn to_f64(v: F80, fcw: u16) -> Conv<u64> {
    to_binary(v, fcw, &DOUBLE)
}

/// Widens an interchange-format value (FLD m32fp/m64fp). Exact; raises IE
/// for an SNaN (returning it quieted) and DE for a denormal (returned normalised).
fn from_binary(bits: u64, f: &Fmt) -> Conv<F80> {
    let frac_bits = f.p - 1;
    let exp_bits = f.ebits;
    let sign = (bits >> (frac_bits + exp_bits)) & 1 != 0;
    let exp = ((bits >> frac_bits) & ((1 << exp_bits) - 1)) as i32;
    let frac = bits & ((1 << frac_bits) - 1);
    let shifted = frac << (63 - frac_bits);
    let done = |value, flags| Conv {
        value,
        flags,
        round_up: false,
    };
    if exp == 2 * f.bias + 1 {
        if frac == 0 {
            return done(pack(sign, 0x7FFF, 1 << 63), 0);
        }
        let quiet = shifted & (1 << 62) != 0;
        let flags = if quiet { 0 } else { IE };
        return done(pack(sign, 0x7FFF, (1 << 63) | (1 << 62) | shifted), flags);
    }
    if exp == 0 {
        if frac == 0 {
            return done(pack(sign, 0, 0), 0);
        }
        let lz = shifted.leading_zeros();
        let e = 1 - f.bias - lz as i32 + 16383;
        return done(pack(sign, e as u16, shifted << lz), DE);
    }
    done(
        pack(sign, (exp - f.bias + 16383) as u16, (1 << 63) | shifted),
        0,
    )
}

/// FLD m32fp: exact widening of an f32 bit pattern (IE for SNaN, DE for denormal).
pub fn from_f32(bits: u32) -> Conv<F80> {
    from_binary(u64::from(bits), &SINGLE)
}

/// FLD m64fp: exact widening of an f64 bit pattern (IE for SNaN, DE for denormal).
pub fn from_f64(bits: u64) -> Conv<F80> {
    from_binary(bits, &DOUBLE)
}

/// Exact F80 of sign and integer magnitude (zero keeps its sign).
const fn from_mag(sign: bool, mag: u64) -> F80 {
    if mag == 0 {
        return pack(sign, 0, 0);
    }
    let lz = mag.leading_zeros();
    pack(sign, (16383 + 63 - lz) as u16, mag << lz)
}

/// FILD: exact conversion of an integer (zero gives +0).
pub const fn from_i64(v: i64) -> F80 {
    from_mag(v < 0, v.unsigned_abs())
}

/// Rounds a finite operand to an integer magnitude. Returns (sign, magnitude,
/// inexact, rounded up) or None when the magnitude does not fit in 64 bits.
fn round_to_int(v: F80, rc: Rounding) -> Option<(bool, u64, bool, bool)> {
    let (sign, _, _) = unpack(v);
    let Some((_, e, m)) = normalise(v) else {
        return Some((sign, 0, false, false));
    };
    if e >= 64 {
        return None;
    }
    // e <= 63, so the quotient is below 2^63 before rounding whenever bits are
    // dropped, and rounding up cannot overflow.
    let (q, inexact, up) = round_shift(sign, m, (63 - e) as u32, rc);
    Some((sign, q, inexact, up))
}

/// FIST/FISTP (or FISTTP with `truncate`): converts to a signed integer of
/// `bits` (16, 32 or 64; other values are treated as 64) using the rounding
/// control of `fcw`. Out-of-range, NaN, infinite and unsupported operands raise
/// IE with the integer indefinite (only the sign bit set) as value.
pub fn to_int(v: F80, fcw: u16, bits: u32, truncate: bool) -> Conv<i64> {
    let bits = if matches!(bits, 16 | 32) { bits } else { 64 };
    let indefinite = Conv {
        value: i64::MIN >> (64 - bits),
        flags: IE,
        round_up: false,
    };
    if !matches!(
        classify(v),
        Class::Zero | Class::Denormal | Class::PseudoDenormal | Class::Normal
    ) {
        return indefinite;
    }
    let rc = if truncate {
        Rounding::Zero
    } else {
        Rounding::from_fcw(fcw)
    };
    let Some((sign, mag, inexact, up)) = round_to_int(v, rc) else {
        return indefinite;
    };
    let limit = 1u64 << (bits - 1);
    if mag > limit || (mag == limit && !sign) {
        return indefinite;
    }
    let value = if sign {
        0i64.wrapping_sub_unsigned(mag)
    } else {
        mag as i64
    };
    Conv {
        value,
        flags: if inexact { PE } else { 0 },
        round_up: up,
    }
}

/// FBLD: converts 18-digit packed BCD (byte 9 bit 7 = sign) exactly. Digits
/// above 9 (undefined by the architecture) are weighted by their binary value.
pub fn from_bcd(bcd: [u8; 10]) -> F80 {
    let mut mag: u64 = 0;
    for byte in bcd[..9].iter().rev() {
        mag = mag
            .wrapping_mul(100)
            .wrapping_add(u64::from(byte >> 4) * 10 + u64::from(byte & 15));
    }
    from_mag(bcd[9] & 0x80 != 0, mag)
}

/// FBSTP: rounds to an integer under `fcw` and encodes 18 BCD digits with the
/// operand's sign. |result| >= 10^18, NaN, infinity and unsupported operands
/// raise IE with [`BCD_INDEFINITE`] as value.
pub fn to_bcd(v: F80, fcw: u16) -> Conv<[u8; 10]> {
    let indefinite = Conv {
        value: BCD_INDEFINITE,
        flags: IE,
        round_up: false,
    };
    if !matches!(
        classify(v),
        Class::Zero | Class::Denormal | Class::PseudoDenormal | Class::Normal
    ) {
        return indefinite;
    }
    let Some((sign, mut mag, inexact, up)) = round_to_int(v, Rounding::from_fcw(fcw)) else {
        return indefinite;
    };
    if mag > 999_999_999_999_999_999 {
        return indefinite;
    }
    let mut out = [0u8; 10];
    for byte in out[..9].iter_mut() {
        let lo = (mag % 10) as u8;
        mag /= 10;
        let hi = (mag % 10) as u8;
        mag /= 10;
        *byte = (hi << 4) | lo;
    }
    out[9] = if sign { 0x80 } else { 0 };
    Conv {
        value: out,
        flags: if inexact { PE } else { 0 },
        round_up: up,
    }
}
