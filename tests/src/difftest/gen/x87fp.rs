//! The `x87fp` group: x87 loads, arithmetic, compares and stores on operands from the
//! special-value tables (`fptables.rs`), under control words from its table (24, 53 and 64-bit
//! precision, every rounding mode). The stack may overflow and underflow. A case may end with
//! exceptions unmasked and an FWAIT, so that a pending exception raises #MF.
//!
//! Left out: the transcendental instructions (FSIN, FPTAN, F2XM1, FYL2X, ...), whose results
//! differ between processor vendors, and the encodings the x87 no longer supports (unnormals,
//! pseudo-NaNs, pseudo-infinities), which vendors treat differently too.

use iced_x86::{Code, Register};

use super::fptables::{self, Format};
use super::mem::MemReq;
use super::ops::Op;
use super::x87::{st, Arith};
use super::Gen;
use crate::difftest::layout;

/// Loads without a memory operand, and the stack movement of each.
const CONSTANTS: [Code; 7] = [
    Code::Fld1,
    Code::Fldz,
    Code::Fldpi,
    Code::Fldl2e,
    Code::Fldl2t,
    Code::Fldlg2,
    Code::Fldln2,
];

/// Instructions on ST(0) (and ST(1)) without operands: (code, pushes, pops).
const IMPLICIT: [(Code, usize, usize); 12] = [
    (Code::Fsqrt, 0, 0),
    (Code::Frndint, 0, 0),
    (Code::Fabs, 0, 0),
    (Code::Fchs, 0, 0),
    (Code::Fxtract, 1, 0),
    (Code::Fscale, 0, 0),
    (Code::Fprem, 0, 0),
    (Code::Fprem1, 0, 0),
    (Code::Ftst, 0, 0),
    (Code::Fxam, 0, 0),
    (Code::Fcompp, 0, 2),
    (Code::Fucompp, 0, 2),
];

/// Compares of ST(0) with ST(i): (code, pops).
const COMPARES: [(Code, usize); 8] = [
    (Code::Fcom_st0_sti, 0),
    (Code::Fcomp_st0_sti, 1),
    (Code::Fucom_st0_sti, 0),
    (Code::Fucomp_st0_sti, 1),
    (Code::Fcomi_st0_sti, 0),
    (Code::Fcomip_st0_sti, 1),
    (Code::Fucomi_st0_sti, 0),
    (Code::Fucomip_st0_sti, 1),
];

/// Compares of ST(0) with memory: (code, operand format or integer size, pops).
const MEMORY_COMPARES: [(Code, Option<Format>, u64, usize); 8] = [
    (Code::Fcom_m32fp, Some(Format::F32), 4, 0),
    (Code::Fcomp_m32fp, Some(Format::F32), 4, 1),
    (Code::Fcom_m64fp, Some(Format::F64), 8, 0),
    (Code::Fcomp_m64fp, Some(Format::F64), 8, 1),
    (Code::Ficom_m16int, None, 2, 0),
    (Code::Ficomp_m16int, None, 2, 1),
    (Code::Ficom_m32int, None, 4, 0),
    (Code::Ficomp_m32int, None, 4, 1),
];

/// Stores to memory: (code, bytes, pops).
const STORES: [(Code, u64, usize); 13] = [
    (Code::Fst_m32fp, 4, 0),
    (Code::Fstp_m32fp, 4, 1),
    (Code::Fst_m64fp, 8, 0),
    (Code::Fstp_m64fp, 8, 1),
    (Code::Fstp_m80fp, 10, 1),
    (Code::Fist_m16int, 2, 0),
    (Code::Fistp_m16int, 2, 1),
    (Code::Fist_m32int, 4, 0),
    (Code::Fistp_m32int, 4, 1),
    (Code::Fistp_m64int, 8, 1),
    (Code::Fisttp_m16int, 2, 1),
    (Code::Fisttp_m32int, 4, 1),
    (Code::Fisttp_m64int, 8, 1),
];

impl Gen<'_> {
    /// One x87 instruction, sometimes after a new control word (every exception masked).
    pub(crate) fn x87fp_op(&mut self) -> bool {
        if self.rng.chance(8) && !self.load_fcw(true) {
            return false;
        }
        self.x87fp_insn()
    }

    /// The end of a case: usually FNCLEX (else the sticky flags the control word unmasks
    /// raise #MF at once), a control word with exceptions unmasked, then a few instructions,
    /// each followed by an FWAIT that raises #MF if it left an unmasked exception pending.
    /// Sometimes the first is a store into the page after the data area, which is not
    /// present: the #PF comes first, whether or not an unmasked exception would suppress the
    /// store.
    pub(crate) fn x87fp_unmasked_tail(&mut self) -> bool {
        if self.rng.chance(70) && !self.emit_with(Code::Fnclex, &[]) {
            return false;
        }
        if !self.load_fcw(false) {
            return false;
        }
        if self.rng.chance(25) {
            let (code, bytes, _) = STORES[self.rng.below(13) as usize];
            let addr = layout::DATA_END - self.rng.below(bytes);
            return match self.x87_mem(addr) {
                Some(op) => self.emit_with(code, &[op]),
                None => false,
            };
        }
        for _ in 0..1 + self.rng.below(3) {
            if self.x87fp_insn() && !self.emit_with(Code::Wait, &[]) {
                return false;
            }
        }
        true
    }

    /// `fldcw` of a table entry.
    fn load_fcw(&mut self, masked: bool) -> bool {
        let addr = fptables::fcw(&mut self.rng, masked);
        match self.x87_mem(addr) {
            Some(m) => self.emit_with(Code::Fldcw_m2byte, &[m]),
            None => false,
        }
    }

    /// A memory operand holding a table value of `format`.
    fn table_operand(&mut self, format: Format) -> Option<Op> {
        let bytes = match format {
            Format::F32 => 4,
            Format::F64 => 8,
            Format::F80 => 10,
        };
        let addr = format.pick(&mut self.rng, bytes, 1);
        self.x87_mem(addr)
    }

    /// A memory operand of `bytes` in the data area or the stack (integer operands: random
    /// values, and the destination of stores).
    fn data_operand(&mut self, bytes: u64) -> Option<Op> {
        let addr = self.pick_addr(&MemReq::of(bytes));
        self.x87_mem(addr)
    }

    /// Emits `code` with `ops` and follows its stack movement.
    fn x87fp_emit(&mut self, code: Code, ops: &[Op], pushes: usize, pops: usize) -> bool {
        if !self.emit_with(code, ops) {
            return false;
        }
        self.x87.forget();
        for _ in 0..pushes {
            self.x87.push_unknown();
        }
        for _ in 0..pops {
            self.x87.pop();
        }
        true
    }

    /// A random instruction of the group, mostly keeping the stack within its eight
    /// registers, sometimes overflowing or underflowing it.
    fn x87fp_insn(&mut self) -> bool {
        let depth = self.x87.depth();
        let (full, empty) = (depth == 8, depth == 0);
        let weights = [
            if full { 1 } else { 6 },
            if empty { 1 } else { 8 },
            if empty { 1 } else { 4 },
            if empty { 1 } else { 4 },
            if empty { 1 } else { 4 },
            1,
        ];
        let i = self.rng.below(8) as usize;
        match self.rng.weighted(&weights) {
            0 => self.x87fp_load(i),
            1 => self.x87fp_arith(i),
            2 => {
                let (code, pushes, pops) = IMPLICIT[self.rng.below(12) as usize];
                self.x87fp_emit(code, &[], pushes, pops)
            }
            3 => self.x87fp_compare(i),
            4 => self.x87fp_store(i),
            _ => {
                let ops = [Op::Reg(Register::ST0), Op::Reg(st(i))];
                self.x87fp_emit(Code::Fxch_st0_sti, &ops, 0, 0)
            }
        }
    }

    fn x87fp_load(&mut self, i: usize) -> bool {
        let (code, op) = match self.rng.below(10) {
            0 => (Code::Fld_m32fp, self.table_operand(Format::F32)),
            1 | 2 => (Code::Fld_m64fp, self.table_operand(Format::F64)),
            3 => {
                let (code, bytes) = [
                    (Code::Fild_m16int, 2),
                    (Code::Fild_m32int, 4),
                    (Code::Fild_m64int, 8),
                ][self.rng.below(3) as usize];
                (code, self.data_operand(bytes))
            }
            4 => {
                let code = CONSTANTS[self.rng.below(7) as usize];
                return self.x87fp_emit(code, &[], 1, 0);
            }
            5 => (Code::Fld_sti, Some(Op::Reg(st(i)))),
            _ => (Code::Fld_m80fp, self.table_operand(Format::F80)),
        };
        match op {
            Some(op) => self.x87fp_emit(code, &[op], 1, 0),
            None => false,
        }
    }

    fn x87fp_arith(&mut self, i: usize) -> bool {
        let codes = Arith::ALL[self.rng.below(6) as usize].codes();
        let form = self.rng.below(7) as usize;
        let ops = match form {
            0 => self.table_operand(Format::F32).map(|m| vec![m]),
            1 => self.table_operand(Format::F64).map(|m| vec![m]),
            2 => self.data_operand(2).map(|m| vec![m]),
            3 => self.data_operand(4).map(|m| vec![m]),
            4 => Some(vec![Op::Reg(Register::ST0), Op::Reg(st(i))]),
            _ => Some(vec![Op::Reg(st(i)), Op::Reg(Register::ST0)]),
        };
        let pops = usize::from(form == 6);
        match ops {
            Some(ops) => self.x87fp_emit(codes[form], &ops, 0, pops),
            None => false,
        }
    }

    fn x87fp_compare(&mut self, i: usize) -> bool {
        if self.rng.chance(60) {
            let (code, pops) = COMPARES[self.rng.below(8) as usize];
            let ops = [Op::Reg(Register::ST0), Op::Reg(st(i))];
            return self.x87fp_emit(code, &ops, 0, pops);
        }
        let (code, format, bytes, pops) = MEMORY_COMPARES[self.rng.below(8) as usize];
        let op = match format {
            Some(f) => self.table_operand(f),
            None => self.data_operand(bytes),
        };
        match op {
            Some(op) => self.x87fp_emit(code, &[op], 0, pops),
            None => false,
        }
    }

    fn x87fp_store(&mut self, i: usize) -> bool {
        if self.rng.chance(10) {
            return self.x87fp_emit(Code::Fstp_sti, &[Op::Reg(st(i))], 0, 1);
        }
        let (code, bytes, pops) = STORES[self.rng.below(13) as usize];
        match self.data_operand(bytes) {
            Some(op) => self.x87fp_emit(code, &[op], 0, pops),
            None => false,
        }
    }
}
