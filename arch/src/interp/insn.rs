//! A decoded instruction, ready to execute: its handler and pre-resolved operands.
//!
//! Decoding happens once per basic block (see `block.rs`); executing an instruction is a call
//! through `exec` with everything it needs already in the struct, so the hot path allocates
//! nothing and re-decodes nothing.

use iced_x86::Mnemonic;

use super::fault::Result;
use super::Core;

/// Executes one decoded instruction. `cpu.s.rip` already points at the next instruction.
pub type Handler = fn(&mut Core, &Insn) -> Result<()>;

/// Index of the always-zero register, used for absent base/index registers.
pub const ZERO: u8 = 16;
/// Flag in a byte-register index meaning AH, CH, DH or BH.
pub const HIGH_BYTE: u8 = 0x20;

/// One decoded instruction.
#[derive(Clone)]
pub struct Insn {
    /// The handler.
    pub exec: Handler,
    /// RIP of the next instruction.
    pub next: u64,
    /// Immediate, branch target or other constant.
    pub imm: u64,
    /// Memory displacement (absolute address for RIP-relative operands).
    pub disp: u64,
    /// Second constant (a second immediate, far selector, ENTER nesting level, an operand
    /// width): always 16 bits or less.
    pub imm2: u16,
    /// Length in bytes.
    pub len: u8,
    /// Operand size in bytes (1, 2, 4, 8; 16 for XMM).
    pub size: u8,
    /// Address size in bytes (2, 4, 8).
    pub asize: u8,
    /// First register operand (destination): a GPR index, possibly with [`HIGH_BYTE`], or
    /// another register file's index, depending on the handler.
    pub r0: u8,
    /// Second register operand (source).
    pub r1: u8,
    /// Memory operand base register, or [`ZERO`].
    pub base: u8,
    /// Memory operand index register, or [`ZERO`].
    pub index: u8,
    /// Memory operand index scale as a shift (0..3).
    pub scale: u8,
    /// Memory operand segment.
    pub seg: u8,
    /// Condition code, sub-operation or other handler-specific selector.
    pub cc: u8,
    /// Handler-specific flags (e.g. LOCK, REP kind).
    pub flags: u8,
    /// The mnemonic, for handlers that serve a family of instructions.
    pub op: Mnemonic,
}

/// `flags`: the instruction has a LOCK prefix.
pub const LOCK: u8 = 1;
/// `flags`: REP/REPE prefix.
pub const REP: u8 = 2;
/// `flags`: REPNE prefix.
pub const REPNE: u8 = 4;
/// `flags`: the memory operand is the destination (first) operand.
pub const MEM_DST: u8 = 8;
/// `flags`: one operand is in memory.
pub const MEM: u8 = 16;

/// Address mask for an address size in bytes.
#[inline(always)]
pub fn addr_mask(asize: u8) -> u64 {
    match asize {
        8 => u64::MAX,
        4 => 0xffff_ffff,
        _ => 0xffff,
    }
}

/// Value mask for an operand size in bytes.
#[inline(always)]
pub fn size_mask(size: u32) -> u64 {
    match size {
        8 => u64::MAX,
        4 => 0xffff_ffff,
        2 => 0xffff,
        _ => 0xff,
    }
}

/// Sign-extends the low `size` bytes of `v`.
#[inline(always)]
pub fn sign_extend(v: u64, size: u32) -> u64 {
    match size {
        8 => v,
        4 => v as u32 as i32 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        _ => v as u8 as i8 as i64 as u64,
    }
}

impl Core {
    /// Whether data accesses are user-mode accesses (CPL 3).
    #[inline(always)]
    pub(crate) fn user(&self) -> bool {
        self.s.mode.cpl == 3
    }

    /// The effective address (offset) of the memory operand.
    #[inline(always)]
    pub(crate) fn ea(&self, i: &Insn) -> u64 {
        let a = i
            .disp
            .wrapping_add(self.s.gpr[i.base as usize])
            .wrapping_add(self.s.gpr[i.index as usize] << i.scale);
        a & addr_mask(i.asize)
    }

    /// Reads `size` bytes at linear `lin` with the current privilege.
    #[inline(always)]
    pub(crate) fn read_sized(&mut self, lin: u64, size: u32) -> Result<u64> {
        let user = self.user();
        match size {
            1 => self.read_lin::<1>(lin, user),
            2 => self.read_lin::<2>(lin, user),
            4 => self.read_lin::<4>(lin, user),
            _ => self.read_lin::<8>(lin, user),
        }
    }

    /// Writes `size` bytes at linear `lin` with the current privilege.
    #[inline(always)]
    pub(crate) fn write_sized(&mut self, lin: u64, size: u32, value: u64) -> Result<()> {
        let user = self.user();
        match size {
            1 => self.write_lin::<1>(lin, value, user),
            2 => self.write_lin::<2>(lin, value, user),
            4 => self.write_lin::<4>(lin, value, user),
            _ => self.write_lin::<8>(lin, value, user),
        }
    }

    /// Reads the instruction's memory operand at width `size`.
    #[inline(always)]
    pub(crate) fn mem_read(&mut self, i: &Insn, size: u32) -> Result<u64> {
        let lin = self.linear(i.seg as usize, self.ea(i), size, false)?;
        self.read_sized(lin, size)
    }

    /// Reads the memory operand of a read-modify-write instruction: its pages are translated
    /// for writing first, so a fault reports a write access and nothing is half done.
    #[inline(always)]
    pub(crate) fn mem_read_rmw(&mut self, i: &Insn, size: u32) -> Result<u64> {
        let lin = self.linear(i.seg as usize, self.ea(i), size, true)?;
        let user = self.user();
        match size {
            1 => self.read_lin_for_write::<1>(lin, user),
            2 => self.read_lin_for_write::<2>(lin, user),
            4 => self.read_lin_for_write::<4>(lin, user),
            _ => self.read_lin_for_write::<8>(lin, user),
        }
    }

    /// Writes the instruction's memory operand at width `size`.
    #[inline(always)]
    pub(crate) fn mem_write(&mut self, i: &Insn, size: u32, value: u64) -> Result<()> {
        let lin = self.linear(i.seg as usize, self.ea(i), size, true)?;
        self.write_sized(lin, size, value)
    }

    /// Reads a GPR operand (`index` may carry [`HIGH_BYTE`]).
    #[inline(always)]
    pub(crate) fn get_reg(&self, index: u8, size: u32) -> u64 {
        if index & HIGH_BYTE != 0 {
            (self.s.gpr[(index & 0xf) as usize] >> 8) & 0xff
        } else {
            self.s.gpr[index as usize] & size_mask(size)
        }
    }

    /// Writes a GPR operand with x86 width rules.
    #[inline(always)]
    pub(crate) fn put_reg(&mut self, index: u8, size: u32, value: u64) {
        let r = &mut self.s.gpr[(index & 0xf) as usize];
        match size {
            8 => *r = value,
            4 => *r = value & 0xffff_ffff,
            2 => *r = (*r & !0xffff) | (value & 0xffff),
            _ => {
                if index & HIGH_BYTE != 0 {
                    *r = (*r & !0xff00) | ((value & 0xff) << 8);
                } else {
                    *r = (*r & !0xff) | (value & 0xff);
                }
            }
        }
    }

    /// Reads operand 0 (register `r0`, or memory when `MEM_DST`).
    #[inline(always)]
    pub(crate) fn read_op0(&mut self, i: &Insn) -> Result<u64> {
        let size = u32::from(i.size);
        if i.flags & MEM_DST != 0 {
            self.mem_read(i, size)
        } else {
            Ok(self.get_reg(i.r0, size))
        }
    }

    /// Reads operand 0 of a read-modify-write instruction (see [`Core::mem_read_rmw`]).
    #[inline(always)]
    pub(crate) fn read_op0_rmw(&mut self, i: &Insn) -> Result<u64> {
        let size = u32::from(i.size);
        if i.flags & MEM_DST != 0 {
            self.mem_read_rmw(i, size)
        } else {
            Ok(self.get_reg(i.r0, size))
        }
    }

    /// Writes operand 0.
    #[inline(always)]
    pub(crate) fn write_op0(&mut self, i: &Insn, value: u64) -> Result<()> {
        let size = u32::from(i.size);
        if i.flags & MEM_DST != 0 {
            self.mem_write(i, size, value)
        } else {
            self.put_reg(i.r0, size, value);
            Ok(())
        }
    }

    /// Reads operand 1 (memory when `MEM` without `MEM_DST`, else register `r1`).
    #[inline(always)]
    pub(crate) fn read_op1(&mut self, i: &Insn) -> Result<u64> {
        let size = u32::from(i.size);
        if i.flags & (MEM | MEM_DST) == MEM {
            self.mem_read(i, size)
        } else {
            Ok(self.get_reg(i.r1, size))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoded blocks are mostly read once or twice during a boot, so their size is cache
    /// misses: keep an instruction within 48 bytes.
    #[test]
    fn decoded_instructions_stay_small() {
        assert!(
            std::mem::size_of::<Insn>() <= 48,
            "{}",
            std::mem::size_of::<Insn>()
        );
    }
}
