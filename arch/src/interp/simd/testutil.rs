//! Test-only support: a xorshift PRNG, interesting-value generators and the
//! `hw!`/`hw_mmx!` macros that run one real host instruction on register values
//! (the reference the pure functions are checked against).

/// Register file image that the reference instructions run on: `xmm1`, `xmm2`
/// and `xmm0` are loaded from and stored back to `x1`, `x2`, `x0`; `rax`,
/// `rdx`, `rcx` from/to `g[0]`, `g[1]`, `g[2]`; `g[3]` receives RFLAGS;
/// `mm1`/`mm2` use `g[0]`/`g[1]`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Regs {
    pub x1: u128,
    pub x2: u128,
    pub x0: u128,
    pub g: [u64; 4],
}

impl Regs {
    /// Registers with `xmm1 = a`, `xmm2 = b` and everything else zero.
    pub fn xmm(a: u128, b: u128) -> Regs {
        Regs {
            x1: a,
            x2: b,
            ..Regs::default()
        }
    }
}

/// Defines `fn $name(r: &mut Regs)` (or `fn $name<const I: u8>` with `{i}` in
/// the template bound to `I`) that executes the instruction text on the
/// registers of `r` (see [`Regs`]).
macro_rules! hw {
    ($name:ident, $insn:literal) => {
        fn $name(r: &mut Regs) {
            hw!(@body r, $insn,);
        }
    };
    ($name:ident<I>, $insn:literal) => {
        fn $name<const I: u8>(r: &mut Regs) {
            hw!(@body r, $insn, i = const I,);
        }
    };
    (@body $r:ident, $insn:literal, $($args:tt)*) => {
        // SAFETY: the asm only reads and writes the `Regs` that `$r` exclusively
        // borrows, and declares every register it modifies as clobbered. The
        // tests that call it first check that the host supports the instruction.
        unsafe {
            core::arch::asm!(
                "movdqu xmm0, [{p} + 32]",
                "movdqu xmm1, [{p}]",
                "movdqu xmm2, [{p} + 16]",
                "mov rax, [{p} + 48]",
                "mov rdx, [{p} + 56]",
                "mov rcx, [{p} + 64]",
                $insn,
                "movdqu [{p} + 32], xmm0",
                "movdqu [{p}], xmm1",
                "movdqu [{p} + 16], xmm2",
                "mov [{p} + 48], rax",
                "mov [{p} + 56], rdx",
                "mov [{p} + 64], rcx",
                "pushfq",
                "pop qword ptr [{p} + 72]",
                p = in(reg) core::ptr::from_mut($r),
                $($args)*
                out("xmm0") _, out("xmm1") _, out("xmm2") _,
                out("rax") _, out("rcx") _, out("rdx") _,
            );
        }
    };
}
pub(super) use hw;

/// Like [`hw!`] for MMX instructions: `mm1`, `mm2` and `rax` are loaded from
/// and stored to `g[0]`, `g[1]` and `g[2]`, and EMMS runs afterwards.
macro_rules! hw_mmx {
    ($name:ident, $insn:literal) => {
        fn $name(r: &mut Regs) {
            hw_mmx!(@body r, $insn,);
        }
    };
    ($name:ident<I>, $insn:literal) => {
        fn $name<const I: u8>(r: &mut Regs) {
            hw_mmx!(@body r, $insn, i = const I,);
        }
    };
    (@body $r:ident, $insn:literal, $($args:tt)*) => {
        // SAFETY: as for `hw!`; the MMX registers are declared clobbered and
        // EMMS leaves the x87 tag word empty, as compiled code expects.
        unsafe {
            core::arch::asm!(
                "movq mm1, [{p} + 48]",
                "movq mm2, [{p} + 56]",
                "mov rax, [{p} + 64]",
                $insn,
                "mov [{p} + 64], rax",
                "movq [{p} + 48], mm1",
                "movq [{p} + 56], mm2",
                "emms",
                p = in(reg) core::ptr::from_mut($r),
                $($args)*
                out("mm1") _, out("mm2") _, out("rax") _,
                options(nostack),
            );
        }
    };
}
pub(super) use hw_mmx;

/// Xorshift64* pseudo-random generator (deterministic, seedable), for the SIMD and x87
/// tests.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random value below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A random bit.
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// 128 random bits.
    pub fn u128(&mut self) -> u128 {
        u128::from(self.next()) | (u128::from(self.next()) << 64)
    }

    /// A vector whose 16-bit chunks are random or boundary patterns
    /// (0, all-ones, sign bits, byte maxima, ...).
    pub fn int_vec(&mut self) -> u128 {
        const SPECIAL: [u16; 14] = [
            0, 0xffff, 0x8000, 0x7fff, 0x0080, 0x007f, 0x00ff, 0xff00, 0x8080, 0x7f7f, 1, 0xfffe,
            0x0101, 0x8001,
        ];
        let mode = self.below(4);
        (0..8).fold(0u128, |acc, i| {
            let chunk = match mode {
                0 => self.next() as u16,
                _ if self.below(3) == 0 => SPECIAL[self.below(SPECIAL.len() as u64) as usize],
                _ => self.next() as u16,
            };
            acc | (u128::from(chunk) << (16 * i))
        })
    }

    /// A pair of integer vectors where `b` often shares bytes, words or
    /// dwords with `a` (so that equality cases occur).
    pub fn int_pair(&mut self) -> (u128, u128) {
        let a = self.int_vec();
        let mut b = self.int_vec();
        if self.below(2) == 0 {
            let w = [8u32, 16, 32, 64][self.below(4) as usize];
            for i in 0..128 / w {
                if self.below(2) == 0 {
                    let m = (u128::MAX >> (128 - w)) << (w * i);
                    b = (b & !m) | (a & m);
                }
            }
        }
        (a, b)
    }
}

/// Fails the test with a description of the first mismatch.
#[track_caller]
pub(super) fn expect_eq<T: PartialEq + core::fmt::LowerHex>(what: &str, got: T, want: T) {
    if got != want {
        panic!("{what}: got {got:#x}, want {want:#x}");
    }
}

/// A reference instruction without an immediate.
pub(super) type RefFn = fn(&mut Regs);
/// Reference instructions for every imm8: `table[imm >> 4][imm & 15]`.
pub(super) type RefTable = [[RefFn; 16]; 16];

/// `refs! { name, hw_macro; Mnemonic = "insn text"; ... }` defines module
/// `name` with one reference function per line (named after the mnemonic) and
/// `name::TABLE: &[(Mnemonic, RefFn)]`. With `name<I>` the instruction text
/// takes `{i}` and the table holds a [`RefTable`] per mnemonic.
macro_rules! refs {
    ($module:ident, $hw:ident; $($m:ident = $insn:literal;)*) => {
        #[allow(non_snake_case)]
        mod $module {
            use super::*;
            $( $hw!($m, $insn); )*
            pub(super) const TABLE: &[(Mnemonic, RefFn)] = &[$((Mnemonic::$m, $m)),*];
        }
    };
    ($module:ident<I>, $hw:ident; $($m:ident = $insn:literal;)*) => {
        #[allow(non_snake_case)]
        mod $module {
            use super::*;
            $( $hw!($m<I>, $insn); )*
            pub(super) const TABLE: &[(Mnemonic, RefTable)] = &[$((Mnemonic::$m, imm_table!($m))),*];
        }
    };
}
pub(super) use refs;
