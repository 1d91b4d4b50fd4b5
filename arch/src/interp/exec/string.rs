//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with REP prefixes.
//!
//! A REP MOVS or STOS over RAM moves whole page-sized chunks at once; everything else goes
//! element by element. Registers are updated as elements complete, so a fault in the middle
//! leaves a restartable state, as on hardware.

use super::super::fault::Result;
use super::super::flags::DF;
use super::super::insn::{addr_mask, size_mask, Insn, REP, REPNE};
use super::super::mmu::Access;
use super::super::state::{ES, RAX, RCX, RDI, RDX, RSI};
use super::super::Core;
use super::alu::{alu, CMP};

/// String operation kinds (`i.cc`).
pub const MOVS: u8 = 0;
/// STOS.
pub const STOS: u8 = 1;
/// LODS.
pub const LODS: u8 = 2;
/// CMPS.
pub const CMPS: u8 = 3;
/// SCAS.
pub const SCAS: u8 = 4;
/// INS.
pub const INS: u8 = 5;
/// OUTS.
pub const OUTS: u8 = 6;

/// Elements a repeated string instruction processes one by one before it lets the vCPU look
/// at interrupts and stop requests (hardware takes interrupts between iterations too).
const ELEMENTS_PER_SLICE: u32 = 1024;
/// Page-sized bulk moves a repeated MOVS/STOS makes before it does the same.
const BULK_MOVES_PER_SLICE: u32 = 64;

/// Executes one string instruction, repeated per its prefix.
pub fn string(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let amask = addr_mask(i.asize);
    let rep = i.flags & (REP | REPNE) != 0;
    if matches!(i.cc, INS | OUTS) {
        cpu.check_io_permission(cpu.s.gpr[RDX] as u16, size)?;
    }
    if !rep {
        return step(cpu, i, size, amask);
    }
    let (mut elements, mut bulk_moves) = (0u32, 0u32);
    loop {
        let count = cpu.s.gpr[RCX] & amask;
        if count == 0 {
            return Ok(());
        }
        if elements == ELEMENTS_PER_SLICE || bulk_moves == BULK_MOVES_PER_SLICE {
            // The registers say how far it got: run this instruction again after the vCPU
            // has looked at interrupts and stop requests, as an interrupted REP does.
            cpu.s.rip = cpu.s.rip.wrapping_sub(u64::from(i.len));
            cpu.end_block = true;
            return Ok(());
        }
        if matches!(i.cc, MOVS | STOS) && !cpu.s.flags.has(DF) {
            if let Some(done) = bulk(cpu, i, size, amask, count)? {
                advance(cpu, i, amask, done, size);
                set_count(cpu, amask, count - done);
                bulk_moves += 1;
                continue;
            }
        }
        elements += 1;
        step(cpu, i, size, amask)?;
        set_count(cpu, amask, count - 1);
        if matches!(i.cc, CMPS | SCAS) {
            let zf = cpu.s.flags.zf();
            if (i.flags & REP != 0 && !zf) || (i.flags & REPNE != 0 && zf) {
                return Ok(());
            }
        }
        if cpu.end_block && (count - 1) & amask != 0 {
            // A store hit decoded code: finish the rest after re-decoding, from this
            // instruction again.
            cpu.s.rip = cpu.s.rip.wrapping_sub(u64::from(i.len));
            return Ok(());
        }
    }
}

fn set_count(cpu: &mut Core, amask: u64, count: u64) {
    let r = &mut cpu.s.gpr[RCX];
    *r = if amask == 0xffff_ffff {
        count & amask
    } else {
        (*r & !amask) | (count & amask)
    };
}

fn bump(cpu: &mut Core, reg: usize, amask: u64, delta: u64) {
    let v = cpu.s.gpr[reg].wrapping_add(delta) & amask;
    let r = &mut cpu.s.gpr[reg];
    *r = if amask == 0xffff_ffff {
        v
    } else {
        (*r & !amask) | v
    };
}

/// Moves rSI/rDI on by `n` elements of `size` bytes in the direction of DF.
fn advance(cpu: &mut Core, i: &Insn, amask: u64, n: u64, size: u32) {
    let delta = n.wrapping_mul(u64::from(size));
    let delta = if cpu.s.flags.has(DF) {
        delta.wrapping_neg()
    } else {
        delta
    };
    if matches!(i.cc, MOVS | LODS | CMPS | OUTS) {
        bump(cpu, RSI, amask, delta);
    }
    if matches!(i.cc, MOVS | STOS | CMPS | SCAS | INS) {
        bump(cpu, RDI, amask, delta);
    }
}

/// One element.
fn step(cpu: &mut Core, i: &Insn, size: u32, amask: u64) -> Result<()> {
    let si = cpu.s.gpr[RSI] & amask;
    let di = cpu.s.gpr[RDI] & amask;
    let seg = i.seg as usize;
    match i.cc {
        MOVS => {
            let src = cpu.linear(seg, si, size, false)?;
            let v = cpu.read_sized(src, size)?;
            let dst = cpu.linear(ES, di, size, true)?;
            cpu.write_sized(dst, size, v)?;
        }
        STOS => {
            let dst = cpu.linear(ES, di, size, true)?;
            cpu.write_sized(dst, size, cpu.s.gpr[RAX] & size_mask(size))?;
        }
        LODS => {
            let src = cpu.linear(seg, si, size, false)?;
            let v = cpu.read_sized(src, size)?;
            cpu.put_reg(RAX as u8, size, v);
        }
        CMPS => {
            let src = cpu.linear(seg, si, size, false)?;
            let a = cpu.read_sized(src, size)?;
            let dst = cpu.linear(ES, di, size, false)?;
            let b = cpu.read_sized(dst, size)?;
            alu::<CMP>(&mut cpu.s.flags, size, a, b);
        }
        SCAS => {
            let dst = cpu.linear(ES, di, size, false)?;
            let b = cpu.read_sized(dst, size)?;
            let a = cpu.s.gpr[RAX] & size_mask(size);
            alu::<CMP>(&mut cpu.s.flags, size, a, b);
        }
        INS => {
            let dst = cpu.linear(ES, di, size, true)?;
            // Probe the destination before the port is read: port reads can have effects.
            cpu.read_sized(dst, 1)?;
            let mut data = [0u8; 4];
            let port = cpu.s.gpr[RDX] as u16;
            cpu.io.pio_read(port, &mut data[..size as usize]);
            cpu.write_sized(dst, size, u64::from(u32::from_le_bytes(data)))?;
        }
        _ => {
            let src = cpu.linear(seg, si, size, false)?;
            let v = cpu.read_sized(src, size)?;
            let port = cpu.s.gpr[RDX] as u16;
            cpu.io
                .pio_write(port, &(v as u32).to_le_bytes()[..size as usize]);
        }
    }
    advance(cpu, i, amask, 1, size);
    Ok(())
}

/// Moves as many whole elements as fit in the current source and destination pages in one
/// go. Returns how many were done, or None when this must go element by element (MMIO,
/// decoded code, overlap, segment limits).
fn bulk(cpu: &mut Core, i: &Insn, size: u32, amask: u64, count: u64) -> Result<Option<u64>> {
    let user = cpu.user();
    let di = cpu.s.gpr[RDI] & amask;
    let dst = cpu.linear(ES, di, size, true)?;
    let mut room = (0x1000 - (dst & 0xfff)) / u64::from(size);
    let src = if i.cc == MOVS {
        let si = cpu.s.gpr[RSI] & amask;
        let src = cpu.linear(i.seg as usize, si, size, false)?;
        room = room.min((0x1000 - (src & 0xfff)) / u64::from(size));
        Some(src)
    } else {
        None
    };
    let n = room.min(count);
    // Wrapping offsets or 16-bit segments: leave it to the element loop.
    let bytes = n * u64::from(size);
    if n < 2
        || di.wrapping_add(bytes) > amask
        || cpu.s.mode.code_bits != 64 && !cpu.segment_covers(ES, di, bytes)
    {
        return Ok(None);
    }
    let Some((dst_host, dst_page)) = cpu.host_for(dst, Access::Write, user)? else {
        return Ok(None);
    };
    if cpu.code.has_code(dst_page) {
        return Ok(None);
    }
    match src {
        Some(src) => {
            let si = cpu.s.gpr[RSI] & amask;
            if si.wrapping_add(bytes) > amask
                || cpu.s.mode.code_bits != 64 && !cpu.segment_covers(i.seg as usize, si, bytes)
            {
                return Ok(None);
            }
            let Some((src_host, _)) = cpu.host_for(src, Access::Read, user)? else {
                return Ok(None);
            };
            // Element by element upwards, a destination below its source reads every
            // element before it is overwritten: that is a memmove. A destination inside the
            // source above it replicates elements and goes element by element.
            let replicates = src_host < dst_host && dst_host < src_host + bytes as usize;
            if replicates {
                return Ok(None);
            }
            // SAFETY: both ranges lie within single RAM pages of live mappings (`host_for`
            // and the page-room computation above); `copy` allows them to overlap.
            unsafe { std::ptr::copy(src_host as *const u8, dst_host as *mut u8, bytes as usize) };
        }
        None => {
            let pattern = cpu.s.gpr[RAX] & size_mask(size);
            let byte = pattern as u8;
            if pattern == u64::from(byte) * (size_mask(size) / 0xff) {
                // Every byte of the element is the same (zeroing, mostly): a memset.
                // SAFETY: inside one RAM page of a live mapping, as above.
                unsafe { std::ptr::write_bytes(dst_host as *mut u8, byte, bytes as usize) };
                return Ok(Some(n));
            }
            let mut host = dst_host;
            for _ in 0..n {
                // SAFETY: inside one RAM page of a live mapping, as above.
                unsafe {
                    match size {
                        1 => super::super::mmu::store::<1>(host, pattern),
                        2 => super::super::mmu::store::<2>(host, pattern),
                        4 => super::super::mmu::store::<4>(host, pattern),
                        _ => super::super::mmu::store::<8>(host, pattern),
                    }
                }
                host += size as usize;
            }
        }
    }
    Ok(Some(n))
}

impl Core {
    /// Whether `[offset, offset + bytes)` lies within segment `seg`'s (expand-up) limit.
    fn segment_covers(&self, seg: usize, offset: u64, bytes: u64) -> bool {
        let s = &self.s.seg[seg];
        let expand_down = s.type_ & 0xc == 0x4;
        !expand_down && offset.wrapping_add(bytes) <= u64::from(s.limit) + 1
    }
}
