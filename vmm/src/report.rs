//! What the VMM reports when a vCPU cannot go on: the reason, its registers and the
//! instruction at RIP, printed for the user.

use std::fmt;

use kvm_bindings::{kvm_regs, kvm_sregs};

/// What a vCPU was doing when it failed: the reason, its registers, and the instruction.
#[derive(Debug)]
pub struct FaultReport {
    /// Index of the vCPU.
    pub vcpu: usize,
    /// What happened, e.g. "KVM_EXIT_INTERNAL_ERROR: emulation failure (suberror 1)".
    pub reason: String,
    /// General registers, if they could be read.
    pub regs: Option<kvm_regs>,
    /// Special registers, if they could be read.
    pub sregs: Option<kvm_sregs>,
    /// Bytes at RIP (up to 15), if they could be read.
    pub instruction: Vec<u8>,
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vCPU {} stopped: {}", self.vcpu, self.reason)?;
        let (Some(r), Some(s)) = (&self.regs, &self.sregs) else {
            return writeln!(f, "  (registers unavailable)");
        };
        let (mode, bits) = arch::disasm::cpu_mode(s);
        write!(
            f,
            "  RIP {:#018x}  CS {:#06x} ({mode})",
            r.rip, s.cs.selector
        )?;
        if self.instruction.is_empty() {
            writeln!(f, "  instruction bytes unavailable")?;
        } else {
            let hex: Vec<String> = self
                .instruction
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            write!(f, "\n  instruction: {}", hex.join(" "))?;
            match arch::disasm::describe_instruction(&self.instruction, bits, r.rip) {
                Some(text) => writeln!(f, "  ({text})")?,
                None => writeln!(f)?,
            }
        }
        let gprs = [
            ("RAX", r.rax),
            ("RBX", r.rbx),
            ("RCX", r.rcx),
            ("RDX", r.rdx),
            ("RSI", r.rsi),
            ("RDI", r.rdi),
            ("RBP", r.rbp),
            ("RSP", r.rsp),
            ("R8", r.r8),
            ("R9", r.r9),
            ("R10", r.r10),
            ("R11", r.r11),
            ("R12", r.r12),
            ("R13", r.r13),
            ("R14", r.r14),
            ("R15", r.r15),
            ("RFLAGS", r.rflags),
            ("CR0", s.cr0),
            ("CR2", s.cr2),
            ("CR3", s.cr3),
            ("CR4", s.cr4),
            ("EFER", s.efer),
        ];
        for row in gprs.chunks(4) {
            write!(f, " ")?;
            for (name, value) in row {
                write!(f, " {name:>6} {value:#018x}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
