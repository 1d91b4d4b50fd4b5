//! Memory operands: where an access goes (the data area or the stack pages, often across a
//! page boundary, often reusing a recent address) and the addressing form that reaches it
//! (R14 base, R15 index, RSP, absolute, RIP-relative, 32-bit address size, a scratch base).

use iced_x86::{MemoryOperand, Register};

use super::ops::GPR64;
use super::Gen;
use crate::difftest::layout;

use Register as R;

/// What a memory operand must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct MemReq {
    /// Bytes accessed.
    pub size: u64,
    /// Required alignment (1: none).
    pub align: u64,
    /// Locked access: must not cross a cache line (a split lock is slow or #AC on hosts
    /// with split-lock detection).
    pub atomic: bool,
    /// Whether the stack pages may be the target.
    pub stack: bool,
}

impl MemReq {
    /// A plain access of `size` bytes.
    pub fn of(size: u64) -> Self {
        MemReq {
            size: size.max(1),
            align: 1,
            atomic: false,
            stack: true,
        }
    }
}

impl Gen<'_> {
    /// A target address for an access satisfying `req`.
    pub(crate) fn pick_addr(&mut self, req: &MemReq) -> u64 {
        let in_stack = req.stack && self.rng.chance(12);
        let (lo, hi) = if in_stack {
            (layout::STACK_BASE, layout::STACK_END)
        } else {
            (layout::DATA_BASE, layout::DATA_END)
        };
        let size = req.size;
        let align = req.align.max(1);
        let mut addr = match self.rng.below(10) {
            // Reuse a recent address: read what was written, write what was read.
            0..=2 if !self.recent.is_empty() => {
                let i = self.rng.below(self.recent.len() as u64) as usize;
                self.recent[i]
            }
            // Straddle a page boundary.
            4 if size > 1 => {
                let pages = (hi - lo) / 0x1000;
                let boundary = lo + 0x1000 * (1 + self.rng.below(pages.max(2) - 1));
                boundary - 1 - self.rng.below(size - 1)
            }
            // The very edges of the area.
            5 => {
                if self.rng.chance(50) {
                    lo + self.rng.below(8)
                } else {
                    hi - size - self.rng.below(8)
                }
            }
            _ => lo + self.rng.below(hi - lo - size + 1),
        };
        addr = addr.clamp(lo, hi - size);
        addr -= (addr - lo) % align;
        if req.atomic && addr % 64 + size > 64 {
            addr -= addr % 64 + size - 64;
        }
        if self.recent.len() < 8 {
            self.recent.push(addr);
        } else {
            let i = self.rng.below(8) as usize;
            self.recent[i] = addr;
        }
        addr
    }

    /// A memory operand for an access satisfying `req`, and its address. Half the time the
    /// target is chosen near the register part of the form (R14 is a page boundary), so
    /// 8-bit displacements and page-crossing accesses come up often.
    pub(crate) fn mem_operand(
        &mut self,
        req: &MemReq,
        simple: bool,
    ) -> Option<(MemoryOperand, u64)> {
        let (base, index) = self.base_values();
        if self.rng.chance(50) {
            let scale = 1u64 << self.rng.below(4);
            let (reg, sib, value) = match self.rng.below(3) {
                0 => (R::R14, None, base),
                1 => (R::R14, Some(scale), base + index * scale),
                _ => (R::RSP, None, self.rsp),
            };
            let target = value.wrapping_add(self.rng.range(-128, 127) as u64);
            let align = req.align.max(1);
            let split = req.atomic && target % 64 + req.size > 64;
            let inside = |lo: u64, hi: u64| target >= lo && target + req.size <= hi;
            let ok = target % align == 0
                && !split
                && (inside(layout::DATA_BASE, layout::DATA_END)
                    || (req.stack && inside(layout::STACK_BASE, layout::STACK_END)));
            if ok {
                let disp = target.wrapping_sub(value) as i64;
                let m = match sib {
                    None => MemoryOperand::with_base_displ_size(reg, disp, 1),
                    Some(s) => MemoryOperand::with_base_index_scale_displ_size(
                        reg,
                        R::R15,
                        s as u32,
                        disp,
                        1,
                    ),
                };
                return Some((m, target));
            }
        }
        let addr = self.pick_addr(req);
        self.mem_at(addr, simple).map(|m| (m, addr))
    }

    /// A memory operand whose effective address is `addr` (may emit a setup instruction
    /// unless `simple`).
    pub(crate) fn mem_at(&mut self, addr: u64, simple: bool) -> Option<MemoryOperand> {
        let (base, index) = self.base_values();
        let scale = 1u64 << self.rng.below(4);
        let d = |v: u64| addr.wrapping_sub(v) as i64;
        let fits = |v: i64| v == v as i32 as i64;
        let in_stack = addr >= layout::STACK_BASE;
        let form = self.rng.below(if simple { 9 } else { 10 });
        let m = match form {
            0 | 1 => MemoryOperand::with_base_displ_size(R::R14, d(base), 1),
            2 | 3 => MemoryOperand::with_base_index_scale_displ_size(
                R::R14,
                R::R15,
                scale as u32,
                d(base + index * scale),
                1,
            ),
            4 => MemoryOperand::with_index_scale_displ_size(
                R::R15,
                scale as u32,
                d(index * scale),
                8,
            ),
            5 => MemoryOperand::with_displ(addr, 8),
            6 => MemoryOperand::with_base_displ_size(R::RIP, addr as i64, 8),
            7 => MemoryOperand::with_base_index_scale_displ_size(
                R::R14D,
                R::R15D,
                scale as u32,
                d(base + index * scale),
                1,
            ),
            8 if in_stack => MemoryOperand::with_base_displ_size(R::RSP, d(self.rsp), 1),
            8 => MemoryOperand::with_base_index_scale_displ_size(
                R::R15,
                R::R14,
                1,
                d(base + index),
                1,
            ),
            _ => {
                // A scratch register set up just before.
                let reg = self.free_reg(&GPR64);
                let disp = self.rng.range(-200, 200);
                let value = addr.wrapping_sub(disp as u64);
                if !self.mov_imm(reg, value) {
                    return None;
                }
                MemoryOperand::with_base_displ_size(reg, disp, 1)
            }
        };
        if m.base == R::RIP || fits(m.displacement) {
            Some(m)
        } else {
            Some(MemoryOperand::with_base_displ_size(R::R14, d(base), 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::gen::Groups;
    use crate::difftest::rng::Rng;
    use crate::difftest::state::InitialState;
    use iced_x86::{Code, Decoder, DecoderOptions, Encoder, Instruction};

    #[test]
    fn every_memory_form_reaches_its_target() {
        let init = InitialState::from_seed(5, Groups::DEFAULT);
        let mut g = Gen::new(Rng::new(1), &init, 0x9000, Groups::INT);
        for i in 0..2000 {
            let req = MemReq::of(1 + (i % 16));
            let addr = g.pick_addr(&req);
            assert!(
                (layout::DATA_BASE..=layout::DATA_END - req.size).contains(&addr)
                    || (layout::STACK_BASE..=layout::STACK_END - req.size).contains(&addr)
            );
            let before = g.code.len();
            let Some(m) = g.mem_at(addr, false) else {
                continue;
            };
            // A setup `mov reg, imm` may precede: evaluate it too.
            let mut regs = init.gpr;
            let mut dec = Decoder::with_ip(64, &g.code[before..], g.start + before as u64, 0);
            for setup in dec.iter() {
                let r = setup.op_register(0).full_register();
                let v = setup.immediate(1);
                let v = if setup.op_register(0).is_gpr32() {
                    v & 0xffff_ffff
                } else {
                    v
                };
                regs[r as usize - R::RAX as usize] = v;
            }
            regs[4] = g.rsp;
            let ins = Instruction::with2(Code::Mov_r32_rm32, R::EAX, m).unwrap();
            let mut enc = Encoder::new(64);
            let ip = 0xa000;
            let len = enc.encode(&ins, ip).unwrap();
            let bytes = enc.take_buffer();
            let dec = Decoder::with_ip(64, &bytes[..len], ip, DecoderOptions::NONE).decode();
            let va = dec.virtual_address(1, 0, |r, _, _| {
                if r.is_segment_register() {
                    Some(0)
                } else {
                    let full = r.full_register();
                    let v = regs[full as usize - R::RAX as usize];
                    Some(if r.is_gpr32() { v & 0xffff_ffff } else { v })
                }
            });
            assert_eq!(va, Some(addr), "{dec}");
        }
    }

    #[test]
    fn memory_operands_land_in_the_data_area_or_the_stack() {
        let init = InitialState::from_seed(6, Groups::DEFAULT);
        let mut g = Gen::new(Rng::new(3), &init, 0x9000, Groups::INT);
        let mut short = 0;
        for i in 0..3000u64 {
            let req = MemReq {
                size: 1 << (i % 5),
                align: if i % 7 == 0 { 16 } else { 1 },
                atomic: i % 3 == 0,
                stack: i % 2 == 0,
            };
            let Some((m, addr)) = g.mem_operand(&req, true) else {
                continue;
            };
            let data = addr >= layout::DATA_BASE && addr + req.size <= layout::DATA_END;
            let stack = addr >= layout::STACK_BASE && addr + req.size <= layout::STACK_END;
            assert!(data || (req.stack && stack), "{addr:#x}");
            assert_eq!(addr % req.align, 0);
            assert!(!req.atomic || addr % 64 + req.size <= 64);
            short +=
                usize::from(m.displacement == m.displacement as i8 as i64 && m.base != R::None);
        }
        assert!(short > 1000, "{short} short displacements");
    }
}
