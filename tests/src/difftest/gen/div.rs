//! Divisions whose quotient fits (or, on purpose, does not), and the faulting tails that end
//! a few cases with an exception: #DE, #GP from a misaligned CMPXCHG16B, #PF from an access
//! running into the not-present page after the data area.

use iced_x86::{Code, Instruction, Mnemonic as M, Register};

use super::int::{accumulator, kind_bits, mask};
use super::ops::{DraftOpts, Op, GPR16, GPR32, GPR64, GPR8};
use super::{Gen, Groups};
use crate::difftest::layout;

impl Gen<'_> {
    /// DIV/IDIV with a dividend and divisor chosen so the quotient fits (or, with `fault`,
    /// so that it does not, or the divisor is zero: #DE).
    pub(crate) fn division(&mut self, code: Code, fault: bool) -> bool {
        let bits = kind_bits(code.op_code().op0_kind());
        let signed = code.mnemonic() == M::Idiv;
        let opts = DraftOpts {
            simple: true,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        if let Some(r) = d.reg(0) {
            // The divisor must not be part of the dividend, and we write it.
            let family = |r: Register| matches!(r.full_register(), Register::RAX | Register::RDX);
            if family(r) || !super::ops::is_free(r) {
                let pool: &[Register] = match bits {
                    8 => &GPR8,
                    16 => &GPR16,
                    32 => &GPR32,
                    _ => &GPR64,
                };
                let alt = loop {
                    let alt = self.free_reg(pool);
                    if !family(alt) {
                        break alt;
                    }
                };
                d.ops[0] = Op::Reg(alt);
            }
        }
        let (dividend, divisor) = if fault {
            self.faulting_division(bits, signed)
        } else {
            self.exact_division(bits, signed)
        };
        let m = mask(bits);
        let (lo, hi) = if bits == 8 {
            ((dividend as u64) & 0xffff, 0)
        } else {
            ((dividend as u64) & m, ((dividend >> bits) as u64) & m)
        };
        let ok = if bits == 8 {
            self.mov_imm(Register::AX, lo)
        } else {
            let (a, dx) = match bits {
                16 => (Register::AX, Register::DX),
                32 => (Register::EAX, Register::EDX),
                _ => (Register::RAX, Register::RDX),
            };
            self.mov_imm(a, lo) && self.mov_imm(dx, hi)
        };
        if !ok || !self.set_operand(&d.ops[0], bits, divisor & m) {
            return false;
        }
        self.finish(&d)
    }

    /// Writes `value` to a register or memory operand of `bits` bits (through a scratch
    /// register for 64-bit memory values that no imm32 gives).
    fn set_operand(&mut self, op: &Op, bits: u32, value: u64) -> bool {
        match *op {
            Op::Reg(r) => self.mov_imm(r, value),
            Op::Mem(m) => {
                let ins = match bits {
                    8 => Instruction::with2(Code::Mov_rm8_imm8, m, value as u8 as u32),
                    16 => Instruction::with2(Code::Mov_rm16_imm16, m, value as u16 as u32),
                    32 => Instruction::with2(Code::Mov_rm32_imm32, m, value as u32),
                    _ if value as i64 == value as i32 as i64 => {
                        Instruction::with2(Code::Mov_rm64_imm32, m, value as i64 as i32)
                    }
                    _ => {
                        let tmp = [Register::RBX, Register::RSI, Register::RDI, Register::R8]
                            [self.rng.below(4) as usize];
                        if !self.mov_imm(tmp, value) {
                            return false;
                        }
                        Instruction::with2(Code::Mov_rm64_r64, m, tmp)
                    }
                };
                ins.map(|i| self.emit(i)).unwrap_or(false)
            }
            Op::Imm(_) => false,
        }
    }

    /// (dividend, divisor) with the quotient in range.
    fn exact_division(&mut self, bits: u32, signed: bool) -> (i128, u64) {
        let n = bits;
        if signed {
            let min = -(1i128 << (n - 1));
            let max = (1i128 << (n - 1)) - 1;
            let sx = |v: u64| ((v << (64 - n)) as i64 >> (64 - n)) as i128;
            let mut d = sx(self.small_or_any(n));
            if d == 0 {
                d = 1;
            }
            let q = sx(self.rng.value(n)).clamp(min, max);
            let rmax = d.unsigned_abs() as i128 - 1;
            let r = if rmax == 0 {
                0
            } else {
                (self.rng.next_u64() as i128).rem_euclid(rmax + 1)
            };
            let prod = q * d;
            let r = if prod < 0 || (prod == 0 && self.rng.chance(50)) {
                -r
            } else {
                r
            };
            (prod + r, d as u64)
        } else {
            let mut d = self.small_or_any(n) as u128;
            if d == 0 {
                d = 1;
            }
            let q = u128::from(self.rng.value(n));
            let r = u128::from(self.rng.next_u64()) % d;
            ((q * d + r) as i128, d as u64)
        }
    }

    /// A divisor: small values are the interesting ones for remainders.
    fn small_or_any(&mut self, n: u32) -> u64 {
        if self.rng.chance(40) {
            self.rng.range(1, 20) as u64
        } else {
            self.rng.value(n)
        }
    }

    /// (dividend, divisor) that raise #DE.
    fn faulting_division(&mut self, bits: u32, signed: bool) -> (i128, u64) {
        if self.rng.chance(50) {
            return (self.rng.next_u64() as i128 & mask(bits) as i128, 0);
        }
        if signed {
            // Quotient 2^(n-1): one past the largest positive value.
            (1i128 << (bits - 1), 1)
        } else {
            let d = self.rng.value(bits).max(1);
            ((d as i128) << bits, d)
        }
    }

    /// Ends the case with an instruction that raises an exception: #DE from a division, #GP
    /// from a misaligned CMPXCHG16B, or #PF from an access (or REP string) running into the
    /// not-present page after the data area.
    pub(crate) fn faulting_tail(&mut self) -> bool {
        match self.rng.below(5) {
            0 | 1 => {
                let codes = [
                    Code::Div_rm8,
                    Code::Div_rm16,
                    Code::Div_rm32,
                    Code::Div_rm64,
                    Code::Idiv_rm8,
                    Code::Idiv_rm16,
                    Code::Idiv_rm32,
                    Code::Idiv_rm64,
                ];
                let code = codes[self.rng.below(8) as usize];
                self.division(code, true)
            }
            2 => self.cmpxchg_double(Code::Cmpxchg16b_m128, true),
            3 if self.groups.contains(Groups::STRING) => self.string_into_guard(),
            _ => {
                let size = 1u64 << self.rng.below(4);
                let addr = layout::DATA_END - self.rng.below(size);
                let Some(m) = self.mem_at(addr, true) else {
                    return false;
                };
                let (load, store) = match size {
                    1 => (Code::Mov_r8_rm8, Code::Mov_rm8_r8),
                    2 => (Code::Mov_r16_rm16, Code::Mov_rm16_r16),
                    4 => (Code::Mov_r32_rm32, Code::Mov_rm32_r32),
                    _ => (Code::Mov_r64_rm64, Code::Mov_rm64_r64),
                };
                let reg = accumulator((size * 8) as u32);
                let rmw = match size {
                    1 => Code::Add_rm8_r8,
                    2 => Code::Add_rm16_r16,
                    4 => Code::Add_rm32_r32,
                    _ => Code::Add_rm64_r64,
                };
                let ins = match self.rng.below(3) {
                    0 => Instruction::with2(load, reg, m),
                    1 => Instruction::with2(store, m, reg),
                    _ => Instruction::with2(rmw, m, reg),
                };
                ins.map(|i| self.emit(i)).unwrap_or(false)
            }
        }
    }
}
