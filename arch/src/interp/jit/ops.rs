//! Templates: host code doing what an instruction's handler does, for the common forms
//! (64-bit code, general registers, memory operands without LOCK). A template works on the
//! guest registers' slots in the core and records the lazy flags as its handler would.
//! Memory operands go through an inline TLB lookup; when that does not apply (a miss, a page
//! crossing, a store to a page holding code, a non-canonical address) the handler runs
//! instead, out of line, before anything changed.

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};

use super::super::exec::alu;
use super::super::exec::bits;
use super::super::flags::{FlagOp, AF, ARITH, CF, OF};
use super::super::insn::{size_mask, Insn, HIGH_BYTE, LOCK, MEM, ZERO};
use super::super::state::{FS, RCX, RSP};
use super::classify::Kind;
use super::emit::{Emitter, KnownFlags, Slow};
use super::regs::Gpr;

/// Whether `r` names a whole general register (not a high byte, not the zero register).
fn gpr(r: u8) -> bool {
    r < ZERO
}

/// Whether `size` is 4 or 8 (what the templates of some instructions handle).
fn wide(size: u8) -> bool {
    matches!(size, 4 | 8)
}

/// A second operand: a guest register, an immediate, or a value already in a host register
/// (zero-extended from the operand size).
#[derive(Clone, Copy)]
enum Operand {
    Reg(Gpr),
    Imm(u64),
    Host(u8),
}

/// Expands `$sized!(mnemonic)` for the host instruction of ALU operation `$op` (ADD, OR, AND,
/// XOR, and SUB for anything else: SUB and CMP compute the same).
macro_rules! by_alu_op {
    ($op:expr, $sized:ident) => {
        match $op {
            alu::ADD => $sized!(add),
            alu::OR => $sized!(or),
            alu::AND => $sized!(and),
            alu::XOR => $sized!(xor),
            _ => $sized!(sub),
        }
    };
}

/// Host registers by number, for the templates that pick them.
pub(super) const HOST_RAX: u8 = 0;
const HOST_RCX: u8 = 1;
const HOST_RDX: u8 = 2;
const HOST_RSI: u8 = 6;
const HOST_R9: u8 = 9;
const HOST_R10: u8 = 10;
const HOST_R11: u8 = 11;

impl Emitter<'_> {
    /// `rcx` = `imm` cut to `size` bytes.
    fn imm_rcx(&mut self, imm: u64, size: u8) {
        self.imm_to(HOST_RCX, imm, size);
    }

    /// Host register `h` = `imm` cut to `size` bytes.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn imm_to(&mut self, h: u8, imm: u64, size: u8) {
        let v = imm & size_mask(u32::from(size));
        if let Ok(v32) = u32::try_from(v) {
            // (Writing the 32-bit register clears the rest.)
            dynasm!(self.a ; .arch x64 ; mov Rd(h), v32 as i32);
        } else if let Ok(s32) = i32::try_from(v as i64) {
            dynasm!(self.a ; .arch x64 ; mov Rq(h), s32);
        } else {
            dynasm!(self.a ; .arch x64 ; mov Rq(h), QWORD v as i64);
        }
    }

    /// The second operand of `insn`: its immediate (`imm`), or the register `r1`; None for a
    /// register the templates do not handle.
    fn operand(&self, insn: &Insn, imm: bool) -> Option<Operand> {
        if imm {
            Some(Operand::Imm(insn.imm))
        } else {
            self.reg(insn.r1, insn.size).map(Operand::Reg)
        }
    }

    /// `rcx` = `src` at `size` bytes, zero-extended.
    fn operand_rcx(&mut self, src: Operand, size: u8) {
        self.operand_to(HOST_RCX, src, size);
    }

    /// Host register `h` = `src` at `size` bytes, zero-extended.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn operand_to(&mut self, h: u8, src: Operand, size: u8) {
        match src {
            Operand::Reg(at) => self.load(h, at, size),
            Operand::Imm(v) => self.imm_to(h, v, size),
            Operand::Host(from) if from == h => {}
            Operand::Host(from) => dynasm!(self.a ; .arch x64 ; mov Rq(h), Rq(from)),
        }
    }

    /// Host register `h` = the `size` bytes at `[rsi]`, zero-extended.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn load_mem(&mut self, h: u8, size: u8) {
        match size {
            1 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), BYTE [rsi]),
            2 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), WORD [rsi]),
            4 => dynasm!(self.a ; .arch x64 ; mov Rd(h), DWORD [rsi]),
            _ => dynasm!(self.a ; .arch x64 ; mov Rq(h), QWORD [rsi]),
        }
    }

    /// `[rsi]` = the low `size` bytes of host register `h`.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn store_mem(&mut self, h: u8, size: u8) {
        match size {
            1 => dynasm!(self.a ; .arch x64 ; mov BYTE [rsi], Rb(h)),
            2 => dynasm!(self.a ; .arch x64 ; mov WORD [rsi], Rw(h)),
            4 => dynasm!(self.a ; .arch x64 ; mov DWORD [rsi], Rd(h)),
            _ => dynasm!(self.a ; .arch x64 ; mov QWORD [rsi], Rq(h)),
        }
    }

    /// Records lazy flags: op, width, dst (`rax`), src (`rcx`), res (`rdx`); nothing when
    /// they are dead. Those of ADD, SUB, logic operations and NEG stay in registers until
    /// something may observe them (see `Emitter::flags_in_registers`).
    fn set_flags(&mut self, op: FlagOp, size: u8) {
        // Whatever the registers held is overwritten (or dead, when these are).
        self.flags_in_registers = None;
        if self.flags_dead {
            self.flags = None;
            return;
        }
        match op {
            FlagOp::Logic => {
                dynasm!(self.a ; .arch x64 ; mov r11, rdx);
                self.hold_flags(op, size);
            }
            // (INC and DEC come with their carry-in in r8, which stays there.)
            FlagOp::Add | FlagOp::Sub | FlagOp::Neg | FlagOp::Inc | FlagOp::Dec => {
                dynasm!(self.a ; .arch x64 ; mov r9, rax ; mov r10, rcx ; mov r11, rdx);
                self.hold_flags(op, size);
            }
            _ => {
                let known = KnownFlags {
                    op,
                    bits: u32::from(size) * 8,
                };
                self.store_flags(known, [HOST_RAX, HOST_RCX, HOST_RDX]);
                self.flags = Some(known);
            }
        }
    }

    /// Notes that the flags of `op` at `size` bytes are held in `r9`-`r11` (see
    /// `Emitter::flags_in_registers`), where the code just put dst, src and the result.
    fn hold_flags(&mut self, op: FlagOp, size: u8) {
        let known = KnownFlags {
            op,
            bits: u32::from(size) * 8,
        };
        self.flags = Some(known);
        self.flags_in_registers = Some(known);
    }

    /// Emits `insn`, of template `kind`, as host code; false if it must go to its handler.
    pub(super) fn template(&mut self, insn: &Insn, kind: Kind) -> bool {
        let size = insn.size;
        let reg_form = insn.flags & MEM == 0;
        match kind {
            Kind::Nop => true,
            Kind::MovRR => {
                let (Some(d), Some(r)) = (self.reg(insn.r0, size), self.reg(insn.r1, size)) else {
                    return false;
                };
                self.copy(d, r, size);
                true
            }
            Kind::MovRI => {
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                let v = insn.imm & size_mask(u32::from(size));
                match i32::try_from(v as i64) {
                    // One store of the sign-extended immediate writes all 64 bits (a 32-bit
                    // value zero-extended is the same when it is below 2^31).
                    Ok(imm) if wide(size) => self.store_imm(d, imm),
                    _ => {
                        self.imm_to(HOST_RAX, v, size);
                        self.store(HOST_RAX, d, size);
                    }
                }
                true
            }
            Kind::Lea if wide(size) && gpr(insn.r0) && wide(insn.asize) => {
                let d = Gpr::whole(insn.r0);
                // Straight into a held destination, unless a base register in the core would
                // be loaded there first (over the index, when that is the destination).
                let base_held = insn.base == ZERO || self.holder(Gpr::whole(insn.base)).is_some();
                let to = match self.holder(d) {
                    Some(x) if base_held => x,
                    _ => HOST_RAX,
                };
                self.effective_address(insn, to);
                if size == 4 {
                    self.clear_top(to);
                }
                if to == HOST_RAX {
                    self.store(HOST_RAX, d, 8);
                } else {
                    self.holder_to_write(d);
                }
                true
            }
            Kind::AluRR(op) | Kind::AluRI(op) => {
                let imm = matches!(kind, Kind::AluRI(_));
                let (Some(d), Some(src)) = (self.reg(insn.r0, size), self.operand(insn, imm))
                else {
                    return false;
                };
                // Only moves follow the operation.
                self.host_flags_left = true;
                if self.alu_held(op, size, d, src) {
                    return true;
                }
                self.carry_in(op);
                // Straight into the register the lazy flags keep it in, when they will.
                let src_reg = self.alu_source(op);
                self.operand_to(src_reg, src, size);
                self.alu(op, size, d, src_reg);
                true
            }
            Kind::AluRM(op) => {
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                self.carry_in(op);
                let src_reg = self.alu_source(op);
                self.memory_setting_flags(insn, false, |e| {
                    e.load_mem(src_reg, size);
                    e.alu(op, size, d, src_reg);
                })
            }
            Kind::AluM { op, imm } if insn.flags & LOCK == 0 => {
                let Some(src) = self.operand(insn, imm) else {
                    return false;
                };
                self.carry_in(op);
                let held = self.alu_source(op) == HOST_R10;
                self.memory_setting_flags(insn, op != alu::CMP, |e| {
                    if held {
                        // Computed where the lazy flags keep dst, src and the result.
                        e.load_mem(HOST_R9, size);
                        e.operand_to(HOST_R10, src, size);
                        dynasm!(e.a ; .arch x64 ; mov r11, r9);
                        e.alu_regs(op, size, HOST_R11, HOST_R10);
                        e.hold_flags(lazy_op(op), size);
                        if op != alu::CMP {
                            e.store_mem(HOST_R11, size);
                        }
                    } else {
                        e.load_mem(HOST_RAX, size);
                        e.operand_rcx(src, size);
                        e.alu_op(op, size);
                        if op != alu::CMP {
                            e.store_mem(HOST_RDX, size);
                        }
                    }
                })
            }
            Kind::Test { imm } => {
                let Some(src) = self.operand(insn, imm) else {
                    return false;
                };
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return false;
                }
                let test = move |e: &mut Self| {
                    e.operand_rcx(src, size);
                    dynasm!(e.a ; .arch x64 ; mov rdx, rax ; and rdx, rcx);
                    e.set_flags(FlagOp::Logic, size);
                };
                if reg_form {
                    let Some(d) = self.reg(insn.r0, size) else {
                        return false;
                    };
                    // Nothing else of a register TEST is visible: with dead flags it is gone.
                    self.flags_in_registers = None;
                    if self.flags_dead {
                        self.flags = None;
                        return true;
                    }
                    // The AND at the operand size leaves the guest's flags on the host, and
                    // the result where the lazy flags keep it.
                    self.load(HOST_R11, d, size);
                    self.operand_rcx(src, size);
                    self.alu_regs(alu::AND, size, HOST_R11, HOST_RCX);
                    self.hold_flags(FlagOp::Logic, size);
                    self.host_flags_left = true;
                    return true;
                }
                self.memory_setting_flags(insn, false, |e| {
                    e.load_mem(HOST_RAX, size);
                    test(e);
                })
            }
            Kind::Neg if reg_form => {
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                // As the handler records it: 0 - operand, in 64 bits; the register gets its
                // low `size` bytes.
                self.load(HOST_RCX, d, size);
                dynasm!(self.a ; .arch x64 ; xor eax, eax ; mov rdx, rax ; sub rdx, rcx);
                self.set_flags(FlagOp::Neg, size);
                if size == 4 {
                    dynasm!(self.a ; .arch x64 ; mov edx, edx);
                }
                self.store(HOST_RDX, d, size);
                true
            }
            Kind::Not if reg_form => {
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                self.load(HOST_RAX, d, size);
                // Bits above a 32-bit operand stay clear; NOT changes no flags.
                dynasm!(self.a ; .arch x64 ; not rax);
                if size == 4 {
                    dynasm!(self.a ; .arch x64 ; mov eax, eax);
                }
                self.store(HOST_RAX, d, size);
                true
            }
            Kind::IncDec { dec } if matches!(size, 1 | 2 | 4 | 8) && insn.flags & LOCK == 0 => {
                self.inc_dec(insn, dec)
            }
            Kind::MovRM => {
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                self.memory(insn, false, |e| match e.holder_to_write(d) {
                    // (A 4-byte load clears the top half, as the guest's does.)
                    Some(x) if wide(size) => e.load_mem(x, size),
                    _ => {
                        e.load_mem(HOST_RAX, size);
                        e.store(HOST_RAX, d, size);
                    }
                })
            }
            Kind::MovMR => {
                let Some(r) = self.reg(insn.r1, size) else {
                    return false;
                };
                self.memory(insn, true, |e| match e.holder(r) {
                    Some(y) => e.store_mem(y, size),
                    None => {
                        e.load(HOST_RCX, r, size);
                        e.store_mem(HOST_RCX, size);
                    }
                })
            }
            Kind::MovMI if matches!(size, 1 | 2 | 4 | 8) => self.memory(insn, true, |e| {
                e.imm_rcx(insn.imm, size);
                e.store_mem(HOST_RCX, size);
            }),
            Kind::Extend { from, signed } if wide(size) && gpr(insn.r0) => {
                self.extend(insn, from, signed)
            }
            Kind::Shift { cl } if reg_form => self.shift(insn, cl),
            Kind::Imul { three } if wide(size) && gpr(insn.r0) => self.imul(insn, three),
            Kind::Setcc if size == 1 && reg_form && gpr(insn.r0 & !HIGH_BYTE) => {
                self.condition_to_al(insn.cc);
                let Some(d) = self.reg(insn.r0, 1) else {
                    return false;
                };
                self.store(HOST_RAX, d, 1);
                true
            }
            Kind::Cmov if matches!(size, 2 | 4 | 8) => {
                // The destination is written either way (a 32-bit one zero-extended), and a
                // memory source is read either way, as on hardware.
                let Some(d) = self.reg(insn.r0, size) else {
                    return false;
                };
                let src = if reg_form {
                    match self.reg(insn.r1, size) {
                        Some(r) => Some(r),
                        None => return false,
                    }
                } else {
                    None
                };
                // The condition first: its helper, if called, keeps only r8, which holds the
                // carry of INC/DEC flags held in registers (stored first).
                self.condition_to_al(insn.cc);
                if matches!(
                    self.flags_in_registers,
                    Some(KnownFlags {
                        op: FlagOp::Inc | FlagOp::Dec,
                        ..
                    })
                ) {
                    self.flush_flags();
                }
                dynasm!(self.a ; .arch x64 ; movzx r8d, al);
                let select = move |e: &mut Self| {
                    e.load(HOST_RAX, d, size);
                    dynasm!(e.a ; .arch x64 ; test r8d, r8d ; cmovnz rax, rcx);
                    e.store(HOST_RAX, d, size);
                };
                match src {
                    Some(r) => {
                        self.load(HOST_RCX, r, size);
                        select(self);
                        true
                    }
                    None => self.memory(insn, false, |e| {
                        e.load_mem(HOST_RCX, size);
                        select(e);
                    }),
                }
            }
            Kind::VecMove | Kind::VecMoveScalar | Kind::VecFloat | Kind::VecInt | Kind::VecMask
                if self.is_vector_template(insn) =>
            {
                self.vector_template(insn, kind)
            }
            Kind::Bswap if wide(size) && gpr(insn.r0) => {
                let d = Gpr::whole(insn.r0);
                self.load(HOST_RAX, d, size);
                if size == 8 {
                    dynasm!(self.a ; .arch x64 ; bswap rax);
                } else {
                    // (Zero-extends, as the guest register gets it.)
                    dynasm!(self.a ; .arch x64 ; bswap eax);
                }
                self.store(HOST_RAX, d, 8);
                true
            }
            Kind::PushReg if size == 8 && gpr(insn.r0) => self.push_reg(insn),
            Kind::PopReg if size == 8 && gpr(insn.r0) => self.pop_reg(insn),
            _ => false,
        }
    }

    /// Host register `to` (not `rcx`) = the effective address of `insn`'s memory operand,
    /// masked to its address size. Clobbers `rcx`.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn effective_address(&mut self, insn: &Insn, to: u8) {
        let base = (insn.base != ZERO).then(|| self.source(Gpr::whole(insn.base), to));
        let index = (insn.index != ZERO).then(|| self.source(Gpr::whole(insn.index), HOST_RCX));
        let disp = insn.disp;
        let (d, far) = match i32::try_from(disp as i64) {
            Ok(d) => (d, false),
            Err(_) => (0, true),
        };
        macro_rules! scaled {
            ($i:ident; $($base:tt)*) => {
                match insn.scale {
                    0 => dynasm!(self.a ; .arch x64 ; lea Rq(to), [$($base)* Rq($i) + d]),
                    1 => dynasm!(self.a ; .arch x64 ; lea Rq(to), [$($base)* Rq($i) * 2 + d]),
                    2 => dynasm!(self.a ; .arch x64 ; lea Rq(to), [$($base)* Rq($i) * 4 + d]),
                    _ => dynasm!(self.a ; .arch x64 ; lea Rq(to), [$($base)* Rq($i) * 8 + d]),
                }
            };
        }
        match (base, index) {
            (Some(b), Some(i)) => scaled!(i; Rq(b) +),
            (None, Some(i)) => scaled!(i;),
            (Some(b), None) if b == to => {
                if d != 0 {
                    dynasm!(self.a ; .arch x64 ; add Rq(to), d);
                }
            }
            (Some(b), None) => dynasm!(self.a ; .arch x64 ; lea Rq(to), [Rq(b) + d]),
            (None, None) if far => dynasm!(self.a ; .arch x64 ; mov Rq(to), QWORD disp as i64),
            (None, None) => dynasm!(self.a ; .arch x64 ; mov Rq(to), d),
        }
        if far && (base.is_some() || index.is_some()) {
            dynasm!(self.a
                ; .arch x64
                ; mov rcx, QWORD disp as i64
                ; add Rq(to), rcx
            );
        }
        if insn.asize == 4 {
            self.clear_top(to);
        }
    }

    /// Clears the top 32 bits of host register `h`.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn clear_top(&mut self, h: u8) {
        dynasm!(self.a ; .arch x64 ; mov Rd(h), Rd(h));
    }

    /// `rsi` (a linear address) = the host address of the `size`-byte operand there, or a
    /// jump to `slow`. Clobbers `rcx`, `rdx`, `rdi`.
    fn host_address(&mut self, store: bool, size: u8, slow: DynamicLabel) {
        // The TLB entry: in the table (access, user), whose read table `rbp` points to (the
        // write table follows the two read tables), at (lin >> 12) & mask, 32 bytes each.
        let table = if store {
            2 * self.tlb.table_bytes as i32
        } else {
            0
        };
        let mask = ((1i32 << self.tlb.index_bits) - 1) << 5;
        let generation = self.o.tlb_generation;
        let last = i32::from(size) - 1;
        let (tag, addend, page) = (
            table + self.tlb.tag as i32,
            table + self.tlb.addend as i32,
            table + self.tlb.page as i32,
        );
        // The entry must be for the page of the operand's last byte, in this generation: a
        // miss, an access crossing into the next page and a non-canonical address (the TLB
        // never holds one) all fail that one comparison.
        if self.bmi2 {
            // (Bits 12 and up of the address, rotated down to 5: the mask keeps 5 to 16.)
            dynasm!(self.a ; .arch x64 ; rorx ecx, esi, 7);
        } else {
            dynasm!(self.a ; .arch x64 ; mov ecx, esi ; shr ecx, 7);
        }
        dynasm!(self.a
            ; .arch x64
            ; and ecx, mask
            ; lea rdx, [rsi + last]
            ; and rdx, -4096
            ; or rdx, QWORD [rbx + generation]
            ; cmp rdx, QWORD [rbp + rcx + tag]
            ; jne =>slow
        );
        if store {
            dynasm!(self.a
                ; .arch x64
                ; mov edx, DWORD [rbp + rcx + page]
                ; mov rdi, QWORD self.has_code as i64
                ; cmp BYTE [rdi + rdx], 0
                ; jne =>slow
            );
        }
        dynasm!(self.a ; .arch x64 ; add rsi, QWORD [rbp + rcx + addend]);
    }

    /// A memory template: the operand's host address in `rsi`, then `body`; the
    /// handler runs instead when the fast path does not apply.
    fn memory(&mut self, insn: &Insn, store: bool, body: impl FnOnce(&mut Self)) -> bool {
        self.memory_checked(insn, store, |e, _| body(e))
    }

    /// [`Emitter::memory`] for a template whose last flag-changing host instruction computes
    /// the guest's flags: when the host can redo them from the lazy flags (see
    /// `Emitter::host_flags_for`), its slow path does so and the next instruction finds them
    /// on the host (see `host_flags_left`).
    fn memory_setting_flags(
        &mut self,
        insn: &Insn,
        store: bool,
        body: impl FnOnce(&mut Self),
    ) -> bool {
        if !self.memory(insn, store, body) {
            return false;
        }
        if let Some(
            known @ KnownFlags {
                op: FlagOp::Add | FlagOp::Sub | FlagOp::Logic,
                ..
            },
        ) = self.flags
        {
            if let Some(slow) = self.slow.last_mut() {
                slow.host_flags = Some(known);
                self.host_flags_left = true;
            }
        }
        true
    }

    /// [`Emitter::memory`] with a body that may still give up for the handler (by jumping to
    /// the label it is given) before it changes anything.
    pub(super) fn memory_checked(
        &mut self,
        insn: &Insn,
        store: bool,
        body: impl FnOnce(&mut Self, DynamicLabel),
    ) -> bool {
        if !wide(insn.asize) {
            return false;
        }
        let address = |e: &mut Self| {
            e.effective_address(insn, HOST_RSI);
            if usize::from(insn.seg) >= FS {
                let base = e.o.seg_base[usize::from(insn.seg)];
                dynasm!(e.a ; .arch x64 ; add rsi, QWORD [rbx + base]);
            }
        };
        self.access(insn, store, insn.size, address, body)
    }

    /// An access of `size` bytes at the linear address `address` leaves in `rsi`: its host
    /// address in `rsi`, then `body`, or else `insn`'s handler, out of line.
    fn access(
        &mut self,
        insn: &Insn,
        store: bool,
        size: u8,
        address: impl FnOnce(&mut Self),
        body: impl FnOnce(&mut Self, DynamicLabel),
    ) -> bool {
        let slow = self.a.new_dynamic_label();
        let resume = self.a.new_dynamic_label();
        let flags_before = self.flags_in_registers;
        let dirty = self.dirty;
        address(self);
        self.host_address(store, size, slow);
        body(self, slow);
        dynasm!(self.a ; .arch x64 ; =>resume);
        self.slow.push(Slow {
            entry: slow,
            resume,
            insn,
            guest_mxcsr: self.mxcsr_open,
            flags_before,
            flags_after: self.flags_in_registers,
            host_flags: None,
            dirty,
        });
        true
    }

    /// Register operand `d` OP host register `src` (`rcx`, or `r10` when the flags
    /// are live and kept in registers), `size` bytes. With live flags the operation works in
    /// the registers that hold them (see `Emitter::flags_in_registers`): dst in `r9`, src in
    /// `r10`, the result in `r11`.
    fn alu(&mut self, op: u8, size: u8, d: Gpr, src: u8) -> bool {
        if self.alu_held(op, size, d, Operand::Host(src)) {
            return true;
        }
        if matches!(op, alu::ADC | alu::SBB) {
            self.load(HOST_RAX, d, size);
            self.alu_op(op, size);
            self.store(HOST_RDX, d, size);
            return true;
        }
        // Whatever the registers held is overwritten (or dead, when these are).
        self.flags_in_registers = None;
        let result = if self.flags_dead {
            self.load(HOST_RAX, d, size);
            self.alu_regs(op, size, HOST_RAX, src);
            self.flags = None;
            HOST_RAX
        } else {
            if lazy_op(op) == FlagOp::Logic {
                self.load(HOST_R11, d, size);
            } else {
                self.load(HOST_R9, d, size);
                if src != HOST_R10 {
                    dynasm!(self.a ; .arch x64 ; mov r10, rcx);
                }
                dynasm!(self.a ; .arch x64 ; mov r11, r9);
            }
            self.alu_regs(op, size, HOST_R11, src);
            self.hold_flags(lazy_op(op), size);
            HOST_R11
        };
        if op != alu::CMP {
            self.store(result, d, size);
        }
        true
    }

    /// ALU `op` (not ADC or SBB) of 4 or 8 bytes into a register the block holds, computed
    /// in place; false when that does not apply. Live flags go to the registers that keep
    /// them, as in [`Emitter::alu`].
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn alu_held(&mut self, op: u8, size: u8, d: Gpr, src: Operand) -> bool {
        let Some(x) = self.holder(d) else {
            return false;
        };
        if !wide(size) || matches!(op, alu::ADC | alu::SBB) {
            return false;
        }
        // Whatever the flag registers held is overwritten (or dead, when these are).
        self.flags_in_registers = None;
        if !self.flags_dead && lazy_op(op) != FlagOp::Logic {
            self.operand_to(HOST_R10, src, size);
            self.load(HOST_R9, d, size);
            if op == alu::CMP {
                dynasm!(self.a ; .arch x64 ; mov r11, r9);
                self.alu_regs(op, size, HOST_R11, HOST_R10);
            } else {
                self.alu_regs(op, size, x, HOST_R10);
                self.holder_to_write(d);
                dynasm!(self.a ; .arch x64 ; mov r11, Rq(x));
            }
            self.hold_flags(lazy_op(op), size);
            return true;
        }
        if op == alu::CMP {
            // Dead flags: nothing else of it is visible.
            self.flags = None;
            return true;
        }
        // The source as an immediate the host instruction takes, or as a host register.
        let (imm, reg) = match src {
            Operand::Imm(v) if size == 4 => (Some(v as u32 as i32), None),
            Operand::Imm(v) => (i32::try_from(v as i64).ok(), None),
            Operand::Reg(g) => (None, self.holder(g)),
            Operand::Host(h) => (None, Some(h)),
        };
        match (imm, reg) {
            (Some(v), _) => self.alu_imm(op, size, x, v),
            (None, Some(y)) => self.alu_regs(op, size, x, y),
            (None, None) => {
                self.operand_to(HOST_RCX, src, size);
                self.alu_regs(op, size, x, HOST_RCX);
            }
        }
        self.holder_to_write(d);
        if self.flags_dead {
            self.flags = None;
        } else {
            // A logic operation's flags are its result's.
            dynasm!(self.a ; .arch x64 ; mov r11, Rq(x));
            self.hold_flags(FlagOp::Logic, size);
        }
        true
    }

    /// Host register `dst` OP= `imm` (sign-extended for 8 bytes) at `size` (4 or 8) bytes,
    /// OP not ADC, SBB or CMP.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn alu_imm(&mut self, op: u8, size: u8, dst: u8, imm: i32) {
        macro_rules! sized {
            ($op:ident) => {
                if size == 4 {
                    dynasm!(self.a ; .arch x64 ; $op Rd(dst), imm)
                } else {
                    dynasm!(self.a ; .arch x64 ; $op Rq(dst), imm)
                }
            };
        }
        by_alu_op!(op, sized);
    }

    /// `d` = `s` at `size` bytes (a 4-byte write clears the top half, as the guest's does).
    fn copy(&mut self, d: Gpr, s: Gpr, size: u8) {
        if wide(size) {
            if let Some(x) = self.holder_to_write(d) {
                self.load(x, s, size);
                return;
            }
        }
        match self.holder(s) {
            Some(y) if size == 8 => self.store(y, d, 8),
            _ => {
                self.load(HOST_RAX, s, size);
                self.store(HOST_RAX, d, size);
            }
        }
    }

    /// Where an ALU template of `op` wants its source operand: `r10`, where the lazy flags
    /// keep it, when the flags are live and go to registers (ADD, SUB, CMP); else `rcx`.
    fn alu_source(&self, op: u8) -> u8 {
        let held =
            !self.flags_dead && !matches!(op, alu::ADC | alu::SBB) && lazy_op(op) != FlagOp::Logic;
        if held {
            HOST_R10
        } else {
            HOST_RCX
        }
    }

    /// Host register `dst` OP= `src` at `size` bytes (OP not ADC or SBB).
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn alu_regs(&mut self, op: u8, size: u8, dst: u8, src: u8) {
        macro_rules! sized {
            ($op:ident) => {
                match size {
                    1 => dynasm!(self.a ; .arch x64 ; $op Rb(dst), Rb(src)),
                    2 => dynasm!(self.a ; .arch x64 ; $op Rw(dst), Rw(src)),
                    4 => dynasm!(self.a ; .arch x64 ; $op Rd(dst), Rd(src)),
                    _ => dynasm!(self.a ; .arch x64 ; $op Rq(dst), Rq(src)),
                }
            };
        }
        by_alu_op!(op, sized);
    }

    /// `rdx` = `rax` OP `rcx` at `size` bytes (zero-extended), with the lazy flags recorded.
    fn alu_op(&mut self, op: u8, size: u8) {
        macro_rules! sized {
            ($op:ident) => {
                match size {
                    1 => dynasm!(self.a ; .arch x64 ; $op dl, cl),
                    2 => dynasm!(self.a ; .arch x64 ; $op dx, cx),
                    4 => dynasm!(self.a ; .arch x64 ; $op edx, ecx),
                    _ => dynasm!(self.a ; .arch x64 ; $op rdx, rcx),
                }
            };
        }
        dynasm!(self.a ; .arch x64 ; mov rdx, rax);
        match op {
            alu::ADD => sized!(add),
            alu::OR => sized!(or),
            alu::AND => sized!(and),
            alu::XOR => sized!(xor),
            alu::ADC => {
                dynasm!(self.a ; .arch x64 ; bt r8d, 0);
                sized!(adc);
            }
            alu::SBB => {
                dynasm!(self.a ; .arch x64 ; bt r8d, 0);
                sized!(sbb);
            }
            _ => sized!(sub),
        }
        self.set_flags(lazy_op(op), size);
        if matches!(op, alu::ADC | alu::SBB) && !self.flags_dead {
            // The carry that went in, as the lazy flags of ADC/SBB keep it.
            let aux = self.o.f_aux;
            dynasm!(self.a ; .arch x64 ; mov QWORD [rbx + aux], r8);
        }
    }

    /// For ADC and SBB, `r8` = the carry they take in (before anything else is loaded).
    fn carry_in(&mut self, op: u8) {
        if matches!(op, alu::ADC | alu::SBB) {
            self.carry_to_r8();
        }
    }

    /// `r8` = the guest's CF (0 or 1): from what the translator knows of the flags, or from
    /// the flags helper. Clobbers the caller-saved registers but `r8`. Flags held in
    /// registers stay there (the caller sets new ones; a slow path before that stores them).
    fn carry_to_r8(&mut self) {
        match self.flags_in_registers {
            Some(KnownFlags {
                op: FlagOp::Sub,
                bits,
            }) => {
                // (dst and src in r9 and r10, zero-extended below 64 bits.)
                if bits == 64 {
                    dynasm!(self.a ; .arch x64 ; cmp r9, r10);
                } else {
                    dynasm!(self.a ; .arch x64 ; cmp r9d, r10d);
                }
                dynasm!(self.a ; .arch x64 ; setb al ; movzx r8d, al);
                return;
            }
            Some(KnownFlags {
                op: FlagOp::Add, ..
            }) => {
                // A carry left the (zero-extended) result in r11 below dst in r9.
                dynasm!(self.a ; .arch x64 ; cmp r11, r9 ; setb al ; movzx r8d, al);
                return;
            }
            Some(KnownFlags {
                op: FlagOp::Logic, ..
            }) => {
                dynasm!(self.a ; .arch x64 ; xor r8d, r8d);
                return;
            }
            // The carry INC/DEC took, which they keep, is in r8 already.
            Some(KnownFlags {
                op: FlagOp::Inc | FlagOp::Dec,
                ..
            }) => return,
            _ => {}
        }
        self.flush_flags();
        let o = &self.o;
        match self.flags {
            Some(KnownFlags {
                op: FlagOp::Logic, ..
            }) => dynasm!(self.a ; .arch x64 ; xor r8d, r8d),
            Some(KnownFlags {
                op: FlagOp::Inc | FlagOp::Dec,
                ..
            }) => dynasm!(self.a ; .arch x64 ; mov r8, QWORD [rbx + o.f_aux]),
            Some(KnownFlags {
                op: FlagOp::Explicit,
                ..
            }) => dynasm!(self.a
                ; .arch x64
                ; mov r8, QWORD [rbx + o.f_explicit]
                ; and r8d, CF as i32
            ),
            Some(KnownFlags {
                op: FlagOp::Sub,
                bits,
            }) => {
                // Operands of 8 to 32 bits are kept zero-extended: a 32-bit compare borrows
                // as theirs does.
                dynasm!(self.a ; .arch x64 ; mov rax, QWORD [rbx + o.f_dst]);
                if bits == 64 {
                    dynasm!(self.a ; .arch x64 ; cmp rax, QWORD [rbx + o.f_src]);
                } else {
                    dynasm!(self.a ; .arch x64 ; cmp eax, DWORD [rbx + o.f_src]);
                }
                dynasm!(self.a ; .arch x64 ; setb al ; movzx r8d, al);
            }
            Some(KnownFlags {
                op: FlagOp::Add, ..
            }) => {
                // A carry out of ADD left a (zero-extended) result below its first operand.
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD [rbx + o.f_res]
                    ; cmp rax, QWORD [rbx + o.f_dst]
                    ; setb al
                    ; movzx r8d, al
                );
            }
            _ => {
                let arith = self.helpers.arith as i64;
                dynasm!(self.a
                    ; .arch x64
                    ; mov rdi, rbx
                    ; mov rax, QWORD arith
                    ; call rax
                    ; mov r8, rax
                    ; and r8d, CF as i32
                );
            }
        }
    }

    /// INC/DEC of a register: CF is kept, so it is worked out first (unless the flags are
    /// dead).
    fn inc_dec(&mut self, insn: &Insn, dec: bool) -> bool {
        let size = insn.size;
        let register = if insn.flags & MEM == 0 {
            match self.reg(insn.r0, size) {
                Some(d) => Some(d),
                None => return false,
            }
        } else {
            None
        };
        // The carry first: the flags helper may be called, which keeps only r8.
        if !self.flags_dead {
            self.carry_to_r8();
        }
        let op = if dec { FlagOp::Dec } else { FlagOp::Inc };
        match register {
            Some(d) => {
                // In the registers the lazy flags keep dst, src and the result in.
                self.load(HOST_R11, d, size);
                if !self.flags_dead {
                    dynasm!(self.a ; .arch x64 ; mov r9, r11);
                }
                self.step_by_one(dec, size, HOST_R11);
                self.store(HOST_R11, d, size);
                self.flags_in_registers = None;
                if self.flags_dead {
                    self.flags = None;
                } else {
                    dynasm!(self.a ; .arch x64 ; mov r10d, 1);
                    self.hold_flags(op, size);
                }
                // Only moves followed the step (whose CF is not the guest's).
                self.host_flags_left = true;
                true
            }
            None => self.memory(insn, true, |e| {
                e.load_mem(HOST_RAX, size);
                dynasm!(e.a ; .arch x64 ; mov ecx, 1 ; mov rdx, rax);
                e.step_by_one(dec, size, HOST_RDX);
                e.store_mem(HOST_RDX, size);
                e.set_flags(op, size);
            }),
        }
    }

    /// Host register `h` -= 1 (`dec`) or += 1 at `size` bytes, setting the host flags.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    fn step_by_one(&mut self, dec: bool, size: u8, h: u8) {
        macro_rules! sized {
            ($op:ident) => {
                match size {
                    1 => dynasm!(self.a ; .arch x64 ; $op Rb(h), 1),
                    2 => dynasm!(self.a ; .arch x64 ; $op Rw(h), 1),
                    4 => dynasm!(self.a ; .arch x64 ; $op Rd(h), 1),
                    _ => dynasm!(self.a ; .arch x64 ; $op Rq(h), 1),
                }
            };
        }
        if dec {
            sized!(sub);
        } else {
            sized!(add);
        }
    }

    /// MOVZX/MOVSX/MOVSXD into a 4- or 8-byte register, from a register or memory.
    fn extend(&mut self, insn: &Insn, from: u8, signed: bool) -> bool {
        let size = insn.size;
        if insn.flags & MEM == 0 {
            if !gpr(insn.r1) {
                return false;
            }
            self.extend_register(from, signed, size, Gpr::whole(insn.r1));
            self.store(HOST_RAX, Gpr::whole(insn.r0), 8);
            return true;
        }
        self.memory(insn, false, |e| {
            e.extend_memory(from, signed, size);
            e.store(HOST_RAX, Gpr::whole(insn.r0), 8);
        })
    }

    /// `rax` = the `from`-byte value at `[rsi]`, extended to `size` bytes.
    fn extend_memory(&mut self, from: u8, signed: bool, size: u8) {
        match (from, signed, size == 8) {
            (1, false, _) => dynasm!(self.a ; .arch x64 ; movzx eax, BYTE [rsi]),
            (2, false, _) => dynasm!(self.a ; .arch x64 ; movzx eax, WORD [rsi]),
            (1, true, true) => dynasm!(self.a ; .arch x64 ; movsx rax, BYTE [rsi]),
            (2, true, true) => dynasm!(self.a ; .arch x64 ; movsx rax, WORD [rsi]),
            (1, true, false) => dynasm!(self.a ; .arch x64 ; movsx eax, BYTE [rsi]),
            (2, true, false) => dynasm!(self.a ; .arch x64 ; movsx eax, WORD [rsi]),
            (_, true, true) => dynasm!(self.a ; .arch x64 ; movsxd rax, DWORD [rsi]),
            _ => dynasm!(self.a ; .arch x64 ; mov eax, DWORD [rsi]),
        }
    }

    /// `rax` = the low `from` bytes of `src`, extended to `size` bytes.
    fn extend_register(&mut self, from: u8, signed: bool, size: u8, src: Gpr) {
        self.load(HOST_RAX, src, from);
        match (from, signed, size == 8) {
            (_, false, _) => {}
            (1, true, true) => dynasm!(self.a ; .arch x64 ; movsx rax, al),
            (2, true, true) => dynasm!(self.a ; .arch x64 ; movsx rax, ax),
            (1, true, false) => dynasm!(self.a ; .arch x64 ; movsx eax, al),
            (2, true, false) => dynasm!(self.a ; .arch x64 ; movsx eax, ax),
            (_, true, true) => dynasm!(self.a ; .arch x64 ; movsxd rax, eax),
            _ => {}
        }
    }

    /// PUSH of a 64-bit register.
    fn push_reg(&mut self, insn: &Insn) -> bool {
        self.push(insn, |e| e.load(HOST_RCX, Gpr::whole(insn.r0), 8))
    }

    /// A 64-bit push of the value `value` leaves in `rcx` (read before RSP moves).
    fn push(&mut self, insn: &Insn, value: impl FnOnce(&mut Self)) -> bool {
        let stack = Gpr::whole(RSP as u8);
        let address = |e: &mut Self| {
            e.load(HOST_RSI, stack, 8);
            dynasm!(e.a ; .arch x64 ; sub rsi, 8);
        };
        self.access(insn, true, 8, address, |e, _| {
            value(e);
            dynasm!(e.a ; .arch x64 ; mov QWORD [rsi], rcx);
            e.add_imm(stack, -8);
        })
    }

    /// POP into a 64-bit register (POP RSP leaves the popped value in RSP).
    fn pop_reg(&mut self, insn: &Insn) -> bool {
        let stack = Gpr::whole(RSP as u8);
        let address = |e: &mut Self| e.load(HOST_RSI, stack, 8);
        self.access(insn, false, 8, address, |e, _| {
            dynasm!(e.a ; .arch x64 ; mov rax, QWORD [rsi]);
            e.add_imm(stack, 8);
            e.store(HOST_RAX, Gpr::whole(insn.r0), 8);
        })
    }

    /// CALL rel (64-bit): pushes the return address; the caller goes on at the target.
    pub(super) fn call_rel(&mut self, insn: &Insn) -> bool {
        self.push(insn, |e| {
            dynasm!(e.a ; .arch x64 ; mov rcx, QWORD insn.next as i64);
        })
    }

    /// RET [imm16] (64-bit): pops RIP (a non-canonical one is left to the handler, which
    /// raises #GP) and stores it.
    pub(super) fn ret(&mut self, insn: &Insn) -> bool {
        let stack = Gpr::whole(RSP as u8);
        let rip_at = self.o.rip;
        let release = 8 + (insn.imm & 0xffff) as i32;
        let address = |e: &mut Self| e.load(HOST_RSI, stack, 8);
        self.access(insn, false, 8, address, |e, slow| {
            dynasm!(e.a
                ; .arch x64
                ; mov rax, QWORD [rsi]
                ; mov rdx, rax
                ; shl rdx, 16
                ; sar rdx, 16
                ; cmp rdx, rax
                ; jne =>slow
                ; mov QWORD [rbx + rip_at], rax
            );
            e.add_imm(stack, release);
        })
    }

    /// SHL/SHR/SAR/ROL/ROR of a register by CL or an immediate, on the host: the result's
    /// flags are the host's. A zero count changes no flags (but still writes the register).
    fn shift(&mut self, insn: &Insn, cl: bool) -> bool {
        let size = insn.size;
        let mask = if size == 8 { 63 } else { 31 };
        let which = match insn.cc {
            bits::SHL | 6 | bits::SHR | bits::SAR => ARITH,
            bits::ROL | bits::ROR => CF | OF,
            _ => return false,
        };
        let count = (insn.imm & mask) as i8;
        let Some(d) = self.reg(insn.r0, size) else {
            return false;
        };
        if !cl && count == 0 {
            return false;
        }
        if cl && !self.flags_dead {
            // A count of 0 keeps the flags: the core must have them on both paths.
            self.flush_flags();
        }
        // A register the block holds is shifted in place (but for a 32-bit one by CL: with a
        // count of 0 the guest's still clears its top half).
        let w = match self.holder(d) {
            Some(x) if size == 8 || (size == 4 && !cl) => x,
            _ => HOST_RAX,
        };
        if w == HOST_RAX {
            self.load(HOST_RAX, d, size);
        }
        if cl {
            self.load(HOST_RCX, Gpr::whole(RCX as u8), 4);
        }
        macro_rules! shift {
            ($op:ident) => {
                match (cl, size) {
                    (true, 1) => dynasm!(self.a ; .arch x64 ; $op al, cl),
                    (true, 2) => dynasm!(self.a ; .arch x64 ; $op ax, cl),
                    (true, 4) => dynasm!(self.a ; .arch x64 ; $op Rd(w), cl),
                    (true, _) => dynasm!(self.a ; .arch x64 ; $op Rq(w), cl),
                    (false, 1) => dynasm!(self.a ; .arch x64 ; $op al, count),
                    (false, 2) => dynasm!(self.a ; .arch x64 ; $op ax, count),
                    (false, 4) => dynasm!(self.a ; .arch x64 ; $op Rd(w), count),
                    (false, _) => dynasm!(self.a ; .arch x64 ; $op Rq(w), count),
                }
            };
        }
        match insn.cc {
            bits::SHL | 6 => shift!(shl),
            bits::SHR => shift!(shr),
            bits::SAR => shift!(sar),
            bits::ROL => shift!(rol),
            _ => shift!(ror),
        }
        if !self.flags_dead {
            dynasm!(self.a ; .arch x64 ; pushfq ; pop rdx);
        }
        // (A 32-bit result is zero-extended in rax, as the guest register gets it.)
        if w == HOST_RAX {
            self.store(HOST_RAX, d, size);
        } else {
            self.holder_to_write(d);
        }
        let skip = self.a.new_dynamic_label();
        if cl {
            dynasm!(self.a ; .arch x64 ; test cl, mask as i8 ; jz =>skip);
        }
        self.host_flags(which);
        dynasm!(self.a ; .arch x64 ; =>skip);
        // Past the join the flags are those of either path.
        self.flags = None;
        true
    }

    /// IMUL reg, r/m or IMUL reg, r/m, imm on the host (its flags are the guest's).
    fn imul(&mut self, insn: &Insn, three: bool) -> bool {
        let size = insn.size;
        let product = move |e: &mut Self| {
            if three {
                e.imm_rcx(insn.imm, size);
            } else {
                e.load(HOST_RCX, Gpr::whole(insn.r0), size);
            }
            if size == 8 {
                dynasm!(e.a ; .arch x64 ; imul rax, rcx);
            } else {
                dynasm!(e.a ; .arch x64 ; imul eax, ecx);
            }
            if !e.flags_dead {
                dynasm!(e.a ; .arch x64 ; pushfq ; pop rdx);
            }
            e.store(HOST_RAX, Gpr::whole(insn.r0), 8);
            e.host_flags(ARITH);
        };
        if insn.flags & MEM == 0 {
            if !gpr(insn.r1) {
                return false;
            }
            self.load(HOST_RAX, Gpr::whole(insn.r1), size);
            product(self);
            return true;
        }
        self.memory(insn, false, |e| {
            if size == 8 {
                dynasm!(e.a ; .arch x64 ; mov rax, QWORD [rsi]);
            } else {
                dynasm!(e.a ; .arch x64 ; mov eax, DWORD [rsi]);
            }
            product(e);
        })
    }

    /// Makes the host's arithmetic flags in `rdx` (an RFLAGS image) the guest's, for the
    /// flags in `which`; the others keep their values. Nothing when they are dead.
    fn host_flags(&mut self, which: u64) {
        if self.flags_dead {
            self.flags = None;
            self.flags_in_registers = None;
            return;
        }
        let keep_others = !(ARITH as i32);
        if which != ARITH {
            if !matches!(
                self.flags,
                Some(KnownFlags {
                    op: FlagOp::Logic | FlagOp::Add | FlagOp::Sub | FlagOp::Explicit,
                    ..
                })
            ) {
                // The helper below reads the core.
                self.flush_flags();
            }
            // The flags the host did not set keep their values: redone on the host from the
            // operands a template recorded (OF's condition sets them all), or else asked of
            // the lazy flags.
            let (take, keep) = (which as i32, (ARITH & !which) as i32);
            let logic = matches!(
                self.flags,
                Some(KnownFlags {
                    op: FlagOp::Logic,
                    ..
                })
            );
            let redone = matches!(
                self.flags,
                Some(KnownFlags {
                    op: FlagOp::Logic | FlagOp::Add | FlagOp::Sub | FlagOp::Explicit,
                    ..
                })
            ) && self.host_flags_for(0);
            if redone {
                dynasm!(self.a ; .arch x64 ; pushfq ; pop rcx);
                if logic {
                    // AF is undefined after the host's TEST; logic operations clear it.
                    dynasm!(self.a ; .arch x64 ; and ecx, !(AF as i32));
                }
                dynasm!(self.a
                    ; .arch x64
                    ; and ecx, keep
                    ; and edx, take
                    ; or edx, ecx
                );
            } else {
                let arith = self.helpers.arith as i64;
                dynasm!(self.a
                    ; .arch x64
                    ; mov QWORD [rsp], rdx
                    ; mov rdi, rbx
                    ; mov rax, QWORD arith
                    ; call rax
                    ; and eax, keep
                    ; mov rcx, QWORD [rsp]
                    ; and ecx, take
                    ; or rax, rcx
                    ; mov rdx, rax
                );
            }
        }
        let o = &self.o;
        dynasm!(self.a
            ; .arch x64
            ; and edx, ARITH as i32
            ; mov rcx, QWORD [rbx + o.f_explicit]
            ; and rcx, keep_others
            ; or rcx, rdx
            ; mov QWORD [rbx + o.f_explicit], rcx
            ; mov BYTE [rbx + o.f_op], FlagOp::Explicit as i8
        );
        self.flags_in_registers = None;
        self.flags = Some(KnownFlags {
            op: FlagOp::Explicit,
            bits: 64,
        });
    }
}

/// The lazy-flags operation an ALU operation records (ADC and SBB take the carry in `r8`,
/// see [`Emitter::carry_to_r8`]).
fn lazy_op(op: u8) -> FlagOp {
    match op {
        alu::ADD => FlagOp::Add,
        alu::ADC => FlagOp::Adc,
        alu::SBB => FlagOp::Sbb,
        alu::OR | alu::AND | alu::XOR => FlagOp::Logic,
        _ => FlagOp::Sub,
    }
}
