//! The stock Debian cloud kernel, parsed and placed as ELF (PVH and 64-bit entry) and as
//! bzImage: load addresses, entry points and what the kernel finds in its boot structures.

use std::path::Path;

use arch::boot::{self, CpuMode, KernelSpec, Protocol};
use arch::layout::{self, CMDLINE_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR};
use arch::GuestMemory;
use ember_tests::default_guest;
use linux_loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress};

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
const RSDP: u64 = 0xe_0000;

fn guest_memory(mib: u64) -> GuestMemory {
    GuestMemory::from_ranges(&layout::ram_ranges(mib << 20)).unwrap()
}

fn load(kernel: &Path, prefer_pvh: bool) -> (GuestMemory, boot::BootSetup) {
    let mem = guest_memory(256);
    let initrd = default_guest("initramfs.cpio");
    let setup = boot::load(
        &mem,
        &KernelSpec {
            kernel,
            initrd: Some(&initrd),
            cmdline: CMDLINE,
            rsdp_addr: Some(RSDP),
            prefer_pvh,
        },
    )
    .unwrap();
    (mem, setup)
}

fn initrd_len() -> u64 {
    std::fs::metadata(default_guest("initramfs.cpio"))
        .unwrap()
        .len()
}

fn read_cstr(mem: &GuestMemory, addr: u64) -> String {
    let mut buf = vec![0u8; 256];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    let end = buf.iter().position(|b| *b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

/// The ELF entry point, straight from the file header.
fn elf_entry(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"\x7fELF");
    u64::from_le_bytes(data[24..32].try_into().unwrap())
}

fn check_initrd_placement(setup: &boot::BootSetup, mem_end: u64) -> (u64, u64) {
    let (start, end) = setup.initrd_range.unwrap();
    assert_eq!(end - start, initrd_len());
    assert_eq!(start % 4096, 0);
    assert!(start >= setup.kernel_range.1, "initrd overlaps the kernel");
    assert!(end <= mem_end);
    (start, end)
}

#[test]
fn vmlinux_boots_through_its_pvh_entry() {
    let vmlinux = default_guest("vmlinux");
    let (mem, setup) = load(&vmlinux, true);
    assert_eq!(setup.protocol, Protocol::LinuxPvh);
    assert_eq!(setup.entry.mode, CpuMode::Protected32);
    assert_eq!(
        setup.kernel_range.0, 0x100_0000,
        "loaded at CONFIG_PHYSICAL_START"
    );
    assert!((setup.kernel_range.0..setup.kernel_range.1).contains(&setup.entry.rip));
    assert_ne!(
        setup.entry.rip,
        elf_entry(&vmlinux),
        "PVH entry differs from startup_64"
    );
    assert_eq!(setup.entry.rbx, PVH_INFO_ADDR);

    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
    assert_eq!(info.magic, 0x336e_c578);
    assert_eq!(info.rsdp_paddr, RSDP);
    assert_eq!(read_cstr(&mem, info.cmdline_paddr), CMDLINE);
    assert_eq!(info.nr_modules, 1);
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    let (start, end) = check_initrd_placement(&setup, 256 << 20);
    assert_eq!((module.paddr, module.size), (start, end - start));
    let mut magic = [0u8; 6];
    mem.read_slice(&mut magic, GuestAddress(start)).unwrap();
    assert_eq!(&magic, b"070701", "the initrd is a newc cpio archive");
}

#[test]
fn vmlinux_boots_through_its_64bit_entry_with_a_zero_page() {
    let vmlinux = default_guest("vmlinux");
    let (mem, setup) = load(&vmlinux, false);
    assert_eq!(setup.protocol, Protocol::LinuxElf64);
    assert_eq!(setup.entry.mode, CpuMode::Long64);
    assert_eq!(setup.entry.rip, elf_entry(&vmlinux));
    assert_eq!(
        setup.entry.rip, 0x100_0000,
        "startup_64 at CONFIG_PHYSICAL_START"
    );
    assert_eq!(setup.entry.rsi, ZERO_PAGE_ADDR);

    let zp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
    let hdr = zp.hdr;
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr } as u64, CMDLINE_ADDR);
    assert_eq!(read_cstr(&mem, CMDLINE_ADDR), CMDLINE);
    let (start, _) = check_initrd_placement(&setup, 256 << 20);
    assert_eq!({ hdr.ramdisk_image } as u64, start);
    assert_eq!({ hdr.ramdisk_size } as u64, initrd_len());
    assert_eq!({ zp.acpi_rsdp_addr }, RSDP);
    assert_eq!(zp.e820_entries, 3);
    let ram = zp.e820_table[2];
    assert_eq!(
        ({ ram.addr }, { ram.size }, { ram.r#type }),
        (0x10_0000, (255 << 20), 1)
    );
}

#[test]
fn bzimage_boots_through_the_64bit_protocol() {
    let vmlinuz = default_guest("vmlinuz");
    let raw = std::fs::read(&vmlinuz).unwrap();
    let (mem, setup) = load(&vmlinuz, true);
    assert_eq!(setup.protocol, Protocol::LinuxBzImage);
    assert_eq!(setup.entry.mode, CpuMode::Long64);
    let code32_start = u32::from_le_bytes(raw[0x214..0x218].try_into().unwrap()) as u64;
    assert_eq!(code32_start, 0x10_0000);
    assert_eq!(setup.entry.rip, code32_start + 0x200, "startup_64");
    let pref_address = u64::from_le_bytes(raw[0x258..0x260].try_into().unwrap());
    let init_size = u32::from_le_bytes(raw[0x260..0x264].try_into().unwrap()) as u64;
    assert_eq!(setup.kernel_range, (code32_start, pref_address + init_size));

    // The protected-mode code is in memory right at code32_start.
    let setup_sects = u64::from(raw[0x1f1]);
    let payload = (setup_sects + 1) * 512;
    let mut head = [0u8; 64];
    mem.read_slice(&mut head, GuestAddress(code32_start))
        .unwrap();
    assert_eq!(&head[..], &raw[payload as usize..payload as usize + 64]);

    let zp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
    let hdr = zp.hdr;
    assert!({ hdr.version } >= 0x020c, "boot protocol 2.12+");
    assert_eq!({ hdr.xloadflags } & 1, 1, "XLF_KERNEL_64");
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.code32_start } as u64, code32_start);
    assert_eq!({ hdr.cmd_line_ptr } as u64, CMDLINE_ADDR);
    assert_eq!({ hdr.cmdline_size } as usize, CMDLINE.len());
    let (start, end) = check_initrd_placement(&setup, 256 << 20);
    assert_eq!({ hdr.ramdisk_image } as u64, start);
    assert!(end <= u64::from(hdr.initrd_addr_max) + 1);
    assert_eq!({ zp.acpi_rsdp_addr }, RSDP);
}

/// Why loading `kernel` alone into `mem` fails.
fn refusal(mem: &GuestMemory, kernel: &Path) -> String {
    let spec = KernelSpec {
        kernel,
        initrd: None,
        cmdline: CMDLINE,
        rsdp_addr: None,
        prefer_pvh: true,
    };
    boot::load(mem, &spec).unwrap_err().to_string()
}

#[test]
fn kernels_too_big_for_the_guest_are_refused_with_the_reason() {
    for (file, mib) in [("vmlinux", 24), ("vmlinuz", 32)] {
        let mem = guest_memory(mib);
        let kernel = default_guest(file);
        let err = refusal(&mem, &kernel);
        assert!(err.contains(file) && err.contains("mem_size_mib"), "{err}");
    }
}

#[test]
fn truncated_bzimage_is_refused() {
    let raw = std::fs::read(default_guest("vmlinuz")).unwrap();
    let dir = ember_tests::scratch_dir("truncated-bzimage");
    let cut = dir.join("vmlinuz-cut");
    std::fs::write(&cut, &raw[..raw.len() / 2]).unwrap();
    let mem = guest_memory(256);
    let err = refusal(&mem, &cut);
    assert!(
        err.contains("vmlinuz-cut") && err.contains("truncated"),
        "{err}"
    );
}
