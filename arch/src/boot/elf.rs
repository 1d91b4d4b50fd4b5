//! Just enough ELF to check a kernel's loadable segments before anything is copied: class,
//! entry point and `PT_LOAD` program headers of 32- and 64-bit little-endian x86 images.

/// A loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of its bytes in the file.
    pub offset: u64,
    /// Physical load address.
    pub paddr: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// What an ELF header says about loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfImage {
    /// True for ELFCLASS64.
    pub is_64: bool,
    /// The entry point.
    pub entry: u64,
    /// Its `PT_LOAD` segments, each within the file.
    pub segments: Vec<Segment>,
}

impl ElfImage {
    /// Highest physical address (exclusive) any segment occupies in memory.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.paddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(0)
    }
}

const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// Whether `image` starts with the ELF magic.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

fn field(image: &[u8], at: u64, len: usize) -> Result<u64, String> {
    let start = usize::try_from(at).map_err(|_| "header offset overflows".to_string())?;
    let bytes = image
        .get(start..start.saturating_add(len))
        .filter(|b| b.len() == len)
        .ok_or_else(|| format!("truncated: ELF header field at {start:#x} is past the end"))?;
    let mut buf = [0u8; 8];
    buf[..len].copy_from_slice(bytes);
    Ok(u64::from_le_bytes(buf))
}

/// Parses the ELF header and program headers; every segment must lie within the file.
pub fn parse(image: &[u8]) -> Result<ElfImage, String> {
    if !is_elf(image) {
        return Err("not an ELF file".into());
    }
    let is_64 = match image.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown ELF class".into()),
    };
    if image.get(5) != Some(&1) {
        return Err("not a little-endian ELF file".into());
    }
    let machine = field(image, 18, 2)? as u16;
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(format!("ELF machine {machine} is not x86"));
    }
    // (entry, phoff, phentsize, phnum) offsets and widths differ between the classes.
    let (entry, phoff, phentsize, phnum) = if is_64 {
        (
            field(image, 24, 8)?,
            field(image, 32, 8)?,
            field(image, 54, 2)?,
            field(image, 56, 2)?,
        )
    } else {
        (
            field(image, 24, 4)?,
            field(image, 28, 4)?,
            field(image, 42, 2)?,
            field(image, 44, 2)?,
        )
    };
    let min_phentsize = if is_64 { 56 } else { 32 };
    if phnum > 0 && phentsize < min_phentsize {
        return Err(format!("program header size {phentsize} is too small"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff.saturating_add(i * phentsize);
        if field(image, ph, 4)? as u32 != PT_LOAD {
            continue;
        }
        let seg = if is_64 {
            Segment {
                offset: field(image, ph + 8, 8)?,
                paddr: field(image, ph + 24, 8)?,
                filesz: field(image, ph + 32, 8)?,
                memsz: field(image, ph + 40, 8)?,
            }
        } else {
            Segment {
                offset: field(image, ph + 4, 4)?,
                paddr: field(image, ph + 12, 4)?,
                filesz: field(image, ph + 16, 4)?,
                memsz: field(image, ph + 20, 4)?,
            }
        };
        if seg.offset.saturating_add(seg.filesz) > image.len() as u64 {
            return Err(format!(
                "truncated: segment at {:#x} needs {:#x} bytes from file offset {:#x}, \
                 the file has {:#x}",
                seg.paddr,
                seg.filesz,
                seg.offset,
                image.len()
            ));
        }
        if seg.memsz < seg.filesz {
            return Err(format!(
                "segment at {:#x} is smaller in memory than in the file",
                seg.paddr
            ));
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err("no loadable segments".into());
    }
    Ok(ElfImage {
        is_64,
        entry,
        segments,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF32 (`is_64` false) or ELF64 image with one `PT_LOAD` segment of `code`
    /// loaded at `paddr`, entry at `paddr`. The code follows the headers in the file.
    pub(crate) fn build(is_64: bool, paddr: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        let (ehsize, phsize) = if is_64 { (64u64, 56u64) } else { (52, 32) };
        let off = ehsize + phsize;
        let mut f = vec![0u8; off as usize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if is_64 { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        f[16] = 2; // ET_EXEC
        let machine = if is_64 { EM_X86_64 } else { EM_386 };
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        let put = |f: &mut Vec<u8>, at: u64, v: u64, len: usize| {
            f[at as usize..at as usize + len].copy_from_slice(&v.to_le_bytes()[..len]);
        };
        if is_64 {
            put(&mut f, 24, paddr, 8);
            put(&mut f, 32, ehsize, 8);
            put(&mut f, 52, ehsize, 2);
            put(&mut f, 54, phsize, 2);
            put(&mut f, 56, 1, 2);
            let ph = ehsize;
            put(&mut f, ph, u64::from(PT_LOAD), 4);
            put(&mut f, ph + 8, off, 8);
            put(&mut f, ph + 16, paddr, 8);
            put(&mut f, ph + 24, paddr, 8);
            put(&mut f, ph + 32, code.len() as u64, 8);
            put(&mut f, ph + 40, memsz, 8);
        } else {
            put(&mut f, 24, paddr, 4);
            put(&mut f, 28, ehsize, 4);
            put(&mut f, 40, ehsize, 2);
            put(&mut f, 42, phsize, 2);
            put(&mut f, 44, 1, 2);
            let ph = ehsize;
            put(&mut f, ph, u64::from(PT_LOAD), 4);
            put(&mut f, ph + 4, off, 4);
            put(&mut f, ph + 8, paddr, 4);
            put(&mut f, ph + 12, paddr, 4);
            put(&mut f, ph + 16, code.len() as u64, 4);
            put(&mut f, ph + 20, memsz, 4);
        }
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn parses_both_classes() {
        for is_64 in [false, true] {
            let img = parse(&build(is_64, 0x10_0000, &[0x90; 16], 0x1000)).unwrap();
            assert_eq!(img.is_64, is_64);
            assert_eq!(img.entry, 0x10_0000);
            assert_eq!(img.segments.len(), 1);
            assert_eq!(img.end(), 0x10_1000);
        }
    }

    #[test]
    fn truncated_images_are_refused() {
        let full = build(true, 0x10_0000, &[0x90; 64], 64);
        let err = parse(&full[..full.len() - 10]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = parse(&full[..40]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(parse(b"MZ not elf").is_err());
    }
}
