//! The guest physical address map of an Ember x86-64 machine.
//!
//! ```text
//! 0x0000_0500  boot GDT                 0x0000_9000  PML4, PDPT, 4 PDs (identity map, 4 GiB)
//! 0x0000_6000  PVH start_info + memmap  0x0001_0000  Multiboot info, memory map and modules
//! 0x0000_7000  Linux zero page          0x0002_0000  kernel command line
//! 0x0000_8ff0  boot stack (grows down)  0x0009_fc00  EBDA (reserved) .. 0x000f_ffff BIOS area
//! 0x000e_0000  ACPI tables (RSDP first)  0x0010_0000  RAM for the kernel, initrd, everything else
//! 0xc000_0000  32-bit MMIO gap: devices, IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 0x1_0000_0000  RAM above the gap when the guest has more than 3 GiB
//! ```

use vm_memory::GuestAddress;

/// Boot GDT (a handful of 8-byte descriptors).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`, followed by its module list and memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// First of the identity-mapping page tables (PML4, PDPT, then four page directories).
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
/// Multiboot information structure and everything it points to (but the command line).
pub const MULTIBOOT_INFO_ADDR: u64 = 0x1_0000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line Ember passes, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;
/// Start of the extended BIOS data area: conventional RAM ends here.
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables, inside the BIOS area where Linux also scans for the RSDP.
pub const ACPI_TABLES_ADDR: u64 = 0xe_0000;
/// End of the ACPI tables area; the BIOS interrupt stubs follow.
pub const ACPI_TABLES_END: u64 = 0xf_0000;
/// End of the BIOS area and of the first megabyte.
pub const BIOS_END: u64 = 0x10_0000;
/// Start of high memory: kernels, initrds and Multiboot images load at or above this.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap; RAM stops here and resumes at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Most guest RAM a VM can have: with the MMIO gap it must fit in 40 physical address bits,
/// which both backends' CPUs have.
pub const MAX_RAM_SIZE: u64 = (1 << 40) - (MMIO_GAP_END - MMIO_GAP_START);
/// Where the virtio-mmio windows start (one page each, upwards), at the bottom of the gap.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// Interrupts (GSIs) given to virtio devices, in order: IOAPIC inputs that no legacy device
/// of Ember's uses (COM1 has 4, the PIT 0 and 2, the RTC 8, the i8042 1 and 12).
pub const VIRTIO_GSIS: [u32; 16] = [5, 6, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
/// Where the IOAPIC's registers are.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Where each local APIC's registers are.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Three pages KVM needs for the real-mode TSS on Intel hosts (inside the MMIO gap).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// One page KVM needs for the real-mode identity map on Intel hosts.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Kind of an E820 memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: firmware areas the guest must not use as RAM.
    Reserved = 2,
}

/// One entry of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

/// The RAM ranges backing a guest of `mem_size` bytes: below the MMIO gap, then above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if mem_size > low {
        ranges.push((GuestAddress(MMIO_GAP_END), (mem_size - low) as usize));
    }
    ranges
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// The memory map the guest is told about for a guest of `mem_size` bytes.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: BIOS_END - EBDA_START,
            kind: E820Kind::Reserved,
        },
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820Kind::Ram,
        });
    }
    if mem_size > low_end {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - low_end,
            kind: E820Kind::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_has_one_range_and_no_high_ram() {
        assert_eq!(
            ram_ranges(256 * MIB),
            vec![(GuestAddress(0), (256 * MIB) as usize)]
        );
        let map = e820_map(256 * MIB);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].size, 255 * MIB);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let ranges = ram_ranges(16 * GIB);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0], (GuestAddress(0), (3 * GIB) as usize));
        assert_eq!(ranges[1], (GuestAddress(4 * GIB), (13 * GIB) as usize));
        let ram: u64 = e820_map(16 * GIB)
            .iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum();
        // Only the EBDA and BIOS area are withheld from RAM.
        assert_eq!(ram, 16 * GIB - (BIOS_END - EBDA_START));
        assert!(e820_map(16 * GIB)
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
    }
}
