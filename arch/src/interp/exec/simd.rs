//! SSE through SSE4.2 and MMX instructions: operand plumbing around the exact lane semantics
//! of [`crate::interp::simd`].

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};

use super::super::fault::{Exception, Result, XM};
use super::super::flags::{CF, OF, PF, SF, ZF};
use super::super::insn::{Handler, Insn, MEM, MEM_DST};
use super::super::simd::{data, float, int};
use super::super::state::{CR0_EM, CR0_TS, CR4_OSXMMEXCPT, RAX, RCX, RDX};
use super::super::Core;
use super::x87::check_sse;

/// `Insn::flags`: the memory operand must be 16-byte aligned.
pub(crate) const ALIGNED: u8 = 32;
/// `Insn::flags`: register operands are MMX registers.
pub(crate) const MMX: u8 = 64;

fn xmm_index(reg: Register) -> Option<u8> {
    let v = reg as u32;
    (Register::XMM0 as u32..=Register::XMM15 as u32)
        .contains(&v)
        .then(|| (v - Register::XMM0 as u32) as u8)
}

fn mmx_index(reg: Register) -> Option<u8> {
    let v = reg as u32;
    (Register::MM0 as u32..=Register::MM7 as u32)
        .contains(&v)
        .then(|| (v - Register::MM0 as u32) as u8)
}

/// Index of a vector register operand (XMM or MMX).
fn vreg(ins: &Instruction, n: u32) -> Option<u8> {
    if n >= ins.op_count() || ins.op_kind(n) != OpKind::Register {
        return None;
    }
    let r = ins.op_register(n);
    xmm_index(r).or_else(|| mmx_index(r))
}

fn is_mmx(ins: &Instruction) -> bool {
    (0..ins.op_count())
        .any(|n| ins.op_kind(n) == OpKind::Register && mmx_index(ins.op_register(n)).is_some())
}

/// Whether legacy-SSE alignment rules require this 16-byte memory operand to be aligned.
fn needs_alignment(ins: &Instruction, m: Mnemonic) -> bool {
    let sixteen = ins.memory_size().size() == 16;
    let unaligned_ok = matches!(
        m,
        Mnemonic::Movups
            | Mnemonic::Movupd
            | Mnemonic::Movdqu
            | Mnemonic::Lddqu
            | Mnemonic::Pcmpestri
            | Mnemonic::Pcmpestrm
            | Mnemonic::Pcmpestri64
            | Mnemonic::Pcmpestrm64
            | Mnemonic::Pcmpistri
            | Mnemonic::Pcmpistrm
    );
    sixteen && !unaligned_ok
}

/// Lowers SSE and MMX instructions.
pub fn lower(ins: &Instruction, i: &mut Insn) -> Option<Handler> {
    use Mnemonic as M;
    let m = ins.mnemonic();
    let mmx = is_mmx(ins);
    if mmx {
        i.flags |= MMX;
    }
    if i.flags & MEM != 0 {
        i.size = ins.memory_size().size().min(16) as u8;
        if needs_alignment(ins, m) {
            i.flags |= ALIGNED;
        }
    }
    if let Some(r) = vreg(ins, 0) {
        i.r0 = r;
    }
    if let Some(r) = vreg(ins, 1) {
        i.r1 = r;
    }
    i.op = m;
    let imm = (0..ins.op_count())
        .rev()
        .find(|&n| ins.op_kind(n) == OpKind::Immediate8)
        .map(|n| ins.immediate(n));
    i.imm = imm.unwrap_or(0);
    let second_is_imm = ins.op_count() == 2 && ins.op_kind(1) == OpKind::Immediate8;
    let h: Handler = match m {
        M::Movaps
        | M::Movapd
        | M::Movdqa
        | M::Movups
        | M::Movupd
        | M::Movdqu
        | M::Lddqu
        | M::Movntdq
        | M::Movntps
        | M::Movntpd
        | M::Movntdqa => move128,
        M::Movss | M::Movsd if i.flags & MEM != 0 || ins.op_count() == 2 => {
            i.size = if m == M::Movss { 4 } else { 8 };
            if i.flags & MEM != 0 && !is_simd_memory(ins) {
                return None;
            }
            move_scalar
        }
        M::Movq | M::Movd => {
            // GPR operands use the GPR index instead.
            for n in 0..2 {
                if ins.op_kind(n) == OpKind::Register {
                    if let Some((g, _)) = super::super::decode::gpr(ins.op_register(n)) {
                        if n == 0 {
                            i.r0 = g;
                        } else {
                            i.r1 = g;
                        }
                        i.cc |= 1 << n;
                    }
                }
            }
            i.size = if m == M::Movd { 4 } else { 8 };
            if ins.op_count() == 2 && ins.op_kind(1) == OpKind::Register {
                if let Some((_, s)) = super::super::decode::gpr(ins.op_register(1)) {
                    i.size = s as u8;
                }
            }
            if ins.op_kind(0) == OpKind::Register {
                if let Some((_, s)) = super::super::decode::gpr(ins.op_register(0)) {
                    i.size = s as u8;
                }
            }
            move_q_d
        }
        M::Movlps | M::Movlpd | M::Movhps | M::Movhpd if i.flags & MEM != 0 => {
            i.cc = u8::from(matches!(m, M::Movhps | M::Movhpd));
            move_half
        }
        M::Movq2dq | M::Movdq2q => {
            i.flags &= !MMX;
            move_q2dq
        }
        M::Pmovmskb | M::Movmskps | M::Movmskpd => {
            i.r0 = super::super::decode::gpr(ins.op_register(0)).map_or(0, |(g, _)| g);
            mask_to_gpr
        }
        M::Pextrb | M::Pextrw | M::Pextrd | M::Pextrq | M::Extractps => {
            if i.flags & MEM == 0 {
                i.r0 = super::super::decode::gpr(ins.op_register(0)).map_or(0, |(g, _)| g);
            }
            i.size = match m {
                M::Pextrb => 1,
                M::Pextrw => 2,
                M::Pextrq => 8,
                _ => 4,
            };
            extract
        }
        M::Pinsrb | M::Pinsrw | M::Pinsrd | M::Pinsrq | M::Insertps
            if m != M::Insertps || i.flags & MEM != 0 =>
        {
            if i.flags & MEM == 0 {
                i.r1 = super::super::decode::gpr(ins.op_register(1)).map_or(0, |(g, _)| g);
            }
            i.size = match m {
                M::Pinsrb => 1,
                M::Pinsrw => 2,
                M::Pinsrq => 8,
                _ => 4,
            };
            insert
        }
        M::Ptest => ptest,
        M::Pcmpestri | M::Pcmpestrm | M::Pcmpistri | M::Pcmpistrm => pcmpstr,
        M::Pcmpestri64 | M::Pcmpestrm64 => {
            // The REX.W forms take 64-bit lengths from RAX and RDX.
            i.op = if m == M::Pcmpestri64 {
                M::Pcmpestri
            } else {
                M::Pcmpestrm
            };
            i.cc = 1;
            pcmpstr
        }
        M::Crc32 => {
            i.r0 = super::super::decode::gpr(ins.op_register(0)).map_or(0, |(g, _)| g);
            if i.flags & MEM == 0 {
                let (g, s) = super::super::decode::gpr(ins.op_register(1))?;
                i.r1 = g;
                i.size = s as u8;
            }
            i.imm2 = super::super::decode::gpr(ins.op_register(0)).map_or(4, |(_, s)| s) as u16;
            crc32
        }
        M::Pblendvb | M::Blendvps | M::Blendvpd => blend_xmm0,
        M::Comiss | M::Comisd | M::Ucomiss | M::Ucomisd => {
            i.size = if matches!(m, M::Comiss | M::Ucomiss) {
                4
            } else {
                8
            };
            comis
        }
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => {
            let (g, s) = super::super::decode::gpr(ins.op_register(0))?;
            i.r0 = g;
            i.imm2 = (s * 8) as u16;
            i.size = if matches!(m, M::Cvtss2si | M::Cvttss2si) {
                4
            } else {
                8
            };
            cvt_to_int
        }
        M::Cvtsi2ss | M::Cvtsi2sd => {
            if i.flags & MEM == 0 {
                let (g, s) = super::super::decode::gpr(ins.op_register(1))?;
                i.r1 = g;
                i.size = s as u8;
            }
            i.imm2 = u16::from(i.size) * 8;
            cvt_from_int
        }
        M::Emms => return None,
        _ if mmx && second_is_imm && int::mmx_shift_imm(m, 0, 0).is_some() => mmx_shift_imm,
        _ if mmx && int::mmx_op(m, 0, 0, 0).is_some() => mmx_int,
        _ if !mmx && second_is_imm && int::int_shift_imm(m, 0, 0).is_some() => xmm_shift_imm,
        _ if !mmx && data::data_op(m, 0, 0, 0).is_some() => xmm_data,
        _ if !mmx && int::int_op(m, 0, 0, 0).is_some() => xmm_int,
        _ if !mmx && is_float_op(m) => xmm_float,
        _ => return None,
    };
    Some(h)
}

/// Whether `ins`'s memory operand is an SSE operand (not a string instruction's).
fn is_simd_memory(ins: &Instruction) -> bool {
    !matches!(ins.memory_size(), MemorySize::Unknown)
}

/// Whether `m` is handled by `float::float_op`.
fn is_float_op(m: Mnemonic) -> bool {
    let mut mxcsr = 0x1f80;
    float::float_op(m, 0, 0, 0, &mut mxcsr).is_some()
}

impl Core {
    /// The MMX/XMM operand checks: #UD/#NM per CR0 and CR4.
    fn check_vector(&mut self, i: &Insn) -> Result<()> {
        if i.flags & MMX != 0 {
            if self.s.cr0 & CR0_EM != 0 {
                return Err(Exception::ud());
            }
            if self.s.cr0 & CR0_TS != 0 {
                return Err(Exception::nm());
            }
            // MMX use puts the x87 stack at TOP 0 with every register valid.
            self.s.fpu.set_top(0);
            self.s.fpu.ftw = 0xff;
            Ok(())
        } else {
            check_sse(self)
        }
    }

    /// Reads `size` bytes of the memory operand (zero-extended), with the 16-byte alignment
    /// check when required.
    fn vec_mem_read(&mut self, i: &Insn, size: usize) -> Result<u128> {
        let off = self.ea(i);
        if i.flags & ALIGNED != 0 && off & 15 != 0 {
            return Err(Exception::gp0());
        }
        let lin = self.linear(i.seg as usize, off, size as u32, false)?;
        let user = self.user();
        self.read_vec(lin, size, user)
    }

    /// Writes the low `size` bytes of `value` to the memory operand.
    fn vec_mem_write(&mut self, i: &Insn, size: usize, value: u128) -> Result<()> {
        let off = self.ea(i);
        if i.flags & ALIGNED != 0 && off & 15 != 0 {
            return Err(Exception::gp0());
        }
        let lin = self.linear(i.seg as usize, off, size as u32, true)?;
        let user = self.user();
        self.write_vec(lin, size, value, user)
    }

    /// The source operand (register r1 or memory of `i.size` bytes).
    fn vec_src(&mut self, i: &Insn) -> Result<u128> {
        if i.flags & MEM != 0 {
            self.vec_mem_read(i, usize::from(i.size))
        } else if i.flags & MMX != 0 {
            Ok(u128::from(self.mm(i.r1)))
        } else {
            Ok(self.s.fpu.xmm[usize::from(i.r1)])
        }
    }

    /// MMX register `n` (the low 64 bits of x87 register R(n)).
    fn mm(&self, n: u8) -> u64 {
        let r = &self.s.fpu.regs[usize::from(n & 7)];
        u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]])
    }

    /// Writes MMX register `n` (exponent bits set to all ones, as hardware does).
    fn set_mm(&mut self, n: u8, v: u64) {
        let r = &mut self.s.fpu.regs[usize::from(n & 7)];
        r[..8].copy_from_slice(&v.to_le_bytes());
        r[8] = 0xff;
        r[9] = 0xff;
    }

    /// Raises the SIMD floating-point exception: #XM with CR4.OSXMMEXCPT, else #UD.
    fn simd_fp_fault(&self) -> Exception {
        if self.s.cr4 & CR4_OSXMMEXCPT != 0 {
            Exception::new(XM)
        } else {
            Exception::ud()
        }
    }
}

fn xmm(cpu: &mut Core, n: u8) -> &mut u128 {
    &mut cpu.s.fpu.xmm[usize::from(n & 15)]
}

/// MOVAPS/MOVUPS/MOVDQA/MOVDQU/... in either direction.
pub(crate) fn move128(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    if i.flags & MEM_DST != 0 {
        let v = cpu.s.fpu.xmm[usize::from(i.r1)];
        cpu.vec_mem_write(i, 16, v)
    } else {
        let v = cpu.vec_src(i)?;
        *xmm(cpu, i.r0) = v;
        Ok(())
    }
}

/// MOVSS/MOVSD (the SSE2 scalar move): register forms merge the low lane, loads zero the
/// rest, stores write the low lane.
pub(crate) fn move_scalar(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let bits = u32::from(i.size) * 8;
    let low: u128 = (1u128 << bits) - 1;
    if i.flags & MEM_DST != 0 {
        let v = cpu.s.fpu.xmm[usize::from(i.r1)];
        return cpu.vec_mem_write(i, usize::from(i.size), v);
    }
    if i.flags & MEM != 0 {
        let v = cpu.vec_mem_read(i, usize::from(i.size))?;
        *xmm(cpu, i.r0) = v;
    } else {
        let src = cpu.s.fpu.xmm[usize::from(i.r1)] & low;
        let d = xmm(cpu, i.r0);
        *d = (*d & !low) | src;
    }
    Ok(())
}

/// MOVD/MOVQ between XMM/MMX registers, GPRs and memory (`i.cc` bit n: operand n is a GPR).
fn move_q_d(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let size = usize::from(i.size);
    let mask: u128 = if size >= 8 {
        u64::MAX.into()
    } else {
        u32::MAX.into()
    };
    let mmx = i.flags & MMX != 0;
    let src: u128 = if i.cc & 2 != 0 {
        u128::from(cpu.get_reg(i.r1, size as u32))
    } else if i.flags & MEM != 0 && i.flags & MEM_DST == 0 {
        cpu.vec_mem_read(i, size)?
    } else if mmx {
        u128::from(cpu.mm(i.r1))
    } else {
        cpu.s.fpu.xmm[usize::from(i.r1)]
    } & mask;
    if i.cc & 1 != 0 {
        cpu.put_reg(i.r0, size as u32, src as u64);
    } else if i.flags & MEM_DST != 0 {
        cpu.vec_mem_write(i, size, src)?;
    } else if mmx {
        cpu.set_mm(i.r0, src as u64);
    } else {
        *xmm(cpu, i.r0) = src;
    }
    Ok(())
}

/// MOVLPS/MOVLPD/MOVHPS/MOVHPD with memory (`i.cc` 1: high half).
fn move_half(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let shift = if i.cc == 1 { 64 } else { 0 };
    if i.flags & MEM_DST != 0 {
        let v = cpu.s.fpu.xmm[usize::from(i.r1)] >> shift;
        cpu.vec_mem_write(i, 8, v)
    } else {
        let v = cpu.vec_mem_read(i, 8)?;
        let d = xmm(cpu, i.r0);
        *d = (*d & !(u128::from(u64::MAX) << shift)) | (v << shift);
        Ok(())
    }
}

/// MOVQ2DQ / MOVDQ2Q.
fn move_q2dq(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    cpu.s.fpu.set_top(0);
    cpu.s.fpu.ftw = 0xff;
    if i.op == Mnemonic::Movq2dq {
        let v = cpu.mm(i.r1);
        *xmm(cpu, i.r0) = u128::from(v);
    } else {
        let v = cpu.s.fpu.xmm[usize::from(i.r1)] as u64;
        cpu.set_mm(i.r0, v);
    }
    Ok(())
}

/// PMOVMSKB/MOVMSKPS/MOVMSKPD to a GPR.
pub(crate) fn mask_to_gpr(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let v = if i.flags & MMX != 0 {
        data::pmovmskb(u128::from(cpu.mm(i.r1))) & 0xff
    } else {
        let src = cpu.s.fpu.xmm[usize::from(i.r1)];
        match i.op {
            Mnemonic::Movmskps => data::movmskps(src),
            Mnemonic::Movmskpd => data::movmskpd(src),
            _ => data::pmovmskb(src),
        }
    };
    cpu.put_reg(i.r0, 8, u64::from(v));
    Ok(())
}

/// PEXTRB/W/D/Q and EXTRACTPS to a GPR or memory.
fn extract(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let imm = i.imm as u8;
    let v = if i.flags & MMX != 0 {
        data::pextrw_mmx(cpu.mm(i.r1), imm)
    } else {
        let src = cpu.s.fpu.xmm[usize::from(i.r1)];
        if i.op == Mnemonic::Extractps {
            u64::from(data::extractps(src, imm))
        } else {
            data::pextr(i.op, src, imm).ok_or_else(Exception::ud)?
        }
    };
    if i.flags & MEM_DST != 0 {
        cpu.vec_mem_write(i, usize::from(i.size), u128::from(v))
    } else {
        // Register destinations are written zero-extended to 32 or 64 bits.
        let width = if i.size == 8 { 8 } else { 4 };
        cpu.put_reg(i.r0, width, v);
        Ok(())
    }
}

/// PINSRB/W/D/Q from a GPR or memory, and INSERTPS from memory.
fn insert(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let imm = i.imm as u8;
    let value = if i.flags & MEM != 0 {
        cpu.vec_mem_read(i, usize::from(i.size))? as u64
    } else {
        cpu.get_reg(i.r1, u32::from(i.size).max(4))
    };
    if i.flags & MMX != 0 {
        let d = cpu.mm(i.r0);
        cpu.set_mm(i.r0, data::pinsrw_mmx(d, value, imm));
        return Ok(());
    }
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let r = if i.op == Mnemonic::Insertps {
        data::insertps_m32(dst, value as u32, imm)
    } else {
        data::pinsr(i.op, dst, value, imm).ok_or_else(Exception::ud)?
    };
    *xmm(cpu, i.r0) = r;
    Ok(())
}

/// PTEST.
fn ptest(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)?;
    let (zf, cf) = data::ptest(cpu.s.fpu.xmm[usize::from(i.r0)], src);
    cpu.s
        .flags
        .set_arith(if zf { ZF } else { 0 } | if cf { CF } else { 0 });
    Ok(())
}

/// PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM (`i.cc` 1: REX.W lengths).
fn pcmpstr(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let b = cpu.vec_src(i)?;
    let a = cpu.s.fpu.xmm[usize::from(i.r0)];
    let len = |v: u64| {
        if i.cc == 1 {
            v as i64
        } else {
            i64::from(v as u32 as i32)
        }
    };
    let (la, lb) = (len(cpu.s.gpr[RAX]), len(cpu.s.gpr[RDX]));
    let r = data::pcmpstr(i.op, a, b, i.imm as u8, la, lb);
    match i.op {
        Mnemonic::Pcmpestri | Mnemonic::Pcmpistri => cpu.put_reg(RCX as u8, 4, u64::from(r.index)),
        _ => cpu.s.fpu.xmm[0] = r.mask,
    }
    let mut f = 0;
    for (on, bit) in [(r.cf, CF), (r.zf, ZF), (r.sf, SF), (r.of, OF)] {
        if on {
            f |= bit;
        }
    }
    cpu.s.flags.set_arith(f);
    Ok(())
}

/// CRC32 r32/r64, r/m8..64 (`i.imm2` destination width in bytes).
fn crc32(cpu: &mut Core, i: &Insn) -> Result<()> {
    let data = if i.flags & MEM != 0 {
        cpu.mem_read(i, u32::from(i.size))?
    } else {
        cpu.get_reg(i.r1, u32::from(i.size))
    };
    let crc = cpu.get_reg(i.r0, 4) as u32;
    let r = data::crc32c(crc, data, usize::from(i.size));
    cpu.put_reg(i.r0, u32::from(i.imm2), u64::from(r));
    Ok(())
}

/// PBLENDVB/BLENDVPS/BLENDVPD with the mask in XMM0.
fn blend_xmm0(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)?;
    let (dst, mask) = (cpu.s.fpu.xmm[usize::from(i.r0)], cpu.s.fpu.xmm[0]);
    let r = match i.op {
        Mnemonic::Blendvps => data::blendvps(dst, src, mask),
        Mnemonic::Blendvpd => data::blendvpd(dst, src, mask),
        _ => int::pblendvb(dst, src, mask),
    };
    *xmm(cpu, i.r0) = r;
    Ok(())
}

/// Integer XMM operations `xmm1 = op(xmm1, xmm2/m128[, imm8])`.
pub(crate) fn xmm_int(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)?;
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let r = int::int_op(i.op, dst, src, i.imm as u8).ok_or_else(Exception::ud)?;
    *xmm(cpu, i.r0) = r;
    Ok(())
}

/// XMM shifts by an immediate.
fn xmm_shift_imm(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let r = int::int_shift_imm(i.op, dst, i.imm as u8).ok_or_else(Exception::ud)?;
    *xmm(cpu, i.r0) = r;
    Ok(())
}

/// MMX integer operations.
fn mmx_int(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)? as u64;
    let dst = cpu.mm(i.r0);
    let r = int::mmx_op(i.op, dst, src, i.imm as u8).ok_or_else(Exception::ud)?;
    cpu.set_mm(i.r0, r);
    Ok(())
}

/// MMX shifts by an immediate.
fn mmx_shift_imm(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let dst = cpu.mm(i.r0);
    let r = int::mmx_shift_imm(i.op, dst, i.imm as u8).ok_or_else(Exception::ud)?;
    cpu.set_mm(i.r0, r);
    Ok(())
}

/// Shuffles, unpacks and blends.
fn xmm_data(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)?;
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let r = data::data_op(i.op, dst, src, i.imm as u8).ok_or_else(Exception::ud)?;
    *xmm(cpu, i.r0) = r;
    Ok(())
}

/// Floating-point arithmetic, compares and conversions between XMM registers.
pub(crate) fn xmm_float(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let src = cpu.vec_src(i)?;
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let mut mxcsr = cpu.s.fpu.mxcsr;
    let r = float::float_op_checked(i.op, dst, src, i.imm as u8, &mut mxcsr)
        .ok_or_else(Exception::ud)?;
    cpu.s.fpu.mxcsr = mxcsr;
    match r {
        Ok(v) => {
            *xmm(cpu, i.r0) = v;
            Ok(())
        }
        Err(_) => Err(cpu.simd_fp_fault()),
    }
}

/// COMISS/COMISD/UCOMISS/UCOMISD.
fn comis(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_vector(i)?;
    let b = cpu.vec_src(i)?;
    let a = cpu.s.fpu.xmm[usize::from(i.r0)];
    let mut mxcsr = cpu.s.fpu.mxcsr;
    let r = float::comis_checked(i.op, a, b, &mut mxcsr);
    cpu.s.fpu.mxcsr = mxcsr;
    match r {
        Ok(flags) => {
            cpu.s.flags.set_arith(flags & (ZF | PF | CF));
            Ok(())
        }
        Err(_) => Err(cpu.simd_fp_fault()),
    }
}

/// CVT(T)SS2SI / CVT(T)SD2SI (`i.imm2` result width in bits).
fn cvt_to_int(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let src = cpu.vec_src(i)?;
    let mut mxcsr = cpu.s.fpu.mxcsr;
    let r = float::cvt_to_int_checked(i.op, src, u32::from(i.imm2), &mut mxcsr);
    cpu.s.fpu.mxcsr = mxcsr;
    match r {
        Ok(v) => {
            cpu.put_reg(i.r0, u32::from(i.imm2) / 8, v);
            Ok(())
        }
        Err(_) => Err(cpu.simd_fp_fault()),
    }
}

/// CVTSI2SS / CVTSI2SD (`i.imm2` source width in bits).
fn cvt_from_int(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let value = if i.flags & MEM != 0 {
        cpu.mem_read(i, u32::from(i.size))?
    } else {
        cpu.get_reg(i.r1, u32::from(i.size))
    };
    let dst = cpu.s.fpu.xmm[usize::from(i.r0)];
    let mut mxcsr = cpu.s.fpu.mxcsr;
    let r = float::cvt_from_int_checked(i.op, dst, value, u32::from(i.imm2), &mut mxcsr);
    cpu.s.fpu.mxcsr = mxcsr;
    match r {
        Ok(v) => {
            *xmm(cpu, i.r0) = v;
            Ok(())
        }
        Err(_) => Err(cpu.simd_fp_fault()),
    }
}
