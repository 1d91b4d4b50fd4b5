//! Multiboot (v1) images, started as QEMU's `-kernel` starts them: 32-bit protected mode,
//! EAX = 0x2BADB002, EBX = the Multiboot information structure, the command line
//! "<image path> <boot_args>", and the initrd as the first module.

use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use super::{
    bios, elf, initrd_err, kernel_err, BootError, BootSetup, CpuMode, EntryState, KernelSpec,
    Protocol,
};
use crate::layout::{self, CMDLINE_ADDR, CMDLINE_MAX_SIZE, MULTIBOOT_INFO_ADDR};
use crate::GuestMemory;

const HEADER_MAGIC: u32 = 0x1bad_b002;
/// The header must lie within this many bytes from the start of the image.
const SEARCH_LIMIT: usize = 8192;
/// What the loader leaves in EAX.
const BOOTLOADER_MAGIC: u64 = 0x2bad_b002;
/// Header flag: the address fields are valid (load without ELF).
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Header flags a loader must honour (bits 0..16): page-aligned modules, memory information,
/// video mode. Ember honours the first two; a video mode request is ignored, as QEMU does.
const FLAGS_UNDERSTOOD: u32 = 0b111;

// Multiboot information `flags` bits.
const MBI_MEM: u32 = 1 << 0;
const MBI_CMDLINE: u32 = 1 << 2;
const MBI_MODS: u32 = 1 << 3;
const MBI_MMAP: u32 = 1 << 6;
const MBI_LOADER_NAME: u32 = 1 << 9;

const MMAP_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x100;
const MODS_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x400;
const STRINGS_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x800;
const STRINGS_END: u64 = MULTIBOOT_INFO_ADDR + 0x1_0000;

/// A Multiboot header found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Offset of the magic in the file.
    offset: usize,
    flags: u32,
}

fn u32_at(image: &[u8], at: usize) -> Option<u32> {
    image
        .get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Finds a valid Multiboot header (magic and checksum) in the first 8 KiB of `image`.
pub(super) fn find_header(image: &[u8]) -> Option<Header> {
    (0..SEARCH_LIMIT.min(image.len()))
        .step_by(4)
        .find_map(|offset| {
            let magic = u32_at(image, offset)?;
            let flags = u32_at(image, offset + 4)?;
            let checksum = u32_at(image, offset + 8)?;
            (magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0)
                .then_some(Header { offset, flags })
        })
}

/// A piece of the file to copy into memory, then zeroes up to `mem_end`.
struct Chunk {
    file_offset: u64,
    paddr: u64,
    filesz: u64,
    mem_end: u64,
}

/// Where the a.out-kludge address fields say the image goes.
fn aout_layout(image: &[u8], header: Header) -> Result<(Vec<Chunk>, u64), String> {
    let field = |i: usize| {
        u32_at(image, header.offset + 12 + 4 * i)
            .map(u64::from)
            .ok_or_else(|| "truncated: Multiboot address fields missing".to_string())
    };
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let file_offset = (header.offset as u64)
        .checked_sub(header_addr.wrapping_sub(load_addr))
        .filter(|_| header_addr >= load_addr)
        .ok_or("Multiboot header_addr is below load_addr or before the file start")?;
    let filesz = if load_end == 0 {
        image.len() as u64 - file_offset
    } else {
        load_end
            .checked_sub(load_addr)
            .ok_or("Multiboot load_end_addr is below load_addr")?
    };
    if file_offset + filesz > image.len() as u64 {
        return Err(format!(
            "truncated: Multiboot image needs {filesz:#x} bytes from offset {file_offset:#x}"
        ));
    }
    let chunk = Chunk {
        file_offset,
        paddr: load_addr,
        filesz,
        mem_end: bss_end.max(load_addr + filesz),
    };
    Ok((vec![chunk], entry))
}

fn elf_layout(image: &[u8]) -> Result<(Vec<Chunk>, u64), String> {
    let parsed = elf::parse(image)?;
    let chunks = parsed
        .segments
        .iter()
        .map(|s| Chunk {
            file_offset: s.offset,
            paddr: s.paddr,
            filesz: s.filesz,
            mem_end: s.paddr.saturating_add(s.memsz),
        })
        .collect();
    Ok((chunks, parsed.entry))
}

/// Loads a Multiboot image with its module and information structure.
pub(super) fn load(
    mem: &GuestMemory,
    spec: &KernelSpec,
    image: &[u8],
    header: Header,
    initrd: Option<&(&Path, Vec<u8>)>,
) -> Result<BootSetup, BootError> {
    let err = |r: String| kernel_err(spec.kernel, r);
    let unknown = header.flags & 0xffff & !FLAGS_UNDERSTOOD;
    if unknown != 0 {
        return Err(err(format!(
            "Multiboot header requires features Ember lacks (flags {unknown:#x})"
        )));
    }
    let (chunks, entry) = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        aout_layout(image, header).map_err(err)?
    } else if elf::is_elf(image) {
        elf_layout(image).map_err(err)?
    } else {
        return Err(err(
            "Multiboot image is neither ELF nor has load addresses (flag 16)".into(),
        ));
    };
    let start = chunks.iter().map(|c| c.paddr).min().unwrap_or(0);
    let end = chunks.iter().map(|c| c.mem_end).max().unwrap_or(0);
    for c in &chunks {
        check_placement(mem, c.paddr, c.mem_end).map_err(err)?;
    }
    for c in &chunks {
        let bytes = &image[c.file_offset as usize..(c.file_offset + c.filesz) as usize];
        mem.write_slice(bytes, GuestAddress(c.paddr))
            .map_err(|e| err(e.to_string()))?;
        let zeroes = vec![0u8; (c.mem_end - c.paddr - c.filesz) as usize];
        mem.write_slice(&zeroes, GuestAddress(c.paddr + c.filesz))
            .map_err(|e| err(e.to_string()))?;
    }

    let mut cmdline = format!("{} {}", spec.kernel.display(), spec.cmdline);
    cmdline.truncate(cmdline.trim_end().len());
    if cmdline.len() >= CMDLINE_MAX_SIZE || cmdline.contains('\0') {
        return Err(BootError::Cmdline(format!(
            "the Multiboot command line must be under {CMDLINE_MAX_SIZE} bytes without NULs"
        )));
    }
    write_cstr(mem, CMDLINE_ADDR, &cmdline)?;

    let mut flags = MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME;
    let mut strings = StringArea::new();
    let loader_name = strings.add(mem, "ember")?;
    let mut mods_count = 0u32;
    let mut initrd_range = None;
    if let Some((path, data)) = initrd {
        let mod_start = end.next_multiple_of(0x1000);
        let mod_end = mod_start + data.len() as u64;
        check_placement(mem, mod_start, mod_end).map_err(|r| initrd_err(path, r))?;
        mem.write_slice(data, GuestAddress(mod_start))
            .map_err(|e| initrd_err(path, e.to_string()))?;
        let name = strings.add(mem, &path.display().to_string())?;
        let entry = [mod_start as u32, mod_end as u32, name, 0];
        mem.write_obj(entry, GuestAddress(MODS_ADDR))
            .map_err(|e| BootError::Memory(e.to_string()))?;
        flags |= MBI_MODS;
        mods_count = 1;
        initrd_range = Some((mod_start, mod_end));
    }

    let mem_size = super::mem_size(mem);
    let map = layout::e820_map(mem_size);
    for (i, e) in map.iter().enumerate() {
        // size (of the rest of the entry), base, length, type: 24 bytes each.
        let mut raw = [0u8; 24];
        raw[0..4].copy_from_slice(&20u32.to_le_bytes());
        raw[4..12].copy_from_slice(&e.addr.to_le_bytes());
        raw[12..20].copy_from_slice(&e.size.to_le_bytes());
        raw[20..24].copy_from_slice(&(e.kind as u32).to_le_bytes());
        mem.write_obj(raw, GuestAddress(MMAP_ADDR + 24 * i as u64))
            .map_err(|e| BootError::Memory(e.to_string()))?;
    }

    let mut mbi = [0u32; 22];
    mbi[0] = flags;
    mbi[1] = (layout::EBDA_START / 1024) as u32; // mem_lower, KiB
    mbi[2] = ((layout::low_ram_end(mem_size) - layout::HIMEM_START) / 1024) as u32; // mem_upper
    mbi[4] = CMDLINE_ADDR as u32;
    mbi[5] = mods_count;
    mbi[6] = MODS_ADDR as u32;
    mbi[11] = (24 * map.len()) as u32; // mmap_length
    mbi[12] = MMAP_ADDR as u32;
    mbi[16] = loader_name;
    mem.write_obj(mbi, GuestAddress(MULTIBOOT_INFO_ADDR))
        .map_err(|e| BootError::Memory(e.to_string()))?;
    bios::write_ivt(mem).map_err(|e| BootError::Memory(e.to_string()))?;

    Ok(BootSetup {
        protocol: Protocol::Multiboot,
        entry: EntryState {
            mode: CpuMode::Protected32,
            rip: entry,
            rsp: 0,
            rax: BOOTLOADER_MAGIC,
            rbx: MULTIBOOT_INFO_ADDR,
            rsi: 0,
        },
        kernel_range: (start, end),
        initrd_range,
        bios_interrupts: true,
    })
}

/// Areas Ember fills before a Multiboot image starts: the IVT, BIOS data and boot GDT; the
/// information structure and command line; the EBDA and BIOS area.
const RESERVED: [(u64, u64, &str); 3] = [
    (0, 0x1000, "the interrupt vector table and boot GDT"),
    (
        MULTIBOOT_INFO_ADDR,
        CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64,
        "the Multiboot information",
    ),
    (layout::EBDA_START, layout::BIOS_END, "the BIOS area"),
];

/// Checks that `[start, end)` is RAM below the MMIO gap and clear of [`RESERVED`] areas.
fn check_placement(mem: &GuestMemory, start: u64, end: u64) -> Result<(), String> {
    let limit = layout::low_ram_end(super::mem_size(mem));
    if end > limit || start > end {
        return Err(format!(
            "needs guest memory {start:#x}..{end:#x}, beyond the guest's RAM below {limit:#x}; \
             raise machine-config.mem_size_mib"
        ));
    }
    match RESERVED.iter().find(|(lo, hi, _)| start < *hi && *lo < end) {
        Some((lo, hi, what)) => Err(format!(
            "loads at {start:#x}..{end:#x}, over {what} at {lo:#x}..{hi:#x}"
        )),
        None => Ok(()),
    }
}

fn write_cstr(mem: &GuestMemory, addr: u64, s: &str) -> Result<(), BootError> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|e| BootError::Memory(e.to_string()))
}

/// Bump allocator for NUL-terminated strings the information structure points to.
struct StringArea {
    next: u64,
}

impl StringArea {
    fn new() -> Self {
        StringArea { next: STRINGS_ADDR }
    }

    fn add(&mut self, mem: &GuestMemory, s: &str) -> Result<u32, BootError> {
        let at = self.next;
        let end = at + s.len() as u64 + 1;
        if end > STRINGS_END {
            return Err(BootError::Memory("Multiboot strings too long".into()));
        }
        write_cstr(mem, at, s)?;
        self.next = end;
        Ok(at as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::load as load_image;

    /// A spec booting `kernel` alone, with no command line.
    fn bare(kernel: &Path) -> KernelSpec<'_> {
        KernelSpec {
            kernel,
            initrd: None,
            cmdline: "",
            rsdp_addr: None,
            prefer_pvh: true,
        }
    }

    fn header(flags: u32) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&flags.to_le_bytes());
        let sum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        h[8..12].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// An ELF32 image whose code is a Multiboot header followed by `hlt`.
    fn multiboot_elf() -> Vec<u8> {
        let mut code = header(0x3).to_vec();
        code.extend_from_slice(&[0xf4; 4]);
        elf::tests::build(false, 0x20_0000, &code, 0x3000)
    }

    fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-mb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    fn read_u32(mem: &GuestMemory, addr: u64) -> u32 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    fn read_cstr(mem: &GuestMemory, addr: u64) -> String {
        let mut buf = vec![0u8; 256];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        let len = buf.iter().position(|b| *b == 0).unwrap();
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[test]
    fn header_needs_valid_checksum() {
        let mut img = vec![0u8; 64];
        img[16..28].copy_from_slice(&header(0));
        assert_eq!(
            find_header(&img),
            Some(Header {
                offset: 16,
                flags: 0
            })
        );
        img[24] ^= 1;
        assert_eq!(find_header(&img), None);
    }

    #[test]
    fn elf_image_gets_info_cmdline_mmap_and_module() {
        let kernel = temp_file("mb.elf", &multiboot_elf());
        let module = temp_file("env", b"NR_CPUS=1\n");
        let mem = GuestMemory::from_ranges(&layout::ram_ranges(64 << 20)).unwrap();
        let spec = KernelSpec {
            kernel: &kernel,
            initrd: Some(&module),
            cmdline: "exit=42",
            rsdp_addr: None,
            prefer_pvh: true,
        };
        let setup = load_image(&mem, &spec).unwrap();
        assert_eq!(setup.protocol, Protocol::Multiboot);
        assert_eq!(setup.entry.mode, CpuMode::Protected32);
        assert_eq!(
            (setup.entry.rax, setup.entry.rbx),
            (BOOTLOADER_MAGIC, MULTIBOOT_INFO_ADDR)
        );
        assert_eq!(setup.entry.rip, 0x20_0000);
        assert_eq!(read_u32(&mem, 0x20_0000), HEADER_MAGIC);

        let mbi = MULTIBOOT_INFO_ADDR;
        let flags = read_u32(&mem, mbi);
        assert_eq!(
            flags & (MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP),
            0b100_1101
        );
        assert_eq!(read_u32(&mem, mbi + 4), 639);
        assert_eq!(read_u32(&mem, mbi + 8), 63 * 1024);
        let cmdline = read_cstr(&mem, u64::from(read_u32(&mem, mbi + 16)));
        assert_eq!(cmdline, format!("{} exit=42", kernel.display()));
        assert_eq!(read_u32(&mem, mbi + 20), 1);
        let mods = u64::from(read_u32(&mem, mbi + 24));
        let (start, end) = (read_u32(&mem, mods), read_u32(&mem, mods + 4));
        assert_eq!(end - start, 10);
        assert_eq!(start % 4096, 0);
        assert!(
            u64::from(start) >= 0x20_3000,
            "module must not overlap the image's bss"
        );
        assert_eq!(read_cstr(&mem, u64::from(start)).as_str(), "NR_CPUS=1\n");
        assert_eq!(read_u32(&mem, mbi + 44), 3 * 24);
        let mmap = u64::from(read_u32(&mem, mbi + 48));
        assert_eq!(read_u32(&mem, mmap), 20);
        assert_eq!(read_u32(&mem, mmap + 20), 1);
    }

    #[test]
    fn real_mode_image_below_1mib_loads_with_a_bios_ivt() {
        let mut code = header(0).to_vec();
        code.extend_from_slice(&[0xf4; 4]);
        let kernel = temp_file("rm", &elf::tests::build(false, 0x8000, &code, 0x6000));
        let mem = GuestMemory::from_ranges(&layout::ram_ranges(16 << 20)).unwrap();
        let spec = bare(&kernel);
        let setup = load_image(&mem, &spec).unwrap();
        assert_eq!(setup.kernel_range, (0x8000, 0xe000));
        assert!(setup.bios_interrupts);
        assert_eq!(
            read_u32(&mem, 4 * 0x08),
            0xf000_0010,
            "IVT entry of the timer IRQ"
        );
    }

    #[test]
    fn aout_kludge_image_loads_at_its_addresses() {
        // Header at file offset 0 describes: header_addr = load_addr = 0x10_0000, the whole
        // file, bss to 0x10_2000, entry just after the header.
        let mut img = header(FLAG_AOUT_KLUDGE).to_vec();
        for v in [0x10_0000u32, 0x10_0000, 0, 0x10_2000, 0x10_0020] {
            img.extend_from_slice(&v.to_le_bytes());
        }
        img.extend_from_slice(&[0xf4; 4]);
        let kernel = temp_file("aout", &img);
        let mem = GuestMemory::from_ranges(&layout::ram_ranges(16 << 20)).unwrap();
        let spec = bare(&kernel);
        let setup = load_image(&mem, &spec).unwrap();
        assert_eq!(setup.entry.rip, 0x10_0020);
        assert_eq!(setup.kernel_range, (0x10_0000, 0x10_2000));
        assert_eq!(read_u32(&mem, 0x10_0020), 0xf4f4_f4f4);
    }

    #[test]
    fn image_over_boot_structures_or_with_unknown_flags_is_refused() {
        let mut code = header(0).to_vec();
        code.extend_from_slice(&[0xf4; 4]);
        let low = temp_file("low", &elf::tests::build(false, 0x1_8000, &code, 0x100));
        let mem = GuestMemory::from_ranges(&layout::ram_ranges(16 << 20)).unwrap();
        let spec = bare(&low);
        let err = load_image(&mem, &spec).unwrap_err().to_string();
        assert!(
            err.contains("low") && err.contains("Multiboot information"),
            "{err}"
        );

        let mut code = header(1 << 5).to_vec();
        code.extend_from_slice(&[0xf4; 4]);
        let odd = temp_file("odd", &elf::tests::build(false, 0x10_0000, &code, 0x100));
        let spec = KernelSpec {
            kernel: &odd,
            ..spec
        };
        let err = load_image(&mem, &spec).unwrap_err().to_string();
        assert!(err.contains("requires features"), "{err}");
    }
}
