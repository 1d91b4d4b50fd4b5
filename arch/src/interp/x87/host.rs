//! Execution of single x87 instructions on the host FPU.
//!
//! This is the only module containing `unsafe` code. Every host-executed
//! instruction runs inside one `asm!` block that:
//!
//! 1. saves the host x87 environment (`FNSTENV`),
//! 2. loads (`FRSTOR`) a state holding the guest control word (exception
//!    masks, precision and rounding control exactly as the guest has them),
//!    the guest condition codes, no exception flags, up to two operands as
//!    ST(0)/ST(1) tagged exactly as the guest's operand registers (so empty
//!    operands underflow), and ST(7) in use when the guest's is (so pushes
//!    overflow like the guest's would),
//! 3. executes the one instruction,
//! 4. captures the complete resulting FPU state with the non-waiting `FNSAVE`
//!    (registers, tags, TOP, status word including C0-C3, exception flags, ES)
//!    together with the arithmetic flags (`LAHF`, `SETO`), and
//! 5. restores the host environment (`FLDENV`).
//!
//! Because the host runs with the guest's own exception masks, the host also
//! produces the exact unmasked-exception responses (destination left
//! unchanged, biased results for unmasked overflow/underflow, no pop, ...).
//! A pending unmasked exception never traps on the host: after the instruction
//! only non-waiting instructions (`LAHF`, `SETO`, `FNSAVE`) run, and `FNSAVE`
//! reinitialises the FPU before the host environment is reloaded.

use core::arch::asm;

use super::state::F80;

/// Everything one host execution reads and writes, laid out for the asm
/// (offsets are checked at compile time below).
#[repr(C, align(16))]
struct Frame {
    /// Memory operand (offset 0), addressed as `[rdi]` by instruction bodies.
    mem: [u8; 16],
    /// Saved host environment, 28-byte protected-mode format (offset 16).
    host_env: [u8; 28],
    _pad0: [u8; 4],
    /// 108-byte `FRSTOR` image of the guest window (offset 48).
    input: [u8; 108],
    /// AH after `LAHF` (offset 156).
    ah: u8,
    /// OF after `SETO` (offset 157).
    of: u8,
    _pad1: [u8; 2],
    /// `FNSAVE` image after the instruction (offset 160).
    out: [u8; 108],
}

const _: () = {
    assert!(core::mem::offset_of!(Frame, mem) == 0);
    assert!(core::mem::offset_of!(Frame, host_env) == 16);
    assert!(core::mem::offset_of!(Frame, input) == 48);
    assert!(core::mem::offset_of!(Frame, ah) == 156);
    assert!(core::mem::offset_of!(Frame, of) == 157);
    assert!(core::mem::offset_of!(Frame, out) == 160);
};

/// One asm block executing `$body` on the state loaded from `$f.input`.
macro_rules! exec {
    ($body:literal, $f:expr) => {{
        let f: &mut Frame = $f;
        // SAFETY: the block only accesses the `Frame` that `rdi` points to
        // (exclusively borrowed for the duration; every access is within its
        // 272 bytes). All x87 registers are declared clobbered, so the x87
        // stack is empty on entry; it is empty again on exit because FNSAVE
        // reinitialises the FPU, and FLDENV then restores the host
        // control/status words saved by FNSTENV. No waiting x87 instruction
        // executes while an unmasked exception is pending: the FRSTOR image
        // has no exception flags set (built by `run`), and after `$body` only
        // LAHF, SETO, MOV and the non-waiting FNSAVE run. RAX is declared
        // clobbered (LAHF), the arithmetic flags are not preserved (the
        // default), and the stack pointer is not used.
        unsafe {
            asm!(
                "fnstenv [rdi + 16]",
                "frstor [rdi + 48]",
                $body,
                "lahf",
                "seto byte ptr [rdi + 157]",
                "mov byte ptr [rdi + 156], ah",
                "fnsave [rdi + 160]",
                "fldenv [rdi + 16]",
                in("rdi") core::ptr::from_mut(f),
                out("rax") _,
                out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                options(nostack),
            );
        }
    }};
}

macro_rules! host_ops {
    ($( $(#[$doc:meta])* $v:ident = ($n:tt, $body:literal), )*) => {
        /// An x87 instruction the host can execute. Register operands are the
        /// host's ST(0) and ST(1) (see [`HostIn::st`]); memory operands come
        /// from [`HostIn::mem`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum HostOp { $( $(#[$doc])* $v, )* }

        impl HostOp {
            /// Number of register operands the instruction reads (0, 1 or 2):
            /// `HostIn::st[0..arity]` are loaded as ST(0), ST(1).
            pub const fn arity(self) -> usize {
                match self { $( HostOp::$v => $n, )* }
            }
        }

        fn dispatch(op: HostOp, f: &mut Frame) {
            match op { $( HostOp::$v => exec!($body, f), )* }
        }
    };
}

host_ops! {
    /// `FADD ST(0), ST(1)`.
    AddSt0St1 = (2, ".byte 0xD8, 0xC1"),
    /// `FMUL ST(0), ST(1)`.
    MulSt0St1 = (2, ".byte 0xD8, 0xC9"),
    /// `FSUB ST(0), ST(1)`: ST(0) = ST(0) - ST(1).
    SubSt0St1 = (2, ".byte 0xD8, 0xE1"),
    /// `FSUBR ST(0), ST(1)`: ST(0) = ST(1) - ST(0).
    SubrSt0St1 = (2, ".byte 0xD8, 0xE9"),
    /// `FDIV ST(0), ST(1)`: ST(0) = ST(0) / ST(1).
    DivSt0St1 = (2, ".byte 0xD8, 0xF1"),
    /// `FDIVR ST(0), ST(1)`: ST(0) = ST(1) / ST(0).
    DivrSt0St1 = (2, ".byte 0xD8, 0xF9"),
    /// `FADD ST(1), ST(0)`.
    AddSt1St0 = (2, ".byte 0xDC, 0xC1"),
    /// `FMUL ST(1), ST(0)`.
    MulSt1St0 = (2, ".byte 0xDC, 0xC9"),
    /// `FSUB ST(1), ST(0)`: ST(1) = ST(1) - ST(0).
    SubSt1St0 = (2, ".byte 0xDC, 0xE9"),
    /// `FSUBR ST(1), ST(0)`: ST(1) = ST(0) - ST(1).
    SubrSt1St0 = (2, ".byte 0xDC, 0xE1"),
    /// `FDIV ST(1), ST(0)`: ST(1) = ST(1) / ST(0).
    DivSt1St0 = (2, ".byte 0xDC, 0xF9"),
    /// `FDIVR ST(1), ST(0)`: ST(1) = ST(0) / ST(1).
    DivrSt1St0 = (2, ".byte 0xDC, 0xF1"),
    /// `FADDP ST(1), ST(0)`.
    AddpSt1St0 = (2, ".byte 0xDE, 0xC1"),
    /// `FMULP ST(1), ST(0)`.
    MulpSt1St0 = (2, ".byte 0xDE, 0xC9"),
    /// `FSUBP ST(1), ST(0)`: ST(1) = ST(1) - ST(0), pop.
    SubpSt1St0 = (2, ".byte 0xDE, 0xE9"),
    /// `FSUBRP ST(1), ST(0)`: ST(1) = ST(0) - ST(1), pop.
    SubrpSt1St0 = (2, ".byte 0xDE, 0xE1"),
    /// `FDIVP ST(1), ST(0)`: ST(1) = ST(1) / ST(0), pop.
    DivpSt1St0 = (2, ".byte 0xDE, 0xF9"),
    /// `FDIVRP ST(1), ST(0)`: ST(1) = ST(0) / ST(1), pop.
    DivrpSt1St0 = (2, ".byte 0xDE, 0xF1"),
    /// `FADD m32fp`.
    AddM32 = (1, "fadd dword ptr [rdi]"),
    /// `FMUL m32fp`.
    MulM32 = (1, "fmul dword ptr [rdi]"),
    /// `FSUB m32fp`.
    SubM32 = (1, "fsub dword ptr [rdi]"),
    /// `FSUBR m32fp`.
    SubrM32 = (1, "fsubr dword ptr [rdi]"),
    /// `FDIV m32fp`.
    DivM32 = (1, "fdiv dword ptr [rdi]"),
    /// `FDIVR m32fp`.
    DivrM32 = (1, "fdivr dword ptr [rdi]"),
    /// `FADD m64fp`.
    AddM64 = (1, "fadd qword ptr [rdi]"),
    /// `FMUL m64fp`.
    MulM64 = (1, "fmul qword ptr [rdi]"),
    /// `FSUB m64fp`.
    SubM64 = (1, "fsub qword ptr [rdi]"),
    /// `FSUBR m64fp`.
    SubrM64 = (1, "fsubr qword ptr [rdi]"),
    /// `FDIV m64fp`.
    DivM64 = (1, "fdiv qword ptr [rdi]"),
    /// `FDIVR m64fp`.
    DivrM64 = (1, "fdivr qword ptr [rdi]"),
    /// `FIADD m16int`.
    AddI16 = (1, "fiadd word ptr [rdi]"),
    /// `FIMUL m16int`.
    MulI16 = (1, "fimul word ptr [rdi]"),
    /// `FISUB m16int`.
    SubI16 = (1, "fisub word ptr [rdi]"),
    /// `FISUBR m16int`.
    SubrI16 = (1, "fisubr word ptr [rdi]"),
    /// `FIDIV m16int`.
    DivI16 = (1, "fidiv word ptr [rdi]"),
    /// `FIDIVR m16int`.
    DivrI16 = (1, "fidivr word ptr [rdi]"),
    /// `FIADD m32int`.
    AddI32 = (1, "fiadd dword ptr [rdi]"),
    /// `FIMUL m32int`.
    MulI32 = (1, "fimul dword ptr [rdi]"),
    /// `FISUB m32int`.
    SubI32 = (1, "fisub dword ptr [rdi]"),
    /// `FISUBR m32int`.
    SubrI32 = (1, "fisubr dword ptr [rdi]"),
    /// `FIDIV m32int`.
    DivI32 = (1, "fidiv dword ptr [rdi]"),
    /// `FIDIVR m32int`.
    DivrI32 = (1, "fidivr dword ptr [rdi]"),
    /// `FCOM ST(1)`.
    ComSt1 = (2, ".byte 0xD8, 0xD1"),
    /// `FCOMP ST(1)`.
    ComPSt1 = (2, ".byte 0xD8, 0xD9"),
    /// `FCOMPP`.
    ComPP = (2, ".byte 0xDE, 0xD9"),
    /// `FUCOM ST(1)`.
    UcomSt1 = (2, ".byte 0xDD, 0xE1"),
    /// `FUCOMP ST(1)`.
    UcomPSt1 = (2, ".byte 0xDD, 0xE9"),
    /// `FUCOMPP`.
    UcomPP = (2, ".byte 0xDA, 0xE9"),
    /// `FCOMI ST(0), ST(1)`.
    ComiSt1 = (2, ".byte 0xDB, 0xF1"),
    /// `FCOMIP ST(0), ST(1)`.
    ComiPSt1 = (2, ".byte 0xDF, 0xF1"),
    /// `FUCOMI ST(0), ST(1)`.
    UcomiSt1 = (2, ".byte 0xDB, 0xE9"),
    /// `FUCOMIP ST(0), ST(1)`.
    UcomiPSt1 = (2, ".byte 0xDF, 0xE9"),
    /// `FCOM m32fp`.
    ComM32 = (1, "fcom dword ptr [rdi]"),
    /// `FCOMP m32fp`.
    ComPM32 = (1, "fcomp dword ptr [rdi]"),
    /// `FCOM m64fp`.
    ComM64 = (1, "fcom qword ptr [rdi]"),
    /// `FCOMP m64fp`.
    ComPM64 = (1, "fcomp qword ptr [rdi]"),
    /// `FICOM m16int`.
    IcomI16 = (1, "ficom word ptr [rdi]"),
    /// `FICOMP m16int`.
    IcomPI16 = (1, "ficomp word ptr [rdi]"),
    /// `FICOM m32int`.
    IcomI32 = (1, "ficom dword ptr [rdi]"),
    /// `FICOMP m32int`.
    IcomPI32 = (1, "ficomp dword ptr [rdi]"),
    /// `FTST`.
    Tst = (1, "ftst"),
    /// `FXAM`.
    Xam = (1, "fxam"),
    /// `FCHS`.
    Chs = (1, "fchs"),
    /// `FABS`.
    Abs = (1, "fabs"),
    /// `FSQRT`.
    Sqrt = (1, "fsqrt"),
    /// `FRNDINT`.
    Rndint = (1, "frndint"),
    /// `F2XM1`.
    F2xm1 = (1, "f2xm1"),
    /// `FSIN`.
    Sin = (1, "fsin"),
    /// `FCOS`.
    Cos = (1, "fcos"),
    /// `FSINCOS` (pushes).
    Sincos = (1, "fsincos"),
    /// `FPTAN` (pushes).
    Ptan = (1, "fptan"),
    /// `FXTRACT` (pushes).
    Xtract = (1, "fxtract"),
    /// `FPREM`.
    Prem = (2, "fprem"),
    /// `FPREM1`.
    Prem1 = (2, "fprem1"),
    /// `FSCALE`.
    Scale = (2, "fscale"),
    /// `FYL2X` (pops).
    Yl2x = (2, "fyl2x"),
    /// `FYL2XP1` (pops).
    Yl2xp1 = (2, "fyl2xp1"),
    /// `FPATAN` (pops).
    Patan = (2, "fpatan"),
    /// `FLD1`.
    Ld1 = (0, "fld1"),
    /// `FLDL2T`.
    Ldl2t = (0, "fldl2t"),
    /// `FLDL2E`.
    Ldl2e = (0, "fldl2e"),
    /// `FLDPI`.
    Ldpi = (0, "fldpi"),
    /// `FLDLG2`.
    Ldlg2 = (0, "fldlg2"),
    /// `FLDLN2`.
    Ldln2 = (0, "fldln2"),
    /// `FLDZ`.
    Ldz = (0, "fldz"),
}

/// Input of one host execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostIn {
    /// Guest control word, used unchanged (masks, precision, rounding).
    pub fcw: u16,
    /// Guest status word; only C0-C3 are used (exception flags start clear).
    pub fsw: u16,
    /// Register operands: `st[0]` becomes ST(0), `st[1]` ST(1).
    pub st: [F80; 2],
    /// Which register operands are empty in the guest (tag "empty").
    pub empty: [bool; 2],
    /// Whether the guest's ST(7) is in use (a push then overflows).
    pub st7_full: bool,
    /// Memory operand (little-endian, as it is in guest memory).
    pub mem: [u8; 8],
}

/// Host FPU state right after the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostOut {
    /// Status word after the instruction (C0-C3, exception flags, SF, ES/B);
    /// its TOP field is the host's and has no meaning for the guest.
    pub fsw: u16,
    /// Net stack movement: +1 for a push, -1/-2 for pops, 0 otherwise.
    pub delta: i8,
    /// ST(0)..ST(7) after the instruction; popped registers are ST(8-k)..ST(7).
    pub st: [F80; 8],
    /// Bit i set: ST(i) is in use after the instruction.
    pub valid: u8,
    /// Arithmetic flags after the instruction in `LAHF` layout
    /// (bit 7 SF, 6 ZF, 4 AF, 2 PF, 0 CF), plus OF in bit 11 (its EFLAGS position).
    pub eflags: u16,
}

/// Executes `op` on the host FPU with the operands and control settings of
/// `input` and returns the resulting state. Never fails and never leaves the
/// host FPU state changed.
pub fn run(op: HostOp, input: &HostIn) -> HostOut {
    let n = op.arity();
    let top_before = (8 - n) & 7;
    let mut f = Frame {
        mem: [0; 16],
        host_env: [0; 28],
        _pad0: [0; 4],
        input: [0; 108],
        ah: 0,
        of: 0,
        _pad1: [0; 2],
        out: [0; 108],
    };
    f.mem[..8].copy_from_slice(&input.mem);
    // 32-bit protected-mode FRSTOR image: the guest control word, the guest
    // condition codes with TOP so that ST(0..n) are the operands, no exception
    // flags, tags "empty" except for present operands and an occupied ST(7).
    let mut tags = 0xFFFFu16;
    for k in 0..n.min(2) {
        if !input.empty[k] {
            tags &= !(3 << (2 * ((top_before + k) & 7)));
        }
        f.input[28 + 10 * k..38 + 10 * k].copy_from_slice(&input.st[k]);
    }
    if input.st7_full {
        tags &= !(3 << (2 * ((top_before + 7) & 7)));
        f.input[98..108].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0x3F]);
    }
    let fsw = (input.fsw & 0x4700) | ((top_before as u16) << 11);
    f.input[0..2].copy_from_slice(&input.fcw.to_le_bytes());
    f.input[4..6].copy_from_slice(&fsw.to_le_bytes());
    f.input[8..10].copy_from_slice(&tags.to_le_bytes());
    dispatch(op, &mut f);

    let fsw = u16::from_le_bytes([f.out[4], f.out[5]]);
    let tags = u16::from_le_bytes([f.out[8], f.out[9]]);
    let top = usize::from((fsw >> 11) & 7);
    let mut st = [[0u8; 10]; 8];
    let mut valid = 0u8;
    for (i, reg) in st.iter_mut().enumerate() {
        reg.copy_from_slice(&f.out[28 + 10 * i..38 + 10 * i]);
        if (tags >> (2 * ((top + i) & 7))) & 3 != 3 {
            valid |= 1 << i;
        }
    }
    let moved = (top_before + 8 - top) & 7;
    let delta = if moved <= 2 {
        moved as i8
    } else {
        moved as i8 - 8
    };
    HostOut {
        fsw,
        delta,
        st,
        valid,
        eflags: u16::from(f.ah) | (u16::from(f.of & 1) << 11),
    }
}

#[cfg(test)]
pub(crate) mod oracle;
