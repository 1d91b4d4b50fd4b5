//! The PVH boot protocol: `hvm_start_info` with memory map and module list, 32-bit entry.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::GuestAddress;

use super::{BootError, CpuMode, EntryState};
use crate::layout::{self, CMDLINE_ADDR, PVH_INFO_ADDR};
use crate::GuestMemory;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Module list right after the 56-byte start_info.
const MODLIST_ADDR: u64 = PVH_INFO_ADDR + 0x40;
/// Memory map after the (single-entry) module list.
const MEMMAP_ADDR: u64 = MODLIST_ADDR + 0x40;

/// Writes the start_info structures and returns the entry state for `entry`.
pub(super) fn setup(
    mem: &GuestMemory,
    entry: u64,
    rsdp_addr: Option<u64>,
    initrd: Option<(u64, u64)>,
) -> Result<EntryState, BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = layout::e820_map(super::mem_size(mem))
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() { MODLIST_ADDR } else { 0 },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: rsdp_addr.unwrap_or(0),
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    if let Some((start, end)) = initrd {
        params.set_modules(
            &[hvm_modlist_entry {
                paddr: start,
                size: end - start,
                ..Default::default()
            }],
            GuestAddress(MODLIST_ADDR),
        );
    }
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams::<GuestMemory>(&params, mem)
        .map_err(|e| BootError::Memory(e.to_string()))?;
    Ok(EntryState {
        mode: CpuMode::Protected32,
        rip: entry,
        rsp: 0,
        rax: 0,
        rbx: PVH_INFO_ADDR,
        rsi: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn start_info_describes_memory_cmdline_and_initrd() {
        let mem = GuestMemory::from_ranges(&layout::ram_ranges(256 << 20)).unwrap();
        let entry = setup(
            &mem,
            0x100_0abc,
            Some(0xe_0000),
            Some((0x800_0000, 0x800_1000)),
        )
        .unwrap();
        assert_eq!(entry.mode, CpuMode::Protected32);
        assert_eq!((entry.rip, entry.rbx), (0x100_0abc, PVH_INFO_ADDR));
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.rsdp_paddr, 0xe_0000);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x800_0000, 0x1000));
        assert_eq!(info.memmap_entries, 3);
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!(
            (last.addr, last.size, last.type_),
            (0x10_0000, (256 << 20) - 0x10_0000, 1)
        );
    }
}
