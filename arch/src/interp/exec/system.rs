//! System instructions: control and debug registers, descriptor tables, task and LDT
//! registers, TLB and cache control, MSRs, time stamps, port I/O, interrupt flag, CPUID.

use super::super::fault::{Exception, Result, GP};
use super::super::flags::{AC, IF, ZF};
use super::super::insn::{size_mask, Insn, MEM, MEM_DST};
use super::super::segment::{from_descriptor, is_canonical};
use super::super::state::*;
use super::super::Core;
use super::control::require_cpl0;

/// MOV CRn, reg (`i.r0` = n, value in register `i.r1`).
pub fn mov_to_cr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    let v = cpu.get_reg(i.r1, size);
    cpu.end_block = true;
    match i.r0 {
        0 => cpu.write_cr0(v),
        2 => {
            cpu.s.cr2 = v;
            Ok(())
        }
        3 => {
            cpu.s.cr3 = v & if cpu.s.mode.long {
                0x000f_ffff_ffff_f000
            } else {
                0xffff_ffe0
            };
            let keep_global = cpu.s.cr4 & CR4_PGE != 0;
            cpu.tlb.flush(keep_global);
            Ok(())
        }
        4 => cpu.write_cr4(v),
        8 => {
            if v & !0xf != 0 {
                return Err(Exception::gp0());
            }
            cpu.set_cr8(v);
            Ok(())
        }
        _ => Err(Exception::ud()),
    }
}

impl Core {
    /// CR0 writes with their consistency checks and long-mode activation.
    pub(crate) fn write_cr0(&mut self, value: u64) -> Result<()> {
        let v = (value & 0xffff_ffff) | CR0_ET;
        if value >> 32 != 0 && self.s.mode.long {
            return Err(Exception::gp0());
        }
        if v & CR0_PG != 0 && v & CR0_PE == 0 {
            return Err(Exception::gp0());
        }
        if v & CR0_NW != 0 && v & CR0_CD == 0 {
            return Err(Exception::gp0());
        }
        let enabling_paging = v & CR0_PG != 0 && self.s.cr0 & CR0_PG == 0;
        let disabling_paging = v & CR0_PG == 0 && self.s.cr0 & CR0_PG != 0;
        if enabling_paging && self.s.efer & EFER_LME != 0 {
            if self.s.cr4 & CR4_PAE == 0 || self.s.seg[CS].l != 0 {
                return Err(Exception::gp0());
            }
            self.s.efer |= EFER_LMA;
        }
        if disabling_paging && self.s.mode.long {
            if self.s.mode.code_bits == 64 {
                return Err(Exception::gp0());
            }
            self.s.efer &= !EFER_LMA;
        }
        let flush = (v ^ self.s.cr0) & (CR0_PG | CR0_WP | CR0_PE) != 0;
        self.s.cr0 = v;
        if flush {
            self.tlb.flush(false);
        }
        self.s.update_mode();
        Ok(())
    }

    /// CR4 writes: unsupported bits raise #GP; paging-related changes flush the TLB.
    pub(crate) fn write_cr4(&mut self, value: u64) -> Result<()> {
        if value & !CR4_SUPPORTED != 0 {
            return Err(Exception::gp0());
        }
        if self.s.mode.long && value & CR4_PAE == 0 {
            return Err(Exception::gp0());
        }
        let paging_bits = CR4_PGE | CR4_PAE | CR4_PSE | CR4_SMEP | CR4_SMAP | CR4_PKE | CR4_PKS;
        let flush = (value ^ self.s.cr4) & paging_bits != 0;
        self.s.cr4 = value;
        if flush {
            self.tlb.flush(false);
        }
        Ok(())
    }
}

/// MOV reg, CRn.
pub fn mov_from_cr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let v = match i.r1 {
        0 => cpu.s.cr0,
        2 => cpu.s.cr2,
        3 => cpu.s.cr3,
        4 => cpu.s.cr4,
        8 => cpu.cr8(),
        _ => return Err(Exception::ud()),
    };
    let size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    cpu.put_reg(i.r0, size, v);
    Ok(())
}

/// DR6 bits software can write: B0-B3, BD, BS, BT.
const DR6_WRITABLE: u64 = 0xe00f;
/// DR6 bits that read as one (the reserved bits and the active-low RTM bit, without RTM).
const DR6_FIXED: u64 = 0xffff_0ff0;
/// DR7 bits software can write: enables, LE/GE, GD, and the four R/W and LEN fields.
const DR7_WRITABLE: u64 = 0xffff_23ff;
/// DR7 bit 10 reads as one.
const DR7_FIXED: u64 = 0x400;

/// DR index into `State::dr` (DR4/DR5 alias DR6/DR7 unless CR4.DE).
fn dr_slot(cpu: &Core, n: u8) -> Result<usize> {
    match n {
        0..=3 => Ok(usize::from(n)),
        4 | 5 if cpu.s.cr4 & CR4_DE != 0 => Err(Exception::ud()),
        4 | 6 => Ok(4),
        _ => Ok(5),
    }
}

/// MOV DRn, reg.
pub fn mov_to_dr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let slot = dr_slot(cpu, i.r0)?;
    let size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    let v = cpu.get_reg(i.r1, size);
    cpu.s.dr[slot] = match slot {
        0..=3 => v,
        _ if v >> 32 != 0 => return Err(Exception::gp0()),
        4 => (v & DR6_WRITABLE) | DR6_FIXED,
        _ => (v & DR7_WRITABLE) | DR7_FIXED,
    };
    Ok(())
}

/// MOV reg, DRn.
pub fn mov_from_dr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let slot = dr_slot(cpu, i.r1)?;
    let size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    cpu.put_reg(i.r0, size, cpu.s.dr[slot]);
    Ok(())
}

/// LGDT (`i.cc` 0) / LIDT (1): a 16-bit limit and a 24/32/64-bit base.
pub fn load_dtr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let off = cpu.ea(i);
    let base_size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    let lin = cpu.linear(i.seg as usize, off, 2 + base_size, false)?;
    let limit = cpu.read_sized(lin, 2)? as u16;
    let mut base = cpu.read_sized(lin.wrapping_add(2), base_size)?;
    if base_size == 4 && i.size == 2 {
        base &= 0x00ff_ffff;
    }
    if base_size == 8 && !is_canonical(base) {
        return Err(Exception::gp0());
    }
    let table = DescTable { base, limit };
    if i.cc == 0 {
        cpu.s.gdt = table;
    } else {
        cpu.s.idt = table;
    }
    Ok(())
}

/// SGDT (`i.cc` 0) / SIDT (1).
pub fn store_dtr(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_umip(cpu)?;
    let table = if i.cc == 0 { cpu.s.gdt } else { cpu.s.idt };
    let base_size = if cpu.s.mode.code_bits == 64 { 8 } else { 4 };
    let off = cpu.ea(i);
    let lin = cpu.linear(i.seg as usize, off, 2 + base_size, true)?;
    cpu.write_sized(lin, 2, u64::from(table.limit))?;
    cpu.write_sized(lin.wrapping_add(2), base_size, table.base)
}

fn check_umip(cpu: &Core) -> Result<()> {
    if cpu.s.cr4 & CR4_UMIP != 0 && cpu.s.mode.cpl > 0 {
        return Err(Exception::gp0());
    }
    Ok(())
}

/// Reads a 16-bit selector operand (register r1 or memory).
fn selector_operand(cpu: &mut Core, i: &Insn) -> Result<u16> {
    Ok(if i.flags & MEM != 0 {
        cpu.mem_read(i, 2)?
    } else {
        cpu.get_reg(i.r1, 2)
    } as u16)
}

/// Reads a system descriptor (16 bytes in long mode) for LLDT/LTR.
fn system_descriptor(cpu: &mut Core, sel: u16) -> Result<(Segment, u64)> {
    if sel & 4 != 0 {
        return Err(Exception::gp(u32::from(sel & 0xfffc)));
    }
    let (raw, addr) = cpu.read_descriptor(sel, GP)?;
    let mut seg = from_descriptor(sel, raw);
    if cpu.s.mode.long {
        if u64::from(sel & 0xfff8) + 15 > u64::from(cpu.s.gdt.limit) {
            return Err(Exception::gp(u32::from(sel & 0xfffc)));
        }
        let high = cpu.read_lin::<8>(addr + 8, false)?;
        seg.base |= (high & 0xffff_ffff) << 32;
        // The upper half's type field must be zero, and the base canonical.
        if (high >> 40) & 0x1f != 0 || !is_canonical(seg.base) {
            return Err(Exception::gp(u32::from(sel & 0xfffc)));
        }
    }
    Ok((seg, addr))
}

/// LLDT.
pub fn lldt(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let sel = selector_operand(cpu, i)?;
    if sel & 0xfffc == 0 {
        cpu.s.ldt = Segment {
            selector: sel,
            unusable: 1,
            ..Default::default()
        };
        return Ok(());
    }
    let (seg, _) = system_descriptor(cpu, sel)?;
    if seg.s != 0 || seg.type_ != 2 {
        return Err(Exception::gp(u32::from(sel & 0xfffc)));
    }
    if seg.present == 0 {
        return Err(Exception::np(u32::from(sel & 0xfffc)));
    }
    cpu.s.ldt = seg;
    Ok(())
}

/// LTR: loads an available TSS and marks it busy.
pub fn ltr(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let sel = selector_operand(cpu, i)?;
    if sel & 0xfffc == 0 {
        return Err(Exception::gp0());
    }
    let (seg, addr) = system_descriptor(cpu, sel)?;
    let available = if cpu.s.mode.long {
        seg.type_ == 9
    } else {
        seg.type_ == 9 || seg.type_ == 1
    };
    if seg.s != 0 || !available {
        return Err(Exception::gp(u32::from(sel & 0xfffc)));
    }
    if seg.present == 0 {
        return Err(Exception::np(u32::from(sel & 0xfffc)));
    }
    let access = cpu.read_lin::<1>(addr + 5, false)?;
    cpu.write_lin::<1>(addr + 5, access | 2, false)?;
    cpu.s.tr = Segment {
        type_: seg.type_ | 2,
        ..seg
    };
    Ok(())
}

/// SLDT (`i.cc` 0) / STR (1) / SMSW (2).
pub fn store_system(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_umip(cpu)?;
    let v = match i.cc {
        0 => u64::from(cpu.s.ldt.selector),
        1 => u64::from(cpu.s.tr.selector),
        _ => cpu.s.cr0,
    };
    if i.flags & MEM_DST != 0 {
        cpu.mem_write(i, 2, v & 0xffff)
    } else {
        cpu.put_reg(i.r0, u32::from(i.size), v & size_mask(u32::from(i.size)));
        Ok(())
    }
}

/// LMSW: sets PE (never clears it), MP, EM, TS.
pub fn lmsw(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let v = selector_operand(cpu, i)? as u64;
    let keep_pe = cpu.s.cr0 & CR0_PE;
    let cr0 = (cpu.s.cr0 & !0xe) | (v & 0xf) | keep_pe;
    cpu.end_block = true;
    cpu.write_cr0(cr0)
}

/// CLTS.
pub fn clts(cpu: &mut Core, _: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    cpu.s.cr0 &= !CR0_TS;
    Ok(())
}

/// INVLPG.
pub fn invlpg(cpu: &mut Core, i: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let off = cpu.ea(i);
    let base = if cpu.s.mode.code_bits == 64 && (i.seg as usize) < FS {
        0
    } else {
        cpu.s.seg[i.seg as usize].base
    };
    cpu.tlb.flush_page(base.wrapping_add(off));
    cpu.end_block = true;
    Ok(())
}

/// WBINVD / INVD: privileged no-ops on coherent emulated memory.
pub fn cache_control(cpu: &mut Core, _: &Insn) -> Result<()> {
    require_cpl0(cpu)
}

/// SWAPGS.
pub fn swapgs(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.mode.code_bits != 64 {
        return Err(Exception::ud());
    }
    require_cpl0(cpu)?;
    std::mem::swap(&mut cpu.s.seg[GS].base, &mut cpu.s.msr.kernel_gs_base);
    Ok(())
}

/// RDTSC (`i.cc` 0) / RDTSCP (1).
pub fn rdtsc(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.cr4 & CR4_TSD != 0 && cpu.s.mode.cpl > 0 {
        return Err(Exception::gp0());
    }
    let tsc = cpu.tsc();
    cpu.s.gpr[RAX] = tsc & 0xffff_ffff;
    cpu.s.gpr[RDX] = tsc >> 32;
    if i.cc == 1 {
        cpu.s.gpr[RCX] = cpu.s.msr.tsc_aux & 0xffff_ffff;
    }
    Ok(())
}

/// RDMSR.
pub fn rdmsr(cpu: &mut Core, _: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let index = cpu.s.gpr[RCX] as u32;
    let v = cpu.read_msr(index).ok_or_else(Exception::gp0)?;
    cpu.s.gpr[RAX] = v & 0xffff_ffff;
    cpu.s.gpr[RDX] = v >> 32;
    Ok(())
}

/// WRMSR.
pub fn wrmsr(cpu: &mut Core, _: &Insn) -> Result<()> {
    require_cpl0(cpu)?;
    let index = cpu.s.gpr[RCX] as u32;
    let v = (cpu.s.gpr[RDX] << 32) | (cpu.s.gpr[RAX] & 0xffff_ffff);
    cpu.end_block = true;
    if cpu.write_msr(index, v) {
        Ok(())
    } else {
        Err(Exception::gp0())
    }
}

impl Core {
    /// Whether the current privilege may access `size` ports from `port` (IOPL, then the
    /// TSS I/O permission bitmap).
    pub(crate) fn check_io_permission(&mut self, port: u16, size: u32) -> Result<()> {
        if !self.s.mode.protected || (!self.s.mode.v86 && self.s.mode.cpl <= self.iopl()) {
            return Ok(());
        }
        let tr = self.s.tr;
        let is_32bit_tss = tr.type_ & 0x8 != 0;
        if !is_32bit_tss || tr.limit < 0x67 {
            return Err(Exception::gp0());
        }
        let map = self.read_lin::<2>(tr.base + 0x66, false)?;
        let byte = map + u64::from(port / 8);
        if byte + 1 > u64::from(tr.limit) {
            return Err(Exception::gp0());
        }
        let bits = self.read_lin::<2>(tr.base + byte, false)?;
        let mask = ((1u64 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Exception::gp0());
        }
        Ok(())
    }
}

/// IN/OUT (`i.cc` 0 IN, 1 OUT); port in `imm` (`i.flags & MEM` clear and `i.r1` = 0xff) or
/// DX.
pub fn io(cpu: &mut Core, i: &Insn) -> Result<()> {
    let size = u32::from(i.size);
    let port = if i.r1 == 0xff {
        i.imm as u16
    } else {
        cpu.s.gpr[RDX] as u16
    };
    cpu.check_io_permission(port, size)?;
    let n = size as usize;
    if i.cc == 0 {
        let mut data = [0u8; 4];
        cpu.io.pio_read(port, &mut data[..n]);
        cpu.put_reg(RAX as u8, size, u64::from(u32::from_le_bytes(data)));
    } else {
        let v = (cpu.s.gpr[RAX] as u32).to_le_bytes();
        cpu.io.pio_write(port, &v[..n]);
        // A port write may have asked the VM to stop or changed device state the guest
        // polls: give the outer loop a chance to look.
        cpu.end_block = true;
    }
    Ok(())
}

/// CLI (`i.cc` 0) / STI (1).
pub fn cli_sti(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.mode.protected && cpu.s.mode.cpl > cpu.iopl() {
        return Err(Exception::gp0());
    }
    if i.cc == 1 {
        if !cpu.s.flags.has(IF) {
            cpu.s.interrupt_shadow = Shadow::Sti;
        }
        cpu.s.flags.assign(IF, true);
        cpu.end_block = true;
    } else {
        cpu.s.flags.assign(IF, false);
    }
    Ok(())
}

/// CLAC (`i.cc` 0) / STAC (1): EFLAGS.AC for SMAP, at CPL 0 only.
pub fn clac_stac(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.mode.cpl != 0 {
        return Err(Exception::ud());
    }
    cpu.s.flags.assign(AC, i.cc == 1);
    Ok(())
}

/// RDPKRU: PKRU into EAX (EDX cleared); ECX must be 0.
pub fn rdpkru(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.cr4 & CR4_PKE == 0 {
        return Err(Exception::ud());
    }
    if cpu.s.gpr[RCX] as u32 != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.gpr[RAX] = u64::from(cpu.s.pkru);
    cpu.s.gpr[RDX] = 0;
    Ok(())
}

/// WRPKRU: PKRU from EAX; ECX and EDX must be 0. Cached translations used the old rights.
pub fn wrpkru(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.cr4 & CR4_PKE == 0 {
        return Err(Exception::ud());
    }
    if cpu.s.gpr[RCX] as u32 != 0 || cpu.s.gpr[RDX] as u32 != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.pkru = cpu.s.gpr[RAX] as u32;
    cpu.tlb.flush(false);
    Ok(())
}

/// CPUID.
pub fn cpuid(cpu: &mut Core, _: &Insn) -> Result<()> {
    let leaf = cpu.s.gpr[RAX] as u32;
    let sub = cpu.s.gpr[RCX] as u32;
    let [a, b, mut c, d] = cpu.cpuid.lookup(leaf, sub);
    if leaf == 7 && sub == 0 && cpu.s.cr4 & CR4_PKE != 0 {
        c |= super::super::cpuid::LEAF7_ECX_OSPKE;
    }
    cpu.s.gpr[RAX] = u64::from(a);
    cpu.s.gpr[RBX] = u64::from(b);
    cpu.s.gpr[RCX] = u64::from(c);
    cpu.s.gpr[RDX] = u64::from(d);
    Ok(())
}

/// RDRAND: a fresh random value from the host, CF set.
pub fn rdrand(cpu: &mut Core, i: &Insn) -> Result<()> {
    let v = super::super::time::host_random();
    cpu.put_reg(i.r0, u32::from(i.size), v);
    cpu.s.flags.set_arith(super::super::flags::CF);
    Ok(())
}

/// LAR (`i.cc` 0) / LSL (1) / VERR (2) / VERW (3): ZF tells whether the selector passed.
pub fn descriptor_query(cpu: &mut Core, i: &Insn) -> Result<()> {
    if !cpu.s.mode.protected || cpu.s.mode.v86 {
        return Err(Exception::ud());
    }
    let sel = selector_operand(cpu, i)?;
    let cpl = cpu.s.mode.cpl;
    let valid = if sel & 0xfffc == 0 {
        None
    } else {
        match cpu.read_descriptor(sel, GP) {
            Ok((raw, _)) => Some(raw),
            Err(e) if e.vector() == GP => None,
            Err(e) => return Err(e),
        }
    };
    let ok = valid.and_then(|raw| {
        let d = from_descriptor(sel, raw);
        let code = d.s != 0 && d.type_ & 8 != 0;
        let conforming = code && d.type_ & 4 != 0;
        let privilege_ok = conforming || (d.dpl >= cpl && d.dpl >= (sel & 3) as u8);
        let system_ok = |types: &[u8]| d.s == 0 && types.contains(&d.type_);
        let accepted = match i.cc {
            0 => (d.s != 0 || system_ok(&[1, 2, 3, 9, 11, 12])) && (d.s == 0 || privilege_ok),
            1 => (d.s != 0 && privilege_ok) || system_ok(&[1, 2, 3, 9, 11]),
            2 => d.s != 0 && privilege_ok && (!code || d.type_ & 2 != 0),
            _ => d.s != 0 && privilege_ok && !code && d.type_ & 2 != 0,
        };
        accepted.then_some((raw, d))
    });
    cpu.s
        .flags
        .update_arith(ZF, if ok.is_some() { ZF } else { 0 });
    if let Some((raw, d)) = ok {
        let size = u32::from(i.size);
        match i.cc {
            0 => cpu.put_reg(i.r0, size, (raw >> 32) & 0x00f0_ff00),
            1 => cpu.put_reg(i.r0, size, u64::from(d.limit)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::state::{CS, EFER_LMA, EFER_LME};
    use super::super::super::testmachine::TestMachine;
    use super::super::super::Exit;

    #[test]
    fn dr6_and_dr7_keep_their_fixed_bits() {
        let code = [
            0x66, 0x31, 0xc0, // xor eax,eax
            0x0f, 0x23, 0xf0, // mov dr6,eax
            0x0f, 0x21, 0xf3, // mov ebx,dr6
            0x66, 0xb8, 0xff, 0xff, 0xff, 0xff, // mov eax,0xffffffff
            0x0f, 0x23, 0xf8, // mov dr7,eax
            0x0f, 0x21, 0xf9, // mov ecx,dr7
            0xf4,
        ];
        let mut m = TestMachine::new(&code);
        assert_eq!(m.run(), Exit::Halted);
        let r = m.cpu.regs();
        assert_eq!(r.rbx, 0xffff_0ff0);
        assert_eq!(r.rcx, 0xffff_27ff);
    }

    #[test]
    fn lmsw_reads_its_register_operand() {
        // mov cx,0xe; lmsw cx; hlt (AX stays 0).
        let mut m = TestMachine::new(&[0xb9, 0x0e, 0x00, 0x0f, 0x01, 0xf1, 0xf4]);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.cpu.sregs().cr0 & 0xe, 0xe);
    }

    #[test]
    fn ltr_reads_its_register_operand() {
        // mov cx,0x18; ltr cx; hlt (AX stays 0).
        let tss = 0x67 | (0x3000 << 16) | (0x89 << 40);
        let mut m = TestMachine::flat32(&[0x66, 0xb9, 0x18, 0x00, 0x0f, 0x00, 0xd9, 0xf4], &[tss]);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.cpu.sregs().tr.selector, 0x18);
    }

    #[test]
    fn ltr_in_long_mode_refuses_a_non_canonical_base() {
        // The TSS descriptor (16 bytes at 0x18) has base 0xaaaa_aaaa_0000_3000. Code at 0x1000
        // in 64-bit mode: mov cx,0x18; ltr cx; hlt. #GP goes to the IDT at 0, all zeros: the
        // vCPU shuts down instead of halting.
        let tss_low = 0x67 | (0x3000 << 16) | (0x89 << 40);
        let code64 = 0x00af_9b00_0000_ffff;
        let code = [0x66, 0xb9, 0x18, 0x00, 0x0f, 0x00, 0xd9, 0xf4];
        let mut m = TestMachine::flat32(&code, &[tss_low, 0xaaaa_aaaa, code64]);
        let core = &mut m.cpu.core;
        core.s.efer |= EFER_LMA | EFER_LME;
        core.s.seg[CS] = super::super::super::segment::from_descriptor(0x28, code64);
        core.s.update_mode();
        assert!(matches!(m.run(), Exit::Shutdown(_)));
        // With a canonical base it loads.
        m.write(0x500 + 0x20, &0u64.to_le_bytes());
        let core = &mut m.cpu.core;
        core.shutdown = None;
        core.s.rip = 0x1000;
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.cpu.sregs().tr.selector, 0x18);
    }
}
