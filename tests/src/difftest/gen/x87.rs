//! x87 instructions on exactly representable values, and the constant page they load from.
//!
//! This group keeps to operations whose exact result is representable in f64 (the `x87fp`
//! group covers rounding, special values and exceptions): the generator simulates the
//! register stack (values from the constant page it knows) and checks each operation's
//! exactness with error-free transformations before emitting it. The stack never overflows
//! or underflows.

use iced_x86::{Code, Register};

use super::mem::MemReq;
use super::ops::Op;
use super::Gen;
use crate::difftest::layout;
use crate::difftest::rng::Rng;

/// Offsets in the constant page of each table, and entries per table.
const F32_AT: usize = 0x000;
const F64_AT: usize = 0x100;
const F80_AT: usize = 0x300;
const I16_AT: usize = 0x500;
const I32_AT: usize = 0x580;
const I64_AT: usize = 0x680;
const ENTRIES: usize = 64;
const F80_ENTRIES: usize = 32;
/// Where the tables end (the floating-point groups' tables follow, see `fptables.rs`).
pub const TABLES_END: usize = I64_AT + 8 * ENTRIES;

/// A value with few significant bits: exact in every format.
fn small(rng: &mut Rng) -> f64 {
    if rng.chance(5) {
        return 0.0;
    }
    rng.range(-400, 400) as f64 / 4.0
}

/// `v` (a normal number or zero) as an 80-bit extended-precision value.
pub fn f80(v: f64) -> [u8; 10] {
    let bits = v.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let mut out = [0u8; 10];
    if v == 0.0 {
        out[8..].copy_from_slice(&sign.to_le_bytes());
        return out;
    }
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mant = ((bits & ((1 << 52) - 1)) | (1 << 52)) << 11;
    out[..8].copy_from_slice(&mant.to_le_bytes());
    out[8..].copy_from_slice(&(sign | (exp + 16383) as u16).to_le_bytes());
    out
}

/// The f64 value of an 80-bit value written by [`f80`].
fn from_f80(b: &[u8]) -> f64 {
    let mant = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let se = u16::from_le_bytes([b[8], b[9]]);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    if mant == 0 {
        return sign * 0.0;
    }
    let exp = i32::from(se & 0x7fff) - 16383 - 63;
    sign * (mant as f64) * 2f64.powi(exp)
}

/// The constant page: tables of small values in every x87 memory format, random bytes after.
pub fn constant_page(rng: &mut Rng) -> Vec<u8> {
    let mut page = vec![0u8; (layout::CONST_END - layout::CONST_BASE) as usize];
    rng.fill(&mut page);
    for i in 0..ENTRIES {
        let at = F32_AT + i * 4;
        page[at..at + 4].copy_from_slice(&(small(rng) as f32).to_le_bytes());
        let at = F64_AT + i * 8;
        page[at..at + 8].copy_from_slice(&small(rng).to_le_bytes());
        let at = I16_AT + i * 2;
        page[at..at + 2].copy_from_slice(&(rng.range(-1000, 1000) as i16).to_le_bytes());
        let at = I32_AT + i * 4;
        page[at..at + 4].copy_from_slice(&(rng.range(-1000, 1000) as i32).to_le_bytes());
        let at = I64_AT + i * 8;
        page[at..at + 8].copy_from_slice(&rng.range(-1000, 1000).to_le_bytes());
    }
    for i in 0..F80_ENTRIES {
        let at = F80_AT + i * 16;
        page[at..at + 10].copy_from_slice(&f80(small(rng)));
    }
    page
}

/// The simulated register stack (ST(0) last).
#[derive(Debug, Clone, Default)]
pub struct Stack {
    vals: Vec<f64>,
}

impl Stack {
    /// Registers in use, as far as the generator knows.
    pub(super) fn depth(&self) -> usize {
        self.vals.len()
    }

    /// A push of a value the generator does not follow (NaN, which this group's operations
    /// refuse); a push onto a full stack overflows and leaves it full.
    pub(super) fn push_unknown(&mut self) {
        if self.vals.len() < 8 {
            self.vals.push(f64::NAN);
        }
        self.forget();
    }

    /// A pop (of an empty stack: nothing).
    pub(super) fn pop(&mut self) {
        self.vals.pop();
    }

    /// Every value becomes one the generator does not follow.
    pub(super) fn forget(&mut self) {
        self.vals.fill(f64::NAN);
    }
}

/// Whether `v` is a value every later operation and store can handle exactly.
fn tame(v: f64) -> bool {
    v.is_finite() && (v == 0.0 || (v.abs() <= 2f64.powi(40) && v.abs() >= 2f64.powi(-30)))
}

fn exact_add(a: f64, b: f64) -> Option<f64> {
    let s = a + b;
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (err == 0.0 && tame(s)).then_some(s)
}

fn exact_mul(a: f64, b: f64) -> Option<f64> {
    let p = a * b;
    (a.mul_add(b, -p) == 0.0 && tame(p)).then_some(p)
}

fn exact_div(a: f64, b: f64) -> Option<f64> {
    if b == 0.0 {
        return None;
    }
    let q = a / b;
    (q.mul_add(b, -a) == 0.0 && tame(q)).then_some(q)
}

/// The binary operations, by what they compute from (destination, source).
#[derive(Debug, Clone, Copy)]
pub(super) enum Arith {
    Add,
    Sub,
    Subr,
    Mul,
    Div,
    Divr,
}

impl Arith {
    /// Every operation.
    pub(super) const ALL: [Arith; 6] = [
        Arith::Add,
        Arith::Sub,
        Arith::Subr,
        Arith::Mul,
        Arith::Div,
        Arith::Divr,
    ];

    fn apply(self, dst: f64, src: f64) -> Option<f64> {
        match self {
            Arith::Add => exact_add(dst, src),
            Arith::Sub => exact_add(dst, -src),
            Arith::Subr => exact_add(src, -dst),
            Arith::Mul => exact_mul(dst, src),
            Arith::Div => exact_div(dst, src),
            Arith::Divr => exact_div(src, dst),
        }
    }

    /// (ST0 op= m32, ST0 op= m64, ST0 op= m16int, ST0 op= m32int, ST0 op= ST(i),
    /// ST(i) op= ST0, ST(i) op= ST0 and pop).
    pub(super) fn codes(self) -> [Code; 7] {
        use Code as C;
        match self {
            Arith::Add => [
                C::Fadd_m32fp,
                C::Fadd_m64fp,
                C::Fiadd_m16int,
                C::Fiadd_m32int,
                C::Fadd_st0_sti,
                C::Fadd_sti_st0,
                C::Faddp_sti_st0,
            ],
            Arith::Sub => [
                C::Fsub_m32fp,
                C::Fsub_m64fp,
                C::Fisub_m16int,
                C::Fisub_m32int,
                C::Fsub_st0_sti,
                C::Fsub_sti_st0,
                C::Fsubp_sti_st0,
            ],
            Arith::Subr => [
                C::Fsubr_m32fp,
                C::Fsubr_m64fp,
                C::Fisubr_m16int,
                C::Fisubr_m32int,
                C::Fsubr_st0_sti,
                C::Fsubr_sti_st0,
                C::Fsubrp_sti_st0,
            ],
            Arith::Mul => [
                C::Fmul_m32fp,
                C::Fmul_m64fp,
                C::Fimul_m16int,
                C::Fimul_m32int,
                C::Fmul_st0_sti,
                C::Fmul_sti_st0,
                C::Fmulp_sti_st0,
            ],
            Arith::Div => [
                C::Fdiv_m32fp,
                C::Fdiv_m64fp,
                C::Fidiv_m16int,
                C::Fidiv_m32int,
                C::Fdiv_st0_sti,
                C::Fdiv_sti_st0,
                C::Fdivp_sti_st0,
            ],
            Arith::Divr => [
                C::Fdivr_m32fp,
                C::Fdivr_m64fp,
                C::Fidivr_m16int,
                C::Fidivr_m32int,
                C::Fdivr_st0_sti,
                C::Fdivr_sti_st0,
                C::Fdivrp_sti_st0,
            ],
        }
    }
}

/// The x87 register `ST(i & 7)`.
pub(super) fn st(i: usize) -> Register {
    [
        Register::ST0,
        Register::ST1,
        Register::ST2,
        Register::ST3,
        Register::ST4,
        Register::ST5,
        Register::ST6,
        Register::ST7,
    ][i & 7]
}

impl Gen<'_> {
    fn consts(&self, at: usize, len: usize) -> &[u8] {
        &self.init.consts[at..at + len]
    }

    /// A constant from table `kind` (0: f32, 1: f64, 2: f80, 3: i16, 4: i32, 5: i64): its
    /// address and value.
    fn constant(&mut self, kind: u64) -> (u64, f64) {
        let n = if kind == 2 { F80_ENTRIES } else { ENTRIES };
        let i = self.rng.below(n as u64) as usize;
        let (at, v) = match kind {
            0 => {
                let at = F32_AT + i * 4;
                let b = self.consts(at, 4);
                (at, f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            1 => {
                let at = F64_AT + i * 8;
                (
                    at,
                    f64::from_le_bytes(self.consts(at, 8).try_into().unwrap_or([0; 8])),
                )
            }
            2 => {
                let at = F80_AT + i * 16;
                (at, from_f80(self.consts(at, 10)))
            }
            3 => {
                let at = I16_AT + i * 2;
                let b = self.consts(at, 2);
                (at, f64::from(i16::from_le_bytes([b[0], b[1]])))
            }
            4 => {
                let at = I32_AT + i * 4;
                let b = self.consts(at, 4);
                (at, f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            _ => {
                let at = I64_AT + i * 8;
                let b: [u8; 8] = self.consts(at, 8).try_into().unwrap_or([0; 8]);
                (at, i64::from_le_bytes(b) as f64)
            }
        };
        (layout::CONST_BASE + at as u64, v)
    }

    /// Builds `code` with `ops` and emits it.
    pub(super) fn emit_with(&mut self, code: Code, ops: &[Op]) -> bool {
        match super::ops::build(code, ops) {
            Some(ins) => self.emit(ins),
            None => false,
        }
    }

    /// A memory operand at `addr`.
    pub(super) fn x87_mem(&mut self, addr: u64) -> Option<Op> {
        self.mem_at(addr, false).map(Op::Mem)
    }

    /// One x87 instruction that keeps every value exact.
    pub(crate) fn x87_op(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let w = [
            if depth < 8 { 4 } else { 0 },
            if depth > 0 { 3 } else { 0 },
            if depth > 0 { 6 } else { 0 },
            if depth > 0 { 2 } else { 0 },
            if depth > 0 { 2 } else { 0 },
        ];
        match self.rng.weighted(&w) {
            0 => self.x87_load(),
            1 => self.x87_store(),
            2 => self.x87_arith(),
            3 => self.x87_unary(),
            _ => self.x87_compare(),
        }
    }

    fn x87_load(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let (code, ops, v) = match self.rng.below(9) {
            k @ 0..=5 => {
                let (addr, v) = self.constant(k);
                let code = [
                    Code::Fld_m32fp,
                    Code::Fld_m64fp,
                    Code::Fld_m80fp,
                    Code::Fild_m16int,
                    Code::Fild_m32int,
                    Code::Fild_m64int,
                ][k as usize];
                let Some(m) = self.x87_mem(addr) else {
                    return false;
                };
                (code, vec![m], v)
            }
            6 => (Code::Fld1, vec![], 1.0),
            7 => (Code::Fldz, vec![], 0.0),
            _ if depth > 0 => {
                let i = self.rng.below(depth as u64) as usize;
                (
                    Code::Fld_sti,
                    vec![Op::Reg(st(i))],
                    self.x87.vals[depth - 1 - i],
                )
            }
            _ => (Code::Fld1, vec![], 1.0),
        };
        let ok = self.emit_with(code, &ops);
        if ok {
            self.x87.vals.push(v);
        }
        ok
    }

    fn x87_store(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let v = self.x87.vals[depth - 1];
        let fits = |lo: f64, hi: f64, r: f64| r >= lo && r <= hi;
        let nearest = v.round_ties_even();
        let trunc = v.trunc();
        let choices: [(Code, u64, bool, bool); 14] = [
            (Code::Fst_m32fp, 4, (v as f32) as f64 == v, false),
            (Code::Fstp_m32fp, 4, (v as f32) as f64 == v, true),
            (Code::Fst_m64fp, 8, true, false),
            (Code::Fstp_m64fp, 8, true, true),
            (Code::Fstp_m80fp, 10, true, true),
            (
                Code::Fist_m16int,
                2,
                fits(-32768.0, 32767.0, nearest),
                false,
            ),
            (
                Code::Fist_m32int,
                4,
                fits(-2147483648.0, 2147483647.0, nearest),
                false,
            ),
            (
                Code::Fistp_m16int,
                2,
                fits(-32768.0, 32767.0, nearest),
                true,
            ),
            (
                Code::Fistp_m32int,
                4,
                fits(-2147483648.0, 2147483647.0, nearest),
                true,
            ),
            (Code::Fistp_m64int, 8, true, true),
            (Code::Fisttp_m16int, 2, fits(-32768.0, 32767.0, trunc), true),
            (Code::Fisttp_m32int, 4, true, true),
            (Code::Fisttp_m64int, 8, true, true),
            (Code::Fstp_sti, 0, true, true),
        ];
        let (code, size, ok, pop) = choices[self.rng.below(choices.len() as u64) as usize];
        if !ok {
            return false;
        }
        let ops = if size == 0 {
            let i = self.rng.below(depth as u64) as usize;
            vec![Op::Reg(st(i))]
        } else {
            let addr = self.pick_addr(&MemReq::of(size));
            match self.x87_mem(addr) {
                Some(m) => vec![m],
                None => return false,
            }
        };
        if !self.emit_with(code, &ops) {
            return false;
        }
        if let [Op::Reg(r)] = ops[..] {
            // FSTP ST(i): ST(i) = ST(0), then pop.
            let i = r as usize - Register::ST0 as usize;
            self.x87.vals[depth - 1 - i] = v;
        }
        if pop {
            self.x87.vals.pop();
        }
        true
    }

    fn x87_arith(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let op = Arith::ALL[self.rng.below(6) as usize];
        let codes = op.codes();
        let form = self.rng.below(7) as usize;
        let top = self.x87.vals[depth - 1];
        let i = self.rng.below(depth as u64) as usize;
        let sti = self.x87.vals[depth - 1 - i];
        let (ops, result, target, pop) = match form {
            0..=3 => {
                let (addr, v) = self.constant([0, 1, 3, 4][form]);
                let Some(m) = self.x87_mem(addr) else {
                    return false;
                };
                (vec![m], op.apply(top, v), 0, false)
            }
            4 => (
                vec![Op::Reg(Register::ST0), Op::Reg(st(i))],
                op.apply(top, sti),
                0,
                false,
            ),
            5 => (
                vec![Op::Reg(st(i)), Op::Reg(Register::ST0)],
                op.apply(sti, top),
                i,
                false,
            ),
            _ => {
                if i == 0 {
                    return false;
                }
                (
                    vec![Op::Reg(st(i)), Op::Reg(Register::ST0)],
                    op.apply(sti, top),
                    i,
                    true,
                )
            }
        };
        let Some(r) = result else {
            return false;
        };
        if !self.emit_with(codes[form], &ops) {
            return false;
        }
        self.x87.vals[depth - 1 - target] = r;
        if pop {
            self.x87.vals.pop();
        }
        true
    }

    fn x87_unary(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let v = self.x87.vals[depth - 1];
        let (code, ops, result) = match self.rng.below(5) {
            0 => (Code::Fchs, vec![], -v),
            1 => (Code::Fabs, vec![], v.abs()),
            2 => {
                let r = v.sqrt();
                if v < 0.0 || r.mul_add(r, -v) != 0.0 || !tame(r) {
                    return false;
                }
                (Code::Fsqrt, vec![], r)
            }
            3 => (Code::Frndint, vec![], v.round_ties_even()),
            _ => {
                if depth < 2 {
                    return false;
                }
                let i = 1 + self.rng.below(depth as u64 - 1) as usize;
                let ok = self.emit_with(
                    Code::Fxch_st0_sti,
                    &[Op::Reg(Register::ST0), Op::Reg(st(i))],
                );
                if ok {
                    self.x87.vals.swap(depth - 1, depth - 1 - i);
                }
                return ok;
            }
        };
        let ok = self.emit_with(code, &ops);
        if ok {
            self.x87.vals[depth - 1] = result;
        }
        ok
    }

    fn x87_compare(&mut self) -> bool {
        let depth = self.x87.vals.len();
        let i = self.rng.below(depth as u64) as usize;
        let (code, ops, pops) = match self.rng.below(9) {
            0 => (
                Code::Fcom_st0_sti,
                vec![Op::Reg(Register::ST0), Op::Reg(st(i))],
                0,
            ),
            1 => (
                Code::Fucomp_st0_sti,
                vec![Op::Reg(Register::ST0), Op::Reg(st(i))],
                1,
            ),
            2 => (
                Code::Fcomi_st0_sti,
                vec![Op::Reg(Register::ST0), Op::Reg(st(i))],
                0,
            ),
            3 => (
                Code::Fucomip_st0_sti,
                vec![Op::Reg(Register::ST0), Op::Reg(st(i))],
                1,
            ),
            4 => (Code::Ftst, vec![], 0),
            5 => (Code::Fxam, vec![], 0),
            6 => (Code::Fnstsw_AX, vec![Op::Reg(Register::AX)], 0),
            7 if depth >= 2 => (Code::Fcompp, vec![], 2),
            _ => {
                let (addr, _) = self.constant(1);
                let Some(m) = self.x87_mem(addr) else {
                    return false;
                };
                (Code::Fcom_m64fp, vec![m], 0)
            }
        };
        if !self.emit_with(code, &ops) {
            return false;
        }
        for _ in 0..pops {
            self.x87.vals.pop();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_values_round_trip() {
        for v in [0.0, -0.0, 1.0, -2.5, 100.0, 0.25, -99.75] {
            let b = f80(v);
            assert_eq!(from_f80(&b).to_bits(), v.to_bits(), "{v}");
        }
        assert_eq!(f80(1.0), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    }

    #[test]
    fn exactness_checks_refuse_rounded_results() {
        assert_eq!(exact_add(1.5, 2.25), Some(3.75));
        assert_eq!(exact_add(2f64.powi(60), 1.0), None);
        assert_eq!(exact_mul(3.0, -0.5), Some(-1.5));
        assert_eq!(exact_div(1.0, 3.0), None);
        assert_eq!(exact_div(3.0, 0.0), None);
        assert_eq!(exact_div(-7.5, 2.5), Some(-3.0));
        assert_eq!(Arith::Subr.apply(1.0, 4.0), Some(3.0));
        assert_eq!(Arith::Divr.apply(4.0, 1.0), Some(0.25));
    }

    #[test]
    fn the_constant_page_holds_small_values() {
        let page = constant_page(&mut Rng::new(3));
        assert_eq!(page.len(), 4096);
        for i in 0..F80_ENTRIES {
            let v = from_f80(&page[F80_AT + i * 16..]);
            assert!(v.abs() <= 100.0 && (v * 4.0).fract() == 0.0);
        }
    }
}
