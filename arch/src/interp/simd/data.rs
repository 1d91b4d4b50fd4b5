//! Non-arithmetic SIMD instructions: sign masks, element inserts and
//! extracts, shuffles, blends, PTEST, the SSE4.2 string compares and CRC32.
//!
//! All functions are pure and total: every input, including out-of-range
//! immediates and lengths, gives the hardware result without panicking.

use iced_x86::Mnemonic;

use super::lanes::{build, dwords, from_dwords, from_qwords, get, qwords, set};

/// PMOVMSKB: bit `i` of the result is the top bit of byte `i` of `src`. For the
/// MMX form pass the 64-bit register zero-extended (bits 8..15 are then 0).
#[must_use]
pub fn pmovmskb(src: u128) -> u32 {
    sign_bits(src, 8)
}

/// MOVMSKPS: the sign bits of the four single-precision lanes in bits 3:0.
#[must_use]
pub fn movmskps(src: u128) -> u32 {
    sign_bits(src, 32)
}

/// MOVMSKPD: the sign bits of the two double-precision lanes in bits 1:0.
#[must_use]
pub fn movmskpd(src: u128) -> u32 {
    sign_bits(src, 64)
}

/// Collects the top bit of every `w`-bit lane.
fn sign_bits(src: u128, w: u32) -> u32 {
    (0..128 / w).fold(0, |acc, i| {
        acc | (((get(src, w, i) >> (w - 1)) as u32 & 1) << i)
    })
}

/// PEXTRB/PEXTRW/PEXTRD/PEXTRQ (XMM forms): element `imm` (modulo the element
/// count) of `src`, zero-extended. Returns `None` for other mnemonics.
#[must_use]
pub fn pextr(m: Mnemonic, src: u128, imm: u8) -> Option<u64> {
    use Mnemonic as M;
    let w = element_width(m, [M::Pextrb, M::Pextrw, M::Pextrd, M::Pextrq])?;
    Some(get(src, w, u32::from(imm) % (128 / w)))
}

/// PINSRB/PINSRW/PINSRD/PINSRQ (XMM forms): `dst` with element `imm` (modulo
/// the element count) replaced by the low bits of `value`. Returns `None` for
/// other mnemonics.
#[must_use]
pub fn pinsr(m: Mnemonic, dst: u128, value: u64, imm: u8) -> Option<u128> {
    use Mnemonic as M;
    let w = element_width(m, [M::Pinsrb, M::Pinsrw, M::Pinsrd, M::Pinsrq])?;
    Some(set(dst, w, u32::from(imm) % (128 / w), value))
}

/// Element width of `m` within a byte/word/dword/qword instruction family.
fn element_width(m: Mnemonic, family: [Mnemonic; 4]) -> Option<u32> {
    let k = family.iter().position(|&f| f == m)?;
    Some(8 << k)
}

/// PEXTRW (MMX form): word `imm & 3` of `src`, zero-extended.
#[must_use]
pub fn pextrw_mmx(src: u64, imm: u8) -> u64 {
    (src >> (16 * u32::from(imm & 3))) & 0xffff
}

/// PINSRW (MMX form): `dst` with word `imm & 3` replaced by the low 16 bits of
/// `value`.
#[must_use]
pub fn pinsrw_mmx(dst: u64, value: u64, imm: u8) -> u64 {
    set(u128::from(dst), 16, u32::from(imm & 3), value) as u64
}

/// EXTRACTPS: dword `imm & 3` of `src` (bits 7:2 of `imm` are ignored).
#[must_use]
pub fn extractps(src: u128, imm: u8) -> u32 {
    dwords(src)[usize::from(imm & 3)]
}

/// INSERTPS, register source: dword `imm[7:6]` of `src` is written to dword
/// `imm[5:4]` of `dst`, then the dwords whose bit is set in `imm[3:0]` are
/// zeroed.
#[must_use]
pub fn insertps(dst: u128, src: u128, imm: u8) -> u128 {
    insertps_m32(dst, dwords(src)[usize::from(imm >> 6)], imm)
}

/// INSERTPS, memory source: `value` (the m32 operand) is written to dword
/// `imm[5:4]` of `dst`, then the dwords whose bit is set in `imm[3:0]` are
/// zeroed (`imm[7:6]` is ignored).
#[must_use]
pub fn insertps_m32(dst: u128, value: u32, imm: u8) -> u128 {
    let mut d = dwords(dst);
    d[usize::from((imm >> 4) & 3)] = value;
    for (i, lane) in d.iter_mut().enumerate() {
        if imm & (1 << i) != 0 {
            *lane = 0;
        }
    }
    from_dwords(d)
}

/// SHUFPS: dwords `dst[imm[1:0]], dst[imm[3:2]], src[imm[5:4]], src[imm[7:6]]`.
#[must_use]
pub fn shufps(dst: u128, src: u128, imm: u8) -> u128 {
    let (d, s) = (dwords(dst), dwords(src));
    let sel = |k: u32| usize::from((imm >> (2 * k)) & 3);
    from_dwords([d[sel(0)], d[sel(1)], s[sel(2)], s[sel(3)]])
}

/// SHUFPD: qwords `dst[imm[0]], src[imm[1]]` (bits 7:2 ignored).
#[must_use]
pub fn shufpd(dst: u128, src: u128, imm: u8) -> u128 {
    let (d, s) = (qwords(dst), qwords(src));
    from_qwords([d[usize::from(imm & 1)], s[usize::from((imm >> 1) & 1)]])
}

/// UNPCKLPS (`high == false`: `d0 s0 d1 s1`) or UNPCKHPS (`d2 s2 d3 s3`).
#[must_use]
pub fn unpckps(dst: u128, src: u128, high: bool) -> u128 {
    let (d, s) = (dwords(dst), dwords(src));
    let k = if high { 2 } else { 0 };
    from_dwords([d[k], s[k], d[k + 1], s[k + 1]])
}

/// UNPCKLPD (`high == false`: `d0 s0`) or UNPCKHPD (`d1 s1`).
#[must_use]
pub fn unpckpd(dst: u128, src: u128, high: bool) -> u128 {
    let k = usize::from(high);
    from_qwords([qwords(dst)[k], qwords(src)[k]])
}

/// MOVHLPS: qwords `src[1], dst[1]`.
#[must_use]
pub fn movhlps(dst: u128, src: u128) -> u128 {
    from_qwords([qwords(src)[1], qwords(dst)[1]])
}

/// MOVLHPS: qwords `dst[0], src[0]`.
#[must_use]
pub fn movlhps(dst: u128, src: u128) -> u128 {
    from_qwords([qwords(dst)[0], qwords(src)[0]])
}

/// MOVSHDUP: dwords `s1 s1 s3 s3`.
#[must_use]
pub fn movshdup(src: u128) -> u128 {
    let s = dwords(src);
    from_dwords([s[1], s[1], s[3], s[3]])
}

/// MOVSLDUP: dwords `s0 s0 s2 s2`.
#[must_use]
pub fn movsldup(src: u128) -> u128 {
    let s = dwords(src);
    from_dwords([s[0], s[0], s[2], s[2]])
}

/// MOVDDUP: qwords `s0 s0` (for the m64 form pass the value in the low bits).
#[must_use]
pub fn movddup(src: u128) -> u128 {
    let s = qwords(src)[0];
    from_qwords([s, s])
}

/// BLENDPS: dword `i` from `src` if `imm` bit `i` is set, else from `dst`.
#[must_use]
pub fn blendps(dst: u128, src: u128, imm: u8) -> u128 {
    build(32, |i| {
        get(if (imm >> i) & 1 != 0 { src } else { dst }, 32, i)
    })
}

/// BLENDPD: qword `i` from `src` if `imm` bit `i` is set, else from `dst`.
#[must_use]
pub fn blendpd(dst: u128, src: u128, imm: u8) -> u128 {
    build(64, |i| {
        get(if (imm >> i) & 1 != 0 { src } else { dst }, 64, i)
    })
}

/// BLENDVPS: dword `i` from `src` if the sign bit of dword `i` of `mask` (the
/// implicit XMM0) is set, else from `dst`.
#[must_use]
pub fn blendvps(dst: u128, src: u128, mask: u128) -> u128 {
    blendps(dst, src, sign_bits(mask, 32) as u8)
}

/// BLENDVPD: qword `i` from `src` if the sign bit of qword `i` of `mask` (the
/// implicit XMM0) is set, else from `dst`.
#[must_use]
pub fn blendvpd(dst: u128, src: u128, mask: u128) -> u128 {
    blendpd(dst, src, sign_bits(mask, 64) as u8)
}

/// The register-to-register data movements of the form `xmm1 = f(xmm1,
/// xmm2/m128[, imm8])`: SHUFPS, SHUFPD, UNPCKLPS, UNPCKHPS, UNPCKLPD,
/// UNPCKHPD, MOVHLPS, MOVLHPS, MOVSHDUP, MOVSLDUP, MOVDDUP, BLENDPS, BLENDPD
/// and INSERTPS (register form; use [`insertps_m32`] for the memory form).
/// Returns `None` for other mnemonics.
#[must_use]
pub fn data_op(m: Mnemonic, dst: u128, src: u128, imm: u8) -> Option<u128> {
    use Mnemonic as M;
    Some(match m {
        M::Shufps => shufps(dst, src, imm),
        M::Shufpd => shufpd(dst, src, imm),
        M::Unpcklps => unpckps(dst, src, false),
        M::Unpckhps => unpckps(dst, src, true),
        M::Unpcklpd => unpckpd(dst, src, false),
        M::Unpckhpd => unpckpd(dst, src, true),
        M::Movhlps => movhlps(dst, src),
        M::Movlhps => movlhps(dst, src),
        M::Movshdup => movshdup(src),
        M::Movsldup => movsldup(src),
        M::Movddup => movddup(src),
        M::Blendps => blendps(dst, src, imm),
        M::Blendpd => blendpd(dst, src, imm),
        M::Insertps => insertps(dst, src, imm),
        _ => return None,
    })
}

/// PTEST: `(ZF, CF)` with ZF = `(dst & src) == 0` and CF = `(!dst & src) == 0`.
/// The instruction clears AF, OF, PF and SF.
#[must_use]
pub fn ptest(dst: u128, src: u128) -> (bool, bool) {
    (dst & src == 0, !dst & src == 0)
}

/// RFLAGS carry flag bit.
const CF: u64 = 1 << 0;
/// RFLAGS zero flag bit.
const ZF: u64 = 1 << 6;
/// RFLAGS sign flag bit.
const SF: u64 = 1 << 7;
/// RFLAGS overflow flag bit.
const OF: u64 = 1 << 11;

/// Outcome of PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmpResult {
    /// The index result (ECX of the `*I` forms; RCX is zero-extended): the
    /// lowest (`imm[6]` = 0) or highest (`imm[6]` = 1) set bit of the result
    /// vector, or the element count (16 or 8) if no bit is set.
    pub index: u32,
    /// The mask result (XMM0 of the `*M` forms): the result vector as a bit
    /// mask (`imm[6]` = 0) or expanded to byte/word elements (`imm[6]` = 1).
    pub mask: u128,
    /// CF: the result vector is non-zero.
    pub cf: bool,
    /// ZF: the second operand (xmm2/m128) is shorter than the element count.
    pub zf: bool,
    /// SF: the first operand (xmm1) is shorter than the element count.
    pub sf: bool,
    /// OF: bit 0 of the result vector.
    pub of: bool,
}

impl PcmpResult {
    /// The RFLAGS arithmetic bits the instruction writes: CF, ZF, SF and OF as
    /// computed; AF and PF are cleared.
    #[must_use]
    pub fn rflags(&self) -> u64 {
        [(self.cf, CF), (self.zf, ZF), (self.sf, SF), (self.of, OF)]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit)
    }

    /// Mask of the RFLAGS bits the instruction writes (CF, PF, AF, ZF, SF, OF).
    pub const WRITTEN_FLAGS: u64 = 0x8d5;
}

/// PCMPESTRI/PCMPESTRM (explicit lengths) and PCMPISTRI/PCMPISTRM (implicit,
/// NUL-terminated lengths; any mnemonic other than the two explicit ones is
/// treated as implicit). `a` is xmm1, `b` is xmm2/m128, `imm` the full imm8
/// (bit 7 is ignored).
///
/// For the explicit forms `len_a`/`len_b` are RAX/RDX (REX.W) or EAX/EDX
/// sign-extended to 64 bits; the length used is their absolute value
/// saturated to the element count (16 bytes or 8 words), as on hardware. The
/// implicit forms ignore them. Both the index and the mask result are
/// computed; the caller writes the one its instruction produces.
#[must_use]
pub fn pcmpstr(m: Mnemonic, a: u128, b: u128, imm: u8, len_a: i64, len_b: i64) -> PcmpResult {
    let words = imm & 1 != 0;
    let w = if words { 16 } else { 8 };
    let n = 128 / w;
    let (la, lb) = match m {
        Mnemonic::Pcmpestri | Mnemonic::Pcmpestrm => {
            (explicit_len(len_a, n), explicit_len(len_b, n))
        }
        _ => (implicit_len(a, w), implicit_len(b, w)),
    };
    let int_res1 = aggregate(a, b, imm, la, lb);
    let all = (1u32 << n) - 1;
    let valid_b = (1u32 << lb) - 1;
    let int_res2 = match (imm >> 4) & 3 {
        1 => !int_res1 & all,
        3 => int_res1 ^ valid_b,
        _ => int_res1,
    };
    let index = match (int_res2, imm & 0x40 != 0) {
        (0, _) => n,
        (r, false) => r.trailing_zeros(),
        (r, true) => r.ilog2(),
    };
    let mask = if imm & 0x40 != 0 {
        build(w, |i| if int_res2 >> i & 1 != 0 { u64::MAX } else { 0 })
    } else {
        u128::from(int_res2)
    };
    PcmpResult {
        index,
        mask,
        cf: int_res2 != 0,
        zf: lb < n,
        sf: la < n,
        of: int_res2 & 1 != 0,
    }
}

/// Explicit length: `|len|` saturated to `n` elements.
fn explicit_len(len: i64, n: u32) -> u32 {
    len.unsigned_abs().min(u64::from(n)) as u32
}

/// Implicit length: the index of the first zero element, or the element count.
fn implicit_len(x: u128, w: u32) -> u32 {
    let n = 128 / w;
    (0..n).find(|&i| get(x, w, i) == 0).unwrap_or(n)
}

/// Element `i` of `x` as a comparable value: sign-extended for the signed
/// formats (`imm[1]` set), zero-extended otherwise.
fn element(x: u128, imm: u8, i: u32) -> i64 {
    let w = if imm & 1 != 0 { 16 } else { 8 };
    let v = get(x, w, i);
    if imm & 2 != 0 {
        super::lanes::sx(v, w)
    } else {
        v as i64
    }
}

/// IntRes1 of the aggregation selected by `imm[3:2]` for valid lengths `la`
/// (of `a`) and `lb` (of `b`), with the hardware's overrides for invalid
/// elements.
fn aggregate(a: u128, b: u128, imm: u8, la: u32, lb: u32) -> u32 {
    let n = if imm & 1 != 0 { 8 } else { 16 };
    let ea = |i| element(a, imm, i);
    let eb = |j| element(b, imm, j);
    let bits = |f: &dyn Fn(u32) -> bool| (0..n).filter(|&j| f(j)).fold(0u32, |r, j| r | 1 << j);
    match (imm >> 2) & 3 {
        // Equal any: b[j] equals some valid a[i].
        0 => bits(&|j| j < lb && (0..la).any(|i| ea(i) == eb(j))),
        // Ranges: a[2k] <= b[j] <= a[2k+1] for some complete valid pair.
        1 => bits(&|j| j < lb && (0..la / 2).any(|k| ea(2 * k) <= eb(j) && eb(j) <= ea(2 * k + 1))),
        // Equal each: a[j] == b[j]; both invalid counts as equal.
        2 => bits(&|j| match (j < la, j < lb) {
            (true, true) => ea(j) == eb(j),
            (false, false) => true,
            _ => false,
        }),
        // Equal ordered: a (the needle) occurs in b at j; invalid needle
        // elements match anything, valid ones never match past the end of b.
        _ => bits(&|j| (0..n - j).all(|k| k >= la || (j + k < lb && ea(k) == eb(j + k)))),
    }
}

/// CRC32 (SSE4.2): accumulates the low `bytes` bytes of `data` (1, 2, 4 or 8;
/// larger values are treated as 8) into `crc` using the bit-reflected
/// Castagnoli polynomial 0x1EDC6F41, without pre- or post-inversion, exactly as
/// the instruction does. The caller zero-extends the result into the 64-bit
/// destination for the REX.W form.
#[must_use]
pub fn crc32c(crc: u32, data: u64, bytes: usize) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    (0..bytes.min(8)).fold(crc, |crc, i| {
        let byte = (data >> (8 * i)) as u8;
        (0..8).fold(crc ^ u32::from(byte), |c, _| {
            (c >> 1) ^ (POLY & (c & 1).wrapping_neg())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::lanes::imm_table;
    use super::super::testutil::{expect_eq, hw, hw_mmx, refs, RefFn, RefTable, Regs, Rng};
    use super::*;

    /// Random cases per instruction without an immediate.
    const CASES: u32 = 4000;
    /// Random cases per imm8 value for instructions with an immediate.
    const CASES_PER_IMM: u32 = 24;
    /// Random cases per imm8 value and form for the string compares.
    const PCMP_CASES_PER_IMM: u32 = 48;

    refs! {
        moves, hw;
        Unpcklps = "unpcklps xmm1, xmm2";
        Unpckhps = "unpckhps xmm1, xmm2";
        Unpcklpd = "unpcklpd xmm1, xmm2";
        Unpckhpd = "unpckhpd xmm1, xmm2";
        Movhlps = "movhlps xmm1, xmm2";
        Movlhps = "movlhps xmm1, xmm2";
        Movshdup = "movshdup xmm1, xmm2";
        Movsldup = "movsldup xmm1, xmm2";
        Movddup = "movddup xmm1, xmm2";
    }

    refs! {
        moves_imm<I>, hw;
        Shufps = "shufps xmm1, xmm2, {i}";
        Shufpd = "shufpd xmm1, xmm2, {i}";
        Blendps = "blendps xmm1, xmm2, {i}";
        Blendpd = "blendpd xmm1, xmm2, {i}";
        Insertps = "insertps xmm1, xmm2, {i}";
    }

    refs! {
        extracts<I>, hw;
        Pextrb = "pextrb eax, xmm1, {i}";
        Pextrw = "pextrw eax, xmm1, {i}";
        Pextrd = "pextrd eax, xmm1, {i}";
        Pextrq = "pextrq rax, xmm1, {i}";
        Extractps = "extractps eax, xmm1, {i}";
    }

    refs! {
        inserts<I>, hw;
        Pinsrb = "pinsrb xmm1, eax, {i}";
        Pinsrw = "pinsrw xmm1, eax, {i}";
        Pinsrd = "pinsrd xmm1, eax, {i}";
        Pinsrq = "pinsrq xmm1, rax, {i}";
        Insertps = "insertps xmm1, dword ptr [{p} + 48], {i}";
    }

    refs! {
        mmx_words<I>, hw_mmx;
        Pextrw = "pextrw eax, mm1, {i}";
        Pinsrw = "pinsrw mm1, eax, {i}";
    }

    refs! {
        pcmp32<I>, hw;
        Pcmpestri = "pcmpestri xmm1, xmm2, {i}";
        Pcmpestrm = "pcmpestrm xmm1, xmm2, {i}";
        Pcmpistri = "pcmpistri xmm1, xmm2, {i}";
        Pcmpistrm = "pcmpistrm xmm1, xmm2, {i}";
    }

    // The REX.W (RAX/RDX length) forms, encoded by hand: 66 REX.W 0F 3A op
    // ModRM(xmm1, xmm2) imm8.
    refs! {
        pcmp64<I>, hw;
        Pcmpestri = ".byte 0x66, 0x48, 0x0f, 0x3a, 0x61, 0xca, {i}";
        Pcmpestrm = ".byte 0x66, 0x48, 0x0f, 0x3a, 0x60, 0xca, {i}";
    }

    /// True if the host runs every instruction these tests execute.
    fn host_ok() -> bool {
        let ok = is_x86_feature_detected!("sse4.1") && is_x86_feature_detected!("sse4.2");
        if !ok {
            eprintln!("host lacks SSE4.1/SSE4.2: skipping hardware comparison");
        }
        ok
    }

    /// Calls `check(m, reference, imm, rng)` `CASES_PER_IMM` times for every imm8
    /// and every entry of `table`.
    fn each_imm(
        table: &[(Mnemonic, RefTable)],
        mut check: impl FnMut(Mnemonic, RefFn, u8, &mut Rng),
    ) {
        for (k, &(m, ref refs)) in table.iter().enumerate() {
            let mut rng = Rng::new(0x4444 + k as u64);
            for imm in 0..=255u8 {
                let reference = refs[usize::from(imm >> 4)][usize::from(imm & 15)];
                for _ in 0..CASES_PER_IMM {
                    check(m, reference, imm, &mut rng);
                }
            }
        }
    }

    #[test]
    fn moves_and_shuffles_match_hardware() {
        if !host_ok() {
            return;
        }
        for (k, &(m, reference)) in moves::TABLE.iter().enumerate() {
            let mut rng = Rng::new(0x3333 + k as u64);
            for _ in 0..CASES {
                let (a, b) = rng.int_pair();
                let mut r = Regs::xmm(a, b);
                reference(&mut r);
                let got = data_op(m, a, b, rng.next() as u8).expect("handled");
                expect_eq(&format!("{m:?}({a:#x}, {b:#x})"), got, r.x1);
            }
        }
        each_imm(moves_imm::TABLE, |m, reference, imm, rng| {
            let (a, b) = rng.int_pair();
            let mut r = Regs::xmm(a, b);
            reference(&mut r);
            let got = data_op(m, a, b, imm).expect("handled");
            expect_eq(&format!("{m:?}({a:#x}, {b:#x}, {imm})"), got, r.x1);
        });
    }

    #[test]
    fn blendv_matches_hardware() {
        if !host_ok() {
            return;
        }
        hw!(ps, "blendvps xmm1, xmm2, xmm0");
        hw!(pd, "blendvpd xmm1, xmm2, xmm0");
        let mut rng = Rng::new(7);
        for _ in 0..CASES {
            let (a, b) = rng.int_pair();
            let mut r = Regs::xmm(a, b);
            r.x0 = rng.int_vec();
            let mut r2 = r;
            ps(&mut r);
            pd(&mut r2);
            expect_eq("blendvps", blendvps(a, b, r.x0), r.x1);
            expect_eq("blendvpd", blendvpd(a, b, r2.x0), r2.x1);
        }
    }

    #[test]
    fn extracts_and_inserts_match_hardware() {
        if !host_ok() {
            return;
        }
        each_imm(extracts::TABLE, |m, reference, imm, rng| {
            let a = rng.int_vec();
            let mut r = Regs::xmm(a, 0);
            r.g[0] = rng.next();
            reference(&mut r);
            let got = match m {
                Mnemonic::Extractps => u64::from(extractps(a, imm)),
                _ => pextr(m, a, imm).expect("handled"),
            };
            expect_eq(&format!("{m:?}({a:#x}, {imm})"), got, r.g[0]);
        });
        each_imm(inserts::TABLE, |m, reference, imm, rng| {
            let a = rng.int_vec();
            let value = rng.next();
            let mut r = Regs::xmm(a, 0);
            r.g[0] = value;
            reference(&mut r);
            let got = match m {
                Mnemonic::Insertps => insertps_m32(a, value as u32, imm),
                _ => pinsr(m, a, value, imm).expect("handled"),
            };
            expect_eq(&format!("{m:?}({a:#x}, {value:#x}, {imm})"), got, r.x1);
        });
        each_imm(mmx_words::TABLE, |m, reference, imm, rng| {
            let (a, value) = (rng.next(), rng.next());
            let mut r = Regs::default();
            r.g[0] = a;
            r.g[2] = value;
            reference(&mut r);
            let (got, want) = match m {
                Mnemonic::Pextrw => (pextrw_mmx(a, imm), r.g[2]),
                _ => (pinsrw_mmx(a, value, imm), r.g[0]),
            };
            expect_eq(&format!("MMX {m:?}({a:#x}, {value:#x}, {imm})"), got, want);
        });
    }

    #[test]
    fn masks_and_ptest_match_hardware() {
        if !host_ok() {
            return;
        }
        hw!(pmovmskb_ref, "pmovmskb eax, xmm1");
        hw!(movmskps_ref, "movmskps eax, xmm1");
        hw!(movmskpd_ref, "movmskpd eax, xmm1");
        hw!(ptest_ref, "ptest xmm1, xmm2");
        hw_mmx!(pmovmskb_mmx_ref, "pmovmskb eax, mm1");
        let mut rng = Rng::new(11);
        for _ in 0..CASES {
            let (a, b) = rng.int_pair();
            let b = if rng.below(4) == 0 { !a & b } else { b };
            let run = |f: RefFn| {
                let mut r = Regs::xmm(a, b);
                r.g[0] = u64::MAX;
                f(&mut r);
                r
            };
            expect_eq("pmovmskb", u64::from(pmovmskb(a)), run(pmovmskb_ref).g[0]);
            expect_eq("movmskps", u64::from(movmskps(a)), run(movmskps_ref).g[0]);
            expect_eq("movmskpd", u64::from(movmskpd(a)), run(movmskpd_ref).g[0]);
            let flags = run(ptest_ref).g[3];
            let (zf, cf) = ptest(a, b);
            expect_eq("ptest ZF", u64::from(zf), (flags >> 6) & 1);
            expect_eq("ptest CF", u64::from(cf), flags & 1);
            expect_eq("ptest AF/OF/PF/SF", flags & 0x894, 0);
            let mut r = Regs::default();
            r.g[0] = a as u64;
            r.g[2] = u64::MAX;
            pmovmskb_mmx_ref(&mut r);
            expect_eq(
                "pmovmskb mmx",
                u64::from(pmovmskb(u128::from(a as u64))),
                r.g[2],
            );
        }
    }

    #[test]
    fn crc32_matches_hardware() {
        if !host_ok() {
            return;
        }
        hw!(crc8, "crc32 eax, cl");
        hw!(crc16, "crc32 eax, cx");
        hw!(crc32, "crc32 eax, ecx");
        hw!(crc64, "crc32 rax, rcx");
        let mut rng = Rng::new(5);
        for _ in 0..CASES {
            let (crc, data) = (rng.next(), rng.next());
            for (bytes, f) in [(1, crc8 as RefFn), (2, crc16), (4, crc32), (8, crc64)] {
                let mut r = Regs::default();
                r.g[0] = crc;
                r.g[2] = data;
                f(&mut r);
                let got = u64::from(crc32c(crc as u32, data, bytes));
                expect_eq(&format!("crc32/{bytes}({crc:#x}, {data:#x})"), got, r.g[0]);
            }
        }
        assert_eq!(crc32c(0, u64::MAX, 9), crc32c(0, u64::MAX, 8));
        assert_eq!(crc32c(0x1234, 5, 0), 0x1234);
    }

    /// A string operand: elements from a small alphabet (so that matches and
    /// ranges occur), with NULs sprinkled in and random bytes now and then.
    fn str_vec(rng: &mut Rng) -> u128 {
        const ALPHABET: [u8; 8] = [b'a', b'b', b'c', b'z', 0x80, 0xff, 0x7f, 0x01];
        let nul_rate = [0, 6, 20, 60][rng.below(4) as usize];
        (0..16).fold(0u128, |acc, i| {
            let byte = match rng.below(64) {
                x if x < nul_rate / 3 => 0,
                0..=40 => ALPHABET[rng.below(8) as usize],
                _ => rng.next() as u8,
            };
            acc | (u128::from(byte) << (8 * i))
        })
    }

    /// A length register value: small, negative, huge or extreme.
    fn len_reg(rng: &mut Rng) -> u64 {
        match rng.below(10) {
            0 => rng.next(),
            1 => [
                i64::MIN,
                i64::MAX,
                i64::from(i32::MIN),
                -1,
                0x1_0000_0003,
                -0x1_0000_0000,
            ][rng.below(6) as usize] as u64,
            2 | 3 => (rng.below(40) as i64 - 20) as u64,
            _ => rng.below(18),
        }
    }

    fn check_pcmp(table: &[(Mnemonic, RefTable)], rex_w: bool) {
        each_imm(table, |m, reference, imm, rng| {
            for _ in 0..PCMP_CASES_PER_IMM / CASES_PER_IMM {
                let (a, b) = (str_vec(rng), str_vec(rng));
                let b = if rng.below(3) == 0 {
                    a.rotate_right(8 * rng.below(4) as u32)
                } else {
                    b
                };
                let (rax, rdx) = (len_reg(rng), len_reg(rng));
                let mut r = Regs::xmm(a, b);
                r.g[0] = rax;
                r.g[1] = rdx;
                r.g[2] = rng.next();
                r.x0 = rng.u128();
                reference(&mut r);
                let (la, lb) = if rex_w {
                    (rax as i64, rdx as i64)
                } else {
                    (i64::from(rax as i32), i64::from(rdx as i32))
                };
                let res = pcmpstr(m, a, b, imm, la, lb);
                let what =
                    format!("{m:?}({a:#x}, {b:#x}, imm {imm:#x}, rax {rax:#x}, rdx {rdx:#x})");
                match m {
                    Mnemonic::Pcmpestri | Mnemonic::Pcmpistri => {
                        expect_eq(&what, u64::from(res.index), r.g[2])
                    }
                    _ => expect_eq(&what, res.mask, r.x0),
                }
                let flags = r.g[3] & PcmpResult::WRITTEN_FLAGS;
                expect_eq(&format!("flags of {what}"), res.rflags(), flags);
            }
        });
    }

    #[test]
    fn string_compares_match_hardware() {
        if !host_ok() {
            return;
        }
        check_pcmp(pcmp32::TABLE, false);
        check_pcmp(pcmp64::TABLE, true);
    }

    #[test]
    fn unknown_mnemonics_are_rejected() {
        assert_eq!(data_op(Mnemonic::Paddb, 1, 2, 3), None);
        assert_eq!(pextr(Mnemonic::Pinsrq, 1, 0), None);
        assert_eq!(pinsr(Mnemonic::Pextrq, 1, 2, 0), None);
    }

    #[test]
    fn every_mnemonic_and_input_is_total() {
        let mut rng = Rng::new(2);
        for m in Mnemonic::values() {
            for imm in 0..=255u8 {
                let (a, b) = rng.int_pair();
                let _ = data_op(m, a, b, imm);
                let _ = pextr(m, a, imm);
                let _ = pinsr(m, a, rng.next(), imm);
            }
        }
        for imm in 0..=255u8 {
            let (a, b) = (rng.u128(), rng.u128());
            let _ = (
                insertps(a, b, imm),
                insertps_m32(a, b as u32, imm),
                extractps(a, imm),
            );
            let _ = (
                pextrw_mmx(a as u64, imm),
                pinsrw_mmx(a as u64, b as u64, imm),
            );
            for (la, lb) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, -1), (17, 9)] {
                for m in [Mnemonic::Pcmpestri, Mnemonic::Pcmpistrm, Mnemonic::Add] {
                    let _ = pcmpstr(m, a, b, imm, la, lb);
                }
            }
        }
        for bytes in [0, 1, 3, 8, 9, usize::MAX] {
            let _ = crc32c(u32::MAX, u64::MAX, bytes);
        }
    }
}
