//! The `ssefp` group: SSE floating-point arithmetic, compares and conversions on operands from
//! the special-value tables (`fptables.rs`), under MXCSR values from its table (every rounding
//! mode, DAZ and FTZ on and off). A case may end with exceptions unmasked, where an instruction
//! raising one of them ends the case with #XM.

use iced_x86::{Code, Instruction, Mnemonic, OpCodeOperandKind as K, Register};

use super::catalog::Category;
use super::fptables::{self, Format};
use super::mem::MemReq;
use super::ops::{build, Op, GPR32, GPR64, XMM};
use super::Gen;

/// The lane format an instruction reads from its XMM source: by its name (`...ps`/`...ss`
/// single, `...pd`/`...sd` double; a conversion by what it converts from, integer lanes taken
/// from the single-precision table as bit patterns).
fn source_format(m: Mnemonic) -> Format {
    let name = format!("{m:?}").to_ascii_lowercase();
    let from = match name
        .strip_prefix("cvtt")
        .or_else(|| name.strip_prefix("cvt"))
    {
        Some(rest) => &rest[..2],
        None => &name[name.len() - 2..],
    };
    match from {
        "pd" | "sd" => Format::F64,
        _ => Format::F32,
    }
}

impl Gen<'_> {
    /// One floating-point instruction with table operands, sometimes after a new MXCSR (every
    /// exception masked).
    pub(crate) fn ssefp_op(&mut self) -> bool {
        if self.rng.chance(10) && !self.load_mxcsr(true) {
            return false;
        }
        self.ssefp_insn(false)
    }

    /// The end of a case: an MXCSR with exceptions unmasked, then a few instructions.
    pub(crate) fn ssefp_unmasked_tail(&mut self) -> bool {
        if !self.load_mxcsr(false) {
            return false;
        }
        for _ in 0..1 + self.rng.below(3) {
            self.ssefp_insn(true);
        }
        true
    }

    /// `ldmxcsr` of a table entry.
    fn load_mxcsr(&mut self, masked: bool) -> bool {
        let addr = fptables::mxcsr(&mut self.rng, masked);
        match self.mem_at(addr, true) {
            Some(m) => Instruction::with1(Code::Ldmxcsr_m32, m).is_ok_and(|i| self.emit(i)),
            None => false,
        }
    }

    /// `movups reg, [table]`: four single or two double-precision table values.
    fn load_xmm(&mut self, reg: Register, format: Format) -> bool {
        let addr = format.pick(&mut self.rng, 16, 1);
        match self.mem_at(addr, true) {
            Some(m) => {
                Instruction::with2(Code::Movups_xmm_xmmm128, reg, m).is_ok_and(|i| self.emit(i))
            }
            None => false,
        }
    }

    /// An XMM register operand, usually loaded from the table first.
    fn table_xmm(&mut self, format: Format) -> Option<Op> {
        let reg = XMM[self.rng.below(16) as usize];
        if self.rng.chance(80) && !self.load_xmm(reg, format) {
            return None;
        }
        Some(Op::Reg(reg))
    }

    /// An integer source (CVTSI2SS/SD) of `bits`: a register holding an interesting value,
    /// or a data-area operand.
    fn integer_source(&mut self, bits: u32) -> Option<Op> {
        if self.rng.chance(50) {
            let req = MemReq::of(u64::from(bits / 8));
            return self.mem_operand(&req, true).map(|(m, _)| Op::Mem(m));
        }
        let pool: &[Register] = if bits == 64 { &GPR64 } else { &GPR32 };
        let reg = self.free_reg(pool);
        let value = self.rng.value(bits);
        self.mov_imm(reg, value).then_some(Op::Reg(reg))
    }

    /// A random instruction of the group with its operands. Under `unmasked` exceptions,
    /// not DPPS/DPPD: the software CPU approximates their unmasked overflow and underflow
    /// (see `float_op_checked`).
    fn ssefp_insn(&mut self, unmasked: bool) -> bool {
        let Some(&code) = self.rng.pick(self.catalog.codes(Category::SseFp)) else {
            return false;
        };
        if unmasked && matches!(code.mnemonic(), Mnemonic::Dpps | Mnemonic::Dppd) {
            return false;
        }
        let format = source_format(code.mnemonic());
        let info = code.op_code();
        let mem_size = info.memory_size().size();
        let mut ops = Vec::with_capacity(3);
        for &kind in info.op_kinds() {
            let op = match kind {
                K::xmm_reg => self.table_xmm(format),
                K::xmm_or_mem if self.rng.chance(50) => {
                    let align = if mem_size == 16 { 16 } else { 1 };
                    let addr = format.pick(&mut self.rng, mem_size, align);
                    self.mem_at(addr, true).map(Op::Mem)
                }
                K::xmm_or_mem => self.table_xmm(format),
                K::r32_reg => Some(Op::Reg(self.free_reg(&GPR32))),
                K::r64_reg => Some(Op::Reg(self.free_reg(&GPR64))),
                K::r32_or_mem => self.integer_source(32),
                K::r64_or_mem => self.integer_source(64),
                K::imm8 => Some(Op::Imm(self.rng.range(-128, 127))),
                _ => None,
            };
            match op {
                Some(op) => ops.push(op),
                None => return false,
            }
        }
        build(code, &ops).is_some_and(|i| self.emit(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_read_in_their_format() {
        use Mnemonic as M;
        for (m, f) in [
            (M::Addps, Format::F32),
            (M::Sqrtsd, Format::F64),
            (M::Cmpss, Format::F32),
            (M::Ucomisd, Format::F64),
            (M::Cvtpd2ps, Format::F64),
            (M::Cvttsd2si, Format::F64),
            (M::Cvtss2sd, Format::F32),
            (M::Cvtdq2pd, Format::F32),
            (M::Dppd, Format::F64),
            (M::Haddps, Format::F32),
        ] {
            assert_eq!(source_format(m), f, "{m:?}");
        }
    }
}
