//! Which interpreter handlers the translator emits as host code: a table from each such
//! handler's address to the template that does the same work.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::super::exec::{alu, bits, control, data, simd};
use super::super::insn::Handler;

/// A template: what an instruction does, as far as the translator is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MOV reg, reg.
    MovRR,
    /// MOV reg, imm.
    MovRI,
    /// MOV reg, [mem].
    MovRM,
    /// MOV [mem], reg.
    MovMR,
    /// MOV [mem], imm.
    MovMI,
    /// MOVZX/MOVSX/MOVSXD from `from` bytes.
    Extend { from: u8, signed: bool },
    /// LEA.
    Lea,
    /// reg OP reg.
    AluRR(u8),
    /// reg OP imm.
    AluRI(u8),
    /// reg OP [mem].
    AluRM(u8),
    /// [mem] OP reg, or [mem] OP imm when `imm`.
    AluM { op: u8, imm: bool },
    /// TEST reg/[mem] with reg, or with imm when `imm`.
    Test { imm: bool },
    /// INC, or DEC when `dec`.
    IncDec { dec: bool },
    /// NEG.
    Neg,
    /// NOT.
    Not,
    /// IMUL reg, r/m or IMUL reg, r/m, imm (`three`).
    Imul { three: bool },
    /// Shift or rotate, count in CL (`cl`) or the immediate.
    Shift { cl: bool },
    /// SETcc.
    Setcc,
    /// CMOVcc.
    Cmov,
    /// Jcc with condition `cc`.
    Jcc(u8),
    /// JMP rel.
    JmpRel,
    /// CALL rel.
    CallRel,
    /// RET [imm16].
    Ret,
    /// PUSH reg.
    PushReg,
    /// POP reg.
    PopReg,
    /// NOP and its kin.
    Nop,
    /// MOVAPS/MOVUPS/MOVDQA/MOVDQU and kin.
    VecMove,
    /// MOVSS/MOVSD.
    VecMoveScalar,
    /// SSE floating-point arithmetic, compares and conversions (the template takes some).
    VecFloat,
    /// SSE2 integer operations on XMM registers (the template takes some).
    VecInt,
    /// PMOVMSKB/MOVMSKPS/MOVMSKPD into a general register.
    VecMask,
    /// BSWAP.
    Bswap,
}

macro_rules! each_op {
    ($table:ident, $kind:expr, $($h:ident)::+ $(, $extra:tt)?) => {
        $table.push(($($h)::+::<{ alu::ADD } $(, $extra)?> as Handler, $kind(alu::ADD)));
        $table.push(($($h)::+::<{ alu::OR } $(, $extra)?>, $kind(alu::OR)));
        $table.push(($($h)::+::<{ alu::ADC } $(, $extra)?>, $kind(alu::ADC)));
        $table.push(($($h)::+::<{ alu::SBB } $(, $extra)?>, $kind(alu::SBB)));
        $table.push(($($h)::+::<{ alu::AND } $(, $extra)?>, $kind(alu::AND)));
        $table.push(($($h)::+::<{ alu::SUB } $(, $extra)?>, $kind(alu::SUB)));
        $table.push(($($h)::+::<{ alu::XOR } $(, $extra)?>, $kind(alu::XOR)));
        $table.push(($($h)::+::<{ alu::CMP } $(, $extra)?>, $kind(alu::CMP)));
    };
}

macro_rules! each_size {
    ($table:ident, $kind:expr, $($h:ident)::+) => {
        $table.push(($($h)::+::<1> as Handler, $kind));
        $table.push(($($h)::+::<2>, $kind));
        $table.push(($($h)::+::<4>, $kind));
        $table.push(($($h)::+::<8>, $kind));
    };
}

macro_rules! each_cc {
    ($table:ident) => {
        $table.push((control::jcc::<0> as Handler, Kind::Jcc(0)));
        $table.push((control::jcc::<1>, Kind::Jcc(1)));
        $table.push((control::jcc::<2>, Kind::Jcc(2)));
        $table.push((control::jcc::<3>, Kind::Jcc(3)));
        $table.push((control::jcc::<4>, Kind::Jcc(4)));
        $table.push((control::jcc::<5>, Kind::Jcc(5)));
        $table.push((control::jcc::<6>, Kind::Jcc(6)));
        $table.push((control::jcc::<7>, Kind::Jcc(7)));
        $table.push((control::jcc::<8>, Kind::Jcc(8)));
        $table.push((control::jcc::<9>, Kind::Jcc(9)));
        $table.push((control::jcc::<10>, Kind::Jcc(10)));
        $table.push((control::jcc::<11>, Kind::Jcc(11)));
        $table.push((control::jcc::<12>, Kind::Jcc(12)));
        $table.push((control::jcc::<13>, Kind::Jcc(13)));
        $table.push((control::jcc::<14>, Kind::Jcc(14)));
        $table.push((control::jcc::<15>, Kind::Jcc(15)));
    };
}

fn table() -> HashMap<usize, Kind> {
    let mut t: Vec<(Handler, Kind)> = vec![
        (data::mov_ri, Kind::MovRI),
        (data::mov_mi, Kind::MovMI),
        (data::lea, Kind::Lea),
        (data::nop, Kind::Nop),
    ];
    each_size!(t, Kind::MovRR, data::mov_rr);
    each_size!(t, Kind::MovRM, data::mov_rm);
    each_size!(t, Kind::MovMR, data::mov_mr);
    each_size!(t, Kind::PushReg, data::push_reg);
    each_size!(t, Kind::PopReg, data::pop_reg);
    for (h, from, signed) in [
        (data::mov_extend::<1, false> as Handler, 1, false),
        (data::mov_extend::<2, false>, 2, false),
        (data::mov_extend::<4, false>, 4, false),
        (data::mov_extend::<1, true>, 1, true),
        (data::mov_extend::<2, true>, 2, true),
        (data::mov_extend::<4, true>, 4, true),
    ] {
        t.push((h, Kind::Extend { from, signed }));
    }
    each_op!(t, Kind::AluRR, alu::alu_rr);
    each_op!(t, Kind::AluRI, alu::alu_ri);
    each_op!(t, Kind::AluRM, alu::alu_rm);
    each_op!(t, |op| Kind::AluM { op, imm: true }, alu::alu_m, true);
    each_op!(t, |op| Kind::AluM { op, imm: false }, alu::alu_m, false);
    t.push((alu::test::<true>, Kind::Test { imm: true }));
    t.push((alu::test::<false>, Kind::Test { imm: false }));
    t.push((alu::inc_dec::<true>, Kind::IncDec { dec: true }));
    t.push((alu::inc_dec::<false>, Kind::IncDec { dec: false }));
    t.push((alu::neg, Kind::Neg));
    t.push((alu::not, Kind::Not));
    t.push((alu::imul_n::<true>, Kind::Imul { three: true }));
    t.push((alu::imul_n::<false>, Kind::Imul { three: false }));
    t.push((bits::shift::<{ bits::COUNT_CL }>, Kind::Shift { cl: true }));
    t.push((
        bits::shift::<{ bits::COUNT_IMM }>,
        Kind::Shift { cl: false },
    ));
    t.push((bits::setcc, Kind::Setcc));
    t.push((bits::cmov, Kind::Cmov));
    each_cc!(t);
    t.push((control::jmp_rel, Kind::JmpRel));
    t.push((control::call_rel, Kind::CallRel));
    t.push((control::ret_near, Kind::Ret));
    t.push((simd::move128, Kind::VecMove));
    t.push((simd::move_scalar, Kind::VecMoveScalar));
    t.push((simd::xmm_float, Kind::VecFloat));
    t.push((simd::xmm_int, Kind::VecInt));
    t.push((simd::mask_to_gpr, Kind::VecMask));
    t.push((bits::bswap, Kind::Bswap));
    t.into_iter()
        .map(|(h, k)| (h as *const () as usize, k))
        .collect()
}

/// The template for handler `h`, if the translator has one.
pub fn kind(h: Handler) -> Option<Kind> {
    static TABLE: OnceLock<HashMap<usize, Kind>> = OnceLock::new();
    TABLE
        .get_or_init(table)
        .get(&(h as *const () as usize))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::super::super::decode::lower;
    use super::super::super::hostcpu::SimdLevel;
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn kind_of(bytes: &[u8]) -> Option<Kind> {
        let ins = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode();
        kind(lower(&ins, 64, SimdLevel::Sse42).0.exec)
    }

    /// Handlers are told apart by address, so a handler copied into several codegen units
    /// (as small functions may be) would lose its template: each template is found here for
    /// the instructions the decoder gives it.
    #[test]
    fn decoded_instructions_find_their_templates() {
        use alu::{ADD, AND, CMP, OR, SUB, XOR};
        let cases: &[(&[u8], Kind)] = &[
            (&[0x90], Kind::Nop),
            (&[0xf3, 0x90], Kind::Nop),
            (&[0x0f, 0x1f, 0x00], Kind::Nop),
            (&[0x48, 0x89, 0xd8], Kind::MovRR),
            (&[0x88, 0xd8], Kind::MovRR),
            (&[0x66, 0x89, 0xd8], Kind::MovRR),
            (&[0xb8, 1, 0, 0, 0], Kind::MovRI),
            (&[0xb0, 1], Kind::MovRI),
            (&[0x48, 0x8b, 0x03], Kind::MovRM),
            (&[0x8a, 0x03], Kind::MovRM),
            (&[0x48, 0x89, 0x03], Kind::MovMR),
            (&[0x88, 0x03], Kind::MovMR),
            (&[0x48, 0xc7, 0x03, 1, 0, 0, 0], Kind::MovMI),
            (&[0xc6, 0x03, 1], Kind::MovMI),
            (
                &[0x0f, 0xb6, 0xc3],
                Kind::Extend {
                    from: 1,
                    signed: false,
                },
            ),
            (
                &[0x48, 0x0f, 0xbf, 0xc3],
                Kind::Extend {
                    from: 2,
                    signed: true,
                },
            ),
            (
                &[0x48, 0x63, 0xc3],
                Kind::Extend {
                    from: 4,
                    signed: true,
                },
            ),
            (&[0x48, 0x8d, 0x43, 0x08], Kind::Lea),
            (&[0x48, 0x01, 0xd8], Kind::AluRR(ADD)),
            (&[0x48, 0x29, 0xd8], Kind::AluRR(SUB)),
            (&[0x31, 0xc0], Kind::AluRR(XOR)),
            (&[0x21, 0xd8], Kind::AluRR(AND)),
            (&[0x09, 0xd8], Kind::AluRR(OR)),
            (&[0x48, 0x39, 0xd8], Kind::AluRR(CMP)),
            (&[0x48, 0x83, 0xc0, 1], Kind::AluRI(ADD)),
            (&[0x3c, 1], Kind::AluRI(CMP)),
            (&[0x48, 0x03, 0x03], Kind::AluRM(ADD)),
            (&[0x3a, 0x03], Kind::AluRM(CMP)),
            (
                &[0x48, 0x01, 0x03],
                Kind::AluM {
                    op: ADD,
                    imm: false,
                },
            ),
            (&[0x80, 0x3b, 1], Kind::AluM { op: CMP, imm: true }),
            (&[0x48, 0x85, 0xc0], Kind::Test { imm: false }),
            (&[0xa8, 1], Kind::Test { imm: true }),
            (&[0xf6, 0x03, 1], Kind::Test { imm: true }),
            (&[0x48, 0xff, 0xc0], Kind::IncDec { dec: false }),
            (&[0xff, 0xc8], Kind::IncDec { dec: true }),
            (&[0xfe, 0x03], Kind::IncDec { dec: false }),
            (&[0x48, 0x0f, 0xaf, 0xc3], Kind::Imul { three: false }),
            (&[0x48, 0x6b, 0xc3, 5], Kind::Imul { three: true }),
            (&[0x48, 0xd3, 0xe0], Kind::Shift { cl: true }),
            (&[0x48, 0xc1, 0xe0, 4], Kind::Shift { cl: false }),
            (&[0x0f, 0x94, 0xc0], Kind::Setcc),
            (&[0x48, 0x0f, 0x44, 0xc3], Kind::Cmov),
            (&[0x0f, 0x44, 0x03], Kind::Cmov),
            (&[0x75, 0x00], Kind::Jcc(5)),
            (&[0x0f, 0x84, 0, 0, 0, 0], Kind::Jcc(4)),
            (&[0xeb, 0x00], Kind::JmpRel),
            (&[0xe8, 0, 0, 0, 0], Kind::CallRel),
            (&[0xc3], Kind::Ret),
            (&[0x53], Kind::PushReg),
            (&[0x48, 0xf7, 0xd0], Kind::Not),
            (&[0xf7, 0xd8], Kind::Neg),
            (&[0x5b], Kind::PopReg),
            (&[0x66, 0x0f, 0x28, 0x03], Kind::VecMove),
            (&[0x0f, 0x11, 0xc1], Kind::VecMove),
            (&[0xf3, 0x0f, 0x6f, 0x03], Kind::VecMove),
            (&[0xf2, 0x0f, 0x10, 0x03], Kind::VecMoveScalar),
            (&[0xf3, 0x0f, 0x11, 0x03], Kind::VecMoveScalar),
            (&[0x66, 0x0f, 0x59, 0xc1], Kind::VecFloat),
            (&[0xf2, 0x0f, 0x58, 0x03], Kind::VecFloat),
            (&[0x0f, 0x57, 0xc0], Kind::VecFloat),
            (&[0x66, 0x0f, 0xef, 0xc0], Kind::VecInt),
            (&[0x66, 0x0f, 0x74, 0x03], Kind::VecInt),
            (&[0x66, 0x0f, 0xd7, 0xc1], Kind::VecMask),
            (&[0x0f, 0xc8], Kind::Bswap),
            (&[0x48, 0x0f, 0xcb], Kind::Bswap),
        ];
        for (bytes, expected) in cases {
            assert_eq!(kind_of(bytes), Some(*expected), "{bytes:02x?}");
        }
        assert_eq!(kind_of(&[0x0f, 0x0b]), None, "UD2 has no template");
    }
}
