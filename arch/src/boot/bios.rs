//! The interrupt state a PC BIOS leaves behind, for guests booted as QEMU boots a Multiboot
//! image (after SeaBIOS ran): a real-mode interrupt vector table whose entries return from
//! the interrupt (acknowledging the PIC for hardware IRQs), the 8259 PICs at vectors 0x08 and
//! 0x70 with the timer unmasked, and PIT channel 0 ticking at 18.2 Hz. Real-mode test guests
//! (kvm-unit-tests' `realmode`) wait in `sti; hlt` for that tick.

use crate::GuestMemory;
use vm_memory::{Bytes, GuestAddress};

/// Interrupt vector of master PIC input 0.
pub const PIC_MASTER_BASE: u8 = 0x08;
/// Interrupt vector of slave PIC input 0.
pub const PIC_SLAVE_BASE: u8 = 0x70;
/// Master PIC mask: only IRQ0 (timer) and IRQ2 (cascade) enabled.
pub const PIC_MASTER_MASK: u8 = 0xfa;
/// Slave PIC mask: everything masked.
pub const PIC_SLAVE_MASK: u8 = 0xff;
/// PIT channel 0 reload value: 65536 ticks of 1.193182 MHz, 18.2 Hz.
pub const PIT_CHANNEL0_RELOAD: u32 = 0x1_0000;
/// PIT channel 0 mode: rate generator.
pub const PIT_CHANNEL0_MODE: u8 = 2;

/// Segment of the interrupt stubs, in the BIOS area right after the ACPI tables.
const STUB_SEGMENT: u16 = (crate::layout::ACPI_TABLES_END >> 4) as u16;
/// `iret`.
const STUB_IRET: &[u8] = &[0xcf];
/// `push ax; mov al, 0x20; out 0x20, al; pop ax; iret`: EOI to the master PIC.
const STUB_MASTER_EOI: &[u8] = &[0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf];
/// As above, with an EOI to the slave PIC first.
const STUB_SLAVE_EOI: &[u8] = &[0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf];
const STUBS: [(u16, &[u8]); 3] = [
    (0x00, STUB_IRET),
    (0x10, STUB_MASTER_EOI),
    (0x20, STUB_SLAVE_EOI),
];

/// The stub offset (within [`STUB_SEGMENT`]) handling `vector`.
fn stub_for(vector: u8) -> u16 {
    if (PIC_MASTER_BASE..PIC_MASTER_BASE + 8).contains(&vector) {
        STUBS[1].0
    } else if (PIC_SLAVE_BASE..PIC_SLAVE_BASE + 8).contains(&vector) {
        STUBS[2].0
    } else {
        STUBS[0].0
    }
}

/// Writes the interrupt vector table at address 0 and its stubs at F000:0000.
pub fn write_ivt(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    let base = u64::from(STUB_SEGMENT) << 4;
    for (offset, code) in STUBS {
        mem.write_slice(code, GuestAddress(base + u64::from(offset)))?;
    }
    let ivt: Vec<u8> = (0..=255u8)
        .flat_map(|v| {
            let [o0, o1] = stub_for(v).to_le_bytes();
            let [s0, s1] = STUB_SEGMENT.to_le_bytes();
            [o0, o1, s0, s1]
        })
        .collect();
    mem.write_slice(&ivt, GuestAddress(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivt_points_irqs_at_eoi_stubs() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_ivt(&mem).unwrap();
        let entry = |v: u64| -> (u16, u16) {
            let raw: u32 = mem.read_obj(GuestAddress(4 * v)).unwrap();
            (raw as u16, (raw >> 16) as u16)
        };
        assert_eq!(entry(0x08), (0x10, 0xf000), "timer IRQ");
        assert_eq!(entry(0x73), (0x20, 0xf000), "slave IRQ 11");
        assert_eq!(entry(0x10), (0x00, 0xf000));
        let mut code = [0u8; 7];
        mem.read_slice(&mut code, GuestAddress(0xf_0010)).unwrap();
        assert_eq!(code, STUB_MASTER_EOI);
    }
}
