//! Identity page tables for entering a kernel directly in 64-bit mode.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::PAGE_TABLES_ADDR;
use crate::GuestMemory;

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
const PAGE: u64 = 0x1000;
/// Gigabytes identity-mapped: all of the 32-bit space, which holds every boot structure,
/// kernel and initrd Ember loads.
const MAPPED_GIB: u64 = 4;

/// Address of the PML4 to load into CR3.
pub const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
const PDPT_ADDR: u64 = PAGE_TABLES_ADDR + PAGE;
const PD_ADDR: u64 = PAGE_TABLES_ADDR + 2 * PAGE;

/// Writes a PML4, a PDPT and four page directories of 2 MiB pages mapping the first 4 GiB
/// one-to-one.
pub fn write_identity_map(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(PDPT_ADDR | PRESENT_WRITABLE, GuestAddress(PML4_ADDR))?;
    for gib in 0..MAPPED_GIB {
        let pd = PD_ADDR + gib * PAGE;
        mem.write_obj(pd | PRESENT_WRITABLE, GuestAddress(PDPT_ADDR + gib * 8))?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| {
                (((gib << 30) + (i << 21)) | PRESENT_WRITABLE | PAGE_SIZE_2M).to_le_bytes()
            })
            .collect();
        mem.write_slice(&entries, GuestAddress(pd))?;
    }
    Ok(())
}

/// First byte past the page tables.
pub const fn end() -> u64 {
    PD_ADDR + MAPPED_GIB * PAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables the way the MMU does for a 2 MiB mapping.
    fn translate(mem: &GuestMemory, va: u64) -> u64 {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(PML4_ADDR + ((va >> 39) & 511) * 8))
            .unwrap();
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 511) * 8))
            .unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .unwrap();
        assert_eq!(pde & (PRESENT_WRITABLE | PAGE_SIZE_2M), 0x83);
        (pde & !0x1f_ffff) + (va & 0x1f_ffff)
    }

    #[test]
    fn maps_the_low_4gib_one_to_one() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_identity_map(&mem).unwrap();
        for va in [0, 0x1234_5678, 0x1_0000_0000 - 1, 0xfee0_0000] {
            assert_eq!(translate(&mem, va), va);
        }
        assert!(end() <= 0x1_0000);
    }
}
