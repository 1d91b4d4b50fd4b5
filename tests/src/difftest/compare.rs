//! Comparing the state a case ended in on both sides.
//!
//! Both states are first normalised: RFLAGS bits (and x87 condition codes) that are undefined
//! where the case ended are cleared, also in the RFLAGS image of an exception frame on the
//! kernel stack. Then every field is compared: the exit, RIP, general registers, RFLAGS, CR2
//! for page faults, the data area, the constant page, the stack pages, the kernel stack page
//! (exception frames), the page-table entries of the case pages (dirty bits exactly; an
//! accessed bit the interpreter sets on a data or stack page must be set on KVM too, which may
//! set more through speculation on real hardware; code pages' accessed bits are not compared,
//! see [`layout::UNCOMPARED_ACCESSED`]), MXCSR, XMM registers and x87 state.

use std::fmt;

use super::flags::{fsw_bits, rflags_bits, FPU_CC};
use super::layout::{self, PTE_A};
use super::state::{Exit, FinalState, GPR_NAMES, RSP};

/// Vectors that push an error code.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Offset in the kernel stack page of the RFLAGS image in the exception frame `state` ended
/// with (the stub runs on that frame: RSP points at it).
pub fn frame_rflags_offset(state: &FinalState) -> Option<usize> {
    let Exit::Exception(v) = state.exit else {
        return None;
    };
    let rsp = state.gpr[RSP];
    let slot = rsp.checked_add(16 + if has_error_code(v) { 8 } else { 0 })?;
    (slot >= layout::KSTACK_BASE && slot + 8 <= layout::KSTACK_END)
        .then(|| (slot - layout::KSTACK_BASE) as usize)
}

/// The RIP pushed by the exception `state` ended with.
pub fn frame_rip(state: &FinalState) -> Option<u64> {
    let at = frame_rflags_offset(state)? - 16;
    state
        .kstack
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// The flags undefined where `state` ended (iced flag bits), given the trace of the case
/// (flags undefined before each instruction, and after the last).
pub fn undefined_at_exit(points: &[(u64, u32)], end: u32, state: &FinalState) -> u32 {
    match state.exit {
        Exit::End => end,
        Exit::Exception(_) => frame_rip(state)
            .and_then(|rip| points.iter().find(|(ip, _)| *ip == rip))
            .map_or(end, |(_, u)| *u),
        _ => end,
    }
}

/// RFLAGS.IOPL: the harness sets it to 3 so the sequence may `out`; `kvm_pvm` virtualises it
/// and reports 0. It is not compared.
const IOPL: u64 = 3 << 12;

/// RFLAGS.RF in the image an exception pushes.
/// RFLAGS bits not compared where the flags `undefined` (iced bits) are undefined.
pub fn ignored_rflags(undefined: u32) -> u64 {
    rflags_bits(undefined & !FPU_CC) | IOPL
}

/// RFLAGS bits not compared in an exception frame's RFLAGS image.
pub fn ignored_frame_rflags(undefined: u32) -> u64 {
    ignored_rflags(undefined)
}

/// x87 status-word bits not compared where the flags `undefined` are undefined.
pub fn ignored_fsw(undefined: u32) -> u16 {
    fsw_bits(undefined & FPU_CC)
}

/// The RFLAGS image in the exception frame `state` ended with.
pub fn frame_rflags(state: &FinalState) -> Option<u64> {
    let at = frame_rflags_offset(state)?;
    state
        .kstack
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// `state` with the exception frame's RFLAGS image replaced by `value`.
pub fn with_frame_rflags(state: &FinalState, value: u64) -> FinalState {
    let mut s = state.clone();
    if let Some(at) = frame_rflags_offset(&s) {
        s.kstack[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    s
}

/// `state` with the undefined flags `undefined` (and IOPL) cleared everywhere they appear.
pub fn normalize(state: &FinalState, undefined: u32) -> FinalState {
    let frame = frame_rflags(state).unwrap_or(0) & !ignored_frame_rflags(undefined);
    let mut s = with_frame_rflags(state, frame);
    s.rflags &= !ignored_rflags(undefined);
    s.x87.fsw &= !ignored_fsw(undefined);
    s
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The field.
    pub field: String,
    /// Its value on KVM (or as recorded).
    pub kvm: String,
    /// Its value on the interpreter.
    pub interp: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: kvm {} / interp {}",
            self.field, self.kvm, self.interp
        )
    }
}

fn diff(out: &mut Vec<Diff>, field: impl Into<String>, kvm: String, interp: String) {
    out.push(Diff {
        field: field.into(),
        kvm,
        interp,
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Differences between two byte areas at guest address `base`, one entry per run of
/// differing bytes (at most 8), each with 16 bytes of context.
fn memory(out: &mut Vec<Diff>, name: &str, base: u64, kvm: &[u8], interp: &[u8]) {
    let mut runs = 0;
    let mut i = 0;
    while i < kvm.len().min(interp.len()) {
        if kvm[i] == interp[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < kvm.len() && kvm[i] != interp[i] {
            i += 1;
        }
        runs += 1;
        if runs <= 8 {
            let lo = start & !15;
            let hi = (lo + 16).min(kvm.len()).max(i.min(lo + 32));
            diff(
                out,
                format!(
                    "{name} at {:#x} ({} bytes; line {:#x})",
                    base + start as u64,
                    i - start,
                    base + lo as u64
                ),
                hex(&kvm[lo..hi]),
                hex(&interp[lo..hi]),
            );
        }
    }
    if runs > 8 {
        diff(
            out,
            format!("{name}: {} more differing runs", runs - 8),
            String::new(),
            String::new(),
        );
    }
}

/// Every difference between the normalised states, most telling first.
pub fn compare(kvm: &FinalState, interp: &FinalState) -> Vec<Diff> {
    let mut out = Vec::new();
    if kvm.exit != interp.exit {
        diff(
            &mut out,
            "exit",
            format!("{:?}", kvm.exit),
            format!("{:?}", interp.exit),
        );
    }
    if kvm.rip != interp.rip {
        diff(
            &mut out,
            "rip",
            format!("{:#x}", kvm.rip),
            format!("{:#x}", interp.rip),
        );
    }
    for (i, name) in GPR_NAMES.iter().enumerate() {
        if kvm.gpr[i] != interp.gpr[i] {
            diff(
                &mut out,
                *name,
                format!("{:#x}", kvm.gpr[i]),
                format!("{:#x}", interp.gpr[i]),
            );
        }
    }
    if kvm.rflags != interp.rflags {
        diff(
            &mut out,
            "rflags",
            format!("{:#x}", kvm.rflags),
            format!("{:#x}", interp.rflags),
        );
    }
    let pf = |s: &FinalState| s.exit == Exit::Exception(14);
    if (pf(kvm) || pf(interp)) && kvm.cr2 != interp.cr2 {
        diff(
            &mut out,
            "cr2",
            format!("{:#x}", kvm.cr2),
            format!("{:#x}", interp.cr2),
        );
    }
    memory(&mut out, "data", layout::DATA_BASE, &kvm.data, &interp.data);
    memory(
        &mut out,
        "stack",
        layout::STACK_BASE,
        &kvm.stack,
        &interp.stack,
    );
    memory(
        &mut out,
        "kernel stack",
        layout::KSTACK_BASE,
        &kvm.kstack,
        &interp.kstack,
    );
    memory(
        &mut out,
        "constants",
        layout::CONST_BASE,
        &kvm.consts,
        &interp.consts,
    );
    for (n, page) in layout::CASE_PAGES.iter().enumerate() {
        let (k, i) = (kvm.ptes[n], interp.ptes[n]);
        let a = if layout::UNCOMPARED_ACCESSED & (1 << n) != 0 {
            0
        } else {
            PTE_A
        };
        if k & !PTE_A != i & !PTE_A || (i & a != 0 && k & a == 0) {
            diff(
                &mut out,
                format!("pte of page {:#x}", page << 12),
                format!("{k:#x}"),
                format!("{i:#x}"),
            );
        }
    }
    if kvm.mxcsr != interp.mxcsr {
        diff(
            &mut out,
            "mxcsr",
            format!("{:#x}", kvm.mxcsr),
            format!("{:#x}", interp.mxcsr),
        );
    }
    for r in 0..16 {
        if kvm.xmm[r] != interp.xmm[r] {
            diff(
                &mut out,
                format!("xmm{r}"),
                xmm_hex(&kvm.xmm[r]),
                xmm_hex(&interp.xmm[r]),
            );
        }
    }
    let (kx, ix) = (&kvm.x87, &interp.x87);
    for (name, a, b) in [
        ("fcw", kx.fcw, ix.fcw),
        ("fsw", kx.fsw, ix.fsw),
        ("ftw", u16::from(kx.ftw), u16::from(ix.ftw)),
    ] {
        if a != b {
            diff(&mut out, name, format!("{a:#x}"), format!("{b:#x}"));
        }
    }
    for i in 0..8 {
        if kx.st[i] != ix.st[i] {
            diff(&mut out, format!("st{i}"), hex(&kx.st[i]), hex(&ix.st[i]));
        }
    }
    out
}

/// An XMM register as a 128-bit hex number.
pub fn xmm_hex(x: &[u8; 16]) -> String {
    format!("{:#034x}", u128::from_le_bytes(*x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::state::X87;

    fn state() -> FinalState {
        FinalState {
            exit: Exit::End,
            gpr: [0; 16],
            rip: 0x9000,
            rflags: 0x8d7,
            cr2: 0,
            xmm: [[0; 16]; 16],
            mxcsr: 0x1f80,
            x87: X87::default(),
            data: vec![0; 0x4000],
            consts: vec![0; 0x1000],
            stack: vec![0; 0x2000],
            kstack: vec![0; 0x1000],
            ptes: vec![0x8023; 12],
        }
    }

    #[test]
    fn identical_states_do_not_differ_and_registers_do() {
        let a = state();
        assert!(compare(&a, &a).is_empty());
        let mut b = a.clone();
        b.gpr[3] = 1;
        b.data[0x10] = 9;
        let d = compare(&a, &b);
        assert_eq!(d[0].field, "rbx");
        assert!(d[1].field.starts_with("data at 0x10010"), "{}", d[1].field);
    }

    #[test]
    fn undefined_flags_are_ignored_in_rflags_and_in_the_frame() {
        use iced_x86::RflagsBits;
        let mut a = state();
        a.exit = Exit::Exception(0);
        a.gpr[RSP] = layout::KSTACK_BASE + 0xf00;
        let at = 0xf00 + 16;
        a.kstack[at..at + 8].copy_from_slice(&0x8d7u64.to_le_bytes());
        a.kstack[0xf00..0xf08].copy_from_slice(&0x9010u64.to_le_bytes());
        let mut b = a.clone();
        b.rflags ^= 0x10; // AF
        b.kstack[at] ^= 0x10;
        assert!(!compare(&a, &b).is_empty());
        assert_eq!(frame_rip(&a), Some(0x9010));
        let points = [(0x9000, 0), (0x9010, RflagsBits::AF)];
        let u = undefined_at_exit(&points, 0, &a);
        assert_eq!(u, RflagsBits::AF);
        assert!(compare(&normalize(&a, u), &normalize(&b, u)).is_empty());
    }

    #[test]
    fn accessed_bits_may_be_extra_on_kvm_but_not_on_the_interpreter() {
        let a = state();
        let data = 4; // CASE_PAGES[4] is the first data page.
        let mut b = a.clone();
        b.ptes[data] &= !PTE_A;
        assert!(compare(&a, &b).is_empty(), "KVM set an extra accessed bit");
        assert!(!compare(&b, &a).is_empty());
        let mut code = a.clone();
        code.ptes[0] &= !PTE_A;
        assert!(
            compare(&code, &a).is_empty(),
            "code pages' accessed bits are not compared"
        );
        let mut c = a.clone();
        c.ptes[1] |= 1 << 6;
        assert!(!compare(&a, &c).is_empty(), "dirty bits are exact");
    }
}
