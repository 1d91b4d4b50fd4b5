//! Exceptions raised while executing an instruction.

use std::num::NonZeroU64;

/// An exception to deliver through the IDT (or IVT in real mode): its vector and, for the
/// vectors that have one, error code. Packed into eight bytes so that `Result<T, Exception>`
/// travels in registers on the interpreter's hot paths; a #PF's address is kept by the CPU
/// until the fault is delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exception(NonZeroU64);

/// What executing guest code can fail with.
pub type Result<T> = std::result::Result<T, Exception>;

/// Always set, so that vector 0 with no error code is not zero.
const PRESENT: u64 = 1 << 15;
/// Set when there is an error code (in bits 32..64).
const HAS_ERROR: u64 = 1 << 16;

impl std::fmt::Debug for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error() {
            Some(e) => write!(f, "Exception({}, {e:#x})", self.vector()),
            None => write!(f, "Exception({})", self.vector()),
        }
    }
}

/// #DE divide error.
pub const DE: u8 = 0;
/// #DB debug.
pub const DB: u8 = 1;
/// NMI.
pub const NMI: u8 = 2;
/// #BP breakpoint.
pub const BP: u8 = 3;
/// #OF overflow.
pub const OF: u8 = 4;
/// #BR bound range.
pub const BR: u8 = 5;
/// #UD invalid opcode.
pub const UD: u8 = 6;
/// #NM device not available.
pub const NM: u8 = 7;
/// #DF double fault.
pub const DF: u8 = 8;
/// #TS invalid TSS.
pub const TS: u8 = 10;
/// #NP segment not present.
pub const NP: u8 = 11;
/// #SS stack fault.
pub const SS: u8 = 12;
/// #GP general protection.
pub const GP: u8 = 13;
/// #PF page fault.
pub const PF: u8 = 14;
/// #MF x87 floating-point error.
pub const MF: u8 = 16;
/// #AC alignment check.
pub const AC: u8 = 17;
/// #XM SIMD floating-point exception.
pub const XM: u8 = 19;

impl Exception {
    /// An exception without error code.
    pub const fn new(vector: u8) -> Self {
        match NonZeroU64::new(PRESENT | vector as u64) {
            Some(v) => Exception(v),
            None => unreachable!(),
        }
    }

    /// An exception with an error code.
    pub const fn with_error(vector: u8, error: u32) -> Self {
        match NonZeroU64::new(PRESENT | HAS_ERROR | vector as u64 | (error as u64) << 32) {
            Some(v) => Exception(v),
            None => unreachable!(),
        }
    }

    /// The vector.
    #[inline]
    pub const fn vector(&self) -> u8 {
        self.0.get() as u8
    }

    /// The error code, if the exception has one.
    #[inline]
    pub const fn error(&self) -> Option<u32> {
        if self.0.get() & HAS_ERROR != 0 {
            Some((self.0.get() >> 32) as u32)
        } else {
            None
        }
    }

    /// #UD.
    pub const fn ud() -> Self {
        Self::new(UD)
    }

    /// #GP with `error`.
    pub const fn gp(error: u32) -> Self {
        Self::with_error(GP, error)
    }

    /// #GP(0).
    pub const fn gp0() -> Self {
        Self::gp(0)
    }

    /// #SS with `error`.
    pub const fn ss(error: u32) -> Self {
        Self::with_error(SS, error)
    }

    /// #NP with `error`.
    pub const fn np(error: u32) -> Self {
        Self::with_error(NP, error)
    }

    /// #TS with `error`.
    pub const fn ts(error: u32) -> Self {
        Self::with_error(TS, error)
    }

    /// #DE.
    pub const fn de() -> Self {
        Self::new(DE)
    }

    /// #NM.
    pub const fn nm() -> Self {
        Self::new(NM)
    }

    /// #PF with page-fault error code `error` (the address is recorded by the CPU).
    pub const fn pf(error: u32) -> Self {
        Self::with_error(PF, error)
    }

    /// Whether this is a contributory exception (for double-fault rules).
    pub const fn is_contributory(&self) -> bool {
        matches!(self.vector(), DE | TS | NP | SS | GP)
    }
}

/// Whether `vector` pushes an error code when raised as an exception.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, DF | TS | NP | SS | GP | PF | AC | 21 | 29 | 30)
}
