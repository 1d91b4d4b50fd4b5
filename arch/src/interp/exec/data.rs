//! Data movement: MOV and its widening forms, XCHG, LEA, the stack (PUSH/POP and friends),
//! segment register moves, XLAT and MOVBE.

use super::super::fault::{Exception, Result};
use super::super::flags::{AC, ARITH, DF, ID, IF, IOPL, NT, RF, TF, VM};
use super::super::insn::{addr_mask, sign_extend, size_mask, Insn, MEM, MEM_DST};
use super::super::state::{Shadow, RAX, RBP, RBX, RSP, SS};
use super::super::Core;

impl Core {
    /// The stack pointer mask for the current stack width.
    #[inline(always)]
    fn sp_mask(&self) -> u64 {
        size_mask(self.s.mode.stack_bits / 8)
    }

    /// Sets the stack pointer, changing only SP/ESP for 16/32-bit stacks.
    #[inline(always)]
    pub(crate) fn set_sp(&mut self, value: u64) {
        match self.s.mode.stack_bits {
            64 => self.s.gpr[RSP] = value,
            32 => self.s.gpr[RSP] = value & 0xffff_ffff,
            _ => self.s.gpr[RSP] = (self.s.gpr[RSP] & !0xffff) | (value & 0xffff),
        }
    }

    /// Pushes `size` bytes of `value`.
    #[inline(always)]
    pub(crate) fn push(&mut self, value: u64, size: u32) -> Result<()> {
        let sp = self.s.gpr[RSP].wrapping_sub(u64::from(size)) & self.sp_mask();
        let lin = self.linear(SS, sp, size, true)?;
        self.write_sized(lin, size, value)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Reads `size` bytes at the top of the stack plus `offset`, without popping.
    #[inline(always)]
    pub(crate) fn peek(&mut self, offset: u64, size: u32) -> Result<u64> {
        let sp = self.s.gpr[RSP].wrapping_add(offset) & self.sp_mask();
        let lin = self.linear(SS, sp, size, false)?;
        self.read_sized(lin, size)
    }

    /// Pops `size` bytes.
    #[inline(always)]
    pub(crate) fn pop(&mut self, size: u32) -> Result<u64> {
        let v = self.peek(0, size)?;
        let sp = self.s.gpr[RSP].wrapping_add(u64::from(size));
        self.set_sp(sp);
        Ok(v)
    }
}

/// MOV reg, reg.
pub fn mov_rr<const SIZE: u32>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.get_reg(i.r1, SIZE);
    cpu.put_reg(i.r0, SIZE, v);
    Ok(())
}

/// MOV reg, imm.
pub fn mov_ri(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.put_reg(i.r0, u32::from(i.size), i.imm);
    Ok(())
}

/// MOV reg, [mem].
pub fn mov_rm<const SIZE: u32>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.mem_read(i, SIZE)?;
    cpu.put_reg(i.r0, SIZE, v);
    Ok(())
}

/// MOV [mem], reg.
pub fn mov_mr<const SIZE: u32>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.get_reg(i.r1, SIZE);
    cpu.mem_write(i, SIZE, v)
}

/// MOV [mem], imm.
pub fn mov_mi(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.mem_write(i, u32::from(i.size), i.imm)
}

/// MOVZX/MOVSX/MOVSXD from a `FROM`-byte source, sign-extending when `SIGNED`.
pub fn mov_extend<const FROM: u32, const SIGNED: bool>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = if i.flags & MEM != 0 {
        cpu.mem_read(i, FROM)?
    } else {
        cpu.get_reg(i.r1, FROM)
    };
    let v = if SIGNED { sign_extend(v, FROM) } else { v };
    cpu.put_reg(i.r0, u32::from(i.size), v);
    Ok(())
}

/// LEA.
pub fn lea(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.ea(i);
    cpu.put_reg(i.r0, u32::from(i.size), v);
    Ok(())
}

/// XCHG (always locked when memory is involved; atomic on the host).
pub fn xchg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let b = cpu.get_reg(i.r1, size);
    let a = if i.flags & MEM_DST != 0 {
        super::alu::locked_rmw(cpu, i, size, |_| b)?
    } else {
        let a = cpu.get_reg(i.r0, size);
        cpu.put_reg(i.r0, size, b);
        a
    };
    cpu.put_reg(i.r1, size, a);
    Ok(())
}

/// PUSH of register r0, `SIZE` bytes.
pub fn push_reg<const SIZE: u32>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.get_reg(i.r0, SIZE);
    cpu.push(v, SIZE)
}

/// POP into register r0, `SIZE` bytes.
pub fn pop_reg<const SIZE: u32>(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = cpu.pop(SIZE)?;
    cpu.put_reg(i.r0, SIZE, v);
    Ok(())
}

/// PUSH reg/[mem]/imm (`i.cc`: 0 register r0, 1 memory, 2 immediate).
pub fn push(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let v = match i.cc {
        0 => cpu.get_reg(i.r0, size),
        1 => cpu.mem_read(i, size)?,
        _ => i.imm,
    };
    cpu.push(v, size)
}

/// POP reg/[mem]. A memory destination addressed through RSP uses the incremented RSP.
pub fn pop(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    if i.flags & MEM_DST != 0 {
        let v = cpu.peek(0, size)?;
        let old_sp = cpu.s.gpr[RSP];
        cpu.set_sp(old_sp.wrapping_add(u64::from(size)));
        if let Err(e) = cpu.mem_write(i, size, v) {
            cpu.s.gpr[RSP] = old_sp;
            return Err(e);
        }
        return Ok(());
    }
    let v = cpu.pop(size)?;
    cpu.put_reg(i.r0, size, v);
    Ok(())
}

/// PUSH segment register (`i.r0`); 16-bit selector, zero-extended.
pub fn push_sreg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let sel = u64::from(cpu.s.seg[i.r0 as usize].selector);
    cpu.push(sel, u32::from(i.size))
}

/// POP segment register.
pub fn pop_sreg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let sel = cpu.peek(0, size)? as u16;
    cpu.load_segment(i.r0 as usize, sel)?;
    let sp = cpu.s.gpr[RSP].wrapping_add(u64::from(size));
    cpu.set_sp(sp);
    if i.r0 as usize == SS {
        cpu.s.interrupt_shadow = Shadow::MovSs;
        cpu.end_block = true;
    }
    Ok(())
}

/// MOV sreg, r/m16.
pub fn mov_to_sreg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let sel = if i.flags & MEM != 0 {
        cpu.mem_read(i, 2)?
    } else {
        cpu.get_reg(i.r1, 2)
    } as u16;
    if i.r0 == 1 {
        return Err(Exception::ud());
    }
    cpu.load_segment(i.r0 as usize, sel)?;
    if i.r0 as usize == SS {
        cpu.s.interrupt_shadow = Shadow::MovSs;
    }
    cpu.end_block = true;
    Ok(())
}

/// LDS/LES/LSS/LFS/LGS: loads the far pointer at the memory operand into segment `r1` and
/// general register `r0`; neither changes if the segment load faults.
pub fn load_far_pointer(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let lin = cpu.linear(i.seg as usize, cpu.ea(i), size + 2, false)?;
    let offset = cpu.read_sized(lin, size)?;
    let sel = cpu.read_sized(lin.wrapping_add(u64::from(size)), 2)? as u16;
    cpu.load_segment(i.r1 as usize, sel)?;
    if i.r1 as usize == SS {
        cpu.s.interrupt_shadow = Shadow::MovSs;
    }
    cpu.put_reg(i.r0, size, offset);
    cpu.end_block = true;
    Ok(())
}

/// MOV r/m, sreg: stores the selector (register destinations are zero-extended).
pub fn mov_from_sreg(cpu: &mut Core, i: &Insn) -> Result<()> {
    let sel = u64::from(cpu.s.seg[i.r1 as usize].selector);
    if i.flags & MEM_DST != 0 {
        cpu.mem_write(i, 2, sel)
    } else {
        cpu.put_reg(i.r0, u32::from(i.size), sel);
        Ok(())
    }
}

/// PUSHF: RFLAGS with VM and RF cleared.
pub fn pushf(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.mode.v86 && cpu.iopl() < 3 {
        return Err(Exception::gp0());
    }
    let v = cpu.s.flags.get() & !(VM | RF);
    cpu.push(v, u32::from(i.size))
}

impl Core {
    /// RFLAGS.IOPL.
    #[inline]
    pub(crate) fn iopl(&self) -> u8 {
        ((self.s.flags.get() & IOPL) >> 12) as u8
    }

    /// Writes RFLAGS as POPF/IRET do at the current privilege: IOPL only at CPL 0, IF only
    /// when CPL <= IOPL, VM/VIP/VIF never (they are kept); `size` 2 touches the low 16 bits.
    pub(crate) fn write_flags_checked(&mut self, value: u64, size: u32) {
        let mut changeable = ARITH | TF | IF | DF | IOPL | NT | AC | ID;
        if self.s.mode.protected {
            if self.s.mode.cpl > 0 {
                changeable &= !IOPL;
            }
            if self.s.mode.cpl > self.iopl() {
                changeable &= !IF;
            }
        }
        if size == 2 {
            changeable &= 0xffff;
        }
        let old = self.s.flags.get();
        self.s.flags.set((old & !changeable) | (value & changeable));
    }
}

/// POPF. The block ends only when the dispatcher has something to do: interrupts that may
/// have become deliverable (IF set) or single-stepping (TF); a POPF that restores a cleared
/// IF, as `local_irq_restore` does, goes on.
pub fn popf(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    if cpu.s.mode.v86 && cpu.iopl() < 3 {
        return Err(Exception::gp0());
    }
    let before = cpu.s.flags.get();
    let v = cpu.pop(size)?;
    cpu.write_flags_checked(v, size);
    let after = cpu.s.flags.get();
    if after & !before & IF != 0 || after & TF != 0 {
        cpu.end_block = true;
    }
    Ok(())
}

/// PUSHA/PUSHAD.
pub fn pusha(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let sp = cpu.s.gpr[RSP];
    let regs = [0, 1, 2, 3, 4, 5, 6, 7].map(|r| if r == RSP { sp } else { cpu.s.gpr[r] });
    let start = sp;
    for v in regs {
        if let Err(e) = cpu.push(v, size) {
            cpu.s.gpr[RSP] = start;
            return Err(e);
        }
    }
    Ok(())
}

/// POPA/POPAD (the saved SP is discarded).
pub fn popa(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = cpu.peek(u64::from(size) * k as u64, size)?;
    }
    for (k, r) in [7usize, 6, 5, 4, 3, 2, 1, 0].into_iter().enumerate() {
        if r != RSP {
            cpu.put_reg(r as u8, size, vals[k]);
        }
    }
    let sp = cpu.s.gpr[RSP].wrapping_add(8 * u64::from(size));
    cpu.set_sp(sp);
    Ok(())
}

/// ENTER imm16, imm8 (`i.imm` frame size, `i.imm2` nesting level).
pub fn enter(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let level = u64::from(i.imm2 & 31);
    let saved = (cpu.s.gpr[RSP], cpu.s.gpr[RBP]);
    let result = (|| {
        let bp = cpu.s.gpr[RBP];
        cpu.push(bp, size)?;
        let frame = cpu.s.gpr[RSP] & size_mask(cpu.s.mode.stack_bits / 8);
        for n in 1..level {
            let at = bp.wrapping_sub(u64::from(size) * n) & size_mask(cpu.s.mode.stack_bits / 8);
            let lin = cpu.linear(SS, at, size, false)?;
            let v = cpu.read_sized(lin, size)?;
            cpu.push(v, size)?;
        }
        if level > 0 {
            cpu.push(frame, size)?;
        }
        // Probe the lowest byte of the new frame, as hardware does.
        let new_sp = cpu.s.gpr[RSP].wrapping_sub(i.imm) & size_mask(cpu.s.mode.stack_bits / 8);
        if i.imm > 0 {
            let lin = cpu.linear(SS, new_sp, 1, true)?;
            cpu.read_sized(lin, 1)?;
        }
        cpu.put_reg(RBP as u8, size, frame);
        cpu.set_sp(new_sp);
        Ok(())
    })();
    if result.is_err() {
        (cpu.s.gpr[RSP], cpu.s.gpr[RBP]) = saved;
    }
    result
}

/// LEAVE.
pub fn leave(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let saved = cpu.s.gpr[RSP];
    let bp = cpu.s.gpr[RBP];
    cpu.set_sp(bp);
    match cpu.pop(size) {
        Ok(v) => {
            cpu.put_reg(RBP as u8, size, v);
            Ok(())
        }
        Err(e) => {
            cpu.s.gpr[RSP] = saved;
            Err(e)
        }
    }
}

/// XLAT: AL = [seg:rBX + AL].
pub fn xlat(cpu: &mut Core, i: &Insn) -> Result<()> {
    let off = cpu.s.gpr[RBX].wrapping_add(cpu.s.gpr[RAX] & 0xff) & addr_mask(i.asize);
    let lin = cpu.linear(i.seg as usize, off, 1, false)?;
    let v = cpu.read_sized(lin, 1)?;
    cpu.put_reg(RAX as u8, 1, v);
    Ok(())
}

/// MOVBE: byte-swapping load or store.
pub fn movbe(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let swap = |v: u64| match size {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        _ => u64::from((v as u16).swap_bytes()),
    };
    if i.flags & MEM_DST != 0 {
        let v = cpu.get_reg(i.r1, size);
        cpu.mem_write(i, size, swap(v))
    } else {
        let v = cpu.mem_read(i, size)?;
        cpu.put_reg(i.r0, size, swap(v));
        Ok(())
    }
}

/// Instructions with no architectural effect here (NOP, PAUSE, fences, prefetches, cache
/// flushes of coherent memory). Never inlined: small functions may otherwise get a copy in
/// each codegen unit, and the translator recognises handlers by address.
#[inline(never)]
pub fn nop(_: &mut Core, _: &Insn) -> Result<()> {
    Ok(())
}

/// A memory-operand NOP-like instruction that still checks its operand (CLFLUSH).
pub fn touch(cpu: &mut Core, i: &Insn) -> Result<()> {
    let lin = cpu.linear(i.seg as usize, cpu.ea(i), 1, false)?;
    cpu.read_sized(lin, 1)?;
    Ok(())
}
