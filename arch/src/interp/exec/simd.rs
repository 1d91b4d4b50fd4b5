//! SSE, SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2 instructions.

use iced_x86::Instruction;

use super::super::insn::{Handler, Insn};

/// The handler for an SSE instruction, or None if `ins` is not one this module implements.
pub fn lower(_ins: &Instruction, _i: &mut Insn) -> Option<Handler> {
    None
}
