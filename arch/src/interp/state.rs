//! Architectural state of one software vCPU and the processor mode derived from it.

use kvm_bindings::kvm_segment;

use super::flags::{Flags, VM};
use super::fpu::Fpu;

/// Segment register indices, in encoding order.
pub const ES: usize = 0;
/// CS.
pub const CS: usize = 1;
/// SS.
pub const SS: usize = 2;
/// DS.
pub const DS: usize = 3;
/// FS.
pub const FS: usize = 4;
/// GS.
pub const GS: usize = 5;

/// General register indices.
pub const RAX: usize = 0;
/// RCX.
pub const RCX: usize = 1;
/// RDX.
pub const RDX: usize = 2;
/// RBX.
pub const RBX: usize = 3;
/// RSP.
pub const RSP: usize = 4;
/// RBP.
pub const RBP: usize = 5;
/// RSI.
pub const RSI: usize = 6;
/// RDI.
pub const RDI: usize = 7;

/// CR0 bits.
pub const CR0_PE: u64 = 1;
/// CR0.MP.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.EM.
pub const CR0_EM: u64 = 1 << 2;
/// CR0.TS.
pub const CR0_TS: u64 = 1 << 3;
/// CR0.ET.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.AM.
pub const CR0_AM: u64 = 1 << 18;
/// CR0.NW.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;

/// CR4.VME.
pub const CR4_VME: u64 = 1;
/// CR4.PVI.
pub const CR4_PVI: u64 = 1 << 1;
/// CR4.TSD.
pub const CR4_TSD: u64 = 1 << 2;
/// CR4.DE.
pub const CR4_DE: u64 = 1 << 3;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.MCE.
pub const CR4_MCE: u64 = 1 << 6;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCE.
pub const CR4_PCE: u64 = 1 << 8;
/// CR4.OSFXSR.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.UMIP.
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.FSGSBASE.
pub const CR4_FSGSBASE: u64 = 1 << 16;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE: protection keys for user pages.
pub const CR4_PKE: u64 = 1 << 22;
/// CR4.PKS: protection keys for supervisor pages.
pub const CR4_PKS: u64 = 1 << 24;
/// CR4 bits the software CPU implements; setting others raises #GP.
pub const CR4_SUPPORTED: u64 = CR4_VME
    | CR4_PVI
    | CR4_TSD
    | CR4_DE
    | CR4_PSE
    | CR4_PAE
    | CR4_MCE
    | CR4_PGE
    | CR4_PCE
    | CR4_OSFXSR
    | CR4_OSXMMEXCPT
    | CR4_UMIP
    | CR4_FSGSBASE
    | CR4_SMEP
    | CR4_SMAP
    | CR4_PKE
    | CR4_PKS;

/// EFER.SCE.
pub const EFER_SCE: u64 = 1;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// A descriptor-table register (GDTR, IDTR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescTable {
    /// Linear base.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// Model-specific registers the software CPU keeps.
#[derive(Debug, Clone, Default)]
pub struct Msrs {
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK.
    pub fmask: u64,
    /// IA32_KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_TSC_AUX.
    pub tsc_aux: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MCG_STATUS.
    pub mcg_status: u64,
    /// IA32_PKRS: PKRU's counterpart for supervisor pages.
    pub pkrs: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// Variable-range MTRRs (base/mask pairs, 0x200..0x210).
    pub mtrr_var: [u64; 16],
    /// Fixed-range MTRRs (0x250, 0x258, 0x259, 0x268..0x270).
    pub mtrr_fixed: [u64; 11],
    /// Offset added to the host-derived time-stamp counter.
    pub tsc_offset: u64,
}

/// The processor mode, recomputed whenever CR0, EFER, CS or RFLAGS.VM change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Default operand/address size of code: 16, 32 or 64.
    pub code_bits: u32,
    /// Stack pointer width: 16, 32 or 64.
    pub stack_bits: u32,
    /// Current privilege level.
    pub cpl: u8,
    /// CR0.PE.
    pub protected: bool,
    /// EFER.LMA (IA-32e mode, 64-bit or compatibility).
    pub long: bool,
    /// CR0.PG.
    pub paging: bool,
    /// RFLAGS.VM in protected mode.
    pub v86: bool,
}

impl Default for Mode {
    fn default() -> Self {
        Mode {
            code_bits: 16,
            stack_bits: 16,
            cpl: 0,
            protected: false,
            long: false,
            paging: false,
            v86: false,
        }
    }
}

/// A segment register as the hypervisor interface describes it (base, limit in bytes,
/// attributes).
pub type Segment = kvm_segment;

/// The reset state of a data segment in real mode.
pub fn real_mode_segment(selector: u16, code: bool) -> Segment {
    Segment {
        base: u64::from(selector) << 4,
        limit: 0xffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Everything architectural about one vCPU except memory and devices.
pub struct State {
    /// RAX..R15, then an always-zero slot used for absent address registers.
    pub gpr: [u64; 17],
    /// Instruction pointer (of the next instruction to execute).
    pub rip: u64,
    /// RFLAGS.
    pub flags: Flags,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldt: Segment,
    /// TR.
    pub tr: Segment,
    /// GDTR.
    pub gdt: DescTable,
    /// IDTR.
    pub idt: DescTable,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// DR0..DR3, DR6, DR7 (stored, breakpoints not implemented).
    pub dr: [u64; 6],
    /// Other MSRs.
    pub msr: Msrs,
    /// x87, MMX and SSE state.
    pub fpu: Fpu,
    /// Derived processor mode.
    pub mode: Mode,
    /// Events held off until the next instruction has run (after STI or MOV SS/POP SS).
    pub interrupt_shadow: Shadow,
    /// PKRU: access-disable and write-disable bits of the 16 user-page protection keys.
    pub pkru: u32,
    /// An NMI was delivered and no IRET has run since: further NMIs wait.
    pub nmi_blocked: bool,
}

/// What the instruction just run holds off until the next one has run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shadow {
    /// Nothing.
    #[default]
    None,
    /// STI: interrupts and NMIs wait; a single-step trap does not.
    Sti,
    /// MOV SS or POP SS: interrupts, NMIs and the single-step trap wait.
    MovSs,
}

impl Default for State {
    /// The architectural reset state (real mode at F000:FFF0).
    fn default() -> Self {
        let mut seg = [real_mode_segment(0, false); 6];
        seg[CS] = Segment {
            base: 0xffff_0000,
            ..real_mode_segment(0xf000, true)
        };
        let mut state = State {
            gpr: [0; 17],
            rip: 0xfff0,
            flags: Flags::default(),
            seg,
            ldt: Segment {
                type_: 2,
                present: 1,
                limit: 0xffff,
                ..Default::default()
            },
            tr: Segment {
                type_: 11,
                present: 1,
                limit: 0xffff,
                ..Default::default()
            },
            gdt: DescTable {
                base: 0,
                limit: 0xffff,
            },
            idt: DescTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: CR0_ET | CR0_NW | CR0_CD,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr: [0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msr: Msrs {
                pat: 0x0007_0406_0007_0406,
                ..Default::default()
            },
            fpu: Fpu::default(),
            mode: Mode::default(),
            interrupt_shadow: Shadow::None,
            pkru: 0,
            nmi_blocked: false,
        };
        state.update_mode();
        state
    }
}

impl State {
    /// Recomputes [`Mode`] after a change to CR0, EFER, CS, SS or RFLAGS.VM.
    pub fn update_mode(&mut self) {
        let protected = self.cr0 & CR0_PE != 0;
        let long = self.efer & EFER_LMA != 0;
        let v86 = protected && !long && self.flags.has(VM);
        let cs = &self.seg[CS];
        let code_bits = if long && cs.l != 0 {
            64
        } else if protected && !v86 && cs.db != 0 {
            32
        } else {
            16
        };
        let stack_bits = if code_bits == 64 {
            64
        } else if protected && !v86 && self.seg[SS].db != 0 {
            32
        } else {
            16
        };
        let cpl = if !protected {
            0
        } else if v86 {
            3
        } else {
            cs.selector as u8 & 3
        };
        self.mode = Mode {
            code_bits,
            stack_bits,
            cpl,
            protected,
            long,
            paging: protected && self.cr0 & CR0_PG != 0,
            v86,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state_is_real_mode() {
        let s = State::default();
        assert_eq!(s.mode.code_bits, 16);
        assert!(!s.mode.protected);
        assert_eq!(s.seg[CS].base + s.rip, 0xffff_fff0);
    }

    #[test]
    fn mode_follows_cs_and_efer() {
        let mut s = State::default();
        s.cr0 |= CR0_PE | CR0_PG;
        s.efer = EFER_LME | EFER_LMA;
        s.seg[CS].l = 1;
        s.seg[CS].selector = 0x33;
        s.update_mode();
        assert_eq!(
            (s.mode.code_bits, s.mode.stack_bits, s.mode.cpl),
            (64, 64, 3)
        );
        s.seg[CS].l = 0;
        s.seg[CS].db = 1;
        s.seg[SS].db = 1;
        s.update_mode();
        assert_eq!((s.mode.code_bits, s.mode.stack_bits), (32, 32));
    }
}
