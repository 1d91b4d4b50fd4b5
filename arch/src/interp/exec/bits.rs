//! Shifts, rotates, bit tests and scans, SETcc/CMOVcc, byte swaps, sign extensions of rAX,
//! and the instructions that set flags directly.

use super::super::fault::Result;
use super::super::flags::{AF, CF, DF, OF, PF, SF, ZF};
use super::super::insn::{size_mask, Insn, LOCK, MEM_DST};
use super::super::state::{RAX, RCX, RDX};
use super::super::Core;
use super::alu::{locked_rmw, set_result_flags};

/// Shift/rotate kinds, in the `/digit` order of opcodes C0/C1/D0..D3.
pub const ROL: u8 = 0;
/// ROR.
pub const ROR: u8 = 1;
/// RCL.
pub const RCL: u8 = 2;
/// RCR.
pub const RCR: u8 = 3;
/// SHL.
pub const SHL: u8 = 4;
/// SHR.
pub const SHR: u8 = 5;
/// SAR.
pub const SAR: u8 = 7;

/// Count in CL.
pub const COUNT_CL: u8 = 1;
/// Count in the immediate.
pub const COUNT_IMM: u8 = 2;

fn msb(v: u64, size: u32) -> bool {
    (v >> (size * 8 - 1)) & 1 != 0
}

/// Shift or rotate operand 0 by a count from `SRC`, CL or the immediate (`i.cc` holds the
/// kind).
pub fn shift<const SRC: u8>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let bits = size * 8;
    let raw = if SRC == COUNT_CL {
        cpu.s.gpr[RCX] & 0xff
    } else {
        i.imm & 0xff
    };
    let count = (raw & if size == 8 { 63 } else { 31 }) as u32;
    let a = cpu.read_op0_rmw(i)?;
    if count == 0 {
        // A zero count changes no flags but still writes the operand back (zero-extending
        // a 32-bit register, dirtying a page), as hardware does.
        return cpu.write_op0(i, a);
    }
    let mask = size_mask(size);
    let f = &mut cpu.s.flags;
    let r = match i.cc {
        ROL | ROR => {
            let n = count % bits;
            let r = if i.cc == ROL {
                rotl(a, n, bits)
            } else {
                rotr(a, n, bits)
            };
            let (cf, of) = if i.cc == ROL {
                (r & 1 != 0, msb(r, size) ^ (r & 1 != 0))
            } else {
                (msb(r, size), msb(r, size) ^ ((r >> (bits - 2)) & 1 != 0))
            };
            f.update_arith(CF | OF, if cf { CF } else { 0 } | if of { OF } else { 0 });
            r
        }
        RCL | RCR => {
            // Rotate through carry: a (bits + 1)-bit rotation.
            let n = match size {
                1 => count % 9,
                2 => count % 17,
                _ => count,
            };
            let c = u128::from(f.cf());
            let wide = (c << bits) | u128::from(a);
            let width = bits + 1;
            let m = (1u128 << width) - 1;
            let rot = if i.cc == RCL {
                ((wide << n) | (wide >> ((width - n) % width))) & m
            } else {
                ((wide >> n) | (wide << ((width - n) % width))) & m
            };
            let r = rot as u64 & mask;
            let cf = (rot >> bits) & 1 != 0;
            let of = if i.cc == RCL {
                msb(r, size) ^ cf
            } else {
                msb(r, size) ^ ((r >> (bits - 2)) & 1 != 0)
            };
            if n != 0 {
                f.update_arith(CF | OF, if cf { CF } else { 0 } | if of { OF } else { 0 });
            }
            r
        }
        SHL | 6 => {
            let r = if count >= 64 { 0 } else { (a << count) & mask };
            let cf = count <= bits && (a >> (bits - count)) & 1 != 0;
            let of = msb(r, size) ^ cf;
            set_result_flags(f, r, size, cf, of);
            r
        }
        SHR => {
            let r = if count >= 64 { 0 } else { a >> count };
            let cf = count <= bits && (a >> (count - 1)) & 1 != 0;
            set_result_flags(f, r, size, cf, msb(a, size));
            r
        }
        _ => {
            let sa = super::super::insn::sign_extend(a, size) as i64;
            let r = (sa >> count.min(63)) as u64 & mask;
            let cf = (sa >> (count - 1).min(63)) & 1 != 0;
            set_result_flags(f, r, size, cf, false);
            r
        }
    };
    cpu.write_op0(i, r)
}

fn rotl(a: u64, n: u32, bits: u32) -> u64 {
    if n == 0 {
        return a;
    }
    ((a << n) | (a >> (bits - n))) & size_mask(bits / 8)
}

fn rotr(a: u64, n: u32, bits: u32) -> u64 {
    if n == 0 {
        return a;
    }
    ((a >> n) | (a << (bits - n))) & size_mask(bits / 8)
}

/// SHLD (`RIGHT` false) / SHRD: shift operand 0, filling from register r1; count from CL
/// (`i.cc` = 1) or the immediate.
pub fn shift_double<const RIGHT: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let bits = size * 8;
    let raw = if i.cc == 1 { cpu.s.gpr[RCX] } else { i.imm };
    let count = (raw & if size == 8 { 63 } else { 31 }) as u32;
    let a = cpu.read_op0_rmw(i)?;
    if count == 0 {
        return cpu.write_op0(i, a);
    }
    let b = cpu.get_reg(i.r1, size);
    // Work in 128 bits: for 16-bit operands counts up to 31 are allowed.
    let (r, cf) = if RIGHT {
        let wide = (u128::from(b) << bits) | u128::from(a);
        let wide = if size == 2 {
            wide | (u128::from(a) << (2 * bits))
        } else {
            wide
        };
        (
            ((wide >> count) as u64) & size_mask(size),
            (wide >> (count - 1)) & 1 != 0,
        )
    } else {
        let wide = (u128::from(a) << bits) | u128::from(b);
        let wide = if size == 2 {
            (wide << bits) | u128::from(a)
        } else {
            wide
        };
        let total = if size == 2 { 3 * bits } else { 2 * bits };
        (
            ((wide << count) >> (total - bits)) as u64 & size_mask(size),
            (wide >> (total - count)) & 1 != 0,
        )
    };
    let of = msb(r, size) != msb(a, size);
    set_result_flags(&mut cpu.s.flags, r, size, cf, of);
    cpu.write_op0(i, r)
}

/// BT/BTS/BTR/BTC kinds (`i.cc`).
pub const BT: u8 = 0;
/// BTS.
pub const BTS: u8 = 1;
/// BTR.
pub const BTR: u8 = 2;
/// BTC.
pub const BTC: u8 = 3;

/// Bit test (and set/reset/complement). With a register bit offset on a memory operand the
/// offset is signed and may address outside the operand.
pub fn bit_test<const IMM: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let bits = u64::from(size * 8);
    let offset = if IMM {
        i.imm & 0xff
    } else {
        cpu.get_reg(i.r1, size)
    };
    let apply = |v: u64, bit: u64| -> u64 {
        match i.cc {
            BTS => v | (1 << bit),
            BTR => v & !(1 << bit),
            BTC => v ^ (1 << bit),
            _ => v,
        }
    };
    let old = if i.flags & MEM_DST != 0 && !IMM {
        // Address the operand containing the bit.
        let signed = super::super::insn::sign_extend(offset, size) as i64;
        let delta = signed.div_euclid(bits as i64) * i64::from(size);
        let bit = signed.rem_euclid(bits as i64) as u64;
        let shifted = Insn {
            disp: i.disp.wrapping_add(delta as u64),
            ..i.clone()
        };
        let v = if i.cc != BT && i.flags & LOCK != 0 {
            locked_rmw(cpu, &shifted, size, |v| apply(v, bit))?
        } else {
            let v = cpu.mem_read(&shifted, size)?;
            if i.cc != BT {
                cpu.mem_write(&shifted, size, apply(v, bit))?;
            }
            v
        };
        (v >> bit) & 1
    } else {
        let bit = offset % bits;
        let v = if i.cc != BT && i.flags & LOCK != 0 {
            locked_rmw(cpu, i, size, |v| apply(v, bit))?
        } else {
            if i.cc == BT {
                cpu.read_op0(i)?
            } else {
                let v = cpu.read_op0_rmw(i)?;
                cpu.write_op0(i, apply(v, bit))?;
                v
            }
        };
        (v >> bit) & 1
    };
    cpu.s.flags.update_arith(CF, if old != 0 { CF } else { 0 });
    Ok(())
}

/// Bit scans and counts (`i.cc`): 0 BSF, 1 BSR, 2 TZCNT, 3 LZCNT, 4 POPCNT.
pub fn bit_scan(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let bits = size * 8;
    let src = cpu.read_op1(i)?;
    let f = &mut cpu.s.flags;
    match i.cc {
        0 | 1 => {
            if src == 0 {
                f.update_arith(ZF, ZF);
                return Ok(());
            }
            let r = if i.cc == 0 {
                src.trailing_zeros()
            } else {
                63 - src.leading_zeros()
            };
            f.update_arith(ZF, 0);
            cpu.put_reg(i.r0, size, u64::from(r));
        }
        2 | 3 => {
            let r = if i.cc == 2 {
                src.trailing_zeros().min(bits)
            } else {
                src.leading_zeros() - (64 - bits)
            };
            let v = if src == 0 { CF } else { 0 } | if r == 0 { ZF } else { 0 };
            f.update_arith(CF | ZF, v);
            cpu.put_reg(i.r0, size, u64::from(r));
        }
        _ => {
            f.set_arith(if src == 0 { ZF } else { 0 });
            cpu.put_reg(i.r0, size, u64::from(src.count_ones()));
        }
    }
    Ok(())
}

/// SETcc (condition in `i.cc`).
pub fn setcc(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = u64::from(cpu.s.flags.condition(i.cc));
    cpu.write_op0(i, v)
}

/// CMOVcc: reads the source even when the condition is false; 32-bit destinations are
/// zero-extended either way.
pub fn cmov(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let src = cpu.read_op1(i)?;
    let v = if cpu.s.flags.condition(i.cc) {
        src
    } else {
        cpu.get_reg(i.r0, size)
    };
    cpu.put_reg(i.r0, size, v);
    Ok(())
}

/// BSWAP (16-bit operand: the result is zero, as on hardware).
pub fn bswap(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let v = cpu.get_reg(i.r0, size);
    let r = match size {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        _ => 0,
    };
    cpu.put_reg(i.r0, size, r);
    Ok(())
}

/// CBW/CWDE/CDQE: sign-extend the lower half of rAX into the operand size.
pub fn sign_extend_ax(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let half = cpu.s.gpr[RAX] & size_mask(size / 2);
    let v = super::super::insn::sign_extend(half, size / 2);
    cpu.put_reg(RAX as u8, size, v);
    Ok(())
}

/// CWD/CDQ/CQO: fill rDX with the sign of rAX.
pub fn sign_fill_dx(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let negative = msb(cpu.s.gpr[RAX] & size_mask(size), size);
    cpu.put_reg(RDX as u8, size, if negative { u64::MAX } else { 0 });
    Ok(())
}

/// Flag instructions (`i.cc`): 0 CLC, 1 STC, 2 CMC, 3 CLD, 4 STD.
pub fn flag_op(cpu: &mut Core, i: &Insn) -> Result<()> {
    let f = &mut cpu.s.flags;
    match i.cc {
        0 => f.update_arith(CF, 0),
        1 => f.update_arith(CF, CF),
        2 => {
            let cf = f.cf();
            f.update_arith(CF, if cf { 0 } else { CF });
        }
        3 => f.assign(DF, false),
        _ => f.assign(DF, true),
    }
    Ok(())
}

/// LAHF: AH = SF:ZF:0:AF:0:PF:1:CF.
pub fn lahf(cpu: &mut Core, _: &Insn) -> Result<()> {
    let v = (cpu.s.flags.arith() & (SF | ZF | AF | PF | CF)) | 2;
    cpu.put_reg(super::super::insn::HIGH_BYTE, 1, v);
    Ok(())
}

/// SAHF: SF, ZF, AF, PF, CF from AH.
pub fn sahf(cpu: &mut Core, _: &Insn) -> Result<()> {
    let ah = (cpu.s.gpr[RAX] >> 8) & 0xff;
    let keep = cpu.s.flags.arith() & OF;
    cpu.s
        .flags
        .set_arith(keep | (ah & (SF | ZF | AF | PF | CF)));
    Ok(())
}

/// SALC (undocumented in 16/32-bit mode): AL = CF ? 0xff : 0.
pub fn salc(cpu: &mut Core, _: &Insn) -> Result<()> {
    let v = if cpu.s.flags.cf() { 0xff } else { 0 };
    cpu.put_reg(RAX as u8, 1, v);
    Ok(())
}
