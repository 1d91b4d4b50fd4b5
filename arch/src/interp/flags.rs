//! RFLAGS with lazily evaluated arithmetic flags.
//!
//! Arithmetic instructions record their operands, result, width and kind; CF, PF, AF, ZF, SF
//! and OF are computed only when something reads them, and are exact when read. The other
//! bits (TF, IF, DF, IOPL, NT, RF, VM, AC, VIF, VIP, ID) are stored as they are.

/// CF.
pub const CF: u64 = 1 << 0;
/// Bit 1, always set.
pub const FIXED: u64 = 1 << 1;
/// PF.
pub const PF: u64 = 1 << 2;
/// AF.
pub const AF: u64 = 1 << 4;
/// ZF.
pub const ZF: u64 = 1 << 6;
/// SF.
pub const SF: u64 = 1 << 7;
/// TF.
pub const TF: u64 = 1 << 8;
/// IF.
pub const IF: u64 = 1 << 9;
/// DF.
pub const DF: u64 = 1 << 10;
/// OF.
pub const OF: u64 = 1 << 11;
/// IOPL (two bits).
pub const IOPL: u64 = 3 << 12;
/// NT.
pub const NT: u64 = 1 << 14;
/// RF.
pub const RF: u64 = 1 << 16;
/// VM.
pub const VM: u64 = 1 << 17;
/// AC.
pub const AC: u64 = 1 << 18;
/// VIF.
pub const VIF: u64 = 1 << 19;
/// VIP.
pub const VIP: u64 = 1 << 20;
/// ID.
pub const ID: u64 = 1 << 21;
/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// How the pending arithmetic flags are to be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlagOp {
    /// Flags are in `explicit` as they are.
    Explicit,
    /// `res = dst + src`.
    Add,
    /// `res = dst + src + carry` (carry in `aux`).
    Adc,
    /// `res = dst - src`.
    Sub,
    /// `res = dst - src - borrow` (borrow in `aux`).
    Sbb,
    /// Bitwise AND/OR/XOR/TEST: CF = OF = 0, AF = 0.
    Logic,
    /// INC: like ADD of 1, CF kept from `aux`.
    Inc,
    /// DEC: like SUB of 1, CF kept from `aux`.
    Dec,
    /// NEG: `res = 0 - src`.
    Neg,
}

/// RFLAGS.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub(in crate::interp) op: FlagOp,
    /// Operand width in bits (8, 16, 32, 64).
    pub(in crate::interp) bits: u32,
    pub(in crate::interp) dst: u64,
    pub(in crate::interp) src: u64,
    pub(in crate::interp) res: u64,
    /// Carry in (ADC/SBB) or CF to keep (INC/DEC).
    pub(in crate::interp) aux: u64,
    /// The arithmetic flags when `op` is `Explicit`, and always every other bit.
    pub(in crate::interp) explicit: u64,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            op: FlagOp::Explicit,
            bits: 64,
            dst: 0,
            src: 0,
            res: 0,
            aux: 0,
            explicit: FIXED,
        }
    }
}

#[inline]
fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[inline]
fn msb(v: u64, bits: u32) -> u64 {
    (v >> (bits - 1)) & 1
}

/// Whether the low byte of `v` has an even number of set bits.
#[inline]
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones() & 1 == 0
}

impl Flags {
    /// Records an arithmetic result; the flags follow from it on demand.
    #[inline]
    pub fn set_lazy(&mut self, op: FlagOp, bits: u32, dst: u64, src: u64, res: u64) {
        self.op = op;
        self.bits = bits;
        self.dst = dst;
        self.src = src;
        self.res = res & mask(bits);
    }

    /// Records ADC/SBB (carry in `carry`) or INC/DEC (CF to keep in `carry`).
    #[inline]
    pub fn set_lazy_aux(
        &mut self,
        op: FlagOp,
        bits: u32,
        dst: u64,
        src: u64,
        res: u64,
        carry: bool,
    ) {
        self.set_lazy(op, bits, dst, src, res);
        self.aux = u64::from(carry);
    }

    /// Sets the arithmetic flags to `value`'s bits (other bits untouched).
    #[inline]
    pub fn set_arith(&mut self, value: u64) {
        self.explicit = (self.explicit & !ARITH) | (value & ARITH);
        self.op = FlagOp::Explicit;
    }

    /// Sets or clears selected arithmetic flags, keeping the others as they currently are.
    #[inline]
    pub fn update_arith(&mut self, which: u64, value: u64) {
        let current = self.arith();
        self.set_arith((current & !which) | (value & which));
    }

    /// CF.
    #[inline]
    pub fn cf(&self) -> bool {
        let m = mask(self.bits);
        match self.op {
            FlagOp::Explicit => self.explicit & CF != 0,
            FlagOp::Add => self.res < (self.dst & m),
            FlagOp::Adc => {
                if self.aux != 0 {
                    self.res <= (self.dst & m)
                } else {
                    self.res < (self.dst & m)
                }
            }
            FlagOp::Sub => (self.dst & m) < (self.src & m),
            FlagOp::Sbb => {
                if self.aux != 0 {
                    (self.dst & m) <= (self.src & m)
                } else {
                    (self.dst & m) < (self.src & m)
                }
            }
            FlagOp::Logic => false,
            FlagOp::Inc | FlagOp::Dec => self.aux != 0,
            FlagOp::Neg => self.src & m != 0,
        }
    }

    /// ZF.
    #[inline]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::Explicit => self.explicit & ZF != 0,
            _ => self.res == 0,
        }
    }

    /// SF.
    #[inline]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::Explicit => self.explicit & SF != 0,
            _ => msb(self.res, self.bits) != 0,
        }
    }

    /// OF.
    #[inline]
    pub fn of(&self) -> bool {
        let (d, s, r, b) = (self.dst, self.src, self.res, self.bits);
        match self.op {
            FlagOp::Explicit => self.explicit & OF != 0,
            FlagOp::Add | FlagOp::Adc | FlagOp::Inc => msb((d ^ r) & (s ^ r), b) != 0,
            FlagOp::Sub | FlagOp::Sbb | FlagOp::Dec | FlagOp::Neg => msb((d ^ s) & (d ^ r), b) != 0,
            FlagOp::Logic => false,
        }
    }

    /// PF.
    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::Explicit => self.explicit & PF != 0,
            _ => parity(self.res),
        }
    }

    /// AF.
    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::Explicit => self.explicit & AF != 0,
            FlagOp::Logic => false,
            _ => (self.dst ^ self.src ^ self.res) & 0x10 != 0,
        }
    }

    /// The six arithmetic flags as RFLAGS bits.
    #[inline]
    pub fn arith(&self) -> u64 {
        if self.op == FlagOp::Explicit {
            return self.explicit & ARITH;
        }
        (u64::from(self.cf()) * CF)
            | (u64::from(self.pf()) * PF)
            | (u64::from(self.af()) * AF)
            | (u64::from(self.zf()) * ZF)
            | (u64::from(self.sf()) * SF)
            | (u64::from(self.of()) * OF)
    }

    /// The whole register.
    #[inline]
    pub fn get(&self) -> u64 {
        (self.explicit & !ARITH) | self.arith() | FIXED
    }

    /// Replaces the whole register (reserved bits are cleared, bit 1 set).
    #[inline]
    pub fn set(&mut self, value: u64) {
        const WRITABLE: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
        self.explicit = (value & WRITABLE) | FIXED;
        self.op = FlagOp::Explicit;
    }

    /// Whether `bit` (a non-arithmetic flag) is set.
    #[inline]
    pub fn has(&self, bit: u64) -> bool {
        debug_assert_eq!(bit & ARITH, 0);
        self.explicit & bit != 0
    }

    /// Sets or clears a non-arithmetic flag.
    #[inline]
    pub fn assign(&mut self, bit: u64, on: bool) {
        debug_assert_eq!(bit & ARITH, 0);
        if on {
            self.explicit |= bit;
        } else {
            self.explicit &= !bit;
        }
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc opcodes).
    #[inline]
    pub fn condition(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(bits: u32, a: u64, b: u64) -> u64 {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Add, bits, a, b, a.wrapping_add(b));
        f.arith()
    }

    fn sub(bits: u32, a: u64, b: u64) -> u64 {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Sub, bits, a, b, a.wrapping_sub(b));
        f.arith()
    }

    #[test]
    fn add_flags_match_hardware() {
        // 0x7f + 1 = 0x80: OF, SF, AF; parity of 0x80 is odd.
        assert_eq!(add(8, 0x7f, 1), OF | SF | AF);
        // 0xff + 1 = 0x00: CF, ZF, AF, PF.
        assert_eq!(add(8, 0xff, 1), CF | ZF | AF | PF);
        // 32-bit: 0xffffffff + 0xffffffff = 0xfffffffe, CF, SF, AF.
        assert_eq!(add(32, 0xffff_ffff, 0xffff_ffff), CF | SF | AF);
        assert_eq!(add(64, u64::MAX, 1), CF | ZF | AF | PF);
    }

    #[test]
    fn sub_flags_match_hardware() {
        // cmp 0, 1: borrow, result 0xff.
        assert_eq!(sub(8, 0, 1), CF | SF | AF | PF);
        // 0x80 - 1 = 0x7f: OF, AF.
        assert_eq!(sub(8, 0x80, 1), OF | AF);
        assert_eq!(sub(16, 5, 5), ZF | PF);
    }

    #[test]
    fn carry_in_and_kept_carry() {
        let mut f = Flags::default();
        // adc 8-bit: 0xff + 0 + 1 = 0 with carry out.
        f.set_lazy_aux(FlagOp::Adc, 8, 0xff, 0, 0x100, true);
        assert!(f.cf() && f.zf());
        // sbb: 0 - 0 - 1 borrows.
        f.set_lazy_aux(FlagOp::Sbb, 8, 0, 0, 0u64.wrapping_sub(1), true);
        assert!(f.cf() && f.sf());
        // inc keeps CF.
        f.set_lazy_aux(FlagOp::Inc, 32, 0xffff_ffff, 1, 0x1_0000_0000, true);
        assert!(f.cf() && f.zf() && !f.of());
        f.set_lazy_aux(FlagOp::Inc, 8, 0x7f, 1, 0x80, false);
        assert!(!f.cf() && f.of());
    }

    #[test]
    fn conditions() {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Sub, 32, 3, 5, 3u64.wrapping_sub(5));
        assert!(f.condition(0x2)); // B
        assert!(f.condition(0xc)); // L
        assert!(!f.condition(0xf)); // G
        assert!(f.condition(0x5)); // NE
        f.set_lazy(FlagOp::Sub, 32, 0x8000_0000, 1, 0x7fff_ffff);
        assert!(f.condition(0x0)); // O
        assert!(f.condition(0xc)); // L: SF != OF
    }

    #[test]
    fn whole_register_round_trips() {
        let mut f = Flags::default();
        f.set(CF | ZF | IF | DF | 0x8000_0000_0000);
        assert_eq!(f.get(), CF | ZF | IF | DF | FIXED);
        assert!(f.has(IF) && f.has(DF));
        f.update_arith(CF, 0);
        assert_eq!(f.get(), ZF | IF | DF | FIXED);
    }
}
