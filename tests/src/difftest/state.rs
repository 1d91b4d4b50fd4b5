//! The architectural state a case starts from (derived from its seed) and the state a backend
//! ends in.

use kvm_bindings::{kvm_fpu, kvm_regs};

use super::gen::Groups;
use super::layout::{self, Memory};
use super::rng::Rng;

/// Register indices in `kvm_regs` order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
/// RSP.
pub const RSP: usize = 4;
/// The data-area base register, never written by generated code.
pub const BASE: usize = 14;
/// The index register, never written by generated code.
pub const INDEX: usize = 15;
/// Value of the base register: the middle of the data area.
pub const BASE_VALUE: u64 = layout::DATA_BASE + 0x2000;

/// RFLAGS bits the initial state randomises: CF, PF, AF, ZF, SF, OF and DF.
pub const RANDOM_FLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800 | 0x400;

/// Everything a case starts with. Derived from the case seed alone; the derivation is part of
/// the corpus format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialState {
    /// RAX..R15 (RSP is the stack pointer after the prologue's `popfq`).
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
    /// MXCSR (every exception masked).
    pub mxcsr: u32,
    /// The data area.
    pub data: Vec<u8>,
    /// The x87 constant page.
    pub consts: Vec<u8>,
    /// The stack pages.
    pub stack: Vec<u8>,
}

/// Floating-point bit patterns worth having in XMM registers.
fn float32(rng: &mut Rng) -> u32 {
    const SPECIAL: [u32; 12] = [
        0x0000_0000,
        0x8000_0000,
        0x3f80_0000,
        0xbf80_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7fa0_0000,
        0x0000_0001,
        0x007f_ffff,
        0x7f7f_ffff,
        0x4b00_0000,
    ];
    match rng.below(4) {
        0 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
        1 => rng.next_u64() as u32,
        // A normal number near 1.
        _ => ((rng.range(110, 150) as u32) << 23) | (rng.next_u64() as u32 & 0x807f_ffff),
    }
}

fn float64(rng: &mut Rng) -> u64 {
    const SPECIAL: [u64; 10] = [
        0,
        1 << 63,
        0x3ff0_0000_0000_0000,
        0x7ff0_0000_0000_0000,
        0xfff0_0000_0000_0000,
        0x7ff8_0000_0000_0000,
        0x7ff4_0000_0000_0000,
        1,
        0x000f_ffff_ffff_ffff,
        0x4330_0000_0000_0000,
    ];
    match rng.below(4) {
        0 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
        1 => rng.next_u64(),
        _ => ((rng.range(1000, 1050) as u64) << 52) | (rng.next_u64() & 0x800f_ffff_ffff_ffff),
    }
}

fn xmm(rng: &mut Rng) -> [u8; 16] {
    let mut out = [0u8; 16];
    match rng.below(3) {
        0 => rng.fill(&mut out),
        1 => {
            for lane in out.chunks_mut(4) {
                lane.copy_from_slice(&float32(rng).to_le_bytes());
            }
        }
        _ => {
            for lane in out.chunks_mut(8) {
                lane.copy_from_slice(&float64(rng).to_le_bytes());
            }
        }
    }
    out
}

/// Random bytes with runs of zeros, ones and small values, so comparisons and scans see
/// equal and zero elements.
fn memory(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    for _ in 0..len / 256 {
        let at = rng.below(len as u64) as usize;
        let run = (rng.below(48) as usize).min(len - at);
        let byte = match rng.below(3) {
            0 => 0,
            1 => 0xff,
            _ => rng.below(4) as u8,
        };
        out[at..at + run].fill(byte);
    }
    out
}

impl InitialState {
    /// The state of the case with `seed` in a run of `groups` (the floating-point groups add
    /// their operand tables to the constant page).
    pub fn from_seed(seed: u64, groups: Groups) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed_57a7_e000_0001);
        let mut gpr = [0u64; 16];
        for r in &mut gpr {
            *r = rng.value(64);
        }
        gpr[RSP] = (layout::STACK_BASE as i64 + 0x1000 + rng.range(-64, 64) * 8) as u64;
        if rng.chance(10) {
            gpr[RSP] += rng.range(1, 7) as u64;
        }
        gpr[BASE] = BASE_VALUE;
        gpr[INDEX] = rng.below(0x400);
        let rflags = 0x2 | (rng.next_u64() & RANDOM_FLAGS);
        let mut regs = [[0u8; 16]; 16];
        for r in &mut regs {
            *r = xmm(&mut rng);
        }
        // Every exception masked; random rounding, DAZ, FTZ and sticky flags.
        let mxcsr = 0x1f80 | (rng.next_u64() as u32 & 0xe07f);
        let data = memory(&mut rng, (layout::DATA_END - layout::DATA_BASE) as usize);
        let stack = memory(&mut rng, (layout::STACK_END - layout::STACK_BASE) as usize);
        let mut consts = super::gen::x87::constant_page(&mut rng);
        if groups.intersects(Groups::FLOAT) {
            super::gen::fptables::fill(&mut consts, &mut rng);
        }
        InitialState {
            gpr,
            rflags,
            xmm: regs,
            mxcsr,
            data,
            consts,
            stack,
        }
    }

    /// General registers as the backends take them: RSP points at the prologue's `iretq`
    /// frame (which holds the sequence's RSP and RFLAGS), RIP at the prologue.
    pub fn regs(&self, prologue_addr: u64) -> kvm_regs {
        let g = &self.gpr;
        kvm_regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: layout::IRET_FRAME,
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: prologue_addr,
            rflags: 0x2,
        }
    }

    /// x87 (FNINIT state) and SSE registers.
    pub fn fpu(&self) -> kvm_fpu {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            mxcsr: self.mxcsr,
            ..Default::default()
        };
        f.xmm = self.xmm;
        f
    }

    /// The kernel stack page: zeros, then the `iretq` frame into the sequence at `code_addr`.
    pub fn kstack_image(&self, code_addr: u64) -> Vec<u8> {
        let mut k = vec![0u8; (layout::KSTACK_END - layout::KSTACK_BASE) as usize];
        let at = (layout::IRET_FRAME - layout::KSTACK_BASE) as usize;
        k[at..].copy_from_slice(&layout::iret_frame(code_addr, self.rflags, self.gpr[RSP]));
        k
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The terminator ran.
    End,
    /// An exception was delivered through the IDT to the stub of this vector.
    Exception(u8),
    /// Triple fault.
    Shutdown,
    /// Anything else (HLT, an unexpected port or MMIO access, a time-out), described.
    Other(String),
}

impl Exit {
    /// The compact code the corpus stores.
    pub fn code(&self) -> u8 {
        match self {
            Exit::End => 0xff,
            Exit::Exception(v) => *v,
            Exit::Shutdown => 0xfe,
            Exit::Other(_) => 0xfd,
        }
    }

    /// The exit a corpus code stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            0xff => Exit::End,
            0xfe => Exit::Shutdown,
            v if v < 32 => Exit::Exception(v),
            _ => Exit::Other("recorded as another exit".into()),
        }
    }
}

/// x87 registers as FXSAVE lays them out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct X87 {
    /// Control word.
    pub fcw: u16,
    /// Status word.
    pub fsw: u16,
    /// Abridged tag word.
    pub ftw: u8,
    /// ST(0)..ST(7), 80 bits each.
    pub st: [[u8; 10]; 8],
}

/// The state a backend ended a case in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalState {
    /// How the case ended.
    pub exit: Exit,
    /// RAX..R15.
    pub gpr: [u64; 16],
    /// RIP, normalised to the address of the `out` that ended the case.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR2.
    pub cr2: u64,
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// x87 state.
    pub x87: X87,
    /// The data area.
    pub data: Vec<u8>,
    /// The x87 constant page.
    pub consts: Vec<u8>,
    /// The stack pages.
    pub stack: Vec<u8>,
    /// The kernel stack page (exception frames).
    pub kstack: Vec<u8>,
    /// The page-table entries of [`layout::CASE_PAGES`].
    pub ptes: Vec<u64>,
}

impl FinalState {
    /// A made-up final state for unit tests: a page fault with every area filled.
    #[cfg(test)]
    pub(crate) fn sample() -> Self {
        FinalState {
            exit: Exit::Exception(14),
            gpr: [7; 16],
            rip: 0x2070,
            rflags: 0x246,
            cr2: 0x14000,
            xmm: [[3; 16]; 16],
            mxcsr: 0x1f80,
            x87: X87::default(),
            data: vec![1; 0x4000],
            consts: vec![2; 0x1000],
            stack: vec![3; 0x2000],
            kstack: vec![4; 0x1000],
            ptes: vec![0x8063; 12],
        }
    }

    /// Collects the state from registers, FPU state and memory. `port` is the port whose
    /// write ended the case (None for other exits); `code_end` is the terminator's address.
    pub fn collect(
        exit: Exit,
        regs: &kvm_regs,
        cr2: u64,
        fpu: &kvm_fpu,
        mem: &dyn Memory,
        port: Option<u16>,
        code_end: u64,
    ) -> Self {
        let gpr = [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ];
        // KVM may report RIP at the `out` (its exit completes on the next KVM_RUN) where the
        // interpreter reports it after; both become the `out`'s address.
        let mut rip = regs.rip;
        if let Some(at) = port.and_then(|p| layout::out_address(p, code_end)) {
            if rip == at + 2 {
                rip = at;
            }
        }
        let read = |lo: u64, hi: u64| {
            let mut buf = vec![0u8; (hi - lo) as usize];
            mem.read(lo, &mut buf);
            buf
        };
        let ptes = layout::CASE_PAGES
            .iter()
            .map(|&p| {
                let mut b = [0u8; 8];
                mem.read(layout::PT + p * 8, &mut b);
                u64::from_le_bytes(b)
            })
            .collect();
        let mut st = [[0u8; 10]; 8];
        for (dst, src) in st.iter_mut().zip(fpu.fpr.iter()) {
            dst.copy_from_slice(&src[..10]);
        }
        FinalState {
            exit,
            gpr,
            rip,
            rflags: regs.rflags,
            cr2,
            xmm: fpu.xmm,
            mxcsr: fpu.mxcsr,
            x87: X87 {
                fcw: fpu.fcw,
                fsw: fpu.fsw,
                ftw: fpu.ftwx,
                st,
            },
            data: read(layout::DATA_BASE, layout::DATA_END),
            consts: read(layout::CONST_BASE, layout::CONST_END),
            stack: read(layout::STACK_BASE, layout::STACK_END),
            kstack: read(layout::KSTACK_BASE, layout::KSTACK_END),
            ptes,
        }
    }
}

/// Writes the per-case memory of `init` with `code_pages` (prologue + sequence + terminator)
/// for a sequence at `code_addr`.
pub fn write_case(mem: &dyn Memory, init: &InitialState, code_pages: &[u8], code_addr: u64) {
    mem.write(layout::PT, &layout::page_table());
    mem.write(layout::CODE_BASE, code_pages);
    mem.write(layout::DATA_BASE, &init.data);
    mem.write(layout::CONST_BASE, &init.consts);
    mem.write(layout::KSTACK_BASE, &init.kstack_image(code_addr));
    mem.write(layout::STACK_BASE, &init.stack);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_state() {
        let d = Groups::DEFAULT;
        assert_eq!(
            InitialState::from_seed(42, d),
            InitialState::from_seed(42, d)
        );
        assert_ne!(
            InitialState::from_seed(42, d).gpr,
            InitialState::from_seed(43, d).gpr
        );
        let (plain, float) = (
            InitialState::from_seed(42, d),
            InitialState::from_seed(42, Groups::FLOAT),
        );
        assert_eq!(plain.data, float.data);
        let tables = super::super::gen::x87::TABLES_END;
        assert_eq!(plain.consts[..tables], float.consts[..tables]);
        assert_ne!(plain.consts[tables..], float.consts[tables..]);
    }

    #[test]
    fn reserved_registers_and_stack_are_in_place() {
        for seed in 0..200 {
            let s = InitialState::from_seed(seed, Groups::DEFAULT);
            assert_eq!(s.gpr[BASE], BASE_VALUE);
            assert!(s.gpr[INDEX] < 0x400);
            let rsp = s.gpr[RSP];
            assert!(rsp > layout::STACK_BASE + 0x800 && rsp < layout::STACK_END - 0x800);
            assert_eq!(s.rflags & !RANDOM_FLAGS, 0x2);
            assert_eq!(s.mxcsr & 0x1f80, 0x1f80, "exceptions masked");
            let image = s.kstack_image(0x9000);
            let at = (layout::IRET_FRAME - layout::KSTACK_BASE) as usize;
            assert_eq!(image[at + 24..at + 32], rsp.to_le_bytes());
            assert_eq!(s.regs(0x8000).rsp, layout::IRET_FRAME);
        }
    }

    #[test]
    fn exit_codes_round_trip() {
        for e in [
            Exit::End,
            Exit::Exception(0),
            Exit::Exception(14),
            Exit::Shutdown,
        ] {
            assert_eq!(Exit::from_code(e.code()), e);
        }
    }
}
