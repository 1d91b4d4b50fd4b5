//! Control transfers: near and far jumps, calls and returns, conditional branches and loops,
//! software interrupts and IRET, SYSCALL/SYSRET, SYSENTER/SYSEXIT, HLT and UD.

use super::super::fault::{Exception, Result, BP, GP, OF as OF_VECTOR};
use super::super::flags::{IF, RF, TF, VM};
use super::super::insn::{addr_mask, size_mask, Insn, MEM};
use super::super::interrupt::Source;
use super::super::segment::{from_descriptor, is_canonical};
use super::super::state::{Segment, CS, EFER_LMA, EFER_SCE, RCX, RSP, SS};
use super::super::task::TaskEntry;
use super::super::Core;

impl Core {
    /// Sets RIP to a near branch target after the mode's checks: canonical in 64-bit mode,
    /// within the CS limit otherwise.
    #[inline(always)]
    pub(crate) fn branch(&mut self, target: u64) -> Result<()> {
        if self.s.mode.code_bits == 64 {
            if !is_canonical(target) {
                return Err(Exception::gp0());
            }
        } else if target > u64::from(self.s.seg[CS].limit) && self.s.mode.protected {
            return Err(Exception::gp0());
        }
        self.s.rip = target;
        Ok(())
    }
}

/// JMP rel.
pub fn jmp_rel(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.branch(i.imm)
}

/// Jcc rel.
pub fn jcc<const CC: u8>(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.flags.condition(CC) {
        cpu.branch(i.imm)?;
        // Blocks continue past conditional branches; a taken one ends the block.
        cpu.end_block = true;
    }
    Ok(())
}

/// LOOP/LOOPE/LOOPNE/JCXZ (`i.cc`: 0 LOOPNE, 1 LOOPE, 2 LOOP, 3 JrCXZ); the counter width is
/// the address size.
pub fn loop_jcxz(cpu: &mut Core, i: &Insn) -> Result<()> {
    let mask = addr_mask(i.asize);
    let count = cpu.s.gpr[RCX] & mask;
    let take = if i.cc == 3 {
        count == 0
    } else {
        let count = count.wrapping_sub(1) & mask;
        cpu.s.gpr[RCX] = (cpu.s.gpr[RCX] & !mask) | count;
        if i.asize == 4 {
            cpu.s.gpr[RCX] = count;
        }
        count != 0
            && match i.cc {
                0 => !cpu.s.flags.zf(),
                1 => cpu.s.flags.zf(),
                _ => true,
            }
    };
    if take {
        cpu.branch(i.imm)?;
        cpu.end_block = true;
    }
    Ok(())
}

/// The target of an indirect branch: register r0 or memory.
fn indirect_target(cpu: &mut Core, i: &Insn) -> Result<u64> {
    let size = u32::from(i.size);
    if i.flags & MEM != 0 {
        cpu.mem_read(i, size)
    } else {
        Ok(cpu.get_reg(i.r0, size))
    }
}

/// JMP r/m.
pub fn jmp_ind(cpu: &mut Core, i: &Insn) -> Result<()> {
    let t = indirect_target(cpu, i)?;
    cpu.branch(t)
}

/// CALL rel.
pub fn call_rel(cpu: &mut Core, i: &Insn) -> Result<()> {
    let ret = cpu.s.rip;
    let sp = cpu.s.gpr[RSP];
    cpu.push(ret, u32::from(i.size))?;
    if let Err(e) = cpu.branch(i.imm) {
        cpu.s.gpr[RSP] = sp;
        return Err(e);
    }
    Ok(())
}

/// CALL r/m.
pub fn call_ind(cpu: &mut Core, i: &Insn) -> Result<()> {
    let t = indirect_target(cpu, i)?;
    let ret = cpu.s.rip;
    let sp = cpu.s.gpr[RSP];
    cpu.push(ret, u32::from(i.size))?;
    if let Err(e) = cpu.branch(t) {
        cpu.s.gpr[RSP] = sp;
        return Err(e);
    }
    Ok(())
}

/// RET [imm16].
pub fn ret_near(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let t = cpu.peek(0, size)?;
    cpu.branch(t)?;
    let sp = cpu.s.gpr[RSP].wrapping_add(u64::from(size) + i.imm);
    cpu.set_sp(sp);
    Ok(())
}

/// Loads CS:RIP for a far JMP or CALL to `sel:offset`: a code segment, or a task.
fn far_transfer(cpu: &mut Core, sel: u16, offset: u64, call: bool, size: u32) -> Result<()> {
    cpu.end_block = true;
    let old_cs = u64::from(cpu.s.seg[CS].selector);
    let old_rip = cpu.s.rip;
    if !cpu.s.mode.protected || cpu.s.mode.v86 {
        if call {
            cpu.push(old_cs, size)?;
            cpu.push(old_rip, size)?;
        }
        cpu.jump_real(sel, offset & size_mask(size));
        return Ok(());
    }
    if sel & 0xfffc == 0 {
        return Err(Exception::gp0());
    }
    let (raw, addr) = cpu.read_descriptor(sel, GP)?;
    let desc = from_descriptor(sel, raw);
    if desc.s == 0 {
        return far_to_task(cpu, sel, &desc, call);
    }
    let cpl = cpu.s.mode.cpl;
    cpu.check_code_descriptor(sel, raw, cpl, true)?;
    let target = offset & size_mask(size);
    let to_64 = cpu.s.mode.long && desc.l != 0;
    if to_64 {
        if !is_canonical(target) {
            return Err(Exception::gp0());
        }
    } else if target > u64::from(desc.limit) {
        return Err(Exception::gp0());
    }
    if call {
        let sp = cpu.s.gpr[RSP];
        cpu.push(old_cs, size)?;
        if let Err(e) = cpu.push(old_rip, size) {
            cpu.s.gpr[RSP] = sp;
            return Err(e);
        }
    }
    cpu.mark_accessed(addr, raw)?;
    cpu.set_cs(sel, raw, cpl);
    cpu.s.rip = target;
    Ok(())
}

/// A far JMP or CALL to the system descriptor `desc` (for `sel`): a task switch through a
/// TSS descriptor or a task gate outside long mode; call gates are not implemented (#GP).
fn far_to_task(cpu: &mut Core, sel: u16, desc: &Segment, call: bool) -> Result<()> {
    let err = u32::from(sel & 0xfffc);
    let entry = if call {
        TaskEntry::Call
    } else {
        TaskEntry::Jmp
    };
    let reachable = desc.dpl >= cpu.s.mode.cpl && desc.dpl >= (sel & 3) as u8;
    if cpu.s.mode.long || !reachable || !matches!(desc.type_, TSS32_AVAILABLE | TASK_GATE) {
        return Err(Exception::gp(err));
    }
    if desc.present == 0 {
        return Err(Exception::np(err));
    }
    let tss = if desc.type_ == TASK_GATE {
        // A task gate's TSS selector sits where a segment's base bits 15..0 do.
        desc.base as u16
    } else {
        sel
    };
    cpu.task_switch(tss, entry, None)
}

/// JMP/CALL ptr16:16/32 (`i.cc` 1 for CALL): selector in `imm2`, offset in `imm`.
pub fn far_direct(cpu: &mut Core, i: &Insn) -> Result<()> {
    far_transfer(cpu, i.imm2, i.imm, i.cc == 1, u32::from(i.size))
}

/// JMP/CALL m16:16/32/64 (`i.cc` 1 for CALL).
pub fn far_indirect(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let off = cpu.ea(i);
    let lin = cpu.linear(i.seg as usize, off, size + 2, false)?;
    let offset = cpu.read_sized(lin, size)?;
    let sel = cpu.read_sized(lin.wrapping_add(u64::from(size)), 2)? as u16;
    far_transfer(cpu, sel, offset, i.cc == 1, size)
}

/// RETF [imm16], including returns to an outer privilege level.
pub fn ret_far(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.end_block = true;
    let size = u32::from(i.size);
    let n = u64::from(size);
    let rip = cpu.peek(0, size)?;
    let sel = cpu.peek(n, size)? as u16;
    if !cpu.s.mode.protected || cpu.s.mode.v86 {
        cpu.jump_real(sel, rip & size_mask(size));
        let sp = cpu.s.gpr[RSP].wrapping_add(2 * n + i.imm);
        cpu.set_sp(sp);
        return Ok(());
    }
    if sel & 0xfffc == 0 {
        return Err(Exception::gp0());
    }
    let cpl = cpu.s.mode.cpl;
    let rpl = (sel & 3) as u8;
    if rpl < cpl {
        return Err(Exception::gp(u32::from(sel & 0xfffc)));
    }
    let (raw, addr) = cpu.read_descriptor(sel, GP)?;
    cpu.check_code_descriptor(sel, raw, rpl, false)?;
    let desc = from_descriptor(sel, raw);
    let conforming = desc.type_ & 0x4 != 0;
    if (conforming && desc.dpl > rpl) || (!conforming && desc.dpl != rpl) {
        return Err(Exception::gp(u32::from(sel & 0xfffc)));
    }
    let target = rip & size_mask(size);
    if rpl == cpl {
        cpu.mark_accessed(addr, raw)?;
        cpu.set_cs(sel, raw, rpl);
        cpu.s.rip = target;
        let sp = cpu.s.gpr[RSP].wrapping_add(2 * n + i.imm);
        cpu.set_sp(sp);
        return Ok(());
    }
    // Return to an outer level: SS:rSP follow CS:rIP and the parameters.
    let new_sp = cpu.peek(2 * n + i.imm, size)?;
    let new_ss = cpu.peek(3 * n + i.imm, size)? as u16;
    let (ss_raw, _) = cpu.read_descriptor(new_ss, GP)?;
    let ss_desc = from_descriptor(new_ss, ss_raw);
    let writable = ss_desc.s != 0 && ss_desc.type_ & 0xa == 0x2;
    if new_ss & 0xfffc == 0 || (new_ss & 3) as u8 != rpl || ss_desc.dpl != rpl || !writable {
        return Err(Exception::gp(u32::from(new_ss & 0xfffc)));
    }
    cpu.mark_accessed(addr, raw)?;
    cpu.set_cs(sel, raw, rpl);
    cpu.s.rip = target;
    cpu.s.seg[SS] = Segment {
        type_: ss_desc.type_ | 1,
        ..ss_desc
    };
    cpu.s.update_mode();
    cpu.set_sp(new_sp.wrapping_add(i.imm));
    cpu.invalidate_segments_for(rpl);
    Ok(())
}

/// INT n (`i.imm`), INT3 (`i.cc` 1), INTO (`i.cc` 2), INT1/ICEBP (`i.cc` 3).
pub fn int(cpu: &mut Core, i: &Insn) -> Result<()> {
    let (vector, source) = match i.cc {
        1 => (BP, Source::Software),
        2 => {
            if !cpu.s.flags.of() {
                return Ok(());
            }
            (OF_VECTOR, Source::Software)
        }
        3 => (1, Source::External),
        _ => (i.imm as u8, Source::Software),
    };
    if cpu.s.mode.v86 && i.cc == 0 && cpu.iopl() < 3 {
        return Err(Exception::gp0());
    }
    // RIP already points past the instruction: these are traps.
    cpu.deliver(vector, None, source)
}

/// IRET/IRETD/IRETQ.
pub fn iret(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.iret(u32::from(i.size))
}

/// SYSCALL.
pub fn syscall(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.efer & EFER_SCE == 0 || cpu.s.efer & EFER_LMA == 0 {
        return Err(Exception::ud());
    }
    cpu.end_block = true;
    let star = cpu.s.msr.star;
    let cs_sel = ((star >> 32) & 0xfffc) as u16;
    let rflags = cpu.s.flags.get();
    cpu.s.gpr[RCX] = cpu.s.rip;
    cpu.s.gpr[11] = rflags & !RF;
    let target = if cpu.s.mode.code_bits == 64 {
        cpu.s.msr.lstar
    } else {
        cpu.s.msr.cstar
    };
    cpu.s.seg[CS] = flat_segment(cs_sel, 0xb, 0, true);
    cpu.s.seg[SS] = flat_segment(cs_sel.wrapping_add(8), 0x3, 0, false);
    cpu.s.flags.set(rflags & !cpu.s.msr.fmask & !RF);
    cpu.s.update_mode();
    cpu.s.rip = target;
    // SYSCALL and SYSRET trap on the TF they leave, not on the TF they found.
    cpu.single_step = cpu.s.flags.has(TF);
    Ok(())
}

/// A flat segment as SYSCALL/SYSRET/SYSENTER/SYSEXIT load them.
fn flat_segment(selector: u16, type_: u8, dpl: u8, code64: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64 && type_ & 8 != 0),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Descriptor types a far JMP/CALL can switch tasks through.
const TSS32_AVAILABLE: u8 = 0x9;
const TASK_GATE: u8 = 0x5;

/// The RFLAGS bits SYSRET loads from R11.
const SYSRET_FLAGS: u64 = 0x3c_7fd7;

/// SYSRET (`i.size` 8 returns to 64-bit code, 4 to compatibility mode).
pub fn sysret(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.efer & EFER_SCE == 0 || cpu.s.efer & EFER_LMA == 0 {
        return Err(Exception::ud());
    }
    if cpu.s.mode.cpl != 0 || cpu.s.mode.code_bits != 64 {
        return Err(Exception::gp0());
    }
    cpu.end_block = true;
    let base = ((cpu.s.msr.star >> 48) & 0xffff) as u16;
    let to_64 = i.size == 8;
    let rip = cpu.s.gpr[RCX];
    if to_64 && !is_canonical(rip) {
        return Err(Exception::gp0());
    }
    let cs_sel = if to_64 { base.wrapping_add(16) } else { base } | 3;
    cpu.s.seg[CS] = flat_segment(cs_sel, 0xb, 3, to_64);
    if !to_64 {
        cpu.s.seg[CS].db = 1;
    }
    // SS keeps its cached attributes apart from selector and DPL.
    cpu.s.seg[SS] = flat_segment(base.wrapping_add(8) | 3, 0x3, 3, false);
    // RF and VM come back clear, the reserved bit 1 set.
    cpu.s.flags.set((cpu.s.gpr[11] & SYSRET_FLAGS) | 2);
    cpu.s.update_mode();
    cpu.s.rip = if to_64 { rip } else { rip & 0xffff_ffff };
    cpu.single_step = cpu.s.flags.has(TF);
    Ok(())
}

/// SYSENTER.
pub fn sysenter(cpu: &mut Core, _: &Insn) -> Result<()> {
    let cs_sel = (cpu.s.msr.sysenter_cs & 0xfffc) as u16;
    if !cpu.s.mode.protected || cs_sel == 0 {
        return Err(Exception::gp0());
    }
    cpu.end_block = true;
    let long = cpu.s.efer & EFER_LMA != 0;
    cpu.s.flags.assign(VM, false);
    cpu.s.flags.assign(IF, false);
    cpu.s.flags.assign(RF, false);
    cpu.s.seg[CS] = flat_segment(cs_sel, 0xb, 0, long);
    cpu.s.seg[SS] = flat_segment(cs_sel.wrapping_add(8), 0x3, 0, false);
    cpu.s.update_mode();
    let (esp, eip) = (cpu.s.msr.sysenter_esp, cpu.s.msr.sysenter_eip);
    if long {
        cpu.s.gpr[RSP] = esp;
        cpu.s.rip = eip;
    } else {
        cpu.s.gpr[RSP] = esp & 0xffff_ffff;
        cpu.s.rip = eip & 0xffff_ffff;
    }
    Ok(())
}

/// SYSEXIT (`i.size` 8 returns to 64-bit code).
pub fn sysexit(cpu: &mut Core, i: &Insn) -> Result<()> {
    let base = (cpu.s.msr.sysenter_cs & 0xfffc) as u16;
    if !cpu.s.mode.protected || cpu.s.mode.cpl != 0 || base == 0 {
        return Err(Exception::gp0());
    }
    cpu.end_block = true;
    let to_64 = i.size == 8;
    let (cs_off, ss_off) = if to_64 { (32, 40) } else { (16, 24) };
    cpu.s.seg[CS] = flat_segment(base.wrapping_add(cs_off) | 3, 0xb, 3, to_64);
    cpu.s.seg[SS] = flat_segment(base.wrapping_add(ss_off) | 3, 0x3, 3, false);
    cpu.s.update_mode();
    let (rsp, rip) = (
        cpu.s.gpr[super::super::state::RCX],
        cpu.s.gpr[super::super::state::RDX],
    );
    if to_64 {
        cpu.s.gpr[RSP] = rsp;
        cpu.s.rip = rip;
    } else {
        cpu.s.gpr[RSP] = rsp & 0xffff_ffff;
        cpu.s.rip = rip & 0xffff_ffff;
    }
    Ok(())
}

/// HLT: privileged; stops the vCPU until an interrupt.
pub fn hlt(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.mode.cpl != 0 {
        return Err(Exception::gp0());
    }
    cpu.halted = true;
    cpu.end_block = true;
    Ok(())
}

/// UD0/UD1/UD2 and anything the decoder rejects.
pub fn undefined(_: &mut Core, _: &Insn) -> Result<()> {
    Err(Exception::ud())
}

/// A privileged instruction executed outside ring 0 (checked by handlers as needed).
pub fn require_cpl0(cpu: &Core) -> Result<()> {
    if cpu.s.mode.protected && cpu.s.mode.cpl != 0 {
        return Err(Exception::gp0());
    }
    Ok(())
}
