//! Test-only reference: executes one complete x87 instruction on the host
//! against a full guest state loaded with FRSTOR, and captures the result with
//! FNSAVE. Used to check every software path against real hardware, and the
//! host-executed arithmetic's operand plumbing (not its results, which come
//! from the same host instruction).

use core::arch::asm;

/// State handed to and returned by the host (layout fixed for the asm).
#[repr(C, align(16))]
pub struct OFrame {
    /// Memory operand area (offset 0), `[rdi]` in instruction bodies.
    pub mem: [u8; 512],
    host_env: [u8; 28],
    _p: [u8; 4],
    /// 108-byte FNSAVE image: loaded before, stored after (offset 544).
    pub img: [u8; 108],
    /// AH loaded with SAHF before the instruction (offset 652).
    pub ah_in: u8,
    /// 1 to set OF before the instruction (offset 653).
    pub of_in: u8,
    /// AH from LAHF after the instruction (offset 654).
    pub ah_out: u8,
    /// OF after the instruction (offset 655).
    pub of_out: u8,
    mxcsr: u32,
}

const _: () = {
    assert!(core::mem::offset_of!(OFrame, host_env) == 512);
    assert!(core::mem::offset_of!(OFrame, img) == 544);
    assert!(core::mem::offset_of!(OFrame, ah_in) == 652);
};

impl OFrame {
    /// A zeroed frame.
    pub fn new() -> Self {
        OFrame {
            mem: [0; 512],
            host_env: [0; 28],
            _p: [0; 4],
            img: [0; 108],
            ah_in: 2,
            of_in: 0,
            ah_out: 0,
            of_out: 0,
            mxcsr: 0,
        }
    }
}

macro_rules! orun {
    ($f:expr, $body:expr) => {{
        let f: &mut OFrame = $f;
        // SAFETY: only the exclusively borrowed frame is accessed; the x87
        // stack is declared clobbered and left empty by FNSAVE; the host
        // environment is restored by FLDENV. `sanitize` guarantees that the
        // loaded image has no pending unmasked exception, so the instruction
        // cannot trap; after it only non-waiting instructions run. FXRSTOR
        // may load XMM registers (declared clobbered) and MXCSR (saved and
        // restored around the block; tests only load valid MXCSR values).
        unsafe {
            asm!(
                "stmxcsr [rdi + 656]",
                "fnstenv [rdi + 512]",
                "frstor [rdi + 544]",
                "mov al, 0x7f",
                "add al, byte ptr [rdi + 653]",
                "mov ah, byte ptr [rdi + 652]",
                "sahf",
                $body,
                "lahf",
                "seto byte ptr [rdi + 655]",
                "mov byte ptr [rdi + 654], ah",
                "fnsave [rdi + 544]",
                "fldenv [rdi + 512]",
                "ldmxcsr [rdi + 656]",
                in("rdi") core::ptr::from_mut(f),
                out("rax") _,
                out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack),
            );
        }
    }};
}

/// Clears ES/B and every unmasked exception flag so FRSTOR creates no
/// pending exception.
fn sanitize(f: &mut OFrame) {
    let fcw = u16::from_le_bytes([f.img[0], f.img[1]]);
    let mut fsw = u16::from_le_bytes([f.img[4], f.img[5]]);
    fsw &= !0x8080;
    fsw &= !(!fcw & 0x3F);
    f.img[4..6].copy_from_slice(&fsw.to_le_bytes());
}

macro_rules! plain_ops {
    ($( $v:ident = $body:literal, )*) => {
        /// Instructions without a register index.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Plain { $( $v, )* }
        /// Executes `op` on the frame.
        pub fn run_plain(op: Plain, f: &mut OFrame) {
            sanitize(f);
            match op { $( Plain::$v => orun!(f, $body), )* }
        }
    };
}

macro_rules! reg_ops {
    ($( $v:ident = ($pre:literal, $post:literal), )*) => {
        /// Instructions with a register index `ST(i)`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum RegOp { $( $v, )* }
        /// Executes `op` with index `i & 7` on the frame.
        pub fn run_reg(op: RegOp, i: usize, f: &mut OFrame) {
            sanitize(f);
            match op {
                $( RegOp::$v => match i & 7 {
                    0 => orun!(f, concat!($pre, "0", $post)),
                    1 => orun!(f, concat!($pre, "1", $post)),
                    2 => orun!(f, concat!($pre, "2", $post)),
                    3 => orun!(f, concat!($pre, "3", $post)),
                    4 => orun!(f, concat!($pre, "4", $post)),
                    5 => orun!(f, concat!($pre, "5", $post)),
                    6 => orun!(f, concat!($pre, "6", $post)),
                    _ => orun!(f, concat!($pre, "7", $post)),
                }, )*
            }
        }
    };
}

plain_ops! {
    FldM32 = "fld dword ptr [rdi]",
    FldM64 = "fld qword ptr [rdi]",
    FldM80 = "fld tbyte ptr [rdi]",
    FildM16 = "fild word ptr [rdi]",
    FildM32 = "fild dword ptr [rdi]",
    FildM64 = "fild qword ptr [rdi]",
    Fbld = "fbld tbyte ptr [rdi]",
    FstM32 = "fst dword ptr [rdi]",
    FstpM32 = "fstp dword ptr [rdi]",
    FstM64 = "fst qword ptr [rdi]",
    FstpM64 = "fstp qword ptr [rdi]",
    FstpM80 = "fstp tbyte ptr [rdi]",
    FistM16 = "fist word ptr [rdi]",
    FistpM16 = "fistp word ptr [rdi]",
    FistM32 = "fist dword ptr [rdi]",
    FistpM32 = "fistp dword ptr [rdi]",
    FistpM64 = "fistp qword ptr [rdi]",
    FisttpM16 = "fisttp word ptr [rdi]",
    FisttpM32 = "fisttp dword ptr [rdi]",
    FisttpM64 = "fisttp qword ptr [rdi]",
    Fbstp = "fbstp tbyte ptr [rdi]",
    Fincstp = "fincstp",
    Fdecstp = "fdecstp",
    Fninit = "fninit",
    Fnclex = "fnclex",
    Fldcw = "fldcw word ptr [rdi]",
    Fnstcw = "fnstcw word ptr [rdi]",
    Fnstsw = "fnstsw word ptr [rdi]",
    Fnstenv = "fnstenv [rdi]",
    Fldenv = "fldenv [rdi]",
    Fnsave = "fnsave [rdi]",
    Frstor = "frstor [rdi]",
    Fxsave = "fxsave [rdi]",
    Fxsave64 = "fxsave64 [rdi]",
    Fxrstor = "fxrstor [rdi]",
    Fxrstor64 = "fxrstor64 [rdi]",
    Fnstenv16 = ".byte 0x66\n fnstenv [rdi]",
    Fldenv16 = ".byte 0x66\n fldenv [rdi]",
    Fnsave16 = ".byte 0x66\n fnsave [rdi]",
    Frstor16 = ".byte 0x66\n frstor [rdi]",
    FldcwFnstenv = "fldcw word ptr [rdi]\n fnstenv [rdi + 16]",
    Fcompp = "fcompp",
    Fucompp = "fucompp",
    FaddM32 = "fadd dword ptr [rdi]",
    FsubrM64 = "fsubr qword ptr [rdi]",
    FidivI16 = "fidiv word ptr [rdi]",
    FimulI32 = "fimul dword ptr [rdi]",
    FcomM32 = "fcom dword ptr [rdi]",
    FcompM64 = "fcomp qword ptr [rdi]",
    FicompI16 = "ficomp word ptr [rdi]",
    Ftst = "ftst",
    Fxam = "fxam",
    Fchs = "fchs",
    Fabs = "fabs",
    Fsqrt = "fsqrt",
    Frndint = "frndint",
    F2xm1 = "f2xm1",
    Fsin = "fsin",
    Fcos = "fcos",
    Fsincos = "fsincos",
    Fptan = "fptan",
    Fxtract = "fxtract",
    Fprem = "fprem",
    Fprem1 = "fprem1",
    Fscale = "fscale",
    Fyl2x = "fyl2x",
    Fyl2xp1 = "fyl2xp1",
    Fpatan = "fpatan",
    Fld1 = "fld1",
    Fldl2t = "fldl2t",
    Fldl2e = "fldl2e",
    Fldpi = "fldpi",
    Fldlg2 = "fldlg2",
    Fldln2 = "fldln2",
    Fldz = "fldz",
}

reg_ops! {
    FldSt = ("fld st(", ")"),
    FstSt = ("fst st(", ")"),
    FstpSt = ("fstp st(", ")"),
    Fxch = ("fxch st(", ")"),
    Ffree = ("ffree st(", ")"),
    Ffreep = (".byte 0xDF, 0xC0+", ""),
    Fcmovb = ("fcmovb st(0), st(", ")"),
    Fcmove = ("fcmove st(0), st(", ")"),
    Fcmovbe = ("fcmovbe st(0), st(", ")"),
    Fcmovu = ("fcmovu st(0), st(", ")"),
    Fcmovnb = ("fcmovnb st(0), st(", ")"),
    Fcmovne = ("fcmovne st(0), st(", ")"),
    Fcmovnbe = ("fcmovnbe st(0), st(", ")"),
    Fcmovnu = ("fcmovnu st(0), st(", ")"),
    FaddSt0 = (".byte 0xD8, 0xC0+", ""),
    FmulSt0 = (".byte 0xD8, 0xC8+", ""),
    FsubSt0 = (".byte 0xD8, 0xE0+", ""),
    FsubrSt0 = (".byte 0xD8, 0xE8+", ""),
    FdivSt0 = (".byte 0xD8, 0xF0+", ""),
    FdivrSt0 = (".byte 0xD8, 0xF8+", ""),
    FaddSti = (".byte 0xDC, 0xC0+", ""),
    FmulSti = (".byte 0xDC, 0xC8+", ""),
    FsubSti = (".byte 0xDC, 0xE8+", ""),
    FsubrSti = (".byte 0xDC, 0xE0+", ""),
    FdivSti = (".byte 0xDC, 0xF8+", ""),
    FdivrSti = (".byte 0xDC, 0xF0+", ""),
    Faddp = (".byte 0xDE, 0xC0+", ""),
    Fmulp = (".byte 0xDE, 0xC8+", ""),
    Fsubp = (".byte 0xDE, 0xE8+", ""),
    Fsubrp = (".byte 0xDE, 0xE0+", ""),
    Fdivp = (".byte 0xDE, 0xF8+", ""),
    Fdivrp = (".byte 0xDE, 0xF0+", ""),
    Fcom = (".byte 0xD8, 0xD0+", ""),
    Fcomp = (".byte 0xD8, 0xD8+", ""),
    Fucom = (".byte 0xDD, 0xE0+", ""),
    Fucomp = (".byte 0xDD, 0xE8+", ""),
    Fcomi = (".byte 0xDB, 0xF0+", ""),
    Fcomip = (".byte 0xDF, 0xF0+", ""),
    Fucomi = (".byte 0xDB, 0xE8+", ""),
    Fucomip = (".byte 0xDF, 0xE8+", ""),
}
