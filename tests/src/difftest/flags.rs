//! Which RFLAGS bits (and x87 condition codes) are architecturally defined at each point of a
//! sequence.
//!
//! The model starts from iced-x86's per-instruction flag information and refines it where
//! definedness depends on values the sequence itself fixes: shift and rotate counts (an
//! immediate, or CL loaded by a preceding `mov`), and REP counts (RCX loaded by a preceding
//! `mov`). The generator uses it to never emit an instruction that reads an undefined flag; the
//! comparison uses it to ignore the flags still undefined where the case ended. Because it
//! works on decoded instructions it gives the same answer for recorded code as for freshly
//! generated code.

use iced_x86::{
    Decoder, DecoderOptions, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register, RflagsBits,
};

/// The six arithmetic flags.
pub const ARITH: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;
/// The x87 condition codes.
pub const FPU_CC: u32 = RflagsBits::C0 | RflagsBits::C1 | RflagsBits::C2 | RflagsBits::C3;

/// What one instruction does to the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effect {
    /// Flags it reads.
    pub read: u32,
    /// Flags it leaves with a defined value.
    pub defined: u32,
    /// Flags it may change to an undefined value.
    pub undefined: u32,
}

/// RFLAGS bits for iced's flag bits `f`.
pub fn rflags_bits(f: u32) -> u64 {
    const MAP: [(u32, u64); 9] = [
        (RflagsBits::CF, 1 << 0),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::IF, 1 << 9),
        (RflagsBits::DF, 1 << 10),
        (RflagsBits::OF, 1 << 11),
        (RflagsBits::AC, 1 << 18),
    ];
    MAP.iter()
        .filter(|(bit, _)| f & bit != 0)
        .fold(0, |acc, (_, r)| acc | r)
}

/// x87 status-word bits for iced's flag bits `f`.
pub fn fsw_bits(f: u32) -> u16 {
    const MAP: [(u32, u16); 4] = [
        (RflagsBits::C0, 1 << 8),
        (RflagsBits::C1, 1 << 9),
        (RflagsBits::C2, 1 << 10),
        (RflagsBits::C3, 1 << 14),
    ];
    MAP.iter()
        .filter(|(bit, _)| f & bit != 0)
        .fold(0, |acc, (_, r)| acc | r)
}

/// Known bits of the general registers: `(value, mask)` per register.
#[derive(Debug, Clone, Default)]
struct Known {
    regs: [(u64, u64); 16],
}

fn gpr_index(reg: Register) -> Option<usize> {
    let full = reg.full_register();
    if full.is_gpr64() {
        Some(full as usize - Register::RAX as usize)
    } else {
        None
    }
}

/// (bit position, width) of a GPR operand inside its 64-bit register.
fn gpr_slice(reg: Register) -> (u32, u32) {
    if reg.is_gpr8() {
        let high = matches!(
            reg,
            Register::AH | Register::CH | Register::DH | Register::BH
        );
        (if high { 8 } else { 0 }, 8)
    } else if reg.is_gpr16() {
        (0, 16)
    } else {
        // 32-bit writes zero-extend: the whole register becomes known.
        (0, 64)
    }
}

impl Known {
    fn get(&self, reg: usize, mask: u64) -> Option<u64> {
        let (v, m) = self.regs[reg];
        (m & mask == mask).then_some(v & mask)
    }

    fn update(&mut self, ins: &Instruction, factory: &mut InstructionInfoFactory) {
        let imm_kind = matches!(
            ins.op_kind(1),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate32to64
        );
        let mov_imm = ins.mnemonic() == Mnemonic::Mov
            && ins.op_count() == 2
            && ins.op_kind(0) == OpKind::Register
            && imm_kind;
        if mov_imm {
            let reg = ins.op_register(0);
            if let Some(i) = gpr_index(reg) {
                let (shift, width) = gpr_slice(reg);
                let imm = ins.immediate(1);
                let (value, mask) = if width == 64 {
                    let v = if reg.is_gpr32() {
                        imm & 0xffff_ffff
                    } else {
                        imm
                    };
                    (v, u64::MAX)
                } else {
                    let m = ((1u64 << width) - 1) << shift;
                    ((imm << shift) & m, m)
                };
                let (v, m) = self.regs[i];
                self.regs[i] = ((v & !mask) | value, (m & !mask) | mask);
                return;
            }
        }
        for used in factory.info(ins).used_registers() {
            let writes = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if writes {
                if let Some(i) = gpr_index(used.register()) {
                    self.regs[i] = (0, 0);
                }
            }
        }
    }
}

fn is_shift(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Shld
            | Mnemonic::Shrd
    )
}

fn is_rotate(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr
    )
}

/// Operand size in bits of a shift's destination.
fn dest_bits(ins: &Instruction) -> u32 {
    if ins.op_kind(0) == OpKind::Register {
        ins.op_register(0).size() as u32 * 8
    } else {
        ins.memory_size().size() as u32 * 8
    }
}

/// Tracks flag definedness (and the register values it depends on) through a sequence.
pub struct Tracker {
    undefined: u32,
    known: Known,
    factory: InstructionInfoFactory,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// At the start of a case: every flag defined, no register value known.
    pub fn new() -> Self {
        Tracker {
            undefined: 0,
            known: Known::default(),
            factory: InstructionInfoFactory::new(),
        }
    }

    /// Flags currently undefined (iced bits).
    pub fn undefined(&self) -> u32 {
        self.undefined
    }

    /// The known value of the bits `mask` of register `reg` (index in `kvm_regs` order).
    pub fn known(&self, reg: usize, mask: u64) -> Option<u64> {
        self.known.get(reg, mask)
    }

    /// The shift or rotate count `ins` uses, if it is known.
    fn count(&self, ins: &Instruction) -> Option<u64> {
        let at = if matches!(ins.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd) {
            2
        } else {
            1
        };
        if ins.op_kind(at) == OpKind::Register {
            self.known.get(1, 0xff)
        } else {
            Some(ins.immediate(at) & 0xff)
        }
    }

    /// What `ins` does to the flags given what is known here.
    pub fn effect(&self, ins: &Instruction) -> Effect {
        let m = ins.mnemonic();
        let iced = Effect {
            read: ins.rflags_read(),
            defined: ins.rflags_modified() & !ins.rflags_undefined(),
            undefined: ins.rflags_undefined(),
        };
        let all_undefined = Effect {
            read: iced.read,
            defined: 0,
            undefined: iced.defined | iced.undefined,
        };
        if is_shift(m) || is_rotate(m) {
            let bits = dest_bits(ins);
            let Some(count) = self.count(ins) else {
                return all_undefined;
            };
            let masked = count & if bits == 64 { 0x3f } else { 0x1f };
            if masked == 0 {
                return Effect::default();
            }
            let of = RflagsBits::OF;
            let through_carry = matches!(m, Mnemonic::Rcl | Mnemonic::Rcr);
            // RCL/RCR of 8/16-bit operands rotate by the count modulo 9/17: a multiple of that
            // leaves CF as it was (iced then reports no flag read at all).
            let carry_moves = !(through_carry && bits < 32 && masked % u64::from(bits + 1) == 0);
            let mut e = if is_rotate(m) {
                Effect {
                    read: if through_carry { RflagsBits::CF } else { 0 },
                    defined: if carry_moves { RflagsBits::CF } else { 0 },
                    undefined: 0,
                }
            } else {
                if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) && masked > u64::from(bits) {
                    // 16-bit double shifts by more than 16: result and flags undefined.
                    return all_undefined;
                }
                Effect {
                    read: 0,
                    defined: RflagsBits::CF | RflagsBits::SF | RflagsBits::ZF | RflagsBits::PF,
                    undefined: RflagsBits::AF,
                }
            };
            if masked == 1 {
                e.defined |= of;
            } else {
                e.undefined |= of;
            }
            // SHL/SHR of 8/16-bit operands by at least their width: CF undefined (SDM).
            if matches!(
                m,
                Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
            ) && bits < 32
                && masked >= u64::from(bits)
            {
                e.defined &= !RflagsBits::CF;
                e.undefined |= RflagsBits::CF;
            }
            return e;
        }
        if ins.is_string_instruction() && (ins.has_rep_prefix() || ins.has_repne_prefix()) {
            let mask = match ins.op_kind(0) {
                OpKind::MemorySegSI | OpKind::MemoryESDI => 0xffff,
                OpKind::MemorySegESI | OpKind::MemoryESEDI => 0xffff_ffff,
                _ => match ins.op_kind(1) {
                    OpKind::MemorySegSI | OpKind::MemoryESDI => 0xffff,
                    OpKind::MemorySegESI | OpKind::MemoryESEDI => 0xffff_ffff,
                    _ => u64::MAX,
                },
            };
            return match self.known.get(1, mask) {
                Some(0) => Effect::default(),
                Some(_) => iced,
                None => all_undefined,
            };
        }
        iced
    }

    /// Flags `ins` would read that are undefined here.
    pub fn reads_undefined(&self, ins: &Instruction) -> u32 {
        self.effect(ins).read & self.undefined
    }

    /// Moves past `ins`.
    pub fn step(&mut self, ins: &Instruction) {
        let e = self.effect(ins);
        self.undefined = (self.undefined & !e.defined) | e.undefined;
        self.known.update(ins, &mut self.factory);
    }
}

/// Flag definedness through the code at `addr`: for each instruction, its address and the
/// flags undefined before it; then the flags undefined after the last one.
pub fn trace(code: &[u8], addr: u64) -> (Vec<(u64, u32)>, u32) {
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut tracker = Tracker::new();
    let mut points = Vec::new();
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        points.push((ins.ip(), tracker.undefined()));
        tracker.step(&ins);
    }
    (points, tracker.undefined())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Code;

    fn ins2(code: Code, r: Register, imm: i32) -> Instruction {
        Instruction::with2(code, r, imm).unwrap()
    }

    #[test]
    fn logic_ops_leave_af_undefined_and_arithmetic_defines_it_again() {
        let mut t = Tracker::new();
        t.step(&Instruction::with2(Code::And_rm32_r32, Register::EAX, Register::EBX).unwrap());
        assert_eq!(t.undefined(), RflagsBits::AF);
        let lahf = Instruction::with(Code::Lahf);
        assert_eq!(t.reads_undefined(&lahf), RflagsBits::AF);
        t.step(&Instruction::with2(Code::Cmp_rm64_r64, Register::RAX, Register::RBX).unwrap());
        assert_eq!(t.undefined(), 0);
        assert_eq!(t.reads_undefined(&lahf), 0);
    }

    #[test]
    fn shift_counts_decide_what_is_defined() {
        let t = Tracker::new();
        let by0 = ins2(Code::Shl_rm32_imm8, Register::EAX, 32);
        assert_eq!(t.effect(&by0), Effect::default(), "count masks to 0");
        let by1 = Instruction::with2(Code::Shl_rm32_1, Register::EAX, 1).unwrap();
        assert_ne!(t.effect(&by1).defined & RflagsBits::OF, 0);
        let by3 = ins2(Code::Shr_rm8_imm8, Register::AL, 9);
        let e = t.effect(&by3);
        assert_ne!(e.undefined & RflagsBits::OF, 0);
        assert_ne!(e.undefined & RflagsBits::CF, 0, "8-bit shift by 9");
        let rol = ins2(Code::Rol_rm16_imm8, Register::AX, 3);
        assert_eq!(t.effect(&rol).defined, RflagsBits::CF);
        // RCR of a byte by 18 = 2 * 9: CF keeps whatever it was (defined or not).
        let rcr = ins2(Code::Rcr_rm8_imm8, Register::DIL, 0x72);
        let e = t.effect(&rcr);
        assert_eq!(
            (e.read, e.defined, e.undefined),
            (RflagsBits::CF, 0, RflagsBits::OF)
        );
    }

    #[test]
    fn cl_counts_and_rep_counts_come_from_preceding_moves() {
        let mut t = Tracker::new();
        let by_cl = Instruction::with2(Code::Sar_rm64_CL, Register::RDX, Register::CL).unwrap();
        assert_eq!(
            t.effect(&by_cl).defined,
            0,
            "unknown count: nothing defined"
        );
        t.step(&Instruction::with2(Code::Mov_r8_imm8, Register::CL, 0x40).unwrap());
        assert_eq!(t.effect(&by_cl), Effect::default(), "0x40 masks to 0");
        t.step(&Instruction::with2(Code::Mov_r8_imm8, Register::CL, 1).unwrap());
        assert_ne!(t.effect(&by_cl).defined & RflagsBits::OF, 0);
        t.step(&Instruction::with2(Code::Add_rm64_imm8, Register::RCX, 1).unwrap());
        assert_eq!(t.known(1, 0xff), None);

        let cmps = Instruction::with_repe_cmpsb(64).unwrap();
        t.step(&Instruction::with2(Code::Mov_r32_imm32, Register::ECX, 0).unwrap());
        assert_eq!(t.effect(&cmps), Effect::default());
        t.step(&Instruction::with2(Code::Mov_r32_imm32, Register::ECX, 3).unwrap());
        assert_ne!(t.effect(&cmps).defined & RflagsBits::ZF, 0);
    }

    #[test]
    fn trace_reports_flags_before_each_instruction() {
        // and eax, ebx; cmp rax, rbx
        let code = [0x21, 0xd8, 0x48, 0x39, 0xd8];
        let (points, end) = trace(&code, 0x1000);
        assert_eq!(points, vec![(0x1000, 0), (0x1002, RflagsBits::AF)]);
        assert_eq!(end, 0);
        assert_eq!(rflags_bits(RflagsBits::AF | RflagsBits::OF), 0x810);
        assert_eq!(fsw_bits(RflagsBits::C3), 0x4000);
    }
}
