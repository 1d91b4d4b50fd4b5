//! Operands: registers, immediates and memory operands (`mem.rs`), filled generically from a
//! `Code`'s operand kinds.

use iced_x86::{Code, Instruction, MemoryOperand, MemorySize, OpCodeOperandKind as K, Register};

use super::mem::MemReq;
use super::Gen;

use Register as R;

/// 8-bit registers (AH..BH cannot be encoded with a REX prefix; the encoder refuses those
/// combinations and the draft is retried).
pub const GPR8: [Register; 20] = [
    R::AL,
    R::CL,
    R::DL,
    R::BL,
    R::AH,
    R::CH,
    R::DH,
    R::BH,
    R::SPL,
    R::BPL,
    R::SIL,
    R::DIL,
    R::R8L,
    R::R9L,
    R::R10L,
    R::R11L,
    R::R12L,
    R::R13L,
    R::R14L,
    R::R15L,
];
/// 16-bit registers.
pub const GPR16: [Register; 16] = [
    R::AX,
    R::CX,
    R::DX,
    R::BX,
    R::SP,
    R::BP,
    R::SI,
    R::DI,
    R::R8W,
    R::R9W,
    R::R10W,
    R::R11W,
    R::R12W,
    R::R13W,
    R::R14W,
    R::R15W,
];
/// 32-bit registers.
pub const GPR32: [Register; 16] = [
    R::EAX,
    R::ECX,
    R::EDX,
    R::EBX,
    R::ESP,
    R::EBP,
    R::ESI,
    R::EDI,
    R::R8D,
    R::R9D,
    R::R10D,
    R::R11D,
    R::R12D,
    R::R13D,
    R::R14D,
    R::R15D,
];
/// 64-bit registers.
pub const GPR64: [Register; 16] = [
    R::RAX,
    R::RCX,
    R::RDX,
    R::RBX,
    R::RSP,
    R::RBP,
    R::RSI,
    R::RDI,
    R::R8,
    R::R9,
    R::R10,
    R::R11,
    R::R12,
    R::R13,
    R::R14,
    R::R15,
];
/// XMM registers.
pub const XMM: [Register; 16] = [
    R::XMM0,
    R::XMM1,
    R::XMM2,
    R::XMM3,
    R::XMM4,
    R::XMM5,
    R::XMM6,
    R::XMM7,
    R::XMM8,
    R::XMM9,
    R::XMM10,
    R::XMM11,
    R::XMM12,
    R::XMM13,
    R::XMM14,
    R::XMM15,
];

/// Whether generated code may write `reg` (not RSP, R14 or R15 in any size).
pub fn is_free(reg: Register) -> bool {
    !matches!(reg.full_register(), R::RSP | R::R14 | R::R15)
}

/// Whether the operand filler handles operand kind `k`.
pub fn supported(k: K) -> bool {
    matches!(
        k,
        K::mem
            | K::mem_offs
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::xmm_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::xmm_reg
            | K::xmm_rm
            | K::al
            | K::cl
            | K::ax
            | K::dx
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
    )
}

/// One operand of an instruction being built.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A register.
    Reg(Register),
    /// A memory operand.
    Mem(MemoryOperand),
    /// An immediate (signed value in the range of its kind, or any value for imm64).
    Imm(i64),
}

/// Builds the instruction `code` with `ops` (registers and memory first, immediates last).
pub fn build(code: Code, ops: &[Op]) -> Option<Instruction> {
    use Op::{Imm as I, Mem as M, Reg as G};
    let wide = |v: i64| v as i32;
    let r = match *ops {
        [] => Ok(Instruction::with(code)),
        [G(a)] => Instruction::with1(code, a),
        [M(a)] => Instruction::with1(code, a),
        [I(a)] => Instruction::with1(code, wide(a)),
        [G(a), G(b)] => Instruction::with2(code, a, b),
        [G(a), M(b)] => Instruction::with2(code, a, b),
        [G(a), I(b)] if code.op_code().op1_kind() == K::imm64 => Instruction::with2(code, a, b),
        [G(a), I(b)] => Instruction::with2(code, a, wide(b)),
        [M(a), G(b)] => Instruction::with2(code, a, b),
        [M(a), I(b)] => Instruction::with2(code, a, wide(b)),
        [G(a), G(b), G(c)] => Instruction::with3(code, a, b, c),
        [G(a), G(b), I(c)] => Instruction::with3(code, a, b, wide(c)),
        [G(a), G(b), M(c)] => Instruction::with3(code, a, b, c),
        [G(a), M(b), G(c)] => Instruction::with3(code, a, b, c),
        [G(a), M(b), I(c)] => Instruction::with3(code, a, b, wide(c)),
        [M(a), G(b), G(c)] => Instruction::with3(code, a, b, c),
        [M(a), G(b), I(c)] => Instruction::with3(code, a, b, wide(c)),
        _ => return None,
    };
    r.ok()
}

/// The size in bytes of an immediate kind, signed range.
fn imm_range(k: K) -> (i64, i64) {
    match k {
        K::imm8 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => (-128, 127),
        K::imm16 => (-32768, 32767),
        K::imm32 | K::imm32sex64 => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Options for [`Gen::draft`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DraftOpts {
    /// Some(true): r/m operands become memory; Some(false): registers; None: either.
    pub mem: Option<bool>,
    /// Memory alignment (0 or 1: none).
    pub align: u64,
    /// Memory forms without setup instructions only.
    pub simple: bool,
    /// The value of the (last) immediate, instead of a random one.
    pub imm: Option<i64>,
    /// The memory access is atomic (LOCK or XCHG): keep it inside one cache line.
    pub atomic: bool,
}

/// An instruction whose operands are chosen but not yet emitted.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The code.
    pub code: Code,
    /// Operands.
    pub ops: Vec<Op>,
    /// The memory operand's position, address and size, if any.
    pub mem: Option<(usize, u64, u64)>,
    /// LOCK prefix.
    pub lock: bool,
}

impl Draft {
    /// Adds a LOCK prefix if the memory operand is the destination and the code allows it.
    pub fn lock_if_possible(&mut self) {
        self.lock =
            self.mem.is_some_and(|(n, _, _)| n == 0) && self.code.op_code().can_use_lock_prefix();
    }
}

impl Draft {
    /// The register operand at `n`, if it is one.
    pub fn reg(&self, n: usize) -> Option<Register> {
        match self.ops.get(n) {
            Some(Op::Reg(r)) => Some(*r),
            _ => None,
        }
    }
}

fn size_of_rm(k: K) -> u64 {
    match k {
        K::r8_or_mem => 1,
        K::r16_or_mem => 2,
        K::r32_or_mem => 4,
        K::r64_or_mem => 8,
        _ => 16,
    }
}

impl Gen<'_> {
    fn reg_of(&mut self, k: K, write: bool) -> Register {
        let pool: &[Register] = match k {
            K::r8_reg | K::r8_opcode | K::r8_or_mem => &GPR8,
            K::r16_reg | K::r16_rm | K::r16_opcode | K::r16_or_mem => &GPR16,
            K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_or_mem => &GPR32,
            K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_or_mem => &GPR64,
            _ => &XMM,
        };
        if write && pool[0].is_gpr() {
            self.free_reg(pool)
        } else {
            pool[self.rng.below(pool.len() as u64) as usize]
        }
    }

    /// A random immediate for kind `k`.
    fn imm_of(&mut self, k: K) -> i64 {
        if k == K::imm8_const_1 {
            return 1;
        }
        let (lo, hi) = imm_range(k);
        let bits = match k {
            K::imm16 => 16,
            K::imm32 | K::imm32sex64 => 32,
            K::imm64 => 64,
            _ => 8,
        };
        let v = self.rng.value(bits);
        // Reinterpret as signed in the kind's width, which keeps it in range.
        let signed = if bits == 64 {
            v as i64
        } else {
            ((v << (64 - bits)) as i64) >> (64 - bits)
        };
        signed.clamp(lo, hi)
    }

    /// Chooses operands for `code` following its operand kinds.
    pub(crate) fn draft(&mut self, code: Code, opts: &DraftOpts) -> Option<Draft> {
        let info = code.op_code();
        let kinds = info.op_kinds();
        let mut ops = Vec::with_capacity(kinds.len());
        let mut mem = None;
        let mem_size = info.memory_size();
        for (n, &k) in kinds.iter().enumerate() {
            let write = n == 0;
            let op = match k {
                K::al => Op::Reg(R::AL),
                K::cl => Op::Reg(R::CL),
                K::ax => Op::Reg(R::AX),
                K::dx => Op::Reg(R::DX),
                K::eax => Op::Reg(R::EAX),
                K::rax => Op::Reg(R::RAX),
                K::r8_or_mem
                | K::r16_or_mem
                | K::r32_or_mem
                | K::r64_or_mem
                | K::xmm_or_mem
                | K::mem
                | K::mem_offs => {
                    let as_mem = match k {
                        K::mem | K::mem_offs => true,
                        _ => opts.mem.unwrap_or_else(|| self.rng.chance(50)),
                    };
                    if as_mem {
                        let size = match mem_size {
                            MemorySize::Unknown => size_of_rm(k),
                            s => s.size() as u64,
                        };
                        let req = MemReq {
                            size,
                            align: opts.align.max(1),
                            atomic: opts.atomic,
                            stack: true,
                        };
                        let (m, addr) = if k == K::mem_offs {
                            let addr = self.pick_addr(&req);
                            (MemoryOperand::with_displ(addr, 8), addr)
                        } else {
                            self.mem_operand(&req, opts.simple)?
                        };
                        mem = Some((n, addr, size));
                        Op::Mem(m)
                    } else {
                        Op::Reg(self.reg_of(k, write))
                    }
                }
                K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64 => Op::Imm(opts.imm.unwrap_or_else(|| self.imm_of(k))),
                _ => Op::Reg(self.reg_of(k, write)),
            };
            ops.push(op);
        }
        Some(Draft {
            code,
            ops,
            mem,
            lock: false,
        })
    }

    /// Builds and emits a draft.
    pub(crate) fn finish(&mut self, d: &Draft) -> bool {
        let Some(mut ins) = build(d.code, &d.ops) else {
            return false;
        };
        ins.set_has_lock_prefix(d.lock);
        self.emit(ins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::gen::Groups;
    use crate::difftest::rng::Rng;
    use crate::difftest::state::InitialState;
    use iced_x86::Encoder;

    #[test]
    fn drafts_follow_the_operand_kinds() {
        let init = InitialState::from_seed(9, Groups::DEFAULT);
        let mut g = Gen::new(Rng::new(2), &init, 0x9000, Groups::INT);
        let d = g
            .draft(
                Code::Add_rm32_imm8,
                &DraftOpts {
                    mem: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
        let ok = |r: Register, v: i64| r.is_gpr32() && is_free(r) && (-128..128).contains(&v);
        assert!(matches!(d.ops[..], [Op::Reg(r), Op::Imm(v)] if ok(r, v)));
        let d = g
            .draft(
                Code::Add_rm64_r64,
                &DraftOpts {
                    mem: Some(true),
                    atomic: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut d = d;
        d.lock_if_possible();
        let (_, addr, size) = d.mem.unwrap();
        assert!(d.lock && size == 8 && addr % 64 + 8 <= 64);
        assert!(g.finish(&d));
        assert!(build(Code::Add_rm8_r8, &[Op::Reg(R::AH), Op::Reg(R::SIL)])
            .map(|i| Encoder::new(64).encode(&i, 0).is_err())
            .unwrap_or(true));
    }
}
