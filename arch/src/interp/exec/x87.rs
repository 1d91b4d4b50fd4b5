//! x87 instructions and the FPU/SSE state instructions: operand plumbing around the exact
//! x87 unit of [`crate::interp::x87`].

use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};

use super::super::fault::{Exception, Result, MF};
use super::super::flags::{CF, PF, ZF};
use super::super::insn::{Handler, Insn, MEM, MEM_DST};
use super::super::mmu::Access;
use super::super::state::{CR0_EM, CR0_MP, CR0_NE, CR0_TS, CR4_OSFXSR};
use super::super::x87::compute::{self, ArithForm, ArithOp, BinaryOp, CmpSrc, Const, UnaryOp};
use super::super::x87::image::{self, EnvFormat, FxFormat, MXCSR_MASK};
use super::super::x87::{ops, stack};
use super::super::Core;

fn st_index(reg: Register) -> Option<u8> {
    let v = reg as u32;
    (Register::ST0 as u32..=Register::ST7 as u32)
        .contains(&v)
        .then(|| (v - Register::ST0 as u32) as u8)
}

/// The ST(i) operands of `ins`, in order.
fn st_operands(ins: &Instruction) -> (Option<u8>, Option<u8>) {
    let get = |n: u32| {
        (n < ins.op_count() && ins.op_kind(n) == OpKind::Register)
            .then(|| st_index(ins.op_register(n)))
            .flatten()
    };
    (get(0), get(1))
}

/// Memory operand kinds (`Insn::size` for x87 handlers).
const F32: u8 = 1;
const F64: u8 = 2;
const F80: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const BCD: u8 = 7;

fn memory_kind(ins: &Instruction) -> u8 {
    match ins.memory_size() {
        MemorySize::Float32 => F32,
        MemorySize::Float64 => F64,
        MemorySize::Float80 => F80,
        MemorySize::Int16 => I16,
        MemorySize::Int32 => I32,
        MemorySize::Int64 => I64,
        MemorySize::Bcd => BCD,
        _ => 0,
    }
}

/// Lowers x87 and FPU-state instructions.
pub fn lower(ins: &Instruction, i: &mut Insn) -> Option<Handler> {
    use Mnemonic as M;
    let m = ins.mnemonic();
    let (a, b) = st_operands(ins);
    i.r0 = a.unwrap_or(0);
    i.r1 = b.unwrap_or(0);
    if i.flags & MEM != 0 {
        i.size = memory_kind(ins);
    }
    i.op = m;
    Some(match m {
        M::Fninit
        | M::Fnclex
        | M::Fnstcw
        | M::Fldcw
        | M::Fincstp
        | M::Fdecstp
        | M::Ffree
        | M::Ffreep
        | M::Fnop
        | M::Fxch => control,
        M::Wait => wait,
        M::Fnstsw => {
            i.cc = u8::from(ins.op_kind(0) == OpKind::Register);
            control
        }
        M::Fld | M::Fild | M::Fbld => load,
        M::Fst | M::Fstp | M::Fist | M::Fistp | M::Fisttp | M::Fbstp => store,
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => arith,
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Ficom
        | M::Ficomp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp => compare,
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => compare_flags,
        M::Fchs
        | M::Fabs
        | M::Fsqrt
        | M::Frndint
        | M::F2xm1
        | M::Fsin
        | M::Fcos
        | M::Ftst
        | M::Fxam
        | M::Fsincos
        | M::Fptan
        | M::Fxtract
        | M::Fprem
        | M::Fprem1
        | M::Fscale
        | M::Fyl2x
        | M::Fyl2xp1
        | M::Fpatan
        | M::Fld1
        | M::Fldl2t
        | M::Fldl2e
        | M::Fldpi
        | M::Fldlg2
        | M::Fldln2
        | M::Fldz => compute_op,
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu => fcmov,
        M::Fnstenv | M::Fldenv | M::Fnsave | M::Frstor => {
            i.cc = u8::from(ins.op_code().operand_size() == 16);
            environment
        }
        M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64 => {
            i.cc = u8::from(matches!(m, M::Fxsave64 | M::Fxrstor64));
            fxsave_fxrstor
        }
        M::Ldmxcsr => ldmxcsr,
        M::Stmxcsr => stmxcsr,
        M::Emms => emms,
        _ => return None,
    })
}

/// Instructions that do not wait for pending x87 exceptions (the FN- forms).
fn is_non_waiting(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Fninit
            | Mnemonic::Fnclex
            | Mnemonic::Fnstcw
            | Mnemonic::Fnstsw
            | Mnemonic::Fnstenv
            | Mnemonic::Fnsave
    )
}

impl Core {
    /// #NM for CR0.EM/TS, then #MF for a pending unmasked x87 exception on waiting
    /// instructions.
    fn check_x87(&mut self, i: &Insn) -> Result<()> {
        if self.s.cr0 & (CR0_EM | CR0_TS) != 0 {
            return Err(Exception::nm());
        }
        if !is_non_waiting(i.op) && stack::mf_pending(&self.s.fpu) && self.s.cr0 & CR0_NE != 0 {
            return Err(Exception::new(MF));
        }
        Ok(())
    }

    /// Records the last x87 instruction and data pointers.
    fn note_x87(&mut self, i: &Insn) {
        self.s.fpu.fip = self.s.rip.wrapping_sub(u64::from(i.len));
        if i.flags & MEM != 0 {
            self.s.fpu.fdp = self.ea(i);
        }
    }

    fn read_x87(&mut self, i: &Insn, len: usize) -> Result<[u8; 10]> {
        let lin = self.linear(i.seg as usize, self.ea(i), len as u32, false)?;
        let mut b = [0u8; 10];
        let user = self.user();
        self.read_bytes(lin, &mut b[..len], user)?;
        Ok(b)
    }

    /// The linear address of an x87 store's `len`-byte destination, translated for writing
    /// (accessed and dirty bits set, #PF raised) as hardware does whether or not an unmasked
    /// exception then suppresses the store.
    fn x87_store_target(&mut self, i: &Insn, len: usize) -> Result<u64> {
        let lin = self.linear(i.seg as usize, self.ea(i), len as u32, true)?;
        let user = self.user();
        self.host_for(lin, Access::Write, user)?;
        let last = lin.wrapping_add(len as u64 - 1);
        if (last ^ lin) & !0xfff != 0 {
            self.host_for(last & !0xfff, Access::Write, user)?;
        }
        Ok(lin)
    }
}

fn u32_of(b: [u8; 10]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn u64_of(b: [u8; 10]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// FWAIT: #NM when CR0.MP and CR0.TS are both set (CR0.EM does not matter), then #MF for a
/// pending unmasked x87 exception.
fn wait(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
        return Err(Exception::nm());
    }
    if stack::mf_pending(&cpu.s.fpu) && cpu.s.cr0 & CR0_NE != 0 {
        return Err(Exception::new(MF));
    }
    Ok(())
}

/// Control instructions: FNINIT, FNCLEX, FNSTCW, FLDCW, FNSTSW, FINCSTP, FDECSTP, FFREE(P),
/// FNOP, FXCH.
fn control(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    let f = &mut cpu.s.fpu;
    match i.op {
        M::Fninit => ops::fninit(f),
        M::Fnclex => ops::fnclex(f),
        M::Fnstcw => {
            let v = ops::fnstcw(f);
            return cpu.mem_write(i, 2, u64::from(v));
        }
        M::Fldcw => {
            let v = cpu.mem_read(i, 2)? as u16;
            let _ = ops::fldcw(&mut cpu.s.fpu, v);
        }
        M::Fnstsw => {
            let v = u64::from(ops::fnstsw(f));
            if i.cc == 1 {
                cpu.put_reg(0, 2, v);
                return Ok(());
            }
            return cpu.mem_write(i, 2, v);
        }
        M::Fincstp => ops::fincstp(f),
        M::Fdecstp => ops::fdecstp(f),
        M::Ffree => ops::ffree(f, usize::from(i.r0)),
        M::Ffreep => ops::ffreep(f, usize::from(i.r0)),
        M::Fxch => {
            let other = if i.r0 == 0 { i.r1 } else { i.r0 };
            let _ = ops::fxch(f, usize::from(other));
        }
        _ => {}
    }
    Ok(())
}

/// FLD, FILD, FBLD.
fn load(cpu: &mut Core, i: &Insn) -> Result<()> {
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    if i.flags & MEM == 0 {
        let _ = ops::fld_st(&mut cpu.s.fpu, usize::from(i.r0));
        return Ok(());
    }
    let len = match i.size {
        F32 | I32 => 4,
        F64 | I64 => 8,
        I16 => 2,
        _ => 10,
    };
    let b = cpu.read_x87(i, len)?;
    let f = &mut cpu.s.fpu;
    let _ = match i.size {
        F32 => ops::fld_f32(f, u32_of(b)),
        F64 => ops::fld_f64(f, u64_of(b)),
        F80 => ops::fld_f80(f, b),
        I16 => ops::fild(f, i64::from(i16::from_le_bytes([b[0], b[1]]))),
        I32 => ops::fild(f, i64::from(u32_of(b) as i32)),
        I64 => ops::fild(f, u64_of(b) as i64),
        _ => ops::fbld(f, b),
    };
    Ok(())
}

/// FST, FSTP, FIST, FISTP, FISTTP, FBSTP.
fn store(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    let pop = matches!(i.op, M::Fstp | M::Fistp | M::Fisttp | M::Fbstp);
    if i.flags & MEM == 0 {
        let _ = ops::fst_st(&mut cpu.s.fpu, usize::from(i.r0), pop);
        return Ok(());
    }
    let len = match i.size {
        F32 | I32 => 4,
        F64 | I64 => 8,
        F80 | BCD => 10,
        _ => 2,
    };
    let lin = cpu.x87_store_target(i, len)?;
    let f = &mut cpu.s.fpu;
    let mut bytes = [0u8; 10];
    let stored = match i.size {
        F32 => ops::fst_f32(f, pop)
            .value
            .map(|v| bytes[..4].copy_from_slice(&v.to_le_bytes())),
        F64 => ops::fst_f64(f, pop)
            .value
            .map(|v| bytes[..8].copy_from_slice(&v.to_le_bytes())),
        F80 => ops::fst_f80(f, pop).value.map(|v| bytes = v),
        BCD => ops::fbstp(f).value.map(|v| bytes = v),
        kind => {
            let bits = match kind {
                I16 => 16,
                I32 => 32,
                _ => 64,
            };
            ops::fist(f, bits, pop, i.op == M::Fisttp)
                .value
                .map(|v| bytes[..len].copy_from_slice(&v.to_le_bytes()[..len]))
        }
    };
    if stored.is_some() {
        // Translated above: the store cannot fault.
        let user = cpu.user();
        cpu.write_bytes(lin, &bytes[..len], user)?;
    }
    Ok(())
}

fn arith_op(m: Mnemonic) -> ArithOp {
    use Mnemonic as M;
    match m {
        M::Fadd | M::Faddp | M::Fiadd => ArithOp::Add,
        M::Fmul | M::Fmulp | M::Fimul => ArithOp::Mul,
        M::Fsub | M::Fsubp | M::Fisub => ArithOp::Sub,
        M::Fsubr | M::Fsubrp | M::Fisubr => ArithOp::Subr,
        M::Fdiv | M::Fdivp | M::Fidiv => ArithOp::Div,
        _ => ArithOp::Divr,
    }
}

/// Two-operand arithmetic in every form.
fn arith(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    let op = arith_op(i.op);
    let form = if i.flags & MEM != 0 {
        let len = if i.size == F64 {
            8
        } else if i.size == I16 {
            2
        } else {
            4
        };
        let b = cpu.read_x87(i, len)?;
        match i.size {
            F32 => ArithForm::M32(u32_of(b)),
            F64 => ArithForm::M64(u64_of(b)),
            I16 => ArithForm::I16(i16::from_le_bytes([b[0], b[1]])),
            _ => ArithForm::I32(u32_of(b) as i32),
        }
    } else if matches!(
        i.op,
        M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
    ) {
        ArithForm::StiSt0Pop(i.r0)
    } else if i.r0 == 0 {
        ArithForm::St0Sti(i.r1)
    } else {
        ArithForm::StiSt0(i.r0)
    };
    let _ = compute::arith(&mut cpu.s.fpu, op, form);
    Ok(())
}

/// FCOM-family compares into the condition codes.
fn compare(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    let unordered = matches!(i.op, M::Fucom | M::Fucomp | M::Fucompp);
    if matches!(i.op, M::Fcompp | M::Fucompp) {
        let _ = compute::fcompp(&mut cpu.s.fpu, unordered);
        return Ok(());
    }
    let pop = matches!(i.op, M::Fcomp | M::Ficomp | M::Fucomp);
    let src = if i.flags & MEM != 0 {
        let len = if i.size == F64 {
            8
        } else if i.size == I16 {
            2
        } else {
            4
        };
        let b = cpu.read_x87(i, len)?;
        match i.size {
            F32 => CmpSrc::M32(u32_of(b)),
            F64 => CmpSrc::M64(u64_of(b)),
            I16 => CmpSrc::I16(i16::from_le_bytes([b[0], b[1]])),
            _ => CmpSrc::I32(u32_of(b) as i32),
        }
    } else {
        CmpSrc::Reg(i.r1)
    };
    let _ = compute::fcom(&mut cpu.s.fpu, src, unordered, pop);
    Ok(())
}

/// FCOMI/FCOMIP/FUCOMI/FUCOMIP into RFLAGS.
fn compare_flags(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    let unordered = matches!(i.op, M::Fucomi | M::Fucomip);
    let pop = matches!(i.op, M::Fcomip | M::Fucomip);
    let r = compute::fcomi(&mut cpu.s.fpu, i.r1, unordered, pop);
    cpu.s.flags.set_arith(r.rflags & (ZF | PF | CF));
    Ok(())
}

/// One-operand, two-operand (ST(0), ST(1)) and constant-loading instructions.
fn compute_op(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    cpu.note_x87(i);
    let f = &mut cpu.s.fpu;
    let _ = match i.op {
        M::Fchs => compute::unary(f, UnaryOp::Chs),
        M::Fabs => compute::unary(f, UnaryOp::Abs),
        M::Fsqrt => compute::unary(f, UnaryOp::Sqrt),
        M::Frndint => compute::unary(f, UnaryOp::Rndint),
        M::F2xm1 => compute::unary(f, UnaryOp::F2xm1),
        M::Fsin => compute::unary(f, UnaryOp::Sin),
        M::Fcos => compute::unary(f, UnaryOp::Cos),
        M::Ftst => compute::unary(f, UnaryOp::Tst),
        M::Fxam => compute::unary(f, UnaryOp::Xam),
        M::Fsincos => compute::unary(f, UnaryOp::Sincos),
        M::Fptan => compute::unary(f, UnaryOp::Ptan),
        M::Fxtract => compute::unary(f, UnaryOp::Xtract),
        M::Fprem => compute::binary(f, BinaryOp::Prem),
        M::Fprem1 => compute::binary(f, BinaryOp::Prem1),
        M::Fscale => compute::binary(f, BinaryOp::Scale),
        M::Fyl2x => compute::binary(f, BinaryOp::Yl2x),
        M::Fyl2xp1 => compute::binary(f, BinaryOp::Yl2xp1),
        M::Fpatan => compute::binary(f, BinaryOp::Patan),
        M::Fld1 => compute::fld_const(f, Const::One),
        M::Fldl2t => compute::fld_const(f, Const::L2t),
        M::Fldl2e => compute::fld_const(f, Const::L2e),
        M::Fldpi => compute::fld_const(f, Const::Pi),
        M::Fldlg2 => compute::fld_const(f, Const::Lg2),
        M::Fldln2 => compute::fld_const(f, Const::Ln2),
        _ => compute::fld_const(f, Const::Zero),
    };
    Ok(())
}

/// FCMOVcc ST(0), ST(i).
fn fcmov(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    let fl = &cpu.s.flags;
    let cond = match i.op {
        M::Fcmovb => fl.cf(),
        M::Fcmove => fl.zf(),
        M::Fcmovbe => fl.cf() || fl.zf(),
        M::Fcmovu => fl.pf(),
        M::Fcmovnb => !fl.cf(),
        M::Fcmovne => !fl.zf(),
        M::Fcmovnbe => !(fl.cf() || fl.zf()),
        _ => !fl.pf(),
    };
    let _ = ops::fcmov(&mut cpu.s.fpu, usize::from(i.r1), cond);
    Ok(())
}

/// The environment format for the current mode and operand size (`i.cc` 1: 16-bit).
fn env_format(cpu: &Core, i: &Insn) -> EnvFormat {
    let protected = cpu.s.mode.protected && !cpu.s.mode.v86;
    match (protected, i.cc == 1) {
        (true, false) => EnvFormat::Protected32,
        (true, true) => EnvFormat::Protected16,
        (false, false) => EnvFormat::Real32,
        (false, true) => EnvFormat::Real16,
    }
}

/// FNSTENV, FLDENV, FNSAVE, FRSTOR.
fn environment(cpu: &mut Core, i: &Insn) -> Result<()> {
    use Mnemonic as M;
    cpu.check_x87(i)?;
    let fmt = env_format(cpu, i);
    match i.op {
        M::Fnstenv => {
            let mut f = cpu.s.fpu.clone();
            let img = image::fnstenv(&mut f, fmt);
            cpu.write_x87_image(i, &img[..fmt.env_len()])?;
            cpu.s.fpu = f;
        }
        M::Fnsave => {
            let mut f = cpu.s.fpu.clone();
            let img = image::fnsave(&mut f, fmt);
            cpu.write_x87_image(i, &img[..fmt.save_len()])?;
            cpu.s.fpu = f;
        }
        M::Fldenv => {
            let img = cpu.read_x87_image(i, fmt.env_len())?;
            image::fldenv(&mut cpu.s.fpu, &img, fmt);
        }
        _ => {
            let img = cpu.read_x87_image(i, fmt.save_len())?;
            image::frstor(&mut cpu.s.fpu, &img, fmt);
        }
    }
    Ok(())
}

impl Core {
    fn write_x87_image(&mut self, i: &Insn, bytes: &[u8]) -> Result<()> {
        let lin = self.linear(i.seg as usize, self.ea(i), bytes.len() as u32, true)?;
        let user = self.user();
        self.write_bytes(lin, bytes, user)
    }

    fn read_x87_image(&mut self, i: &Insn, len: usize) -> Result<Vec<u8>> {
        let lin = self.linear(i.seg as usize, self.ea(i), len as u32, false)?;
        let mut img = vec![0u8; len];
        let user = self.user();
        self.read_bytes(lin, &mut img, user)?;
        Ok(img)
    }
}

/// FXSAVE/FXRSTOR (`i.cc` 1: the 64-bit-pointer forms).
fn fxsave_fxrstor(cpu: &mut Core, i: &Insn) -> Result<()> {
    if cpu.s.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Exception::nm());
    }
    let off = cpu.ea(i);
    if off & 15 != 0 {
        return Err(Exception::gp0());
    }
    let fmt = if i.cc == 1 {
        FxFormat::Bits64
    } else if cpu.s.mode.code_bits == 64 {
        FxFormat::Bits32
    } else {
        FxFormat::Legacy
    };
    let user = cpu.user();
    if matches!(i.op, Mnemonic::Fxsave | Mnemonic::Fxsave64) {
        let lin = cpu.linear(i.seg as usize, off, 512, true)?;
        // Read first: FXSAVE leaves the reserved areas of the image unchanged.
        let mut img = [0u8; 512];
        cpu.read_bytes(lin, &mut img, user)?;
        let old = img;
        image::fxsave_into(&cpu.s.fpu, fmt, &mut img);
        if cpu.s.cr4 & CR4_OSFXSR == 0 {
            // Without OSFXSR the SSE state is not saved.
            img[24..32].copy_from_slice(&old[24..32]);
            img[160..416].copy_from_slice(&old[160..416]);
        }
        cpu.write_bytes(lin, &img, user)
    } else {
        let lin = cpu.linear(i.seg as usize, off, 512, false)?;
        let mut img = [0u8; 512];
        cpu.read_bytes(lin, &mut img, user)?;
        let mut f = cpu.s.fpu.clone();
        image::fxrstor_image(&mut f, &img, fmt).map_err(|_| Exception::gp0())?;
        if cpu.s.cr4 & CR4_OSFXSR == 0 {
            f.mxcsr = cpu.s.fpu.mxcsr;
            f.xmm = cpu.s.fpu.xmm;
        }
        cpu.s.fpu = f;
        Ok(())
    }
}

/// LDMXCSR m32.
fn ldmxcsr(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let v = cpu.mem_read(i, 4)? as u32;
    if v & !MXCSR_MASK != 0 {
        return Err(Exception::gp0());
    }
    cpu.s.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(cpu: &mut Core, i: &Insn) -> Result<()> {
    check_sse(cpu)?;
    let v = u64::from(cpu.s.fpu.mxcsr);
    if i.flags & MEM_DST == 0 {
        return Err(Exception::ud());
    }
    cpu.mem_write(i, 4, v)
}

/// EMMS: every x87 register empty.
fn emms(cpu: &mut Core, _: &Insn) -> Result<()> {
    if cpu.s.cr0 & CR0_EM != 0 {
        return Err(Exception::ud());
    }
    if cpu.s.cr0 & CR0_TS != 0 {
        return Err(Exception::nm());
    }
    cpu.s.fpu.ftw = 0;
    Ok(())
}

/// #UD without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS: the checks of SSE instructions.
pub(crate) fn check_sse(cpu: &Core) -> Result<()> {
    if cpu.s.cr4 & CR4_OSFXSR == 0 || cpu.s.cr0 & CR0_EM != 0 {
        return Err(Exception::ud());
    }
    if cpu.s.cr0 & CR0_TS != 0 {
        return Err(Exception::nm());
    }
    Ok(())
}
