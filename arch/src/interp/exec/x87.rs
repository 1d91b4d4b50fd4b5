//! x87 floating-point instructions and the FPU/SSE state instructions (FXSAVE, FXRSTOR,
//! LDMXCSR, STMXCSR).

use iced_x86::{Instruction, Mnemonic};

use super::super::fault::{Exception, Result};
use super::super::fpu::MXCSR_MASK;
use super::super::insn::{Handler, Insn};
use super::super::state::{CR0_EM, CR0_TS, CR4_OSFXSR};
use super::super::Cpu;

/// The handler for an x87 or FPU-state instruction, or None.
pub fn lower(ins: &Instruction, i: &mut Insn) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Fninit => fninit,
        Mnemonic::Fnstcw => fnstcw,
        Mnemonic::Fldcw => fldcw,
        Mnemonic::Fnstsw => {
            i.cc = u8::from(ins.op_kind(0) == iced_x86::OpKind::Register);
            fnstsw
        }
        Mnemonic::Fnclex => fnclex,
        Mnemonic::Fxsave | Mnemonic::Fxsave64 => {
            i.cc = u8::from(ins.mnemonic() == Mnemonic::Fxsave64);
            fxsave
        }
        Mnemonic::Fxrstor | Mnemonic::Fxrstor64 => {
            i.cc = u8::from(ins.mnemonic() == Mnemonic::Fxrstor64);
            fxrstor
        }
        Mnemonic::Ldmxcsr => ldmxcsr,
        Mnemonic::Stmxcsr => stmxcsr,
        Mnemonic::Emms => emms,
        _ => return None,
    })
}

/// #NM when CR0.EM or CR0.TS says the FPU is not available.
fn check_fpu(cpu: &Cpu) -> Result<()> {
    if cpu.s.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Exception::nm());
    }
    Ok(())
}

/// FNINIT.
fn fninit(cpu: &mut Cpu, _: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let f = &mut cpu.s.fpu;
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
    Ok(())
}

/// FNSTCW m16.
fn fnstcw(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let v = u64::from(cpu.s.fpu.fcw);
    cpu.mem_write(i, 2, v)
}

/// FLDCW m16.
fn fldcw(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let v = cpu.mem_read(i, 2)?;
    cpu.s.fpu.fcw = (v as u16) | 0x40;
    Ok(())
}

/// FNSTSW m16 / AX (`i.cc` 1).
fn fnstsw(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let v = u64::from(cpu.s.fpu.fsw);
    if i.cc == 1 {
        cpu.put_reg(0, 2, v);
        Ok(())
    } else {
        cpu.mem_write(i, 2, v)
    }
}

/// FNCLEX.
fn fnclex(cpu: &mut Cpu, _: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    cpu.s.fpu.fsw &= 0x7f00;
    Ok(())
}

/// EMMS: all x87 registers empty.
fn emms(cpu: &mut Cpu, _: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    cpu.s.fpu.ftw = 0;
    Ok(())
}

/// The 512-byte FXSAVE image (`wide` selects the 64-bit FIP/FDP layout).
fn fxsave_image(cpu: &Cpu, wide: bool) -> [u8; 512] {
    let f = &cpu.s.fpu;
    let mut img = [0u8; 512];
    img[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    img[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    img[4] = f.ftw;
    img[6..8].copy_from_slice(&f.fop.to_le_bytes());
    if wide {
        img[8..16].copy_from_slice(&f.fip.to_le_bytes());
        img[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        img[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        img[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
    }
    img[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    let top = f.top();
    for st in 0..8 {
        let phys = (top + st) % 8;
        let at = 32 + 16 * st;
        img[at..at + 10].copy_from_slice(&f.regs[phys]);
    }
    for (n, x) in f.xmm.iter().enumerate() {
        let at = 160 + 16 * n;
        img[at..at + 16].copy_from_slice(&x.to_le_bytes());
    }
    img
}

/// FXSAVE/FXSAVE64 m512.
fn fxsave(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let off = cpu.ea(i);
    if off & 15 != 0 {
        return Err(Exception::gp0());
    }
    let img = fxsave_image(cpu, i.cc == 1);
    let lin = cpu.linear(i.seg as usize, off, 512, true)?;
    let user = cpu.user();
    cpu.write_bytes(lin, &img, user)
}

/// FXRSTOR/FXRSTOR64 m512.
fn fxrstor(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_fpu(cpu)?;
    let off = cpu.ea(i);
    if off & 15 != 0 {
        return Err(Exception::gp0());
    }
    let lin = cpu.linear(i.seg as usize, off, 512, false)?;
    let mut img = [0u8; 512];
    let user = cpu.user();
    cpu.read_bytes(lin, &mut img, user)?;
    let word = |at: usize| u16::from_le_bytes([img[at], img[at + 1]]);
    let dword = |at: usize| u32::from_le_bytes([img[at], img[at + 1], img[at + 2], img[at + 3]]);
    let mxcsr = dword(24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Exception::gp0());
    }
    let f = &mut cpu.s.fpu;
    f.fcw = word(0);
    f.fsw = word(2);
    f.ftw = img[4];
    f.fop = word(6);
    if i.cc == 1 {
        f.fip = u64::from_le_bytes(img[8..16].try_into().unwrap_or([0; 8]));
        f.fdp = u64::from_le_bytes(img[16..24].try_into().unwrap_or([0; 8]));
    } else {
        f.fip = u64::from(dword(8));
        f.fdp = u64::from(dword(16));
    }
    if cpu.s.cr4 & CR4_OSFXSR != 0 {
        f.mxcsr = mxcsr;
    }
    let top = f.top();
    for st in 0..8 {
        let at = 32 + 16 * st;
        let mut r = [0u8; 10];
        r.copy_from_slice(&img[at..at + 10]);
        f.regs[(top + st) % 8] = r;
    }
    if cpu.s.cr4 & CR4_OSFXSR != 0 {
        for n in 0..16 {
            let at = 160 + 16 * n;
            f.xmm[n] = u128::from_le_bytes(img[at..at + 16].try_into().unwrap_or([0; 16]));
        }
    }
    Ok(())
}

/// LDMXCSR m32.
fn ldmxcsr(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let v = cpu.mem_read(i, 4)? as u32;
    if v & !MXCSR_MASK != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(cpu: &mut Cpu, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let v = u64::from(cpu.s.fpu.mxcsr);
    cpu.mem_write(i, 4, v)
}

/// #UD without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS: the checks of SSE instructions.
pub(crate) fn check_sse(cpu: &Cpu) -> Result<()> {
    if cpu.s.cr4 & CR4_OSFXSR == 0 || cpu.s.cr0 & CR0_EM != 0 {
        return Err(Exception::ud());
    }
    if cpu.s.cr0 & CR0_TS != 0 {
        return Err(Exception::nm());
    }
    Ok(())
}
