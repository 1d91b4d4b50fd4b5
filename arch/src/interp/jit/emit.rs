//! Host code for one block.
//!
//! Register use in translated code: `rbx` holds the core, `r12d` and `r13d` the TLB and code
//! epochs seen at entry (for the loop checks); everything else is scratch. Guest state lives
//! in the core, where the handlers expect it: an instruction emitted as host code reads and
//! writes the same fields its handler would (registers, RIP, the lazy flags), so emitted and
//! handled instructions mix freely. An emitted instruction whose fast path does not apply at
//! run time (a TLB miss, a page-crossing access, a store to a page holding code, a
//! non-canonical address) runs its handler instead, out of line, before anything changed.

use std::mem::offset_of;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::super::exec::{alu, bits, control, data};
use super::super::flags::{FlagOp, Flags};
use super::super::insn::{Handler, Insn, MEM, ZERO};
use super::super::mmu::{Tlb, TlbLayout};
use super::super::segment::is_canonical;
use super::super::state::{Mode, State, FS};
use super::super::Core;
use super::JitExit;

/// Where things are in the core, from `rbx`.
struct Offsets {
    gpr: i32,
    rip: i32,
    shadow: i32,
    cpl: i32,
    tlb_epoch: i32,
    stop: i32,
    budget: i32,
    seg_base: [i32; 6],
    f_op: i32,
    f_bits: i32,
    f_dst: i32,
    f_src: i32,
    f_res: i32,
    f_aux: i32,
}

fn offsets() -> Offsets {
    let s = offset_of!(Core, s);
    let f = s + offset_of!(State, flags);
    let i = |v: usize| i32::try_from(v).expect("the core is smaller than 2 GiB");
    let seg = s + offset_of!(State, seg);
    let seg_size = std::mem::size_of::<kvm_bindings::kvm_segment>();
    Offsets {
        gpr: i(s + offset_of!(State, gpr)),
        rip: i(s + offset_of!(State, rip)),
        shadow: i(s + offset_of!(State, interrupt_shadow)),
        cpl: i(s + offset_of!(State, mode) + offset_of!(Mode, cpl)),
        tlb_epoch: i(offset_of!(Core, tlb) + offset_of!(Tlb, epoch)),
        stop: i(offset_of!(Core, stop_flag)),
        budget: i(offset_of!(Core, loop_budget)),
        seg_base: std::array::from_fn(|n| {
            i(seg + n * seg_size + offset_of!(kvm_bindings::kvm_segment, base))
        }),
        f_op: i(f + offset_of!(Flags, op)),
        f_bits: i(f + offset_of!(Flags, bits)),
        f_dst: i(f + offset_of!(Flags, dst)),
        f_src: i(f + offset_of!(Flags, src)),
        f_res: i(f + offset_of!(Flags, res)),
        f_aux: i(f + offset_of!(Flags, aux)),
    }
}

/// A handler as a plain address, for comparisons.
fn addr(h: Handler) -> usize {
    h as *const () as usize
}

macro_rules! each_op {
    ($($h:ident)::+) => {
        [
            $($h)::+::<{ alu::ADD }> as Handler,
            $($h)::+::<{ alu::OR }>,
            $($h)::+::<{ alu::ADC }>,
            $($h)::+::<{ alu::SBB }>,
            $($h)::+::<{ alu::AND }>,
            $($h)::+::<{ alu::SUB }>,
            $($h)::+::<{ alu::XOR }>,
            $($h)::+::<{ alu::CMP }>,
        ]
    };
}

macro_rules! each_cc {
    ($($h:ident)::+) => {
        [
            $($h)::+::<0> as Handler, $($h)::+::<1>, $($h)::+::<2>, $($h)::+::<3>,
            $($h)::+::<4>, $($h)::+::<5>, $($h)::+::<6>, $($h)::+::<7>,
            $($h)::+::<8>, $($h)::+::<9>, $($h)::+::<10>, $($h)::+::<11>,
            $($h)::+::<12>, $($h)::+::<13>, $($h)::+::<14>, $($h)::+::<15>,
        ]
    };
}

/// Handlers of instructions that cannot change the processor mode, the interrupt state or
/// the control flow other than by a direct branch: a block made only of these may loop in
/// host code.
fn plain(h: Handler) -> bool {
    let others: [Handler; 43] = [
        alu::alu_m::<{ alu::ADD }, true>,
        alu::alu_m::<{ alu::ADD }, false>,
        alu::alu_m::<{ alu::OR }, true>,
        alu::alu_m::<{ alu::OR }, false>,
        alu::alu_m::<{ alu::AND }, true>,
        alu::alu_m::<{ alu::AND }, false>,
        alu::alu_m::<{ alu::SUB }, true>,
        alu::alu_m::<{ alu::SUB }, false>,
        alu::alu_m::<{ alu::XOR }, true>,
        alu::alu_m::<{ alu::XOR }, false>,
        alu::alu_m::<{ alu::CMP }, true>,
        alu::alu_m::<{ alu::CMP }, false>,
        alu::test::<true>,
        alu::test::<false>,
        alu::inc_dec::<true>,
        alu::inc_dec::<false>,
        alu::neg,
        alu::not,
        alu::imul_n::<true>,
        alu::imul_n::<false>,
        data::mov_rr::<1>,
        data::mov_rr::<2>,
        data::mov_rr::<4>,
        data::mov_rr::<8>,
        data::mov_rm::<1>,
        data::mov_rm::<2>,
        data::mov_rm::<4>,
        data::mov_rm::<8>,
        data::mov_mr::<1>,
        data::mov_mr::<2>,
        data::mov_mr::<4>,
        data::mov_mr::<8>,
        data::mov_ri,
        data::mov_mi,
        data::mov_extend::<1, false>,
        data::mov_extend::<2, false>,
        data::mov_extend::<4, false>,
        data::mov_extend::<1, true>,
        data::mov_extend::<2, true>,
        data::mov_extend::<4, true>,
        data::lea,
        data::nop,
        bits::setcc,
    ];
    let a = addr(h);
    each_op!(alu::alu_rr)
        .iter()
        .chain(&each_op!(alu::alu_ri))
        .chain(&each_op!(alu::alu_rm))
        .chain(&others)
        .chain(&[
            bits::cmov as Handler,
            bits::shift::<{ bits::COUNT_CL }>,
            bits::shift::<{ bits::COUNT_IMM }>,
        ])
        .any(|&p| addr(p) == a)
}

/// The condition code of a Jcc handler.
fn jcc_condition(h: Handler) -> Option<u8> {
    each_cc!(control::jcc)
        .iter()
        .position(|&j| addr(j) == addr(h))
        .map(|cc| cc as u8)
}

/// The ALU operation of a reg-reg or reg-imm ALU handler: (operation, immediate form).
fn alu_form(h: Handler) -> Option<(u8, bool)> {
    let a = addr(h);
    let find = |list: [Handler; 8]| list.iter().position(|&p| addr(p) == a).map(|op| op as u8);
    find(each_op!(alu::alu_rr))
        .map(|op| (op, false))
        .or_else(|| find(each_op!(alu::alu_ri)).map(|op| (op, true)))
}

/// What the translator knows, at a point in the block, of the lazy flags' operation: set by
/// an instruction it emitted itself.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KnownFlags {
    op: FlagOp,
    bits: u32,
}

/// An out-of-line slow path: run instruction `insn` through its handler, then go on at
/// `resume`.
struct Slow {
    entry: CodeLabel,
    resume: CodeLabel,
    insn: *const Insn,
}

/// The translation of one block in progress.
struct Block<'a> {
    a: &'a mut CodeAssembler,
    o: Offsets,
    tlb: TlbLayout,
    has_code: u64,
    user: bool,
    step: u64,
    exit: CodeLabel,
    ended: CodeLabel,
    top: CodeLabel,
    slow: Vec<Slow>,
    flags: Option<KnownFlags>,
}

/// Which host register holds guest register `r`'s slot: `[rbx + gpr + 8r]`.
fn gpr_slot(o: &Offsets, r: u8) -> AsmMemoryOperand {
    qword_ptr(rbx + (o.gpr + 8 * i32::from(r)))
}

impl Block<'_> {
    /// `rax` = guest register `r` at `size` (4 or 8) bytes.
    fn load_reg(&mut self, dst: AsmRegister64, r: u8, size: u8) -> Result<(), IcedError> {
        let slot = gpr_slot(&self.o, r);
        if size == 8 {
            self.a.mov(dst, slot)?;
        } else {
            self.a.mov(
                gpr32_of(dst),
                dword_ptr(rbx + (self.o.gpr + 8 * i32::from(r))),
            )?;
        }
        Ok(())
    }

    /// Guest register `r` = `src` (already zero-extended when `size` is 4).
    fn store_reg(&mut self, r: u8, src: AsmRegister64) -> Result<(), IcedError> {
        let slot = gpr_slot(&self.o, r);
        self.a.mov(slot, src)
    }

    /// Records lazy flags: op, width, dst (`rax`), src (`rcx`), res (`rdx`).
    fn set_flags(&mut self, op: FlagOp, bits: u32) -> Result<(), IcedError> {
        let o = &self.o;
        self.a.mov(byte_ptr(rbx + o.f_op), op as u32)?;
        self.a.mov(dword_ptr(rbx + o.f_bits), bits)?;
        self.a.mov(qword_ptr(rbx + o.f_dst), rax)?;
        self.a.mov(qword_ptr(rbx + o.f_src), rcx)?;
        self.a.mov(qword_ptr(rbx + o.f_res), rdx)?;
        self.flags = Some(KnownFlags { op, bits });
        Ok(())
    }

    /// Calls the handler of `insn` through `step`, leaving the block on anything but Done.
    fn call_handler(&mut self, insn: &Insn) -> Result<(), IcedError> {
        self.a.mov(rdi, rbx)?;
        self.a.mov(rsi, insn as *const Insn as u64)?;
        self.a.mov(rax, self.step)?;
        self.a.call(rax)?;
        self.flags = None;
        Ok(())
    }

    /// Emits `insn` as host code if it has a template; false if it must go to its handler.
    fn template(&mut self, insn: &Insn) -> Result<bool, IcedError> {
        let h = insn.exec;
        let wide = matches!(insn.size, 4 | 8);
        if !wide || insn.r0 >= ZERO && insn.flags & MEM == 0 {
            return Ok(false);
        }
        if addr(h) == addr(data::mov_rr::<8>) || addr(h) == addr(data::mov_rr::<4>) {
            self.load_reg(rax, insn.r1, insn.size)?;
            self.store_reg(insn.r0, rax)?;
            return Ok(true);
        }
        if addr(h) == addr(data::mov_ri) {
            let v = if insn.size == 4 {
                insn.imm & 0xffff_ffff
            } else {
                insn.imm
            };
            self.a.mov(rax, v)?;
            self.store_reg(insn.r0, rax)?;
            return Ok(true);
        }
        if addr(h) == addr(data::lea) && matches!(insn.asize, 4 | 8) {
            self.effective_address(insn)?;
            if insn.size == 4 {
                self.a.mov(eax, eax)?;
            }
            self.store_reg(insn.r0, rax)?;
            return Ok(true);
        }
        if let Some((op, imm)) = alu_form(h) {
            return self.alu(insn, op, imm);
        }
        if addr(h) == addr(alu::inc_dec::<true>) || addr(h) == addr(alu::inc_dec::<false>) {
            if insn.flags & MEM != 0 {
                return Ok(false);
            }
            return self.inc_dec(insn, addr(h) == addr(alu::inc_dec::<true>));
        }
        let load = [data::mov_rm::<4> as Handler, data::mov_rm::<8>];
        let store = [data::mov_mr::<4> as Handler, data::mov_mr::<8>];
        if load.iter().any(|&l| addr(l) == addr(h)) {
            return self.memory(insn, false);
        }
        if store.iter().any(|&s| addr(s) == addr(h)) {
            return self.memory(insn, true);
        }
        Ok(false)
    }

    /// `rax` = the effective address of `insn`'s memory operand, masked to its address size.
    fn effective_address(&mut self, insn: &Insn) -> Result<(), IcedError> {
        self.a.mov(rax, insn.disp)?;
        if insn.base != ZERO {
            self.a.add(rax, gpr_slot(&self.o, insn.base))?;
        }
        if insn.index != ZERO {
            self.a.mov(rcx, gpr_slot(&self.o, insn.index))?;
            if insn.scale != 0 {
                self.a.shl(rcx, u32::from(insn.scale))?;
            }
            self.a.add(rax, rcx)?;
        }
        if insn.asize == 4 {
            self.a.mov(eax, eax)?;
        }
        Ok(())
    }

    /// reg OP reg / reg OP imm for ADD, OR, AND, SUB, XOR, CMP at 4 or 8 bytes.
    fn alu(&mut self, insn: &Insn, op: u8, imm: bool) -> Result<bool, IcedError> {
        let (flag_op, host): (FlagOp, u8) = match op {
            alu::ADD => (FlagOp::Add, alu::ADD),
            alu::OR => (FlagOp::Logic, alu::OR),
            alu::AND => (FlagOp::Logic, alu::AND),
            alu::XOR => (FlagOp::Logic, alu::XOR),
            alu::SUB | alu::CMP => (FlagOp::Sub, alu::SUB),
            _ => return Ok(false),
        };
        let size = insn.size;
        self.load_reg(rax, insn.r0, size)?;
        if imm {
            let v = if size == 4 {
                insn.imm & 0xffff_ffff
            } else {
                insn.imm
            };
            self.a.mov(rcx, v)?;
        } else {
            self.load_reg(rcx, insn.r1, size)?;
        }
        self.a.mov(rdx, rax)?;
        if size == 8 {
            match host {
                alu::ADD => self.a.add(rdx, rcx)?,
                alu::OR => self.a.or(rdx, rcx)?,
                alu::AND => self.a.and(rdx, rcx)?,
                alu::XOR => self.a.xor(rdx, rcx)?,
                _ => self.a.sub(rdx, rcx)?,
            }
        } else {
            match host {
                alu::ADD => self.a.add(edx, ecx)?,
                alu::OR => self.a.or(edx, ecx)?,
                alu::AND => self.a.and(edx, ecx)?,
                alu::XOR => self.a.xor(edx, ecx)?,
                _ => self.a.sub(edx, ecx)?,
            }
        }
        if op != alu::CMP {
            self.store_reg(insn.r0, rdx)?;
        }
        self.set_flags(flag_op, u32::from(size) * 8)?;
        Ok(true)
    }

    /// INC/DEC of a register at 4 or 8 bytes: CF is kept, so it is worked out first from
    /// what the translator knows of the flags, or by asking the flags themselves.
    fn inc_dec(&mut self, insn: &Insn, dec: bool) -> Result<bool, IcedError> {
        // r8 = the current CF.
        match self.flags {
            Some(KnownFlags {
                op: FlagOp::Logic, ..
            }) => self.a.xor(r8d, r8d)?,
            Some(KnownFlags {
                op: FlagOp::Inc | FlagOp::Dec,
                ..
            }) => self.a.mov(r8, qword_ptr(rbx + self.o.f_aux))?,
            Some(KnownFlags {
                op: FlagOp::Sub,
                bits,
            }) => {
                self.a.mov(rax, qword_ptr(rbx + self.o.f_dst))?;
                if bits == 64 {
                    self.a.cmp(rax, qword_ptr(rbx + self.o.f_src))?;
                } else {
                    self.a.cmp(eax, dword_ptr(rbx + self.o.f_src))?;
                }
                self.a.setb(al)?;
                self.a.movzx(r8d, al)?;
            }
            _ => return Ok(false),
        }
        let size = insn.size;
        self.load_reg(rax, insn.r0, size)?;
        self.a.mov(ecx, 1u32)?;
        self.a.mov(rdx, rax)?;
        match (dec, size) {
            (true, 8) => self.a.sub(rdx, 1)?,
            (false, 8) => self.a.add(rdx, 1)?,
            (true, _) => self.a.sub(edx, 1)?,
            (false, _) => self.a.add(edx, 1)?,
        }
        self.store_reg(insn.r0, rdx)?;
        let op = if dec { FlagOp::Dec } else { FlagOp::Inc };
        self.set_flags(op, u32::from(size) * 8)?;
        self.a.mov(qword_ptr(rbx + self.o.f_aux), r8)?;
        Ok(true)
    }

    /// MOV reg, [mem] (`store` false) or MOV [mem], reg at 4 or 8 bytes in 64-bit code,
    /// through the TLB; anything unusual goes to the handler.
    fn memory(&mut self, insn: &Insn, store: bool) -> Result<bool, IcedError> {
        if !matches!(insn.asize, 4 | 8) {
            return Ok(false);
        }
        let slow = self.a.create_label();
        let mut resume = self.a.create_label();
        self.effective_address(insn)?;
        if usize::from(insn.seg) >= FS {
            self.a
                .add(rax, qword_ptr(rbx + self.o.seg_base[usize::from(insn.seg)]))?;
        }
        // Canonical, and within one page.
        self.a.mov(rdx, rax)?;
        self.a.shl(rdx, 16)?;
        self.a.sar(rdx, 16)?;
        self.a.cmp(rdx, rax)?;
        self.a.jne(slow)?;
        self.a.mov(edx, eax)?;
        self.a.and(edx, 0xfff)?;
        self.a.cmp(edx, 0x1000 - u32::from(insn.size))?;
        self.a.ja(slow)?;
        // The TLB entry: table (access, user), index (lin >> 12) & mask.
        let access = if store { 1 } else { 0 };
        let table = self.tlb.tables + (access * 2 + usize::from(self.user)) * self.tlb.table_bytes;
        self.a.mov(rcx, rax)?;
        self.a.shr(rcx, 12)?;
        self.a.and(ecx, (1u32 << self.tlb.index_bits) - 1)?;
        self.a.imul_3(rcx, rcx, self.tlb.entry_bytes as i32)?;
        self.a.mov(rsi, table as u64)?;
        self.a.add(rsi, rcx)?;
        self.a.mov(rcx, rax)?;
        self.a.and(rcx, -4096i32)?;
        self.a.cmp(rcx, qword_ptr(rsi + self.tlb.tag as i32))?;
        self.a.jne(slow)?;
        if store {
            self.a.mov(ecx, dword_ptr(rsi + self.tlb.page as i32))?;
            self.a.mov(rdi, self.has_code)?;
            self.a.cmp(byte_ptr(rdi + rcx), 0)?;
            self.a.jne(slow)?;
        }
        self.a.and(eax, 0xfff)?;
        self.a.add(rax, qword_ptr(rsi + self.tlb.host as i32))?;
        if store {
            self.load_reg(rcx, insn.r1, insn.size)?;
            if insn.size == 8 {
                self.a.mov(qword_ptr(rax), rcx)?;
            } else {
                self.a.mov(dword_ptr(rax), ecx)?;
            }
        } else {
            if insn.size == 8 {
                self.a.mov(rcx, qword_ptr(rax))?;
            } else {
                self.a.mov(ecx, dword_ptr(rax))?;
            }
            self.store_reg(insn.r0, rcx)?;
        }
        self.a.set_label(&mut resume)?;
        self.slow.push(Slow {
            entry: slow,
            resume,
            insn,
        });
        Ok(true)
    }

    /// The last instruction, a Jcc whose flags come from an instruction emitted here: the
    /// host recomputes them from the recorded operands and branches itself. A taken branch to
    /// the block's start loops when `looping`.
    fn jcc(
        &mut self,
        insn: &Insn,
        cc: u8,
        start_rip: u64,
        looping: bool,
    ) -> Result<bool, IcedError> {
        let Some(known) = self.flags else {
            return Ok(false);
        };
        if !is_canonical(insn.imm) {
            return Ok(false);
        }
        let uses_cf = matches!(cc >> 1, 1 | 3);
        let o = &self.o;
        match known.op {
            FlagOp::Logic => {
                self.a.mov(rax, qword_ptr(rbx + o.f_res))?;
                if known.bits == 64 {
                    self.a.test(rax, rax)?;
                } else {
                    self.a.test(eax, eax)?;
                }
            }
            FlagOp::Sub | FlagOp::Add | FlagOp::Inc | FlagOp::Dec => {
                if uses_cf && matches!(known.op, FlagOp::Inc | FlagOp::Dec) {
                    return Ok(false);
                }
                self.a.mov(rax, qword_ptr(rbx + o.f_dst))?;
                self.a.mov(rcx, qword_ptr(rbx + o.f_src))?;
                match (known.op, known.bits == 64) {
                    (FlagOp::Add | FlagOp::Inc, true) => self.a.add(rax, rcx)?,
                    (FlagOp::Add | FlagOp::Inc, false) => self.a.add(eax, ecx)?,
                    (_, true) => self.a.cmp(rax, rcx)?,
                    (_, false) => self.a.cmp(eax, ecx)?,
                }
            }
            _ => return Ok(false),
        }
        let mut taken = self.a.create_label();
        let mut not_taken = self.a.create_label();
        match cc {
            0 => self.a.jo(taken)?,
            1 => self.a.jno(taken)?,
            2 => self.a.jb(taken)?,
            3 => self.a.jae(taken)?,
            4 => self.a.je(taken)?,
            5 => self.a.jne(taken)?,
            6 => self.a.jbe(taken)?,
            7 => self.a.ja(taken)?,
            8 => self.a.js(taken)?,
            9 => self.a.jns(taken)?,
            10 => self.a.jp(taken)?,
            11 => self.a.jnp(taken)?,
            12 => self.a.jl(taken)?,
            13 => self.a.jge(taken)?,
            14 => self.a.jle(taken)?,
            _ => self.a.jg(taken)?,
        }
        self.a.jmp(not_taken)?;
        self.a.set_label(&mut taken)?;
        self.a.mov(rax, insn.imm)?;
        self.a.mov(qword_ptr(rbx + self.o.rip), rax)?;
        if looping && insn.imm == start_rip {
            self.loop_back()?;
        }
        self.a.jmp(self.ended)?;
        self.a.set_label(&mut not_taken)?;
        Ok(true)
    }

    /// Goes back to the block's start unless the dispatcher has something to do (see the
    /// module documentation); falls through to leave otherwise.
    fn loop_back_checks(&mut self, pending: u64, code_epoch: u64) -> Result<(), IcedError> {
        let (o, a) = (&self.o, &mut *self.a);
        a.cmp(byte_ptr(rbx + o.shadow), 0)?;
        a.jne(self.ended)?;
        a.mov(rax, qword_ptr(rbx + o.stop))?;
        a.cmp(byte_ptr(rax), 0)?;
        a.jne(self.ended)?;
        a.mov(rax, pending)?;
        a.cmp(byte_ptr(rax), 0)?;
        a.jne(self.ended)?;
        a.cmp(dword_ptr(rbx + o.tlb_epoch), r12d)?;
        a.jne(self.ended)?;
        a.mov(rax, code_epoch)?;
        a.cmp(dword_ptr(rax), r13d)?;
        a.jne(self.ended)?;
        a.sub(qword_ptr(rbx + o.budget), 1)?;
        a.jbe(self.ended)?;
        a.jmp(self.top)
    }

    fn loop_back(&mut self) -> Result<(), IcedError> {
        let (pending, epoch) = LOOP_ADDRESSES.with(|c| c.get());
        self.loop_back_checks(pending, epoch)
    }
}

thread_local! {
    /// The addresses the loop checks poll (the vCPU's inbox flag and the code epoch), set
    /// for the translation in progress.
    static LOOP_ADDRESSES: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The 32-bit register of a 64-bit one (for the registers used here).
fn gpr32_of(r: AsmRegister64) -> AsmRegister32 {
    if r == rax {
        eax
    } else if r == rcx {
        ecx
    } else {
        edx
    }
}

/// Emits the translation of `insns` (starting at `start_rip`) into `a`. `step` is the
/// address of the function that runs one instruction through its handler.
pub fn block(
    a: &mut CodeAssembler,
    core: &Core,
    insns: &[Insn],
    start_rip: u64,
    step: usize,
) -> Result<(), IcedError> {
    let code_epoch = core.code.epoch_flag() as *const _ as u64;
    let pending = core.lapic.inbox().pending_flag() as *const _ as u64;
    LOOP_ADDRESSES.with(|c| c.set((pending, code_epoch)));
    let o = offsets();
    let mut exit = a.create_label();
    let mut ended = a.create_label();
    let mut top = a.create_label();
    let mut declined = a.create_label();
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.sub(rsp, 8)?;
    a.mov(rbx, rdi)?;
    // Code emitted for one privilege level runs only at that level.
    let cpl = core.s.mode.cpl;
    a.cmp(byte_ptr(rbx + o.cpl), u32::from(cpl))?;
    a.jne(declined)?;
    a.mov(r12d, dword_ptr(rbx + o.tlb_epoch))?;
    a.mov(rax, code_epoch)?;
    a.mov(r13d, dword_ptr(rax))?;
    a.set_label(&mut top)?;
    let long = core.s.mode.code_bits == 64;
    let looping = long && {
        let (last, body) = insns
            .split_last()
            .map_or((None, &[][..]), |(l, b)| (Some(l), b));
        body.iter().all(|i| plain(i.exec)) && last.is_some_and(|l| jcc_condition(l.exec).is_some())
    };
    let mut b = Block {
        a,
        tlb: core.tlb.layout(),
        has_code: core.code.has_code_bytes() as u64,
        user: cpl == 3,
        step: step as u64,
        exit,
        ended,
        top,
        slow: Vec::new(),
        flags: None,
        o,
    };
    for (k, insn) in insns.iter().enumerate() {
        let last = k + 1 == insns.len();
        b.a.mov(rax, insn.next)?;
        b.a.mov(qword_ptr(rbx + b.o.rip), rax)?;
        if long {
            if let Some(cc) = jcc_condition(insn.exec) {
                if b.jcc(insn, cc, start_rip, looping && last)? {
                    continue;
                }
            } else if b.template(insn)? {
                continue;
            }
        }
        b.call_handler(insn)?;
        if last && looping {
            b.a.cmp(eax, JitExit::Ended as u32)?;
            b.a.jne(b.exit)?;
            b.a.mov(rax, start_rip)?;
            b.a.cmp(qword_ptr(rbx + b.o.rip), rax)?;
            b.a.jne(b.ended)?;
            b.loop_back()?;
        } else {
            b.a.test(eax, eax)?;
            b.a.jnz(b.exit)?;
        }
    }
    b.a.xor(eax, eax)?;
    b.a.jmp(b.exit)?;
    let slow = std::mem::take(&mut b.slow);
    for mut s in slow {
        b.a.set_label(&mut s.entry)?;
        // SAFETY: the pointer is one of `insns`, borrowed for this whole function.
        b.call_handler(unsafe { &*s.insn })?;
        b.a.test(eax, eax)?;
        b.a.jnz(b.exit)?;
        b.a.jmp(s.resume)?;
    }
    b.a.set_label(&mut declined)?;
    b.a.mov(eax, JitExit::Declined as u32)?;
    b.a.jmp(exit)?;
    b.a.set_label(&mut ended)?;
    b.a.mov(eax, JitExit::Ended as u32)?;
    b.a.set_label(&mut exit)?;
    b.a.add(rsp, 8)?;
    for r in [r15, r14, r13, r12, rbp, rbx] {
        b.a.pop(r)?;
    }
    b.a.ret()?;
    Ok(())
}
