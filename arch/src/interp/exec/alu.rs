//! Integer arithmetic and logic: the eight classic ALU operations, TEST, INC/DEC, NEG/NOT,
//! multiplication and division, XADD and CMPXCHG, with LOCK done atomically on the host.

use super::super::fault::{Exception, Result};
use super::super::flags::{parity, FlagOp, Flags, AF, CF, OF, PF, SF, ZF};
use super::super::insn::{sign_extend, size_mask, Insn, LOCK, MEM_DST};
use super::super::mmu::atomic_cmpxchg;
use super::super::state::{RAX, RDX};
use super::super::Core;

/// ALU operation numbers, in the x86 `/digit` order of opcodes 80..83.
pub const ADD: u8 = 0;
/// OR.
pub const OR: u8 = 1;
/// ADC.
pub const ADC: u8 = 2;
/// SBB.
pub const SBB: u8 = 3;
/// AND.
pub const AND: u8 = 4;
/// SUB.
pub const SUB: u8 = 5;
/// XOR.
pub const XOR: u8 = 6;
/// CMP.
pub const CMP: u8 = 7;

/// Computes `a OP b` at `size` bytes and records the flags.
#[inline(always)]
pub fn alu<const OP: u8>(f: &mut Flags, size: u32, a: u64, b: u64) -> u64 {
    let bits = size * 8;
    match OP {
        ADD => {
            let r = a.wrapping_add(b);
            f.set_lazy(FlagOp::Add, bits, a, b, r);
            r
        }
        OR => {
            let r = a | b;
            f.set_lazy(FlagOp::Logic, bits, a, b, r);
            r
        }
        ADC => {
            let c = f.cf();
            let r = a.wrapping_add(b).wrapping_add(u64::from(c));
            f.set_lazy_aux(FlagOp::Adc, bits, a, b, r, c);
            r
        }
        SBB => {
            let c = f.cf();
            let r = a.wrapping_sub(b).wrapping_sub(u64::from(c));
            f.set_lazy_aux(FlagOp::Sbb, bits, a, b, r, c);
            r
        }
        AND => {
            let r = a & b;
            f.set_lazy(FlagOp::Logic, bits, a, b, r);
            r
        }
        XOR => {
            let r = a ^ b;
            f.set_lazy(FlagOp::Logic, bits, a, b, r);
            r
        }
        _ => {
            let r = a.wrapping_sub(b);
            f.set_lazy(FlagOp::Sub, bits, a, b, r);
            r
        }
    }
}

/// `reg OP reg`.
pub fn alu_rr<const OP: u8>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let a = cpu.get_reg(i.r0, size);
    let b = cpu.get_reg(i.r1, size);
    let r = alu::<OP>(&mut cpu.s.flags, size, a, b);
    if OP != CMP {
        cpu.put_reg(i.r0, size, r);
    }
    Ok(())
}

/// `reg OP imm`.
pub fn alu_ri<const OP: u8>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let a = cpu.get_reg(i.r0, size);
    let r = alu::<OP>(&mut cpu.s.flags, size, a, i.imm & size_mask(size));
    if OP != CMP {
        cpu.put_reg(i.r0, size, r);
    }
    Ok(())
}

/// `reg OP [mem]`.
pub fn alu_rm<const OP: u8>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let b = cpu.mem_read(i, size)?;
    let a = cpu.get_reg(i.r0, size);
    let r = alu::<OP>(&mut cpu.s.flags, size, a, b);
    if OP != CMP {
        cpu.put_reg(i.r0, size, r);
    }
    Ok(())
}

/// `[mem] OP reg` (register in `r1`) or `[mem] OP imm` (`IMM`), LOCK-aware.
pub fn alu_m<const OP: u8, const IMM: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let b = if IMM {
        i.imm & size_mask(size)
    } else {
        cpu.get_reg(i.r1, size)
    };
    if OP == CMP {
        let a = cpu.mem_read(i, size)?;
        alu::<OP>(&mut cpu.s.flags, size, a, b);
        return Ok(());
    }
    if i.flags & LOCK != 0 {
        let carry = u64::from(cpu.s.flags.cf());
        let old = locked_rmw(cpu, i, size, |a| match OP {
            ADD => a.wrapping_add(b),
            OR => a | b,
            ADC => a.wrapping_add(b).wrapping_add(carry),
            SBB => a.wrapping_sub(b).wrapping_sub(carry),
            AND => a & b,
            SUB => a.wrapping_sub(b),
            _ => a ^ b,
        })?;
        alu::<OP>(&mut cpu.s.flags, size, old, b);
        return Ok(());
    }
    let a = cpu.mem_read_rmw(i, size)?;
    let r = alu::<OP>(&mut cpu.s.flags, size, a, b);
    cpu.mem_write(i, size, r)
}

/// Serializes locked operations that cannot be done with one host atomic (MMIO,
/// page-crossing or misaligned operands).
static SPLIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Atomically replaces the memory operand `v` by `f(v)`; returns the old value.
pub(crate) fn locked_rmw(
    cpu: &mut Core,
    i: &Insn,
    size: u32,
    f: impl Fn(u64) -> u64,
) -> Result<u64> {
    let lin = cpu.linear(i.seg as usize, cpu.ea(i), size, true)?;
    let user = cpu.user();
    let mask = size_mask(size);
    match cpu.rmw_host(lin, size as usize, user)? {
        Some(host) => {
            let mut old = atomic_cmpxchg(host, size as usize, 0, 0);
            loop {
                let new = f(old) & mask;
                let seen = atomic_cmpxchg(host, size as usize, old, new);
                if seen == old {
                    return Ok(old);
                }
                old = seen;
            }
        }
        None => {
            let _guard = SPLIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let old = cpu.read_sized(lin, size)?;
            cpu.write_sized(lin, size, f(old) & mask)?;
            Ok(old)
        }
    }
}

/// Reads operand 0, applies `f`, writes it back; atomically when LOCKed.
#[inline(always)]
fn modify_op0(cpu: &mut Core, i: &Insn, f: impl Fn(u64) -> u64) -> Result<u64> {
    if i.flags & LOCK != 0 {
        return locked_rmw(cpu, i, u32::from(i.size), f);
    }
    let a = cpu.read_op0_rmw(i)?;
    cpu.write_op0(i, f(a))?;
    Ok(a)
}

/// TEST `reg`/`[mem]` with `reg` (r1) or `imm`.
pub fn test<const IMM: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let b = if IMM {
        i.imm & size_mask(size)
    } else {
        cpu.get_reg(i.r1, size)
    };
    let a = cpu.read_op0(i)?;
    cpu.s.flags.set_lazy(FlagOp::Logic, size * 8, a, b, a & b);
    Ok(())
}

/// INC (`DEC` false) or DEC of operand 0.
pub fn inc_dec<const DEC: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let carry = cpu.s.flags.cf();
    let old = modify_op0(cpu, i, |a| {
        if DEC {
            a.wrapping_sub(1)
        } else {
            a.wrapping_add(1)
        }
    })?;
    let (op, r) = if DEC {
        (FlagOp::Dec, old.wrapping_sub(1))
    } else {
        (FlagOp::Inc, old.wrapping_add(1))
    };
    cpu.s.flags.set_lazy_aux(op, size * 8, old, 1, r, carry);
    Ok(())
}

/// NEG.
pub fn neg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let old = modify_op0(cpu, i, |a| a.wrapping_neg())?;
    cpu.s
        .flags
        .set_lazy(FlagOp::Neg, size * 8, 0, old, old.wrapping_neg());
    Ok(())
}

/// NOT (no flags).
pub fn not(cpu: &mut Core, i: &Insn) -> Result<()> {
    modify_op0(cpu, i, |a| !a)?;
    Ok(())
}

/// Sets SF, ZF, PF from `res` at `size` bytes and CF/OF as given; AF cleared.
#[inline]
pub(crate) fn set_result_flags(f: &mut Flags, res: u64, size: u32, cf: bool, of: bool) {
    let res = res & size_mask(size);
    let mut v = 0;
    if cf {
        v |= CF;
    }
    if of {
        v |= OF;
    }
    if res == 0 {
        v |= ZF;
    }
    if (res >> (size * 8 - 1)) & 1 != 0 {
        v |= SF;
    }
    if parity(res) {
        v |= PF;
    }
    f.set_arith(v);
}

/// MUL / IMUL with one operand: rDX:rAX = rAX * operand (AX = AL * operand for bytes).
pub fn mul1<const SIGNED: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let src = cpu.read_op0(i)?;
    let a = cpu.s.gpr[RAX] & size_mask(size);
    let bits = size * 8;
    let (lo, hi, overflow) = if SIGNED {
        let p = i128::from(sign_extend(a, size) as i64) * i128::from(sign_extend(src, size) as i64);
        let lo = (p as u64) & size_mask(size);
        let fits = p == i128::from(sign_extend(lo, size) as i64);
        (lo, ((p >> bits) as u64) & size_mask(size), !fits)
    } else {
        let p = u128::from(a) * u128::from(src);
        let hi = ((p >> bits) as u64) & size_mask(size);
        ((p as u64) & size_mask(size), hi, hi != 0)
    };
    if size == 1 {
        cpu.put_reg(RAX as u8, 2, (hi << 8) | lo);
    } else {
        cpu.put_reg(RAX as u8, size, lo);
        cpu.put_reg(RDX as u8, size, hi);
    }
    set_result_flags(&mut cpu.s.flags, lo, size, overflow, overflow);
    Ok(())
}

/// IMUL with two or three operands: r0 = (r0 or `imm2`-form operand) * operand.
/// `THREE`: r0 = [r1/mem] * imm.
pub fn imul_n<const THREE: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let src = cpu.read_op1(i)?;
    let other = if THREE {
        i.imm
    } else {
        cpu.get_reg(i.r0, size)
    };
    let p = i128::from(sign_extend(src, size) as i64) * i128::from(sign_extend(other, size) as i64);
    let lo = (p as u64) & size_mask(size);
    let overflow = p != i128::from(sign_extend(lo, size) as i64);
    cpu.put_reg(i.r0, size, lo);
    set_result_flags(&mut cpu.s.flags, lo, size, overflow, overflow);
    Ok(())
}

/// DIV / IDIV: rAX = rDX:rAX / operand, rDX = remainder (AL/AH for bytes); #DE on a zero
/// divisor or a quotient that does not fit.
pub fn div<const SIGNED: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let bits = size * 8;
    let divisor = cpu.read_op0(i)?;
    if divisor == 0 {
        return Err(Exception::de());
    }
    let (lo, hi) = if size == 1 {
        let ax = cpu.s.gpr[RAX] & 0xffff;
        (ax & 0xff, ax >> 8)
    } else {
        (
            cpu.s.gpr[RAX] & size_mask(size),
            cpu.s.gpr[RDX] & size_mask(size),
        )
    };
    let (q, r) = if SIGNED {
        // The dividend is 2*bits wide; sign-extend it from there.
        let raw = (u128::from(hi) << bits) | u128::from(lo);
        let shift = 128 - 2 * bits;
        let dividend = ((raw << shift) as i128) >> shift;
        let d = i128::from(sign_extend(divisor, size) as i64);
        let q = dividend.wrapping_div(d);
        let r = dividend.wrapping_rem(d);
        let limit = 1i128 << (bits - 1);
        if q >= limit || q < -limit {
            return Err(Exception::de());
        }
        (q as u64 & size_mask(size), r as u64 & size_mask(size))
    } else {
        let dividend = (u128::from(hi) << bits) | u128::from(lo);
        let q = dividend / u128::from(divisor);
        if q >> bits != 0 {
            return Err(Exception::de());
        }
        (q as u64, (dividend % u128::from(divisor)) as u64)
    };
    if size == 1 {
        cpu.put_reg(RAX as u8, 2, (r << 8) | q);
    } else {
        cpu.put_reg(RAX as u8, size, q);
        cpu.put_reg(RDX as u8, size, r);
    }
    Ok(())
}

/// XADD: operand 0 gets the sum, register r1 the old operand 0.
pub fn xadd(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let b = cpu.get_reg(i.r1, size);
    if i.flags & MEM_DST == 0 {
        // The sum is written last, so `xadd r, r` leaves the sum.
        let a = cpu.get_reg(i.r0, size);
        cpu.put_reg(i.r1, size, a);
        cpu.put_reg(i.r0, size, a.wrapping_add(b));
        alu::<ADD>(&mut cpu.s.flags, size, a, b);
        return Ok(());
    }
    let old = modify_op0(cpu, i, |a| a.wrapping_add(b))?;
    cpu.put_reg(i.r1, size, old);
    alu::<ADD>(&mut cpu.s.flags, size, old, b);
    Ok(())
}

/// CMPXCHG: if rAX equals operand 0, operand 0 = r1, else rAX = operand 0.
pub fn cmpxchg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let expected = cpu.s.gpr[RAX] & size_mask(size);
    let new = cpu.get_reg(i.r1, size);
    let old = if i.flags & MEM_DST == 0 {
        let old = cpu.get_reg(i.r0, size);
        if old == expected {
            cpu.put_reg(i.r0, size, new);
        }
        old
    } else if i.flags & LOCK != 0 {
        locked_rmw(cpu, i, size, |v| if v == expected { new } else { v })?
    } else {
        let old = cpu.mem_read_rmw(i, size)?;
        // The destination is written in both cases, as on hardware.
        cpu.mem_write(i, size, if old == expected { new } else { old })?;
        old
    };
    alu::<CMP>(&mut cpu.s.flags, size, expected, old);
    if old != expected {
        cpu.put_reg(RAX as u8, size, old);
    }
    Ok(())
}

/// CMPXCHG8B (`size` 4) / CMPXCHG16B (`size` 8): compares rDX:rAX with the memory operand.
pub fn cmpxchg_double(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let total = 2 * size;
    let off = cpu.ea(i);
    if total == 16 && off & 15 != 0 {
        return Err(Exception::gp0());
    }
    let lin = cpu.linear(i.seg as usize, off, total, true)?;
    let mask = size_mask(size);
    let expected = (cpu.s.gpr[RAX] & mask, cpu.s.gpr[RDX] & mask);
    let new = (
        cpu.s.gpr[super::super::state::RBX] & mask,
        cpu.s.gpr[super::super::state::RCX] & mask,
    );
    let user = cpu.user();
    let old = {
        // Host CMPXCHG16B is not in std; serialize double-width compare-exchanges, which
        // also covers 8-byte ones that share a line with them.
        let _guard = SPLIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = [0u8; 16];
        cpu.read_bytes(lin, &mut bytes[..total as usize], user)?;
        let raw = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or([0; 8]));
        let old = if size == 8 {
            (
                raw,
                u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8])),
            )
        } else {
            (raw & 0xffff_ffff, raw >> 32)
        };
        let store = if old == expected { new } else { old };
        let mut out = [0u8; 16];
        if size == 8 {
            out[..8].copy_from_slice(&store.0.to_le_bytes());
            out[8..].copy_from_slice(&store.1.to_le_bytes());
        } else {
            out[..8].copy_from_slice(&(store.0 | (store.1 << 32)).to_le_bytes());
        }
        cpu.write_bytes(lin, &out[..total as usize], user)?;
        old
    };
    let equal = old == expected;
    cpu.s.flags.update_arith(ZF, if equal { ZF } else { 0 });
    if !equal {
        cpu.put_reg(RAX as u8, size, old.0);
        cpu.put_reg(RDX as u8, size, old.1);
    }
    Ok(())
}

/// Flags of an 8-bit add/subtract for the BCD adjust instructions.
fn set_bcd_flags(f: &mut Flags, al: u64, cf: bool, af: bool) {
    let mut v = 0;
    if cf {
        v |= CF;
    }
    if af {
        v |= AF;
    }
    if al & 0xff == 0 {
        v |= ZF;
    }
    if al & 0x80 != 0 {
        v |= SF;
    }
    if parity(al) {
        v |= PF;
    }
    f.set_arith(v);
}

/// DAA (`SUB` false) / DAS.
pub fn daa_das<const SUB: bool>(cpu: &mut Core, _: &Insn) -> Result<()> {
    let old_al = cpu.s.gpr[RAX] & 0xff;
    let old_cf = cpu.s.flags.cf();
    let mut al = old_al;
    let mut cf = false;
    let mut af = false;
    if al & 0xf > 9 || cpu.s.flags.af() {
        al = if SUB { al.wrapping_sub(6) } else { al + 6 } & 0xff;
        cf = old_cf || if SUB { old_al < 6 } else { old_al + 6 > 0xff };
        af = true;
    }
    if old_al > 0x99 || old_cf {
        al = if SUB {
            al.wrapping_sub(0x60)
        } else {
            al + 0x60
        } & 0xff;
        cf = true;
    }
    cpu.put_reg(RAX as u8, 1, al);
    set_bcd_flags(&mut cpu.s.flags, al, cf, af);
    Ok(())
}

/// AAA (`SUB` false) / AAS.
pub fn aaa_aas<const SUB: bool>(cpu: &mut Core, _: &Insn) -> Result<()> {
    let mut ax = cpu.s.gpr[RAX] & 0xffff;
    let adjust = ax & 0xf > 9 || cpu.s.flags.af();
    if adjust {
        ax = if SUB {
            ax.wrapping_sub(6).wrapping_sub(0x100)
        } else {
            ax.wrapping_add(0x106)
        };
    }
    ax &= 0xff0f;
    cpu.put_reg(RAX as u8, 2, ax);
    let f = if adjust { CF | AF } else { 0 };
    cpu.s
        .flags
        .set_arith(f | if parity(ax) { PF } else { 0 } | if ax & 0xff == 0 { ZF } else { 0 });
    Ok(())
}

/// AAM imm8: AH = AL / imm, AL = AL % imm.
pub fn aam(cpu: &mut Core, i: &Insn) -> Result<()> {
    let base = i.imm & 0xff;
    if base == 0 {
        return Err(Exception::de());
    }
    let al = cpu.s.gpr[RAX] & 0xff;
    let (ah, al) = (al / base, al % base);
    cpu.put_reg(RAX as u8, 2, (ah << 8) | al);
    set_result_flags(&mut cpu.s.flags, al, 1, false, false);
    Ok(())
}

/// AAD imm8: AL = AH * imm + AL, AH = 0.
pub fn aad(cpu: &mut Core, i: &Insn) -> Result<()> {
    let ax = cpu.s.gpr[RAX];
    let al = (((ax >> 8) & 0xff) * (i.imm & 0xff) + (ax & 0xff)) & 0xff;
    cpu.put_reg(RAX as u8, 2, al);
    set_result_flags(&mut cpu.s.flags, al, 1, false, false);
    Ok(())
}
