//! Linux kernels: ELF vmlinux (PVH or 64-bit entry) and bzImage (64-bit boot protocol).

use std::io::Cursor;
use std::path::Path;

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::GuestAddress;

use super::{
    check_fits_low_ram, elf, initrd_err, kernel_err, place_high, pvh, BootError, BootSetup,
    CpuMode, EntryState, KernelSpec, Protocol,
};
use crate::layout::{self, CMDLINE_ADDR, HIMEM_START, ZERO_PAGE_ADDR};
use crate::GuestMemory;

/// x86's `COMMAND_LINE_SIZE`: the longest command line (with NUL) a kernel without a setup
/// header accepts.
const DEFAULT_CMDLINE_CAPACITY: usize = 2048;
/// Offset of the `HdrS` magic in a bzImage.
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the setup header in a bzImage and in the zero page.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// `xloadflags` bit: the kernel has a 64-bit entry point at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point from the protected-mode code start.
const STARTUP_64_OFFSET: u64 = 0x200;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

/// Whether `image` carries a Linux boot protocol header.
pub(super) fn is_bzimage(image: &[u8]) -> bool {
    image.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(HDRS_MAGIC)
}

fn to_gib4(v: u64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} at {v:#x} is above 4 GiB"))
}

/// Loads an ELF vmlinux: through its PVH entry when it has one and `spec.prefer_pvh`, else
/// through its 64-bit entry point with a zero page.
pub(super) fn load_elf(
    mem: &GuestMemory,
    spec: &KernelSpec,
    image: &[u8],
    initrd: Option<&(&Path, Vec<u8>)>,
) -> Result<BootSetup, BootError> {
    let parsed = elf::parse(image).map_err(|r| kernel_err(spec.kernel, r))?;
    if !parsed.is_64 {
        return Err(kernel_err(
            spec.kernel,
            "a 32-bit ELF image without a Multiboot header is not a bootable kernel",
        ));
    }
    let start = parsed.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
    let end = parsed.end();
    check_fits_low_ram(mem, "the kernel", start, end).map_err(|r| kernel_err(spec.kernel, r))?;
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(|e| kernel_err(spec.kernel, e.to_string()))?;
    let cmdline_len = write_cmdline(mem, spec.cmdline, DEFAULT_CMDLINE_CAPACITY)?;
    let initrd_range = place_initrd(mem, initrd, end, u64::MAX)?;
    let kernel_range = (start, end);
    if let (PvhBootCapability::PvhEntryPresent(entry), true) =
        (loaded.pvh_boot_cap, spec.prefer_pvh)
    {
        let entry = pvh::setup(mem, entry.0, spec.rsdp_addr, initrd_range)?;
        return Ok(BootSetup {
            protocol: Protocol::LinuxPvh,
            entry,
            kernel_range,
            initrd_range,
            bios_interrupts: false,
        });
    }
    let hdr = setup_header {
        type_of_loader: KERNEL_LOADER_OTHER,
        boot_flag: KERNEL_BOOT_FLAG_MAGIC,
        header: KERNEL_HDR_MAGIC,
        kernel_alignment: KERNEL_MIN_ALIGNMENT,
        ..Default::default()
    };
    write_zero_page(mem, hdr, cmdline_len, initrd_range, spec.rsdp_addr)?;
    Ok(BootSetup {
        protocol: Protocol::LinuxElf64,
        entry: long_mode_entry(parsed.entry),
        kernel_range,
        initrd_range,
        bios_interrupts: false,
    })
}

/// Loads a bzImage and starts it through the 64-bit boot protocol.
pub(super) fn load_bzimage(
    mem: &GuestMemory,
    spec: &KernelSpec,
    image: &[u8],
    initrd: Option<&(&Path, Vec<u8>)>,
) -> Result<BootSetup, BootError> {
    let raw = image
        .get(SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>())
        .ok_or_else(|| kernel_err(spec.kernel, "truncated: bzImage setup header is incomplete"))?;
    let hdr: setup_header = vm_memory::ByteValued::from_slice(raw)
        .copied()
        .ok_or_else(|| kernel_err(spec.kernel, "unaligned setup header"))?;
    if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(kernel_err(
            spec.kernel,
            format!(
                "bzImage has no 64-bit entry point (boot protocol {}.{:02}, needs 2.12 with \
                 XLF_KERNEL_64)",
                hdr.version >> 8,
                hdr.version & 0xff
            ),
        ));
    }
    let setup_sects = if hdr.setup_sects == 0 {
        4
    } else {
        u64::from(hdr.setup_sects)
    };
    let payload_size = (image.len() as u64)
        .checked_sub((setup_sects + 1) * 512)
        .filter(|size| {
            // syssize counts 16-byte paragraphs of the protected-mode code.
            *size >= u64::from(hdr.syssize) * 16
        })
        .ok_or_else(|| {
            kernel_err(
                spec.kernel,
                format!(
                    "truncated: the setup header announces {} bytes of kernel, the file has {}",
                    (setup_sects + 1) * 512 + u64::from(hdr.syssize) * 16,
                    image.len()
                ),
            )
        })?;
    let load = u64::from(hdr.code32_start);
    // The kernel unpacks itself to its preferred address (or where it was loaded, if higher)
    // and needs init_size bytes there.
    let unpack_at = hdr.pref_address.max(load);
    let end = (load + payload_size).max(unpack_at + u64::from(hdr.init_size));
    check_fits_low_ram(mem, "the kernel (unpacked)", load, end)
        .map_err(|r| kernel_err(spec.kernel, r))?;
    let loaded: KernelLoaderResult = BzImage::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(|e| kernel_err(spec.kernel, e.to_string()))?;
    let mut hdr = loaded.setup_header.unwrap_or(hdr);
    hdr.type_of_loader = KERNEL_LOADER_OTHER;
    let capacity = if hdr.version >= 0x0206 {
        hdr.cmdline_size as usize + 1
    } else {
        256
    };
    let cmdline_len = write_cmdline(mem, spec.cmdline, capacity)?;
    let initrd_range = place_initrd(mem, initrd, end, u64::from(hdr.initrd_addr_max) + 1)?;
    write_zero_page(mem, hdr, cmdline_len, initrd_range, spec.rsdp_addr)?;
    Ok(BootSetup {
        protocol: Protocol::LinuxBzImage,
        entry: long_mode_entry(loaded.kernel_load.0 + STARTUP_64_OFFSET),
        kernel_range: (load, end),
        initrd_range,
        bios_interrupts: false,
    })
}

fn long_mode_entry(rip: u64) -> EntryState {
    EntryState {
        mode: CpuMode::Long64,
        rip,
        rsp: layout::BOOT_STACK_POINTER,
        rax: 0,
        rbx: 0,
        rsi: ZERO_PAGE_ADDR,
    }
}

/// Validates the command line against `capacity` (bytes with the NUL) and writes it at
/// [`CMDLINE_ADDR`]. Returns its length without the NUL.
pub(super) fn write_cmdline(
    mem: &GuestMemory,
    cmdline: &str,
    capacity: usize,
) -> Result<usize, BootError> {
    if cmdline.len() >= capacity {
        return Err(BootError::Cmdline(format!(
            "the command line is {} bytes; this kernel takes at most {}",
            cmdline.len(),
            capacity - 1
        )));
    }
    if let Some(bad) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(BootError::Cmdline(format!(
            "has the character {bad:?}; only printable ASCII is allowed"
        )));
    }
    let parsed =
        Cmdline::try_from(cmdline, capacity).map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &parsed)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(parsed.as_cstring().map(|c| c.as_bytes().len()).unwrap_or(0))
}

fn place_initrd(
    mem: &GuestMemory,
    initrd: Option<&(&Path, Vec<u8>)>,
    kernel_end: u64,
    ceiling: u64,
) -> Result<Option<(u64, u64)>, BootError> {
    initrd
        .map(|(path, data)| {
            place_high(mem, data, kernel_end.next_multiple_of(0x1000), ceiling)
                .map_err(|r| initrd_err(path, r))
        })
        .transpose()
}

fn write_zero_page(
    mem: &GuestMemory,
    mut hdr: setup_header,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp_addr: Option<u64>,
) -> Result<(), BootError> {
    let mem_err = |e: String| BootError::Memory(e);
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    hdr.cmdline_size = cmdline_len as u32;
    if let Some((start, end)) = initrd {
        hdr.ramdisk_image = to_gib4(start, "the initrd").map_err(mem_err)?;
        hdr.ramdisk_size = (end - start) as u32;
    }
    let mut params = boot_params {
        hdr,
        acpi_rsdp_addr: rsdp_addr.unwrap_or(0),
        ..Default::default()
    };
    let map = layout::e820_map(super::mem_size(mem));
    if map.len() > params.e820_table.len() {
        return Err(BootError::Memory("too many E820 entries".into()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemory>(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )
    .map_err(|e| BootError::Memory(e.to_string()))
}

/// Reads back the zero page, for tests that check what the kernel will see.
#[cfg(test)]
pub(crate) fn read_zero_page(mem: &GuestMemory) -> boot_params {
    use vm_memory::Bytes;
    mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{load, mem_size};
    use vm_memory::Bytes;

    fn guest(mib: u64) -> GuestMemory {
        GuestMemory::from_ranges(&crate::layout::ram_ranges(mib << 20)).unwrap()
    }

    fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-linux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    fn spec<'a>(kernel: &'a Path, initrd: Option<&'a Path>, cmdline: &'a str) -> KernelSpec<'a> {
        KernelSpec {
            kernel,
            initrd,
            cmdline,
            rsdp_addr: Some(0xe_0000),
            prefer_pvh: true,
        }
    }

    #[test]
    fn elf64_without_pvh_note_boots_in_long_mode_with_zero_page() {
        let code = [0xf4u8; 32];
        let kernel = temp_file(
            "vmlinux64",
            &elf::tests::build(true, 0x100_0000, &code, 0x2000),
        );
        let initrd = temp_file("initrd64", &[7u8; 5000]);
        let mem = guest(64);
        let setup = load(&mem, &spec(&kernel, Some(&initrd), "console=ttyS0 quiet")).unwrap();
        assert_eq!(setup.protocol, Protocol::LinuxElf64);
        assert_eq!(setup.entry.mode, CpuMode::Long64);
        assert_eq!(setup.entry.rip, 0x100_0000);
        assert_eq!(setup.entry.rsi, ZERO_PAGE_ADDR);
        let mut loaded = [0u8; 32];
        mem.read_slice(&mut loaded, GuestAddress(0x100_0000))
            .unwrap();
        assert_eq!(loaded, code);

        let zp = read_zero_page(&mem);
        let hdr = zp.hdr;
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 19);
        let (istart, iend) = setup.initrd_range.unwrap();
        assert_eq!({ hdr.ramdisk_image } as u64, istart);
        assert_eq!({ hdr.ramdisk_size }, 5000);
        assert_eq!(iend, istart + 5000);
        assert_eq!(istart % 4096, 0);
        assert!(iend <= mem_size(&mem) && istart >= 0x100_2000);
        assert_eq!({ zp.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(zp.e820_entries, 3);
        let mut cmdline = [0u8; 20];
        mem.read_slice(&mut cmdline, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&cmdline, b"console=ttyS0 quiet\0");
    }

    #[test]
    fn kernel_too_big_for_ram_is_refused_before_loading() {
        let kernel = temp_file(
            "huge",
            &elf::tests::build(true, 0x100_0000, &[0; 16], 64 << 20),
        );
        let err = load(&guest(32), &spec(&kernel, None, ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("huge") && err.contains("mem_size_mib"),
            "{err}"
        );
    }

    #[test]
    fn initrd_that_does_not_fit_names_the_initrd() {
        let kernel = temp_file(
            "small",
            &elf::tests::build(true, 0x100_0000, &[0; 16], 0x1000),
        );
        let initrd = temp_file("bigrd", &vec![0u8; 40 << 20]);
        let err = load(&guest(32), &spec(&kernel, Some(&initrd), ""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("initrd") && err.contains("bigrd"), "{err}");
    }

    #[test]
    fn overlong_or_binary_command_lines_are_refused() {
        let kernel = temp_file("k2", &elf::tests::build(true, 0x100_0000, &[0; 16], 0x1000));
        let long = "x".repeat(3000);
        let err = load(&guest(32), &spec(&kernel, None, &long))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("boot-source.boot_args") && err.contains("2047"),
            "{err}"
        );
        let err = load(&guest(32), &spec(&kernel, None, "a\u{7}b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boot-source.boot_args"), "{err}");
    }

    #[test]
    fn bzimage_without_64bit_entry_or_truncated_is_refused() {
        let mut img = vec![0u8; 0x4000];
        img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(HDRS_MAGIC);
        img[0x1f1] = 4; // setup_sects
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let old = temp_file("old-bz", &img);
        let err = load(&guest(64), &spec(&old, None, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no 64-bit entry point"), "{err}");
        img[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        img[0x1f4..0x1f8].copy_from_slice(&0x10_0000u32.to_le_bytes()); // syssize: 16 MiB
        let cut = temp_file("cut-bz", &img);
        let err = load(&guest(64), &spec(&cut, None, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
