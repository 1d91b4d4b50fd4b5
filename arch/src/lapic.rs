//! Local APIC register layout the VMM needs at vCPU setup.

use std::os::raw::c_char;

/// Offset of the LVT LINT0 register in the APIC register page.
const LVT_LINT0: usize = 0x350;
/// Offset of the LVT LINT1 register.
const LVT_LINT1: usize = 0x360;
const DELIVERY_MODE_MASK: u32 = 0x700;
const DELIVERY_EXTINT: u32 = 0x700;
const DELIVERY_NMI: u32 = 0x400;

fn read_reg(regs: &[c_char], offset: usize) -> u32 {
    let b = |i: usize| regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn write_reg(regs: &mut [c_char], offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        regs[offset + i] = byte as c_char;
    }
}

/// Wires LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as a PC's firmware leaves them, in a
/// copy of the APIC register page (`kvm_lapic_state::regs`, at least 0x400 bytes).
pub fn set_lint_delivery(regs: &mut [c_char]) {
    for (offset, mode) in [(LVT_LINT0, DELIVERY_EXTINT), (LVT_LINT1, DELIVERY_NMI)] {
        let value = (read_reg(regs, offset) & !DELIVERY_MODE_MASK) | mode;
        write_reg(regs, offset, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes_are_set_and_other_bits_kept() {
        let mut regs = [0 as c_char; 1024];
        write_reg(&mut regs, LVT_LINT0, 0x1_0000); // masked
        set_lint_delivery(&mut regs);
        assert_eq!(read_reg(&regs, LVT_LINT0), 0x1_0700);
        assert_eq!(read_reg(&regs, LVT_LINT1), 0x400);
    }
}
