//! Guest general registers in translated code: where a template's register operand lives,
//! and the moves to and from it. A block keeps up to four of the registers its templates use
//! most in `r12`-`r15` (callee-saved, so the helpers keep them): loaded where its body
//! starts, and written back to the core before anything else may read them there (a handler
//! call, a slow path, an exit); loaded again after a handler ran, since it may have changed
//! any of them. A register the block names as a high byte (AH..BH) stays in the core.
//!
//! Every access of a template to a general register goes through a [`Gpr`] and the methods
//! here: that is what keeps the core and the host registers in step.

use dynasmrt::{dynasm, DynasmApi};

use super::super::insn::{Insn, HIGH_BYTE, MEM, ZERO};
use super::super::state::{RCX, RSP};
use super::classify::{kind, Kind};
use super::emit::Emitter;

/// Host registers that hold guest registers, in the order they are handed out.
const HOLDERS: [u8; 4] = [12, 13, 14, 15];

/// A guest register operand: general register `index` (below [`ZERO`]), or its second byte
/// (AH..BH) when `high`.
#[derive(Clone, Copy)]
pub(super) struct Gpr {
    index: u8,
    high: bool,
}

impl Gpr {
    /// The whole of general register `r`, which is below [`ZERO`].
    pub(super) fn whole(r: u8) -> Gpr {
        debug_assert!(r < ZERO);
        Gpr {
            index: r,
            high: false,
        }
    }
}

/// The guest registers a block holds in host registers.
#[derive(Clone, Copy, Default)]
pub(super) struct Held {
    /// The host register holding each guest register, if any.
    host: [Option<u8>; 16],
    /// Those its templates may write (a guess): they count as not yet in the core where the
    /// body starts, so that a loop back to it need not store them first.
    pub written: u16,
}

/// The general registers (as `r0` and `r1` name them, maybe with [`HIGH_BYTE`]) the template
/// of `k` for `insn` names besides its memory operand's, and whether it writes the first.
fn named(insn: &Insn, k: Kind) -> ([Option<u8>; 2], bool) {
    let reg_form = insn.flags & MEM == 0;
    let (r0, r1) = (Some(insn.r0), Some(insn.r1));
    match k {
        Kind::MovRR | Kind::AluRR(_) => ([r0, r1], true),
        Kind::Extend { .. } | Kind::Imul { .. } | Kind::Cmov if reg_form => ([r0, r1], true),
        Kind::Extend { .. } | Kind::Imul { .. } | Kind::Cmov => ([r0, None], true),
        Kind::MovRI | Kind::Lea | Kind::AluRI(_) | Kind::AluRM(_) | Kind::MovRM => {
            ([r0, None], true)
        }
        Kind::Bswap | Kind::PopReg | Kind::VecMask => ([r0, None], true),
        Kind::PushReg => ([r0, None], false),
        Kind::Setcc | Kind::Neg | Kind::Not | Kind::IncDec { .. } | Kind::Shift { .. }
            if reg_form =>
        {
            ([r0, None], true)
        }
        Kind::Test { imm } if reg_form => ([r0, (!imm).then_some(insn.r1)], false),
        Kind::Test { imm: false } | Kind::AluM { imm: false, .. } | Kind::MovMR => {
            ([r1, None], false)
        }
        _ => ([None, None], false),
    }
}

/// Chooses the registers a block of `insns` holds: those its templates name most often, when
/// that is at least twice and more often than the block calls handlers (each call stores and
/// reloads them). Names before the block's first conditional branch count most, and each
/// branch halves the weight of those after it: a hot loop is often the head of a longer
/// block that it leaves early.
pub(super) fn choose(insns: &[Insn]) -> Held {
    let mut uses = [0u32; 16];
    let mut weight = [0u32; 16];
    let mut high = 0u16;
    let mut written = 0u16;
    let mut calls = 0;
    let mut w = 8;
    for insn in insns {
        let Some(k) = kind(insn.exec) else {
            calls += 1;
            continue;
        };
        let mut note = |r: u8| {
            if r & HIGH_BYTE != 0 {
                high |= 1 << (r & 0xf);
            } else if r < ZERO {
                uses[usize::from(r)] += 1;
                weight[usize::from(r)] += w;
            }
        };
        let ([first, second], writes) = named(insn, k);
        for r in [first, second].into_iter().flatten() {
            note(r);
        }
        note(insn.base);
        note(insn.index);
        match (first, writes) {
            (Some(r), true) if r < ZERO => written |= 1 << r,
            _ => {}
        }
        match k {
            Kind::PushReg | Kind::PopReg | Kind::CallRel | Kind::Ret => {
                uses[RSP] += 2;
                weight[RSP] += 2 * w;
                written |= 1 << RSP;
            }
            Kind::Shift { cl: true } => {
                uses[RCX] += 1;
                weight[RCX] += w;
            }
            Kind::Jcc(_) => w = (w / 2).max(1),
            _ => {}
        }
    }
    let mut order: Vec<usize> = (0..16)
        .filter(|&r| high & (1 << r) == 0 && uses[r] >= 2 && uses[r] > calls)
        .collect();
    order.sort_by_key(|&r| std::cmp::Reverse(weight[r]));
    let mut held = Held::default();
    let mut mask = 0u16;
    for (&r, &h) in order.iter().zip(HOLDERS.iter()) {
        held.host[r] = Some(h);
        mask |= 1 << r;
    }
    held.written = written & mask;
    held
}

impl Emitter<'_> {
    /// Offset of `g`'s bytes in the core, from `rbx`.
    fn at(&self, g: Gpr) -> i32 {
        self.o.gpr + 8 * i32::from(g.index) + i32::from(g.high)
    }

    /// The host register holding `g`, if the block holds it.
    pub(super) fn holder(&self, g: Gpr) -> Option<u8> {
        if g.high {
            return None;
        }
        self.held.host[usize::from(g.index)]
    }

    /// The host register holding `g`, which the caller is about to write: from here on the
    /// core does not have it.
    pub(super) fn holder_to_write(&mut self, g: Gpr) -> Option<u8> {
        let x = self.holder(g)?;
        self.dirty |= 1 << g.index;
        Some(x)
    }

    /// A host register with all 64 bits of `g`: the one holding it, or else `scratch`, loaded.
    pub(super) fn source(&mut self, g: Gpr, scratch: u8) -> u8 {
        match self.holder(g) {
            Some(x) => x,
            None => {
                self.load(scratch, g, 8);
                scratch
            }
        }
    }

    /// Register operand `r` of `size` bytes; None for what the templates do not handle.
    pub(super) fn reg(&self, r: u8, size: u8) -> Option<Gpr> {
        if r & HIGH_BYTE != 0 {
            return (size == 1 && r & 0xf < 4).then_some(Gpr {
                index: r & 0xf,
                high: true,
            });
        }
        (r < ZERO && matches!(size, 1 | 2 | 4 | 8)).then_some(Gpr {
            index: r,
            high: false,
        })
    }

    /// Host register `h` = the low `size` bytes of `g`, zero-extended.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn load(&mut self, h: u8, g: Gpr, size: u8) {
        if let Some(x) = self.holder(g) {
            match size {
                1 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), Rb(x)),
                2 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), Rw(x)),
                4 => dynasm!(self.a ; .arch x64 ; mov Rd(h), Rd(x)),
                _ => dynasm!(self.a ; .arch x64 ; mov Rq(h), Rq(x)),
            }
            return;
        }
        let at = self.at(g);
        match size {
            1 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), BYTE [rbx + at]),
            2 => dynasm!(self.a ; .arch x64 ; movzx Rd(h), WORD [rbx + at]),
            4 => dynasm!(self.a ; .arch x64 ; mov Rd(h), DWORD [rbx + at]),
            _ => dynasm!(self.a ; .arch x64 ; mov Rq(h), QWORD [rbx + at]),
        }
    }

    /// `g` = the low `size` bytes of host register `h`, the rest of `g` kept; for 4 bytes the
    /// whole register, which holds a zero-extended value (a guest write of 32 bits clears the
    /// top).
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn store(&mut self, h: u8, g: Gpr, size: u8) {
        if let Some(x) = self.holder_to_write(g) {
            match size {
                1 => dynasm!(self.a ; .arch x64 ; mov Rb(x), Rb(h)),
                2 => dynasm!(self.a ; .arch x64 ; mov Rw(x), Rw(h)),
                _ => dynasm!(self.a ; .arch x64 ; mov Rq(x), Rq(h)),
            }
            return;
        }
        let at = self.at(g);
        match size {
            1 => dynasm!(self.a ; .arch x64 ; mov BYTE [rbx + at], Rb(h)),
            2 => dynasm!(self.a ; .arch x64 ; mov WORD [rbx + at], Rw(h)),
            _ => dynasm!(self.a ; .arch x64 ; mov QWORD [rbx + at], Rq(h)),
        }
    }

    /// All 64 bits of `g` = `imm`, sign-extended.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn store_imm(&mut self, g: Gpr, imm: i32) {
        if let Some(x) = self.holder_to_write(g) {
            dynasm!(self.a ; .arch x64 ; mov Rq(x), imm);
            return;
        }
        let at = self.at(g);
        dynasm!(self.a ; .arch x64 ; mov QWORD [rbx + at], imm);
    }

    /// `g` += `v` in 64 bits (the host flags change).
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn add_imm(&mut self, g: Gpr, v: i32) {
        if let Some(x) = self.holder_to_write(g) {
            dynasm!(self.a ; .arch x64 ; add Rq(x), v);
            return;
        }
        let at = self.at(g);
        dynasm!(self.a ; .arch x64 ; add QWORD [rbx + at], v);
    }

    /// Loads every held register from the core (where the body starts, after a handler).
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn load_held(&mut self) {
        for r in 0..16u8 {
            if let Some(x) = self.held.host[usize::from(r)] {
                let at = self.at(Gpr::whole(r));
                dynasm!(self.a ; .arch x64 ; mov Rq(x), QWORD [rbx + at]);
            }
        }
    }

    /// Writes the held registers of `mask` back to the core.
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn store_held(&mut self, mask: u16) {
        for r in 0..16u8 {
            match self.held.host[usize::from(r)] {
                Some(x) if mask & (1 << r) != 0 => {
                    let at = self.at(Gpr::whole(r));
                    dynasm!(self.a ; .arch x64 ; mov QWORD [rbx + at], Rq(x));
                }
                _ => {}
            }
        }
    }
}
