//! Lowering iced-x86's decoded instructions to [`Insn`]s: choosing the handler and
//! resolving operands once, at block translation time.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::exec::{alu, bits, control, data, simd, string, system, x87};
use super::hostcpu::SimdLevel;
use super::insn::{Handler, Insn, HIGH_BYTE, LOCK, MEM, MEM_DST, REP, REPNE, ZERO};

/// How an instruction affects block formation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Execution continues with the next instruction.
    Next,
    /// The block must end after this instruction (branches, mode changes, I/O).
    End,
}

/// A GPR operand's index (with [`HIGH_BYTE`] for AH..BH) and size in bytes.
pub fn gpr(reg: Register) -> Option<(u8, u32)> {
    let v = reg as u32;
    match v {
        1..=4 => Some(((v - 1) as u8, 1)),
        5..=8 => Some((HIGH_BYTE | (v - 5) as u8, 1)),
        9..=20 => Some(((v - 5) as u8, 1)),
        21..=36 => Some(((v - 21) as u8, 2)),
        37..=52 => Some(((v - 37) as u8, 4)),
        53..=68 => Some(((v - 53) as u8, 8)),
        _ => None,
    }
}

/// A segment register's index.
pub fn sreg(reg: Register) -> Option<u8> {
    let v = reg as u32;
    (71..=76).contains(&v).then(|| (v - 71) as u8)
}

fn is_mem(kind: OpKind) -> bool {
    matches!(kind, OpKind::Memory)
}

fn is_imm(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// The address size of the memory operand, in bytes.
fn address_size(ins: &Instruction, code_bits: u32) -> u8 {
    for reg in [ins.memory_base(), ins.memory_index()] {
        match reg {
            Register::RIP => return 8,
            Register::EIP => return 4,
            r => {
                if let Some((_, size)) = gpr(r) {
                    return size as u8;
                }
            }
        }
    }
    match ins.memory_displ_size() {
        s @ (2 | 4 | 8) => s as u8,
        _ => (code_bits / 8) as u8,
    }
}

/// The instance of a handler generic over the operand size (1, 2, 4 or 8 bytes) for `size`.
macro_rules! by_size {
    ($($handler:ident)::+, $size:expr) => {
        match $size {
            1 => $($handler)::+::<1> as Handler,
            2 => $($handler)::+::<2>,
            4 => $($handler)::+::<4>,
            _ => $($handler)::+::<8>,
        }
    };
}

/// The instance of a handler generic over a condition code (0..16) for `cc`.
macro_rules! by_condition {
    ($($handler:ident)::+, $cc:expr) => {
        match $cc {
            0 => $($handler)::+::<0> as Handler,
            1 => $($handler)::+::<1>,
            2 => $($handler)::+::<2>,
            3 => $($handler)::+::<3>,
            4 => $($handler)::+::<4>,
            5 => $($handler)::+::<5>,
            6 => $($handler)::+::<6>,
            7 => $($handler)::+::<7>,
            8 => $($handler)::+::<8>,
            9 => $($handler)::+::<9>,
            10 => $($handler)::+::<10>,
            11 => $($handler)::+::<11>,
            12 => $($handler)::+::<12>,
            13 => $($handler)::+::<13>,
            14 => $($handler)::+::<14>,
            _ => $($handler)::+::<15>,
        }
    };
}

/// The operand size of instruction `ins` in bytes (its first operand's, by default).
fn operand_size(ins: &Instruction, code_bits: u32) -> u8 {
    for n in 0..ins.op_count() {
        match ins.op_kind(n) {
            OpKind::Register => {
                if let Some((_, size)) = gpr(ins.op_register(n)) {
                    return size as u8;
                }
            }
            OpKind::Memory => {
                let s = ins.memory_size().size();
                if matches!(s, 1 | 2 | 4 | 8) {
                    return s as u8;
                }
            }
            _ => {}
        }
    }
    (code_bits / 8).min(4) as u8
}

/// Lowers `ins` for a vCPU offering SSE level `simd`. Instructions the interpreter does not
/// implement, and those of SSE extensions above `simd`, get a handler that raises #UD.
pub fn lower(ins: &Instruction, code_bits: u32, simd: SimdLevel) -> (Insn, Flow) {
    let mut i = Insn {
        exec: control::undefined,
        next: ins.next_ip(),
        imm: 0,
        disp: 0,
        imm2: 0,
        len: ins.len() as u8,
        size: operand_size(ins, code_bits),
        asize: (code_bits / 8) as u8,
        r0: 0,
        r1: 0,
        base: ZERO,
        index: ZERO,
        scale: 0,
        seg: 3,
        cc: 0,
        flags: 0,
        op: ins.mnemonic(),
    };
    if ins.is_invalid() || SimdLevel::required_by(ins) > simd {
        return (i, Flow::End);
    }
    if ins.has_lock_prefix() {
        i.flags |= LOCK;
    }
    if ins.has_rep_prefix() {
        i.flags |= REP;
    }
    if ins.has_repne_prefix() {
        i.flags |= REPNE;
    }
    // Memory operand.
    let mut mem_operand = None;
    for n in 0..ins.op_count() {
        if is_mem(ins.op_kind(n)) {
            mem_operand = Some(n);
        }
    }
    if let Some(n) = mem_operand {
        i.flags |= MEM;
        if n == 0 {
            i.flags |= MEM_DST;
        }
        i.asize = address_size(ins, code_bits);
        i.seg = sreg(ins.memory_segment()).unwrap_or(3);
        let base = ins.memory_base();
        i.base = gpr(base).map_or(ZERO, |(r, _)| r);
        i.index = gpr(ins.memory_index()).map_or(ZERO, |(r, _)| r);
        i.scale = ins.memory_index_scale().trailing_zeros() as u8;
        i.disp = ins.memory_displacement64();
    } else if ins.op_count() > 0 && ins.is_string_instruction() {
        // String operands: address size from the rSI/rDI operand kind, segment for rSI.
        for n in 0..ins.op_count() {
            match ins.op_kind(n) {
                OpKind::MemorySegSI | OpKind::MemoryESDI => i.asize = 2,
                OpKind::MemorySegESI | OpKind::MemoryESEDI => i.asize = 4,
                OpKind::MemorySegRSI | OpKind::MemoryESRDI => i.asize = 8,
                _ => {}
            }
        }
        i.seg = sreg(ins.memory_segment()).unwrap_or(3);
    }
    // Register and immediate operands.
    let reg = |n: u32| {
        if n < ins.op_count() && ins.op_kind(n) == OpKind::Register {
            gpr(ins.op_register(n))
        } else {
            None
        }
    };
    if let Some((r, _)) = reg(0) {
        i.r0 = r;
    }
    if let Some((r, _)) = reg(1) {
        i.r1 = r;
    }
    for n in 0..ins.op_count() {
        let k = ins.op_kind(n);
        if is_imm(k) {
            if i.imm == 0 || n < 2 {
                i.imm = ins.immediate(n);
            } else {
                i.imm2 = ins.immediate(n) as u16;
            }
        }
    }
    let flow = lower_mnemonic(ins, &mut i, code_bits);
    (i, flow)
}

/// Handler for the ALU operation `OP` in the operand form of `i`.
fn alu_form<const OP: u8>(ins: &Instruction, i: &Insn) -> Handler {
    let imm = ins.op_count() > 1 && is_imm(ins.op_kind(1));
    if i.flags & MEM_DST != 0 {
        if imm {
            alu::alu_m::<OP, true>
        } else {
            alu::alu_m::<OP, false>
        }
    } else if i.flags & MEM != 0 {
        alu::alu_rm::<OP>
    } else if imm {
        alu::alu_ri::<OP>
    } else {
        alu::alu_rr::<OP>
    }
}

fn condition(ins: &Instruction) -> u8 {
    (ins.condition_code() as u8).wrapping_sub(1) & 0xf
}

fn string_kind(m: Mnemonic) -> u8 {
    match m {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => string::MOVS,
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => string::STOS,
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => string::LODS,
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => string::CMPS,
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => string::SCAS,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => string::INS,
        _ => string::OUTS,
    }
}

fn string_size(m: Mnemonic) -> u8 {
    match m {
        Mnemonic::Movsb
        | Mnemonic::Stosb
        | Mnemonic::Lodsb
        | Mnemonic::Cmpsb
        | Mnemonic::Scasb
        | Mnemonic::Insb
        | Mnemonic::Outsb => 1,
        Mnemonic::Movsw
        | Mnemonic::Stosw
        | Mnemonic::Lodsw
        | Mnemonic::Cmpsw
        | Mnemonic::Scasw
        | Mnemonic::Insw
        | Mnemonic::Outsw => 2,
        Mnemonic::Movsq | Mnemonic::Stosq | Mnemonic::Lodsq | Mnemonic::Cmpsq | Mnemonic::Scasq => {
            8
        }
        _ => 4,
    }
}

/// The size of the stack operation's value: the instruction's operand size.
fn stack_size(ins: &Instruction, code_bits: u32) -> u8 {
    let inc = ins.stack_pointer_increment().unsigned_abs();
    if matches!(inc, 2 | 4 | 8) {
        inc as u8
    } else {
        (code_bits / 8) as u8
    }
}

fn lower_mnemonic(ins: &Instruction, i: &mut Insn, code_bits: u32) -> Flow {
    use Mnemonic as M;
    let m = ins.mnemonic();
    let mem = i.flags & MEM != 0;
    let mut unimplemented = false;
    let h: Handler = match m {
        M::Add => alu_form::<{ alu::ADD }>(ins, i),
        M::Or => alu_form::<{ alu::OR }>(ins, i),
        M::Adc => alu_form::<{ alu::ADC }>(ins, i),
        M::Sbb => alu_form::<{ alu::SBB }>(ins, i),
        M::And => alu_form::<{ alu::AND }>(ins, i),
        M::Sub => alu_form::<{ alu::SUB }>(ins, i),
        M::Xor => alu_form::<{ alu::XOR }>(ins, i),
        M::Cmp => alu_form::<{ alu::CMP }>(ins, i),
        M::Test => {
            if is_imm(ins.op_kind(1)) {
                alu::test::<true>
            } else {
                alu::test::<false>
            }
        }
        M::Inc => alu::inc_dec::<false>,
        M::Dec => alu::inc_dec::<true>,
        M::Neg => alu::neg,
        M::Not => alu::not,
        M::Mul => alu::mul1::<false>,
        M::Imul => match ins.op_count() {
            1 => alu::mul1::<true>,
            2 => alu::imul_n::<false>,
            _ => alu::imul_n::<true>,
        },
        M::Div => alu::div::<false>,
        M::Idiv => alu::div::<true>,
        M::Xadd => alu::xadd,
        M::Cmpxchg => alu::cmpxchg,
        M::Cmpxchg8b => {
            i.size = 4;
            alu::cmpxchg_double
        }
        M::Cmpxchg16b => {
            i.size = 8;
            alu::cmpxchg_double
        }
        M::Daa => alu::daa_das::<false>,
        M::Das => alu::daa_das::<true>,
        M::Aaa => alu::aaa_aas::<false>,
        M::Aas => alu::aaa_aas::<true>,
        M::Aam => alu::aam,
        M::Aad => alu::aad,
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
            i.cc = match m {
                M::Rol => bits::ROL,
                M::Ror => bits::ROR,
                M::Rcl => bits::RCL,
                M::Rcr => bits::RCR,
                M::Shr => bits::SHR,
                M::Sar => bits::SAR,
                _ => bits::SHL,
            };
            // The implicit count of D0/D1 is an immediate 1 to the decoder.
            match ins.op_kind(1) {
                OpKind::Register => bits::shift::<{ bits::COUNT_CL }>,
                _ => bits::shift::<{ bits::COUNT_IMM }>,
            }
        }
        M::Shld | M::Shrd => {
            i.cc = u8::from(ins.op_kind(2) == OpKind::Register);
            if m == M::Shld {
                bits::shift_double::<false>
            } else {
                bits::shift_double::<true>
            }
        }
        M::Bt | M::Bts | M::Btr | M::Btc => {
            i.cc = match m {
                M::Bt => bits::BT,
                M::Bts => bits::BTS,
                M::Btr => bits::BTR,
                _ => bits::BTC,
            };
            if is_imm(ins.op_kind(1)) {
                bits::bit_test::<true>
            } else {
                bits::bit_test::<false>
            }
        }
        M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => {
            i.cc = match m {
                M::Bsf => 0,
                M::Bsr => 1,
                // Without BMI1, F3 0F BC is BSF, as on older processors.
                M::Tzcnt => 0,
                M::Lzcnt => 3,
                _ => 4,
            };
            bits::bit_scan
        }
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => {
            i.cc = condition(ins);
            i.size = 1;
            bits::setcc
        }
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => {
            i.cc = condition(ins);
            bits::cmov
        }
        M::Bswap => bits::bswap,
        M::Cbw | M::Cwde | M::Cdqe => {
            i.size = match m {
                M::Cbw => 2,
                M::Cwde => 4,
                _ => 8,
            };
            bits::sign_extend_ax
        }
        M::Cwd | M::Cdq | M::Cqo => {
            i.size = match m {
                M::Cwd => 2,
                M::Cdq => 4,
                _ => 8,
            };
            bits::sign_fill_dx
        }
        M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => {
            i.cc = match m {
                M::Clc => 0,
                M::Stc => 1,
                M::Cmc => 2,
                M::Cld => 3,
                _ => 4,
            };
            bits::flag_op
        }
        M::Lahf => bits::lahf,
        M::Sahf => bits::sahf,
        M::Salc => bits::salc,

        M::Mov => return lower_mov(ins, i),
        M::Movzx | M::Movsx | M::Movsxd => {
            let from = if mem {
                ins.memory_size().size() as u64
            } else {
                gpr(ins.op_register(1)).map_or(4, |(_, s)| u64::from(s))
            };
            match (from, m == M::Movzx) {
                (1, true) => data::mov_extend::<1, false>,
                (2, true) => data::mov_extend::<2, false>,
                (1, false) => data::mov_extend::<1, true>,
                (2, false) => data::mov_extend::<2, true>,
                (_, true) => data::mov_extend::<4, false>,
                (_, false) => data::mov_extend::<4, true>,
            }
        }
        M::Lea => data::lea,
        M::Xchg => {
            if mem && i.flags & MEM_DST == 0 {
                // xchg reg, [mem]: normalise to memory first.
                i.flags |= MEM_DST;
                i.r1 = i.r0;
            }
            data::xchg
        }
        M::Push => {
            i.size = stack_size(ins, code_bits);
            if let Some(s) = sreg(ins.op_register(0)).filter(|_| ins.op_kind(0) == OpKind::Register)
            {
                i.r0 = s;
                data::push_sreg
            } else {
                i.cc = if mem {
                    1
                } else if is_imm(ins.op_kind(0)) {
                    2
                } else {
                    0
                };
                if i.cc == 0 {
                    by_size!(data::push_reg, i.size)
                } else {
                    data::push
                }
            }
        }
        M::Pop => {
            i.size = stack_size(ins, code_bits);
            if let Some(s) = sreg(ins.op_register(0)).filter(|_| ins.op_kind(0) == OpKind::Register)
            {
                i.r0 = s;
                data::pop_sreg
            } else if mem {
                data::pop
            } else {
                by_size!(data::pop_reg, i.size)
            }
        }
        M::Pushf | M::Pushfd | M::Pushfq => {
            i.size = stack_size(ins, code_bits);
            data::pushf
        }
        M::Popf | M::Popfd | M::Popfq => {
            i.size = stack_size(ins, code_bits);
            data::popf
        }
        M::Pusha | M::Pushad => {
            i.size = if m == M::Pusha { 2 } else { 4 };
            data::pusha
        }
        M::Popa | M::Popad => {
            i.size = if m == M::Popa { 2 } else { 4 };
            data::popa
        }
        M::Enter => {
            i.size = opcode_operand_size(ins, code_bits);
            i.imm = ins.immediate(0);
            i.imm2 = ins.immediate(1) as u16;
            data::enter
        }
        M::Leave => {
            // iced reports no fixed stack increment for LEAVE; its size is the operand size.
            i.size = opcode_operand_size(ins, code_bits);
            data::leave
        }
        M::Xlatb => data::xlat,
        M::Movnti => by_size!(data::mov_mr, i.size),
        M::Lds | M::Les | M::Lss | M::Lfs | M::Lgs if mem => {
            i.size = far_mem_size(ins);
            i.r1 = match m {
                M::Les => 0,
                M::Lss => 2,
                M::Lds => 3,
                M::Lfs => 4,
                _ => 5,
            };
            data::load_far_pointer
        }
        M::Movbe => data::movbe,
        M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Prefetch
        | M::Endbr32
        | M::Endbr64 => data::nop,
        M::Clflush | M::Clflushopt => data::touch,

        M::Jmp => {
            i.size = if ins.op_kind(0) == OpKind::Register || mem {
                opcode_operand_size(ins, code_bits)
            } else {
                i.size
            };
            match ins.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    i.imm = ins.near_branch_target();
                    control::jmp_rel
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    i.imm = far_offset(ins);
                    i.imm2 = ins.far_branch_selector();
                    i.size = if ins.op_kind(0) == OpKind::FarBranch16 {
                        2
                    } else {
                        4
                    };
                    control::far_direct
                }
                OpKind::Memory if is_far(ins) => {
                    i.size = far_mem_size(ins);
                    control::far_indirect
                }
                _ => control::jmp_ind,
            }
        }
        M::Call => {
            i.size = opcode_operand_size(ins, code_bits);
            match ins.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    i.imm = ins.near_branch_target();
                    control::call_rel
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    i.imm = far_offset(ins);
                    i.imm2 = ins.far_branch_selector();
                    i.size = if ins.op_kind(0) == OpKind::FarBranch16 {
                        2
                    } else {
                        4
                    };
                    i.cc = 1;
                    control::far_direct
                }
                OpKind::Memory if is_far(ins) => {
                    i.size = far_mem_size(ins);
                    i.cc = 1;
                    control::far_indirect
                }
                _ => control::call_ind,
            }
        }
        M::Ret => {
            i.size = opcode_operand_size(ins, code_bits);
            i.imm = if ins.op_count() > 0 {
                ins.immediate(0)
            } else {
                0
            };
            control::ret_near
        }
        M::Retf => {
            i.size = opcode_operand_size(ins, code_bits);
            i.imm = if ins.op_count() > 0 {
                ins.immediate(0)
            } else {
                0
            };
            control::ret_far
        }
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => {
            i.cc = condition(ins);
            i.imm = ins.near_branch_target();
            by_condition!(control::jcc, i.cc)
        }
        M::Loopne | M::Loope | M::Loop | M::Jcxz | M::Jecxz | M::Jrcxz => {
            i.cc = match m {
                M::Loopne => 0,
                M::Loope => 1,
                M::Loop => 2,
                _ => 3,
            };
            i.asize = match m {
                M::Jcxz => 2,
                M::Jecxz => 4,
                M::Jrcxz => 8,
                _ => loop_address_size(ins, code_bits),
            };
            i.imm = ins.near_branch_target();
            control::loop_jcxz
        }
        M::Int => {
            i.imm = ins.immediate(0);
            control::int
        }
        M::Int3 => {
            i.cc = 1;
            control::int
        }
        M::Into => {
            i.cc = 2;
            control::int
        }
        M::Int1 => {
            i.cc = 3;
            control::int
        }
        M::Iret | M::Iretd | M::Iretq => {
            i.size = match m {
                M::Iret => 2,
                M::Iretd => 4,
                _ => 8,
            };
            control::iret
        }
        M::Syscall => control::syscall,
        M::Sysret | M::Sysretq => {
            i.size = if m == M::Sysretq { 8 } else { 4 };
            control::sysret
        }
        M::Sysenter => control::sysenter,
        M::Sysexit | M::Sysexitq => {
            i.size = if m == M::Sysexitq { 8 } else { 4 };
            control::sysexit
        }
        M::Hlt => control::hlt,
        M::Ud0 | M::Ud1 | M::Ud2 => control::undefined,

        M::Movsb
        | M::Movsw
        | M::Movsd
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsd
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd
            if ins.is_string_instruction() =>
        {
            i.cc = string_kind(m);
            i.size = string_size(m);
            string::string
        }

        M::In | M::Out => {
            i.cc = u8::from(m == M::Out);
            let acc = if m == M::In { 0 } else { 1 };
            i.size = gpr(ins.op_register(acc)).map_or(1, |(_, s)| s as u8);
            let port = if m == M::In { 1 } else { 0 };
            if is_imm(ins.op_kind(port)) {
                i.imm = ins.immediate(port);
                i.r1 = 0xff;
            } else {
                i.r1 = 0;
            }
            system::io
        }
        M::Cli => system::cli_sti,
        M::Sti => {
            i.cc = 1;
            system::cli_sti
        }
        M::Rdpkru => system::rdpkru,
        M::Wrpkru => system::wrpkru,
        M::Clac => system::clac_stac,
        M::Stac => {
            i.cc = 1;
            system::clac_stac
        }
        M::Cpuid => system::cpuid,
        M::Rdtsc => system::rdtsc,
        M::Rdtscp => {
            i.cc = 1;
            system::rdtsc
        }
        M::Rdmsr => system::rdmsr,
        M::Wrmsr => system::wrmsr,
        M::Rdrand => system::rdrand,
        M::Lgdt | M::Lidt => {
            i.cc = u8::from(m == M::Lidt);
            i.size = if ins.op_code().operand_size() == 16 {
                2
            } else {
                4
            };
            system::load_dtr
        }
        M::Sgdt | M::Sidt => {
            i.cc = u8::from(m == M::Sidt);
            system::store_dtr
        }
        // The handlers read a register operand from r1, as for LAR/LSL.
        M::Lldt => {
            i.r1 = i.r0;
            system::lldt
        }
        M::Ltr => {
            i.r1 = i.r0;
            system::ltr
        }
        M::Sldt | M::Str | M::Smsw => {
            i.cc = match m {
                M::Sldt => 0,
                M::Str => 1,
                _ => 2,
            };
            system::store_system
        }
        M::Lmsw => {
            i.r1 = i.r0;
            system::lmsw
        }
        M::Clts => system::clts,
        M::Invlpg => system::invlpg,
        M::Wbinvd | M::Invd => system::cache_control,
        M::Swapgs => system::swapgs,
        M::Lar | M::Lsl | M::Verr | M::Verw => {
            i.cc = match m {
                M::Lar => 0,
                M::Lsl => 1,
                M::Verr => 2,
                _ => 3,
            };
            if !mem && matches!(m, M::Verr | M::Verw) {
                i.r1 = i.r0;
            }
            system::descriptor_query
        }
        _ => match simd::lower(ins, i).or_else(|| x87::lower(ins, i)) {
            Some(h) => h,
            None => {
                unimplemented = true;
                control::undefined
            }
        },
    };
    i.exec = h;
    match m {
        M::Jmp
        | M::Call
        | M::Ret
        | M::Retf
        | M::Iret
        | M::Iretd
        | M::Iretq
        | M::Int
        | M::Int3
        | M::Into
        | M::Int1
        | M::Syscall
        | M::Sysret
        | M::Sysretq
        | M::Sysenter
        | M::Sysexit
        | M::Sysexitq
        | M::Hlt
        | M::Ud0
        | M::Ud1
        | M::Ud2
        | M::Lgdt
        | M::Lidt
        | M::Lldt
        | M::Ltr
        | M::Lmsw
        | M::Invlpg
        | M::Wrmsr
        | M::Popf
        | M::Popfd
        | M::Popfq
        | M::Sti
        | M::In
        | M::Out
        | M::Cpuid => Flow::End,
        _ if unimplemented => Flow::End,
        _ => Flow::Next,
    }
}

/// The operand size the opcode is defined with (16/32/64 bits), else the code size.
fn opcode_operand_size(ins: &Instruction, code_bits: u32) -> u8 {
    match ins.op_code().operand_size() {
        16 => 2,
        32 => 4,
        64 => 8,
        _ => (code_bits / 8) as u8,
    }
}

/// LOOP/JCXZ counter width: the address size.
fn loop_address_size(ins: &Instruction, code_bits: u32) -> u8 {
    match ins.op_code().address_size() {
        16 => 2,
        32 => 4,
        64 => 8,
        _ => (code_bits / 8) as u8,
    }
}

fn far_offset(ins: &Instruction) -> u64 {
    if ins.op_kind(0) == OpKind::FarBranch16 {
        u64::from(ins.far_branch16())
    } else {
        u64::from(ins.far_branch32())
    }
}

fn is_far(ins: &Instruction) -> bool {
    matches!(
        ins.memory_size(),
        iced_x86::MemorySize::SegPtr16
            | iced_x86::MemorySize::SegPtr32
            | iced_x86::MemorySize::SegPtr64
    )
}

fn far_mem_size(ins: &Instruction) -> u8 {
    match ins.memory_size() {
        iced_x86::MemorySize::SegPtr16 => 2,
        iced_x86::MemorySize::SegPtr64 => 8,
        _ => 4,
    }
}

/// MOV in all its forms.
fn lower_mov(ins: &Instruction, i: &mut Insn) -> Flow {
    let k0 = ins.op_kind(0);
    let k1 = ins.op_kind(1);
    let r0 = if k0 == OpKind::Register {
        Some(ins.op_register(0))
    } else {
        None
    };
    let r1 = if k1 == OpKind::Register {
        Some(ins.op_register(1))
    } else {
        None
    };
    let mut flow = Flow::Next;
    let h: Handler = if let Some(cr) = r0.filter(|r| r.is_cr()) {
        i.r0 = (cr as u32 - Register::CR0 as u32) as u8;
        flow = Flow::End;
        system::mov_to_cr
    } else if let Some(cr) = r1.filter(|r| r.is_cr()) {
        i.r1 = (cr as u32 - Register::CR0 as u32) as u8;
        system::mov_from_cr
    } else if let Some(dr) = r0.filter(|r| r.is_dr()) {
        i.r0 = (dr as u32 - Register::DR0 as u32) as u8;
        system::mov_to_dr
    } else if let Some(dr) = r1.filter(|r| r.is_dr()) {
        i.r1 = (dr as u32 - Register::DR0 as u32) as u8;
        system::mov_from_dr
    } else if let Some(s) = r0.and_then(sreg) {
        i.r0 = s;
        i.size = 2;
        flow = Flow::End;
        data::mov_to_sreg
    } else if let Some(s) = r1.and_then(sreg) {
        i.r1 = s;
        if i.flags & MEM_DST != 0 {
            i.size = 2;
        }
        data::mov_from_sreg
    } else if i.flags & MEM_DST != 0 {
        if is_imm(k1) {
            data::mov_mi
        } else {
            by_size!(data::mov_mr, i.size)
        }
    } else if i.flags & MEM != 0 {
        by_size!(data::mov_rm, i.size)
    } else if is_imm(k1) {
        data::mov_ri
    } else {
        by_size!(data::mov_rr, i.size)
    };
    i.exec = h;
    flow
}
