//! The mismatch report: everything needed to understand and reproduce a difference.

use std::fmt::Write;

use iced_x86::{Formatter, IntelFormatter};

use super::compare::{xmm_hex, Diff};
use super::flags::rflags_bits;
use super::gen::{Case, Groups};
use super::state::{FinalState, InitialState, GPR_NAMES};

/// What a report is about.
pub struct Mismatch<'a> {
    /// The case.
    pub case: &'a Case,
    /// Its initial state.
    pub init: &'a InitialState,
    /// The run's seed and the case's index in it.
    pub origin: (u64, u64),
    /// The run's instruction groups (the case's initial state depends on them).
    pub groups: Groups,
    /// KVM's final state (None when compared against a recorded digest).
    pub kvm: Option<&'a FinalState>,
    /// The interpreter's final state.
    pub interp: &'a FinalState,
    /// Flags undefined where the case ended (iced bits).
    pub undefined: u32,
    /// The differences, most telling first.
    pub diffs: &'a [Diff],
    /// The instruction after which the states first differ, if bisection found it.
    pub culprit: Option<usize>,
}

/// The case's code, one instruction per line: address, bytes, Intel syntax.
pub fn disassemble(case: &Case) -> String {
    let mut out = String::new();
    let mut fmt = IntelFormatter::new();
    for (n, ins) in case.instructions().iter().enumerate() {
        let at = ((ins.ip() - case.code_addr) as usize).min(case.code.len());
        let end = (at + ins.len()).min(case.code.len());
        let bytes: Vec<String> = case.code[at..end]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut text = String::new();
        fmt.format(ins, &mut text);
        let _ = writeln!(
            out,
            "  #{n:<4} {:#07x}  {:<32} {text}",
            ins.ip(),
            bytes.join(" ")
        );
    }
    out
}

fn gprs(out: &mut String, gpr: &[u64; 16]) {
    for row in 0..4 {
        let line: Vec<String> = (0..4)
            .map(|c| {
                let i = row * 4 + c;
                format!("{:>3}={:#018x}", GPR_NAMES[i], gpr[i])
            })
            .collect();
        let _ = writeln!(out, "    {}", line.join("  "));
    }
}

fn final_state(out: &mut String, title: &str, s: &FinalState) {
    let _ = writeln!(
        out,
        "  {title}: exit {:?}, rip {:#x}, rflags {:#x}, cr2 {:#x}, mxcsr {:#x}, fsw {:#x}",
        s.exit, s.rip, s.rflags, s.cr2, s.mxcsr, s.x87.fsw
    );
    gprs(out, &s.gpr);
}

impl Mismatch<'_> {
    /// The report text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = self.case;
        let (master, index) = self.origin;
        let first = self
            .diffs
            .first()
            .map_or("none".to_string(), |d| d.to_string());
        let _ = writeln!(
            out,
            "MISMATCH in case seed {:#x} (case #{index} of run seed {master}); \
             first difference: {first}",
            c.seed
        );
        let _ = writeln!(
            out,
            "  reproduce: cargo run --release -p ember-tests --bin difftest -- --case {:#x} \
             --groups {}  (or EMBER_DIFF_SEED={master} for the whole run)",
            c.seed, self.groups
        );
        if let Some(n) = self.culprit {
            let ins = c.instructions();
            let mut text = String::new();
            if let Some(i) = ins.get(n) {
                IntelFormatter::new().format(i, &mut text);
            }
            let _ = writeln!(
                out,
                "  bisected: the states first differ after instruction #{n}: {text}"
            );
        }
        let _ = writeln!(out, "  differences ({}):", self.diffs.len());
        for d in self.diffs.iter().take(40) {
            let _ = writeln!(out, "    {d}");
        }
        let _ = writeln!(
            out,
            "  RFLAGS bits undefined at the end (ignored): {:#x}",
            rflags_bits(self.undefined)
        );
        let _ = writeln!(
            out,
            "  code at {:#x} ({} bytes):",
            c.code_addr,
            c.code.len()
        );
        out.push_str(&disassemble(c));
        let i = self.init;
        let _ = writeln!(
            out,
            "  initial: rflags {:#x}, mxcsr {:#x}, data/stack/constants random from the seed",
            i.rflags, i.mxcsr
        );
        gprs(&mut out, &i.gpr);
        for (r, x) in i.xmm.iter().enumerate() {
            let changed = self.kvm.is_some_and(|k| k.xmm[r] != *x) || self.interp.xmm[r] != *x;
            if changed {
                let _ = writeln!(out, "    xmm{r} = {}", xmm_hex(x));
            }
        }
        match self.kvm {
            Some(k) => final_state(&mut out, "KVM", k),
            None => {
                let _ = writeln!(
                    out,
                    "  KVM: recorded digest only (run on a machine with /dev/kvm for its values)"
                );
            }
        }
        final_state(&mut out, "interpreter", self.interp);
        out
    }
}
