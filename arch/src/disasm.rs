//! Naming what a vCPU was doing when it stopped: its execution mode and instruction.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use kvm_bindings::kvm_sregs;

const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;

/// The execution mode `sregs` describe, and the code size in bits (16, 32 or 64).
pub fn cpu_mode(sregs: &kvm_sregs) -> (&'static str, u32) {
    if sregs.cr0 & CR0_PE == 0 {
        ("real mode", 16)
    } else if sregs.efer & EFER_LMA != 0 {
        if sregs.cs.l != 0 {
            ("64-bit mode", 64)
        } else if sregs.cs.db != 0 {
            ("compatibility mode, 32-bit", 32)
        } else {
            ("compatibility mode, 16-bit", 16)
        }
    } else if sregs.cs.db != 0 {
        ("32-bit protected mode", 32)
    } else {
        ("16-bit protected mode", 16)
    }
}

/// The first instruction in `bytes` in Intel syntax, if they decode to one.
pub fn describe_instruction(bytes: &[u8], bitness: u32, rip: u64) -> Option<String> {
    let mut decoder = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return None;
    }
    let mut text = String::new();
    IntelFormatter::new().format(&insn, &mut text);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_modes() {
        let mut s = kvm_sregs::default();
        assert_eq!(cpu_mode(&s), ("real mode", 16));
        s.cr0 = 1;
        s.cs.db = 1;
        assert_eq!(cpu_mode(&s).1, 32);
        s.efer = EFER_LMA;
        s.cs.l = 1;
        s.cs.db = 0;
        assert_eq!(cpu_mode(&s), ("64-bit mode", 64));
    }

    #[test]
    fn decodes_the_instructions_kvm_pvm_trips_on() {
        let cmpxchg16b = [0xf0, 0x48, 0x0f, 0xc7, 0x0e];
        assert_eq!(
            describe_instruction(&cmpxchg16b, 64, 0).as_deref(),
            Some("lock cmpxchg16b [rsi]")
        );
        assert_eq!(
            describe_instruction(&[0xcc], 64, 0).as_deref(),
            Some("int3")
        );
        assert!(describe_instruction(&[0x0f], 64, 0).is_none());
    }
}
