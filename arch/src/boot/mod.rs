//! Loading a guest image into memory and the CPU state it starts in.
//!
//! [`load`] recognises the image by its contents (Multiboot header first, as QEMU does, then
//! ELF vmlinux, then bzImage), places it, the initrd and the command line in guest memory,
//! writes the boot protocol's structures, and returns the [`EntryState`] of the boot vCPU.
//! Every error names the file or field at fault, and nothing is started before it succeeds.

pub mod bios;
mod elf;
pub mod gdt;
pub mod input_file;
mod linux;
mod multiboot;
pub mod paging;
mod pvh;

use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{self, BOOT_GDT_ADDR};
use crate::GuestMemory;

/// What to boot.
#[derive(Debug, Clone)]
pub struct KernelSpec<'a> {
    /// The kernel (or Multiboot) image.
    pub kernel: &'a Path,
    /// The initrd (Linux) or first Multiboot module.
    pub initrd: Option<&'a Path>,
    /// The command line.
    pub cmdline: &'a str,
    /// Guest address of the ACPI RSDP, handed to Linux.
    pub rsdp_addr: Option<u64>,
    /// Use an ELF vmlinux's PVH entry point when it has one (else its 64-bit entry).
    pub prefer_pvh: bool,
}

/// The boot protocol an image was started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ELF vmlinux through its PVH (32-bit, paging off) entry point.
    LinuxPvh,
    /// ELF vmlinux through its 64-bit entry point with a zero page.
    LinuxElf64,
    /// bzImage through the 64-bit boot protocol.
    LinuxBzImage,
    /// Multiboot v1 image, as QEMU's `-kernel` boots one.
    Multiboot,
}

/// The processor mode the boot vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// 32-bit protected mode, flat segments, paging off.
    Protected32,
    /// 64-bit long mode on the identity page tables of [`paging`].
    Long64,
}

/// Registers of the boot vCPU at the kernel's entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    /// Processor mode.
    pub mode: CpuMode,
    /// Entry point.
    pub rip: u64,
    /// Stack pointer (0 where the protocol gives none).
    pub rsp: u64,
    /// EAX (the Multiboot magic).
    pub rax: u64,
    /// EBX (PVH start_info or Multiboot info address).
    pub rbx: u64,
    /// RSI (Linux zero page address).
    pub rsi: u64,
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

impl EntryState {
    /// General registers at entry.
    pub fn regs(&self) -> kvm_regs {
        kvm_regs {
            rip: self.rip,
            rsp: self.rsp,
            rbp: self.rsp,
            rax: self.rax,
            rbx: self.rbx,
            rsi: self.rsi,
            rflags: 0x2,
            ..Default::default()
        }
    }

    /// Sets segments, descriptor tables, control registers and EFER in `sregs`, keeping the
    /// rest (APIC base, interrupt bitmap) as the hypervisor reported it.
    pub fn apply_sregs(&self, sregs: &mut kvm_sregs) {
        let code = match self.mode {
            CpuMode::Protected32 => gdt::CODE32_SELECTOR,
            CpuMode::Long64 => gdt::CODE64_SELECTOR,
        };
        let data = gdt::segment_for(gdt::DATA_SELECTOR);
        sregs.cs = gdt::segment_for(code);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = gdt::segment_for(gdt::TSS_SELECTOR);
        sregs.gdt.base = BOOT_GDT_ADDR;
        sregs.gdt.limit = (std::mem::size_of_val(&gdt::table()) - 1) as u16;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        match self.mode {
            CpuMode::Protected32 => {
                sregs.cr0 = CR0_PE | CR0_ET;
                sregs.cr3 = 0;
                sregs.cr4 = 0;
                sregs.efer = 0;
            }
            CpuMode::Long64 => {
                sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
                sregs.cr3 = paging::PML4_ADDR;
                sregs.cr4 = CR4_PAE;
                sregs.efer = EFER_LME | EFER_LMA;
            }
        }
    }
}

/// Where an image and its initrd ended up, and how to start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSetup {
    /// How the image is started.
    pub protocol: Protocol,
    /// The boot vCPU's entry state.
    pub entry: EntryState,
    /// Guest physical range `[start, end)` the kernel occupies, including room it needs to
    /// unpack itself.
    pub kernel_range: (u64, u64),
    /// Guest physical range of the initrd or module, if any.
    pub initrd_range: Option<(u64, u64)>,
    /// Whether the guest expects the PIC and PIT a BIOS leaves (see [`bios`]); the IVT is
    /// already in memory.
    pub bios_interrupts: bool,
}

/// Why an image could not be booted. Each variant names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel image is unreadable, not a kernel, malformed, or too big.
    #[error("kernel image {}: {reason}", path.display())]
    Kernel {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The initrd is unreadable or does not fit.
    #[error("initrd {}: {reason}", path.display())]
    Initrd {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The command line is too long or has characters a kernel cannot take.
    #[error("boot-source.boot_args: {0}")]
    Cmdline(String),
    /// Writing boot structures failed (guest memory too small for them).
    #[error("guest memory too small for the boot structures: {0}")]
    Memory(String),
}

fn kernel_err(path: &Path, reason: impl Into<String>) -> BootError {
    BootError::Kernel {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn initrd_err(path: &Path, reason: impl Into<String>) -> BootError {
    BootError::Initrd {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a kernel or initrd, which must be a regular file no larger than guest RAM.
fn read_image(mem: &GuestMemory, path: &Path) -> Result<Vec<u8>, String> {
    let ram = mem_size(mem);
    input_file::read_regular_file(path, ram).map_err(|e| match e {
        input_file::InputFileError::TooBig { len, .. } => format!(
            "is {len} bytes, more than all guest RAM ({} MiB): raise machine-config.mem_size_mib",
            ram / MIB
        ),
        other => other.to_string(),
    })
}

/// Total guest RAM in bytes.
fn mem_size(mem: &GuestMemory) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter().map(GuestMemoryRegion::len).sum()
}

const MIB: u64 = 1 << 20;

/// Loads the image named in `spec` into `mem` and prepares its boot protocol. The kernel
/// and initrd must be regular files no larger than guest RAM.
pub fn load(mem: &GuestMemory, spec: &KernelSpec) -> Result<BootSetup, BootError> {
    let image = read_image(mem, spec.kernel).map_err(|r| kernel_err(spec.kernel, r))?;
    let initrd = match spec.initrd {
        Some(path) => Some((
            path,
            read_image(mem, path).map_err(|r| initrd_err(path, r))?,
        )),
        None => None,
    };
    mem.write_obj(gdt::table(), GuestAddress(BOOT_GDT_ADDR))
        .map_err(|e| BootError::Memory(e.to_string()))?;
    let setup = if let Some(header) = multiboot::find_header(&image) {
        multiboot::load(mem, spec, &image, header, initrd.as_ref())?
    } else if elf::is_elf(&image) {
        linux::load_elf(mem, spec, &image, initrd.as_ref())?
    } else if linux::is_bzimage(&image) {
        linux::load_bzimage(mem, spec, &image, initrd.as_ref())?
    } else {
        return Err(kernel_err(
            spec.kernel,
            "not a kernel image: no Multiboot header, ELF header or bzImage header",
        ));
    };
    if setup.entry.mode == CpuMode::Long64 {
        paging::write_identity_map(mem).map_err(|e| BootError::Memory(e.to_string()))?;
    }
    Ok(setup)
}

/// Checks that `[start, end)` is RAM below the MMIO gap, naming what does not fit.
fn check_fits_low_ram(mem: &GuestMemory, what: &str, start: u64, end: u64) -> Result<(), String> {
    let size = mem_size(mem);
    let limit = layout::low_ram_end(size);
    if start < layout::HIMEM_START || end > limit {
        return Err(format!(
            "{what} needs guest memory {start:#x}..{end:#x} ({} MiB), but the guest has RAM \
             {:#x}..{limit:#x} for it ({} MiB of memory); raise machine-config.mem_size_mib",
            end.div_ceil(MIB),
            layout::HIMEM_START,
            size / MIB
        ));
    }
    Ok(())
}

/// Places `data` page-aligned as high as possible below `ceiling` (and the MMIO gap) but above
/// `floor`, and copies it there. Returns its guest range.
fn place_high(
    mem: &GuestMemory,
    data: &[u8],
    floor: u64,
    ceiling: u64,
) -> Result<(u64, u64), String> {
    let top = ceiling.min(layout::low_ram_end(mem_size(mem)));
    let size = data.len() as u64;
    let start = top
        .checked_sub(size)
        .map(|s| s & !0xfff)
        .filter(|s| *s >= floor)
        .ok_or_else(|| {
            format!(
                "{} MiB does not fit in guest memory between {floor:#x} (end of the kernel) and \
                 {top:#x}; raise machine-config.mem_size_mib",
                size.div_ceil(MIB)
            )
        })?;
    mem.write_slice(data, GuestAddress(start))
        .map_err(|e| e.to_string())?;
    Ok((start, start + size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_state_is_consistent() {
        let entry = EntryState {
            mode: CpuMode::Long64,
            rip: 0x100_0000,
            rsp: layout::BOOT_STACK_POINTER,
            rax: 0,
            rbx: 0,
            rsi: layout::ZERO_PAGE_ADDR,
        };
        let mut sregs = kvm_sregs {
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        entry.apply_sregs(&mut sregs);
        assert_eq!(sregs.cs.selector, gdt::CODE64_SELECTOR);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, paging::PML4_ADDR);
        assert_eq!(sregs.apic_base, 0xfee0_0900, "APIC base must be kept");
        assert_eq!(entry.regs().rsi, layout::ZERO_PAGE_ADDR);
        assert_eq!(entry.regs().rflags, 2);
    }

    #[test]
    fn protected_mode_entry_has_paging_off() {
        let entry = EntryState {
            mode: CpuMode::Protected32,
            rip: 0x10_0000,
            rsp: 0,
            rax: 0x2bad_b002,
            rbx: 0x1_0000,
            rsi: 0,
        };
        let mut sregs = kvm_sregs::default();
        entry.apply_sregs(&mut sregs);
        assert_eq!(sregs.cs.selector, gdt::CODE32_SELECTOR);
        assert_eq!((sregs.cs.db, sregs.cs.l), (1, 0));
        assert_eq!(sregs.cr0 & CR0_PG, 0);
        assert_eq!(sregs.efer, 0);
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let dir = std::env::temp_dir().join(format!("ember-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage");
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x200_0000)]).unwrap();
        let spec = KernelSpec {
            kernel: &path,
            initrd: None,
            cmdline: "",
            rsdp_addr: None,
            prefer_pvh: true,
        };
        let err = load(&mem, &spec).unwrap_err().to_string();
        assert!(
            err.contains("garbage") && err.contains("not a kernel image"),
            "{err}"
        );
        let missing = dir.join("missing");
        let spec = KernelSpec {
            kernel: &missing,
            ..spec
        };
        let err = load(&mem, &spec).unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("cannot open"),
            "{err}"
        );
        for (kernel, why) in [
            (Path::new("/dev/zero"), "character device"),
            (&dir, "directory"),
        ] {
            let spec = KernelSpec { kernel, ..spec };
            let err = load(&mem, &spec).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        std::fs::write(&path, vec![0x5a; 0x200_0001]).unwrap();
        let spec = KernelSpec {
            kernel: &path,
            ..spec
        };
        let err = load(&mem, &spec).unwrap_err().to_string();
        assert!(err.contains("more than all guest RAM (32 MiB)"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
