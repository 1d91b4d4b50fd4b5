//! Memory images of the x87 state: FXSAVE/FXRSTOR (512 bytes),
//! FNSTENV/FLDENV (14/28 bytes) and FNSAVE/FRSTOR (94/108 bytes), plus the
//! full 16-bit tag word derived from register contents.
//!
//! FCS/FDS selector fields are written as 0 and ignored on load (the
//! behaviour of processors with CPUID.(EAX=7,ECX=0):EBX[13], "FPU CS and DS
//! deprecated"); the state keeps only the FIP/FDP offsets.

use super::f80::{classify, Class};
use super::stack::{self, update_summary};
use super::state::Fpu;

/// FXSAVE/FXRSTOR layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FxFormat {
    /// 64-bit mode with REX.W (FXSAVE64): 64-bit FIP and FDP; XMM0-15.
    Bits64,
    /// 64-bit mode without REX.W: 32-bit FIP/FCS, FDP/FDS; XMM0-15.
    Bits32,
    /// Outside 64-bit mode: 32-bit pointers; XMM0-7 only (XMM8-15 untouched).
    Legacy,
}

/// FNSTENV/FLDENV (and FNSAVE/FRSTOR header) layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvFormat {
    /// 32-bit operand size, protected mode (28 bytes).
    Protected32,
    /// 16-bit operand size, protected mode (14 bytes).
    Protected16,
    /// 32-bit operand size, real or virtual-8086 mode (28 bytes).
    Real32,
    /// 16-bit operand size, real or virtual-8086 mode (14 bytes).
    Real16,
}

impl EnvFormat {
    /// Size of the environment image in bytes (14 or 28).
    pub const fn env_len(self) -> usize {
        match self {
            EnvFormat::Protected32 | EnvFormat::Real32 => 28,
            EnvFormat::Protected16 | EnvFormat::Real16 => 14,
        }
    }

    /// Size of the FNSAVE image in bytes (94 or 108).
    pub const fn save_len(self) -> usize {
        self.env_len() + 80
    }
}

/// FXRSTOR/XRSTOR error: the MXCSR image sets bits outside MXCSR_MASK (#GP(0)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidMxcsr;

/// MXCSR_MASK reported in FXSAVE images: all of bits 0..15 are supported.
pub const MXCSR_MASK: u32 = 0xFFFF;

/// Full tag word (2 bits per physical register: 00 valid, 01 zero,
/// 10 special, 11 empty) computed from the abridged tags and contents.
pub fn full_tag_word(fpu: &Fpu) -> u16 {
    let mut tw = 0u16;
    for (p, reg) in fpu.regs.iter().enumerate() {
        let tag = if fpu.ftw & (1 << p) == 0 {
            3
        } else {
            match classify(*reg) {
                Class::Normal => 0,
                Class::Zero => 1,
                _ => 2,
            }
        };
        tw |= tag << (2 * p);
    }
    tw
}

/// Abridged tag byte from a full tag word (only "empty" is significant).
pub fn abridged_tag(full: u16) -> u8 {
    let mut ftw = 0u8;
    for p in 0..8 {
        if (full >> (2 * p)) & 3 != 3 {
            ftw |= 1 << p;
        }
    }
    ftw
}

/// Control word as the hardware keeps it after a load (bits 13..15 read 0, bit 6 reads 1).
const fn load_fcw(cw: u16) -> u16 {
    (cw & 0x1F3F) | 0x0040
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    if let Some(d) = b.get_mut(off..off + 2) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    if let Some(d) = b.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    if let Some(d) = b.get_mut(off..off + 8) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn get16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn get32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn get64(b: &[u8], off: usize) -> u64 {
    u64::from(get32(b, off)) | (u64::from(get32(b, off + 4)) << 32)
}

/// Writes the architected fields of an FXSAVE image into `img`. Bytes the
/// processor does not write (reserved fields, bytes 464..511, and XMM8-15 in
/// the [`FxFormat::Legacy`] layout) keep their previous contents, so the caller
/// can read-modify-write guest memory.
pub fn fxsave_into(fpu: &Fpu, fmt: FxFormat, img: &mut [u8; 512]) {
    put16(img, 0, fpu.fcw);
    put16(img, 2, fpu.fsw);
    img[4] = fpu.ftw;
    img[5] = 0;
    put16(img, 6, fpu.fop & 0x7FF);
    match fmt {
        FxFormat::Bits64 => {
            put64(img, 8, fpu.fip);
            put64(img, 16, fpu.fdp);
        }
        FxFormat::Bits32 | FxFormat::Legacy => {
            put32(img, 8, fpu.fip as u32);
            put32(img, 12, 0);
            put32(img, 16, fpu.fdp as u32);
            put32(img, 20, 0);
        }
    }
    put32(img, 24, fpu.mxcsr);
    put32(img, 28, MXCSR_MASK);
    for i in 0..8 {
        let off = 32 + 16 * i;
        img[off..off + 10].copy_from_slice(&stack::st(fpu, i));
        img[off + 10..off + 16].fill(0);
    }
    let nxmm = if fmt == FxFormat::Legacy { 8 } else { 16 };
    for (i, x) in fpu.xmm.iter().take(nxmm).enumerate() {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
    }
}

/// FXSAVE image (unwritten bytes zero). Registers are stored in ST order.
pub fn fxsave_image(fpu: &Fpu, fmt: FxFormat) -> [u8; 512] {
    let mut img = [0u8; 512];
    fxsave_into(fpu, fmt, &mut img);
    img
}

/// FXRSTOR: loads the state from an FXSAVE image. ES/B are recomputed from
/// the loaded flags and masks; the control word's reserved bits are
/// normalised as on a load.
///
/// # Errors
///
/// [`InvalidMxcsr`] (the caller raises #GP(0)) when the MXCSR image has bits
/// outside [`MXCSR_MASK`] set; the state is then left unchanged.
pub fn fxrstor_image(fpu: &mut Fpu, img: &[u8; 512], fmt: FxFormat) -> Result<(), InvalidMxcsr> {
    let mxcsr = get32(img, 24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(InvalidMxcsr);
    }
    fpu.mxcsr = mxcsr;
    fpu.fcw = load_fcw(get16(img, 0));
    fpu.fsw = get16(img, 2);
    fpu.ftw = img[4];
    fpu.fop = get16(img, 6) & 0x7FF;
    match fmt {
        FxFormat::Bits64 => {
            fpu.fip = get64(img, 8);
            fpu.fdp = get64(img, 16);
        }
        FxFormat::Bits32 | FxFormat::Legacy => {
            fpu.fip = u64::from(get32(img, 8));
            fpu.fdp = u64::from(get32(img, 16));
        }
    }
    for i in 0..8 {
        let off = 32 + 16 * i;
        let mut r = [0u8; 10];
        r.copy_from_slice(&img[off..off + 10]);
        let p = stack::phys(fpu, i);
        fpu.regs[p] = r;
    }
    let nxmm = if fmt == FxFormat::Legacy { 8 } else { 16 };
    for (i, x) in fpu.xmm.iter_mut().take(nxmm).enumerate() {
        let mut b = [0u8; 16];
        b.copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
        *x = u128::from_le_bytes(b);
    }
    update_summary(fpu);
    Ok(())
}

/// Writes the environment (FNSTENV layout `fmt`) into `out[..fmt.env_len()]`.
fn write_env(fpu: &Fpu, fmt: EnvFormat, out: &mut [u8]) {
    let tw = full_tag_word(fpu);
    let fop = u32::from(fpu.fop & 0x7FF);
    match fmt {
        EnvFormat::Protected32 => {
            put32(out, 0, 0xFFFF_0000 | u32::from(fpu.fcw));
            put32(out, 4, 0xFFFF_0000 | u32::from(fpu.fsw));
            put32(out, 8, 0xFFFF_0000 | u32::from(tw));
            put32(out, 12, fpu.fip as u32);
            put32(out, 16, fop << 16);
            put32(out, 20, fpu.fdp as u32);
            put32(out, 24, 0xFFFF_0000);
        }
        EnvFormat::Protected16 => {
            put16(out, 0, fpu.fcw);
            put16(out, 2, fpu.fsw);
            put16(out, 4, tw);
            put16(out, 6, fpu.fip as u16);
            put16(out, 8, 0);
            put16(out, 10, fpu.fdp as u16);
            put16(out, 12, 0);
        }
        EnvFormat::Real32 => {
            put32(out, 0, 0xFFFF_0000 | u32::from(fpu.fcw));
            put32(out, 4, 0xFFFF_0000 | u32::from(fpu.fsw));
            put32(out, 8, 0xFFFF_0000 | u32::from(tw));
            put32(out, 12, 0xFFFF_0000 | (fpu.fip as u32 & 0xFFFF));
            put32(out, 16, ((fpu.fip as u32 >> 16) << 12) | fop);
            put32(out, 20, 0xFFFF_0000 | (fpu.fdp as u32 & 0xFFFF));
            put32(out, 24, (fpu.fdp as u32 >> 16) << 12);
        }
        EnvFormat::Real16 => {
            put16(out, 0, fpu.fcw);
            put16(out, 2, fpu.fsw);
            put16(out, 4, tw);
            put16(out, 6, fpu.fip as u16);
            put16(
                out,
                8,
                ((((fpu.fip >> 16) & 0xF) as u16) << 12) | fop as u16,
            );
            put16(out, 10, fpu.fdp as u16);
            put16(out, 12, (((fpu.fdp >> 16) & 0xF) as u16) << 12);
        }
    }
}

/// Loads the environment from `img` (layout `fmt`).
fn read_env(fpu: &mut Fpu, fmt: EnvFormat, img: &[u8]) {
    let (fcw, fsw, tw) = match fmt {
        EnvFormat::Protected32 | EnvFormat::Real32 => (get16(img, 0), get16(img, 4), get16(img, 8)),
        EnvFormat::Protected16 | EnvFormat::Real16 => (get16(img, 0), get16(img, 2), get16(img, 4)),
    };
    fpu.fcw = load_fcw(fcw);
    fpu.fsw = fsw;
    fpu.ftw = abridged_tag(tw);
    match fmt {
        EnvFormat::Protected32 => {
            fpu.fip = u64::from(get32(img, 12));
            fpu.fop = (get32(img, 16) >> 16) as u16 & 0x7FF;
            fpu.fdp = u64::from(get32(img, 20));
        }
        EnvFormat::Protected16 => {
            fpu.fip = u64::from(get16(img, 6));
            fpu.fdp = u64::from(get16(img, 10));
        }
        EnvFormat::Real32 => {
            let w = get32(img, 16);
            fpu.fip = u64::from(get16(img, 12)) | (u64::from((w >> 12) & 0xFFFF) << 16);
            fpu.fop = (w & 0x7FF) as u16;
            fpu.fdp =
                u64::from(get16(img, 20)) | (u64::from((get32(img, 24) >> 12) & 0xFFFF) << 16);
        }
        EnvFormat::Real16 => {
            let w = get16(img, 8);
            fpu.fip = u64::from(get16(img, 6)) | (u64::from(w >> 12) << 16);
            fpu.fop = w & 0x7FF;
            fpu.fdp = u64::from(get16(img, 10)) | (u64::from(get16(img, 12) >> 12) << 16);
        }
    }
    update_summary(fpu);
}

/// FNSTENV: returns the environment image (`fmt.env_len()` meaningful bytes)
/// and then masks all exceptions (FCW bits 0..5 set), as the hardware does.
pub fn fnstenv(fpu: &mut Fpu, fmt: EnvFormat) -> [u8; 28] {
    let mut out = [0u8; 28];
    write_env(fpu, fmt, &mut out);
    fpu.fcw |= 0x3F;
    update_summary(fpu);
    out
}

/// FLDENV: loads the environment from `img` (`fmt.env_len()` bytes are
/// read; missing bytes read as 0). ES/B are recomputed, so a loaded unmasked
/// flag makes #MF pending.
pub fn fldenv(fpu: &mut Fpu, img: &[u8], fmt: EnvFormat) {
    read_env(fpu, fmt, img);
}

/// FNSAVE: returns the environment followed by ST(0)..ST(7)
/// (`fmt.save_len()` meaningful bytes), then reinitialises like FNINIT.
pub fn fnsave(fpu: &mut Fpu, fmt: EnvFormat) -> [u8; 108] {
    let mut out = [0u8; 108];
    write_env(fpu, fmt, &mut out);
    let base = fmt.env_len();
    for i in 0..8 {
        out[base + 10 * i..base + 10 * i + 10].copy_from_slice(&stack::st(fpu, i));
    }
    super::ops::fninit(fpu);
    out
}

/// FRSTOR: loads environment and registers from an FNSAVE image of layout
/// `fmt` (missing bytes read as 0).
pub fn frstor(fpu: &mut Fpu, img: &[u8], fmt: EnvFormat) {
    read_env(fpu, fmt, img);
    let base = fmt.env_len();
    for i in 0..8 {
        let mut r = [0u8; 10];
        if let Some(s) = img.get(base + 10 * i..base + 10 * i + 10) {
            r.copy_from_slice(s);
        }
        let p = stack::phys(fpu, i);
        fpu.regs[p] = r;
    }
}
