//! Integer instructions whose operands need more than a random fill: shifts (known counts),
//! bit tests on memory with a register offset, bit scans (non-zero source), compare-exchanges
//! (equal half the time), XADD, PUSH/POP (the stack stays in its pages), LEA (any address
//! expression). Divisions and faulting tails are in `div.rs`.

use iced_x86::{Code, Instruction, MemoryOperand, Mnemonic as M, OpCodeOperandKind as K, Register};

use super::mem::MemReq;
use super::ops::{DraftOpts, Op, GPR16, GPR32, GPR64};
use super::Gen;
use crate::difftest::layout;

/// Operand width in bits of an operand kind (0 if it has none).
pub(crate) fn kind_bits(k: K) -> u32 {
    match k {
        K::r8_or_mem | K::r8_reg | K::r8_opcode | K::al => 8,
        K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode | K::ax => 16,
        K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode | K::eax => 32,
        K::r64_or_mem | K::r64_reg | K::r64_rm | K::r64_opcode | K::rax => 64,
        _ => 0,
    }
}

pub(crate) fn accumulator(bits: u32) -> Register {
    match bits {
        8 => Register::AL,
        16 => Register::AX,
        32 => Register::EAX,
        _ => Register::RAX,
    }
}

/// The same memory operand `delta` bytes further.
fn offset(m: MemoryOperand, delta: i64) -> MemoryOperand {
    MemoryOperand {
        displacement: m.displacement + delta,
        displ_size: if m.base == Register::None || m.base == Register::RIP {
            m.displ_size
        } else {
            4
        },
        ..m
    }
}

pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

impl Gen<'_> {
    /// One instruction of an integer category.
    pub(crate) fn int_op(&mut self, code: Code) -> bool {
        match code.mnemonic() {
            M::Div | M::Idiv => self.division(code, false),
            M::Rol
            | M::Ror
            | M::Rcl
            | M::Rcr
            | M::Shl
            | M::Sal
            | M::Shr
            | M::Sar
            | M::Shld
            | M::Shrd => self.shift(code),
            M::Bt | M::Bts | M::Btr | M::Btc if code.op_code().op1_kind() != K::imm8 => {
                self.bit_test(code)
            }
            M::Bsf | M::Bsr => self.bit_scan(code),
            M::Cmpxchg => self.cmpxchg(code),
            M::Cmpxchg8b | M::Cmpxchg16b => self.cmpxchg_double(code, false),
            M::Push | M::Pop => self.stack_op(code),
            M::Lea => self.lea(code),
            M::Movsxd if code == Code::Movsxd_r16_rm16 => {
                // Vendor difference, not an interpreter bug: AMD reads 32 bits for
                // MOVSXD r16, m (faulting on the next page), Intel reads 16 as the
                // interpreter does. Register form only.
                let opts = DraftOpts {
                    mem: Some(false),
                    ..Default::default()
                };
                match self.draft(code, &opts) {
                    Some(d) => self.finish(&d),
                    None => false,
                }
            }
            _ => self.generic(code),
        }
    }

    /// Random operands; LOCK on memory destinations 40% of the time.
    fn generic(&mut self, code: Code) -> bool {
        let lock = code.op_code().can_use_lock_prefix() && self.rng.chance(40);
        let atomic = lock || code.mnemonic() == M::Xchg;
        let opts = DraftOpts {
            atomic,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        if lock {
            d.lock_if_possible();
        }
        self.finish(&d)
    }

    /// A shift or rotate count: mostly small, sometimes the width, sometimes beyond it.
    fn count(&mut self, bits: u32) -> u64 {
        let b = u64::from(bits);
        match self.rng.below(10) {
            0 => 0,
            1 | 2 => 1,
            3..=6 => self.rng.range(2, b as i64 - 1) as u64,
            7 => self.rng.range(b as i64 - 1, b as i64 + 1) as u64,
            8 => self.rng.range(b as i64, if bits == 64 { 63 } else { 31 }) as u64,
            _ => self.rng.below(256),
        }
    }

    fn shift(&mut self, code: Code) -> bool {
        let info = code.op_code();
        let double = matches!(code.mnemonic(), M::Shld | M::Shrd);
        let bits = kind_bits(info.op0_kind());
        let count_kind = info.op_kinds()[if double { 2 } else { 1 }];
        let mut count = self.count(bits);
        if double && bits == 16 {
            // Counts above 16 give undefined results for 16-bit SHLD/SHRD.
            count = (count & 0x1f).min(16) | (self.rng.below(8) << 5);
        }
        let by_cl = count_kind == K::cl;
        let opts = DraftOpts {
            imm: (count_kind == K::imm8).then_some(count as u8 as i8 as i64),
            simple: by_cl,
            ..Default::default()
        };
        let Some(d) = self.draft(code, &opts) else {
            return false;
        };
        if by_cl && !self.mov_imm(Register::CL, count) {
            return false;
        }
        self.finish(&d)
    }

    /// BT/BTS/BTR/BTC with a register bit offset (memory: the offset reaches beyond the
    /// operand, within the data area).
    fn bit_test(&mut self, code: Code) -> bool {
        let bits = kind_bits(code.op_code().op0_kind());
        if self.rng.chance(50) {
            // Register destination: the offset wraps within the register.
            let opts = DraftOpts {
                mem: Some(false),
                ..Default::default()
            };
            return match self.draft(code, &opts) {
                Some(d) => self.finish(&d),
                None => false,
            };
        }
        let lock = code.mnemonic() != M::Bt && self.rng.chance(40);
        let size = u64::from(bits / 8);
        let off = self
            .rng
            .range(-(i64::from(bits) * 24), i64::from(bits) * 24);
        let unit = off.div_euclid(i64::from(bits)) * size as i64;
        let req = MemReq {
            size: size.max(4),
            align: 1,
            atomic: lock,
            stack: false,
        };
        let target = self.pick_addr(&req);
        let ea = target.wrapping_sub(unit as u64);
        let opts = DraftOpts {
            mem: Some(false),
            simple: true,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        let Some(m) = self.mem_at(ea, true) else {
            return false;
        };
        d.ops[0] = Op::Mem(m);
        d.mem = Some((0, target, size));
        let pool: &[Register] = match bits {
            16 => &GPR16,
            32 => &GPR32,
            _ => &GPR64,
        };
        let reg = self.free_reg(pool);
        d.ops[1] = Op::Reg(reg);
        if lock {
            d.lock_if_possible();
        }
        self.mov_imm(reg, off as u64) && self.finish(&d)
    }

    /// BSF/BSR with a source made non-zero first (their result is undefined for zero).
    fn bit_scan(&mut self, code: Code) -> bool {
        let bits = kind_bits(code.op_code().op0_kind());
        let opts = DraftOpts {
            simple: true,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        if let Some(r) = d.reg(1) {
            if !super::ops::is_free(r) {
                let pool: &[Register] = if bits == 16 {
                    &GPR16
                } else if bits == 32 {
                    &GPR32
                } else {
                    &GPR64
                };
                d.ops[1] = Op::Reg(self.free_reg(pool));
            }
        }
        let bts = match bits {
            16 => Code::Bts_rm16_imm8,
            32 => Code::Bts_rm32_imm8,
            _ => Code::Bts_rm64_imm8,
        };
        let bit = self.rng.below(u64::from(bits)) as i64;
        let set = super::ops::build(bts, &[d.ops[1], Op::Imm(bit)]);
        match set {
            Some(ins) if self.emit(ins) => self.finish(&d),
            _ => false,
        }
    }

    /// CMPXCHG, with the accumulator loaded from the destination half of the time.
    fn cmpxchg(&mut self, code: Code) -> bool {
        let bits = kind_bits(code.op_code().op0_kind());
        let lock = self.rng.chance(40);
        let opts = DraftOpts {
            simple: true,
            atomic: lock,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        if lock {
            d.lock_if_possible();
        }
        if self.rng.chance(50) {
            let acc = accumulator(bits);
            let load = match (bits, d.ops[0]) {
                (8, op) => super::ops::build(Code::Mov_r8_rm8, &[Op::Reg(acc), op]),
                (16, op) => super::ops::build(Code::Mov_r16_rm16, &[Op::Reg(acc), op]),
                (32, op) => super::ops::build(Code::Mov_r32_rm32, &[Op::Reg(acc), op]),
                (_, op) => super::ops::build(Code::Mov_r64_rm64, &[Op::Reg(acc), op]),
            };
            if !load.is_some_and(|i| self.emit(i)) {
                return false;
            }
        }
        self.finish(&d)
    }

    /// CMPXCHG8B/16B; RDX:RAX loaded from memory half of the time. With `misalign`, a
    /// CMPXCHG16B operand that is not 16-byte aligned (#GP).
    pub(crate) fn cmpxchg_double(&mut self, code: Code, misalign: bool) -> bool {
        let wide = code == Code::Cmpxchg16b_m128;
        let half = if wide { 8 } else { 4 };
        let lock = self.rng.chance(50);
        let req = MemReq {
            size: half * 2,
            align: if wide { 16 } else { 1 },
            atomic: lock || !misalign,
            stack: true,
        };
        let mut addr = self.pick_addr(&req);
        if misalign {
            let hi = if addr >= layout::STACK_BASE {
                layout::STACK_END
            } else {
                layout::DATA_END
            };
            addr = if addr + 24 > hi { addr - 8 } else { addr + 8 };
        }
        let Some(m) = self.mem_at(addr, true) else {
            return false;
        };
        if self.rng.chance(50) {
            let (code, a, dx) = if wide {
                (Code::Mov_r64_rm64, Register::RAX, Register::RDX)
            } else {
                (Code::Mov_r32_rm32, Register::EAX, Register::EDX)
            };
            let ok = [(a, m), (dx, offset(m, half as i64))]
                .into_iter()
                .all(|(r, mm)| {
                    Instruction::with2(code, r, mm)
                        .map(|i| self.emit(i))
                        .unwrap_or(false)
                });
            if !ok {
                return false;
            }
        }
        let Ok(mut ins) = Instruction::with1(code, m) else {
            return false;
        };
        ins.set_has_lock_prefix(lock);
        self.emit(ins)
    }

    /// PUSH/POP, keeping RSP inside the stack pages with room for an exception frame.
    fn stack_op(&mut self, code: Code) -> bool {
        let opts = DraftOpts {
            simple: true,
            ..Default::default()
        };
        let Some(mut d) = self.draft(code, &opts) else {
            return false;
        };
        let Some(ins) = super::ops::build(d.code, &d.ops) else {
            return false;
        };
        let inc = ins.stack_pointer_increment() as i64;
        let new = self.rsp.wrapping_add(inc as u64);
        if !(layout::STACK_BASE + 0x400..=layout::STACK_END - 0x40).contains(&new) {
            return false;
        }
        // POP computes an RSP-based address after incrementing RSP.
        if let (M::Pop, Some((n, _, _))) = (code.mnemonic(), d.mem) {
            if let Op::Mem(m) = d.ops[n] {
                if m.base == Register::RSP {
                    d.ops[n] = Op::Mem(offset(m, -inc));
                }
            }
        }
        self.finish(&d)
    }

    /// LEA of a random address expression over any registers.
    fn lea(&mut self, code: Code) -> bool {
        let Some(mut d) = self.draft(code, &DraftOpts::default()) else {
            return false;
        };
        let short = self.rng.chance(20);
        let pool: &[Register] = if short { &GPR32 } else { &GPR64 };
        let base = match self.rng.below(8) {
            0 => Register::None,
            1 if !short => Register::RIP,
            _ => pool[self.rng.below(16) as usize],
        };
        let index = match self.rng.below(3) {
            0 => Register::None,
            _ => loop {
                let r = pool[self.rng.below(16) as usize];
                if r.full_register() != Register::RSP {
                    break r;
                }
            },
        };
        let scale = 1 << self.rng.below(4);
        let disp = if base == Register::RIP {
            (self.ip() as i64).wrapping_add(self.rng.range(-0x10_0000, 0x10_0000))
        } else {
            self.rng.value(32) as u32 as i32 as i64
        };
        let size = if base == Register::None || base == Register::RIP {
            8
        } else {
            1
        };
        let m = MemoryOperand::new(base, index, scale, disp, size, false, Register::None);
        d.ops[1] = Op::Mem(m);
        self.finish(&d)
    }
}
