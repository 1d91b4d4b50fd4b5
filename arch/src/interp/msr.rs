//! RDMSR/WRMSR on the software CPU: the MSRs Linux uses, read back as written, the
//! machine-check globals of a CPU without banks, and #GP for the rest.

use super::state::{EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE, FS, GS};
use super::Core;
use crate::msr::*;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_BIOS_SIGN_ID: u32 = 0x8b;
const IA32_MTRRCAP: u32 = 0xfe;
/// Machine-check capabilities: read-only, zero here (no banks, no IA32_MCG_CTL). KVM and
/// QEMU's TCG offer it whatever CPUID says, and software reads it unguarded.
const IA32_MCG_CAP: u32 = 0x179;
const IA32_MCG_STATUS: u32 = 0x17a;
const IA32_PAT: u32 = 0x277;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const IA32_PKRS: u32 = 0x6e1;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_TSC_AUX: u32 = 0xc000_0103;
/// MTRRCAP: 8 variable ranges, fixed ranges, write-combining.
const MTRRCAP: u64 = 0x508;
/// Fixed-range MTRR MSR numbers, in `Msrs::mtrr_fixed` order.
const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];

fn canonical(v: u64) -> bool {
    super::segment::is_canonical(v)
}

impl Core {
    /// The value of MSR `index`, or None if it does not exist (the guest gets #GP).
    pub(crate) fn read_msr(&mut self, index: u32) -> Option<u64> {
        let m = &self.s.msr;
        Some(match index {
            IA32_TSC => self.tsc(),
            IA32_APIC_BASE => self.apic_base(),
            IA32_BIOS_SIGN_ID => 0,
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            IA32_MISC_ENABLE => m.misc_enable,
            IA32_MCG_CAP => 0,
            IA32_MCG_STATUS => m.mcg_status,
            IA32_MTRRCAP => MTRRCAP,
            0x200..=0x20f => m.mtrr_var[(index - 0x200) as usize],
            IA32_MTRR_DEF_TYPE => m.mtrr_def_type,
            IA32_PAT => m.pat,
            IA32_TSC_DEADLINE => self.tsc_deadline(),
            IA32_PKRS => m.pkrs,
            IA32_EFER => self.s.efer,
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.fmask,
            IA32_FS_BASE => self.s.seg[FS].base,
            IA32_GS_BASE => self.s.seg[GS].base,
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            IA32_TSC_AUX => m.tsc_aux,
            _ => {
                let slot = MTRR_FIXED.iter().position(|&n| n == index)?;
                m.mtrr_fixed[slot]
            }
        })
    }

    /// Writes MSR `index`; false if it does not exist or `value` is invalid for it.
    pub(crate) fn write_msr(&mut self, index: u32, value: u64) -> bool {
        let m = &mut self.s.msr;
        match index {
            IA32_TSC => {
                let now = self.clock.ticks();
                self.s.msr.tsc_offset = value.wrapping_sub(now);
            }
            IA32_APIC_BASE => return self.set_apic_base(value),
            IA32_BIOS_SIGN_ID => {}
            IA32_SYSENTER_CS => m.sysenter_cs = value & 0xffff,
            IA32_SYSENTER_ESP if canonical(value) => m.sysenter_esp = value,
            IA32_SYSENTER_EIP if canonical(value) => m.sysenter_eip = value,
            IA32_MISC_ENABLE => m.misc_enable = value,
            IA32_MCG_STATUS => m.mcg_status = value,
            0x200..=0x20f => m.mtrr_var[(index - 0x200) as usize] = value,
            IA32_MTRR_DEF_TYPE => m.mtrr_def_type = value & 0xcff,
            IA32_PAT => m.pat = value,
            IA32_TSC_DEADLINE => self.set_tsc_deadline(value),
            IA32_PKRS if value >> 32 == 0 => {
                m.pkrs = value;
                // Cached translations used the old rights.
                self.tlb.flush(false);
            }
            IA32_EFER => return self.write_efer(value),
            IA32_STAR => m.star = value,
            IA32_LSTAR if canonical(value) => m.lstar = value,
            IA32_CSTAR if canonical(value) => m.cstar = value,
            IA32_FMASK => m.fmask = value & 0xffff_ffff,
            IA32_FS_BASE if canonical(value) => self.s.seg[FS].base = value,
            IA32_GS_BASE if canonical(value) => self.s.seg[GS].base = value,
            IA32_KERNEL_GS_BASE if canonical(value) => m.kernel_gs_base = value,
            IA32_TSC_AUX => m.tsc_aux = value & 0xffff_ffff,
            _ => match MTRR_FIXED.iter().position(|&n| n == index) {
                Some(slot) => m.mtrr_fixed[slot] = value,
                None => return false,
            },
        }
        true
    }

    fn write_efer(&mut self, value: u64) -> bool {
        let allowed = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        if value & !allowed != 0 {
            return false;
        }
        // LME cannot change while paging is on; LMA is read-only.
        if self.s.mode.paging && (value ^ self.s.efer) & EFER_LME != 0 {
            return false;
        }
        let new = (value & !EFER_LMA) | (self.s.efer & EFER_LMA);
        if (new ^ self.s.efer) & EFER_NXE != 0 {
            self.tlb.flush(false);
        }
        self.s.efer = new;
        self.s.update_mode();
        true
    }

    /// The guest's time-stamp counter.
    #[inline]
    pub(crate) fn tsc(&self) -> u64 {
        self.clock.ticks().wrapping_add(self.s.msr.tsc_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testmachine::TestMachine;
    use super::super::Exit;

    /// mov ecx,`msr`; rdmsr; hlt (real mode).
    fn rdmsr(msr: u32) -> TestMachine {
        let mut code = vec![0x66, 0xb9];
        code.extend(msr.to_le_bytes());
        code.extend([0x0f, 0x32, 0xf4]);
        TestMachine::new(&code)
    }

    #[test]
    fn machine_check_capabilities_read_as_no_banks() {
        let mut m = rdmsr(0x179);
        m.cpu.core.s.gpr[0] = 0x1234;
        assert_eq!(m.run(), Exit::Halted);
        let r = m.cpu.regs();
        assert_eq!((r.rax, r.rdx), (0, 0));
        assert_eq!(m.cpu.get_msr(0x17a), Some(0));
        // No IA32_MCG_CTL and no bank registers; MCG_CAP is read-only.
        assert_eq!(m.cpu.get_msr(0x17b), None);
        assert_eq!(m.cpu.get_msr(0x400), None);
        assert!(!m.cpu.set_msr(0x179, 0));
        assert!(m.cpu.set_msr(0x17a, 0));
    }
}
