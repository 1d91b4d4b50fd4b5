//! String instructions (MOVS, CMPS, STOS, LODS, SCAS in all element sizes), with and without
//! REP/REPE/REPNE, 64- and 32-bit address sizes, DF clear and set. RSI, RDI and RCX are
//! loaded just before so that every element lands in the data area; MOVS ranges overlap
//! sometimes, and CMPS/SCAS sometimes start on equal elements.

use iced_x86::{Code, Instruction, Register, RepPrefixKind};

use super::Gen;
use crate::difftest::layout;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Movs,
    Cmps,
    Stos,
    Lods,
    Scas,
}

fn make(
    kind: Kind,
    size: u64,
    asize: u32,
    seg: Register,
    rep: RepPrefixKind,
) -> Option<Instruction> {
    let r = match (kind, size) {
        (Kind::Movs, 1) => Instruction::with_movsb(asize, seg, rep),
        (Kind::Movs, 2) => Instruction::with_movsw(asize, seg, rep),
        (Kind::Movs, 4) => Instruction::with_movsd(asize, seg, rep),
        (Kind::Movs, _) => Instruction::with_movsq(asize, seg, rep),
        (Kind::Cmps, 1) => Instruction::with_cmpsb(asize, seg, rep),
        (Kind::Cmps, 2) => Instruction::with_cmpsw(asize, seg, rep),
        (Kind::Cmps, 4) => Instruction::with_cmpsd(asize, seg, rep),
        (Kind::Cmps, _) => Instruction::with_cmpsq(asize, seg, rep),
        (Kind::Stos, 1) => Instruction::with_stosb(asize, rep),
        (Kind::Stos, 2) => Instruction::with_stosw(asize, rep),
        (Kind::Stos, 4) => Instruction::with_stosd(asize, rep),
        (Kind::Stos, _) => Instruction::with_stosq(asize, rep),
        (Kind::Lods, 1) => Instruction::with_lodsb(asize, seg, rep),
        (Kind::Lods, 2) => Instruction::with_lodsw(asize, seg, rep),
        (Kind::Lods, 4) => Instruction::with_lodsd(asize, seg, rep),
        (Kind::Lods, _) => Instruction::with_lodsq(asize, seg, rep),
        (Kind::Scas, 1) => Instruction::with_scasb(asize, rep),
        (Kind::Scas, 2) => Instruction::with_scasw(asize, rep),
        (Kind::Scas, 4) => Instruction::with_scasd(asize, rep),
        (Kind::Scas, _) => Instruction::with_scasq(asize, rep),
    };
    r.ok()
}

impl Gen<'_> {
    /// Start of a range of `count` elements of `size` bytes walked from `p` in direction
    /// `df`, chosen so the whole range is in the data area.
    fn string_pointer(&mut self, count: u64, size: u64, df: bool) -> u64 {
        let (lo, hi) = (layout::DATA_BASE, layout::DATA_END);
        let back = count.saturating_sub(1) * size;
        let (min, max) = if df {
            (lo + back, hi - size)
        } else {
            (lo, hi - back - size)
        };
        // Near a page boundary a third of the time.
        if self.rng.chance(33) {
            let boundary = lo + 0x1000 * (1 + self.rng.below(3));
            let p = boundary.wrapping_add(self.rng.range(-64, 64) as u64);
            return p.clamp(min, max);
        }
        min + self.rng.below(max - min + 1)
    }

    /// One string instruction with its setup.
    pub(crate) fn string_op(&mut self) -> bool {
        let kind = [Kind::Movs, Kind::Cmps, Kind::Stos, Kind::Lods, Kind::Scas]
            [self.rng.weighted(&[3, 2, 3, 1, 2])];
        let size = 1u64 << self.rng.below(4);
        let asize = if self.rng.chance(80) { 64 } else { 32 };
        let rep = if self.rng.chance(25) {
            RepPrefixKind::None
        } else if matches!(kind, Kind::Cmps | Kind::Scas) && self.rng.chance(50) {
            RepPrefixKind::Repne
        } else {
            RepPrefixKind::Repe
        };
        if self.rng.chance(50) {
            let code = if self.rng.chance(50) {
                Code::Cld
            } else {
                Code::Std
            };
            if !self.emit(Instruction::with(code)) {
                return false;
            }
        }
        let count = match self.rng.below(10) {
            0 => 0,
            1 => self.rng.below(400),
            _ => self.rng.below(40),
        }
        .min(0x3000 / size);
        let iterations = if rep == RepPrefixKind::None { 1 } else { count };
        let df = self.df;
        let src = self.string_pointer(iterations, size, df);
        let mut dst = self.string_pointer(iterations, size, df);
        if kind == Kind::Movs && self.rng.chance(30) {
            // Overlapping source and destination: the element-by-element result differs
            // from a block copy.
            let near = src.wrapping_add(self.rng.range(-24, 24) as u64);
            let back = iterations.saturating_sub(1) * size;
            let (min, max) = if df {
                (layout::DATA_BASE + back, layout::DATA_END - size)
            } else {
                (layout::DATA_BASE, layout::DATA_END - back - size)
            };
            dst = near.clamp(min, max);
        }
        let (si, di, cx) = if asize == 64 {
            (Register::RSI, Register::RDI, Register::RCX)
        } else {
            (Register::ESI, Register::EDI, Register::ECX)
        };
        let uses_si = matches!(kind, Kind::Movs | Kind::Cmps | Kind::Lods);
        let uses_di = kind != Kind::Lods;
        if uses_si && !self.mov_imm(si, src) {
            return false;
        }
        if uses_di && !self.mov_imm(di, dst) {
            return false;
        }
        if rep != RepPrefixKind::None && !self.mov_imm(cx, count) {
            return false;
        }
        if kind == Kind::Scas && self.rng.chance(40) {
            // Compare against the first element itself: REPE runs on.
            if !self.load_accumulator(dst, size) {
                return false;
            }
        }
        let seg = if uses_si && self.rng.chance(10) {
            [
                Register::DS,
                Register::ES,
                Register::SS,
                Register::CS,
                Register::FS,
                Register::GS,
            ][self.rng.below(6) as usize]
        } else {
            Register::None
        };
        match make(kind, size, asize, seg, rep) {
            Some(ins) => self.emit(ins),
            None => false,
        }
    }

    /// `mov al/ax/eax/rax, [addr]`.
    fn load_accumulator(&mut self, addr: u64, size: u64) -> bool {
        let Some(m) = self.mem_at(addr, true) else {
            return false;
        };
        let ins = match size {
            1 => Instruction::with2(Code::Mov_r8_rm8, Register::AL, m),
            2 => Instruction::with2(Code::Mov_r16_rm16, Register::AX, m),
            4 => Instruction::with2(Code::Mov_r32_rm32, Register::EAX, m),
            _ => Instruction::with2(Code::Mov_r64_rm64, Register::RAX, m),
        };
        ins.map(|i| self.emit(i)).unwrap_or(false)
    }

    /// REP MOVS/STOS (DF clear) that runs off the end of the data area into the page that is
    /// not present: #PF part-way, with RCX/RSI/RDI showing the progress.
    pub(crate) fn string_into_guard(&mut self) -> bool {
        let size = 1u64 << self.rng.below(4);
        let count = 8 + self.rng.below(64);
        let start = layout::DATA_END - size * self.rng.range(1, count as i64 - 1) as u64;
        let stos = self.rng.chance(50);
        let src = layout::DATA_BASE + self.rng.below(0x1000);
        let ok = self.emit(Instruction::with(Code::Cld))
            && self.mov_imm(Register::RDI, start)
            && (stos || self.mov_imm(Register::RSI, src))
            && self.mov_imm(Register::RCX, count);
        if !ok {
            return false;
        }
        let kind = if stos { Kind::Stos } else { Kind::Movs };
        match make(kind, size, 64, Register::None, RepPrefixKind::Repe) {
            Some(ins) => self.emit(ins),
            None => false,
        }
    }
}
