//! SSE through SSE4.2 (legacy encodings): every code of the SSE category with random XMM,
//! GPR, memory and imm8 operands. 16-byte memory operands are 16-byte aligned except for the
//! instructions that allow any alignment.

use iced_x86::{MemorySize, Mnemonic as M};

use super::catalog::Category;
use super::ops::DraftOpts;
use super::Gen;

/// Instructions with a 16-byte memory operand that need no alignment.
fn unaligned_ok(m: M) -> bool {
    matches!(
        m,
        M::Movups
            | M::Movupd
            | M::Movdqu
            | M::Lddqu
            | M::Pcmpestri
            | M::Pcmpestrm
            | M::Pcmpistri
            | M::Pcmpistrm
    )
}

impl Gen<'_> {
    /// One SSE instruction.
    pub(crate) fn sse_op(&mut self) -> bool {
        let codes = self.catalog.codes(Category::Sse);
        let Some(&code) = self.rng.pick(codes) else {
            return false;
        };
        let sixteen = code.op_code().memory_size().size() == 16
            || code.op_code().memory_size() == MemorySize::Packed128_UInt8;
        let align = if sixteen && !unaligned_ok(code.mnemonic()) {
            16
        } else {
            1
        };
        let opts = DraftOpts {
            align,
            ..Default::default()
        };
        match self.draft(code, &opts) {
            Some(d) => self.finish(&d),
            None => false,
        }
    }
}
