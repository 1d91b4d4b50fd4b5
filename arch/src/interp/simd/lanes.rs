//! Lane access helpers shared by the other `simd` modules.
//!
//! A 128-bit register is viewed as `128 / w` little-endian lanes of `w` bits
//! (`w` is 8, 16, 32 or 64). Lane values travel as `u64`, zero-extended; the
//! helpers mask every result back to `w` bits, so callers may return values
//! with garbage above the lane width.

/// All-ones mask of the low `w` bits (`w` in 1..=64).
pub(super) const fn lane_mask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

/// Number of `w`-bit lanes in a 128-bit register.
pub(super) const fn lane_count(w: u32) -> u32 {
    128 / w
}

/// Lane `i` of `x` (zero-extended). Out-of-range lanes read as 0.
pub(super) fn get(x: u128, w: u32, i: u32) -> u64 {
    let shift = w.wrapping_mul(i);
    if shift >= 128 {
        return 0;
    }
    ((x >> shift) as u64) & lane_mask(w)
}

/// `x` with lane `i` replaced by the low `w` bits of `v`. Out-of-range lanes
/// leave `x` unchanged.
pub(super) fn set(x: u128, w: u32, i: u32, v: u64) -> u128 {
    let shift = w.wrapping_mul(i);
    if shift >= 128 {
        return x;
    }
    let m = u128::from(lane_mask(w)) << shift;
    (x & !m) | ((u128::from(v & lane_mask(w)) << shift) & m)
}

/// Sign-extends the low `w` bits of `v`.
pub(super) fn sx(v: u64, w: u32) -> i64 {
    let s = 64u32.saturating_sub(w).min(63);
    ((v << s) as i64) >> s
}

/// Builds a register from `f(i)` for every lane `i`.
pub(super) fn build(w: u32, f: impl Fn(u32) -> u64) -> u128 {
    (0..lane_count(w)).fold(0u128, |acc, i| set(acc, w, i, f(i)))
}

/// Lane-wise `f(a[i], b[i])`.
pub(super) fn map2(a: u128, b: u128, w: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    build(w, |i| f(get(a, w, i), get(b, w, i)))
}

/// Lane-wise `f(a[i])`.
pub(super) fn map1(a: u128, w: u32, f: impl Fn(u64) -> u64) -> u128 {
    build(w, |i| f(get(a, w, i)))
}

/// Clamps `v` to the signed range of a `w`-bit integer (`w` in 1..=63).
pub(super) fn sat_s(v: i64, w: u32) -> u64 {
    let max = (1i64 << (w.clamp(1, 63) - 1)) - 1;
    v.clamp(-max - 1, max) as u64
}

/// Clamps `v` to the unsigned range of a `w`-bit integer (`w` in 1..=63).
pub(super) fn sat_u(v: i64, w: u32) -> u64 {
    v.clamp(0, (1i64 << w.clamp(1, 62)) - 1) as u64
}

/// The four 32-bit lanes of `x` as `f32` bit patterns, lane 0 first.
pub(super) fn dwords(x: u128) -> [u32; 4] {
    [
        x as u32,
        (x >> 32) as u32,
        (x >> 64) as u32,
        (x >> 96) as u32,
    ]
}

/// Assembles four 32-bit lanes, lane 0 first.
pub(super) fn from_dwords(d: [u32; 4]) -> u128 {
    u128::from(d[0])
        | (u128::from(d[1]) << 32)
        | (u128::from(d[2]) << 64)
        | (u128::from(d[3]) << 96)
}

/// The two 64-bit lanes of `x`, lane 0 first.
pub(super) fn qwords(x: u128) -> [u64; 2] {
    [x as u64, (x >> 64) as u64]
}

/// Assembles two 64-bit lanes, lane 0 first.
pub(super) fn from_qwords(q: [u64; 2]) -> u128 {
    u128::from(q[0]) | (u128::from(q[1]) << 64)
}

/// Expands to a `[[fn; 16]; 16]` table of `$f::<0>` ... `$f::<255>` such that
/// `table[imm >> 4][imm & 15]` is `$f::<imm>`: turns a run-time imm8 into a call of
/// a const-generic instantiation. Callers must import the macro by name
/// (`use super::lanes::imm_table;`) and give the table an explicit fn-pointer type.
macro_rules! imm_table {
    ($f:ident) => {
        imm_table!(@rows $f; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@rows $f:ident; $($h:literal)*) => {
        [$([$f::<{ $h * 16 }>, $f::<{ $h * 16 + 1 }>, $f::<{ $h * 16 + 2 }>, $f::<{ $h * 16 + 3 }>, $f::<{ $h * 16 + 4 }>, $f::<{ $h * 16 + 5 }>, $f::<{ $h * 16 + 6 }>, $f::<{ $h * 16 + 7 }>, $f::<{ $h * 16 + 8 }>, $f::<{ $h * 16 + 9 }>, $f::<{ $h * 16 + 10 }>, $f::<{ $h * 16 + 11 }>, $f::<{ $h * 16 + 12 }>, $f::<{ $h * 16 + 13 }>, $f::<{ $h * 16 + 14 }>, $f::<{ $h * 16 + 15 }>]),*]
    };
}
pub(super) use imm_table;
