//! Hardware task switches between 32-bit TSSes (protected mode, not long mode): far JMP and
//! CALL to a TSS descriptor or task gate, interrupts and exceptions through task gates, and
//! IRET with RFLAGS.NT back to the previous task.

use super::fault::{Exception, Result, GP, TS};
use super::flags::{NT, VM};
use super::segment::from_descriptor;
use super::state::{real_mode_segment, Segment, CR0_PG, CR0_TS, CR4_PGE, CS, RSP, SS};
use super::Core;

/// What starts a task switch: it decides the busy bits, NT and the back link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEntry {
    /// Far JMP: the old task is left (not busy), no link.
    Jmp,
    /// Far CALL: the new task links back to the old one and runs nested (NT).
    Call,
    /// An interrupt or exception through a task gate: as CALL.
    Gate,
    /// IRET with NT: back to the linking task, which stays busy; the old one is left.
    Iret,
}

/// Descriptor types of 32-bit TSSes.
const TSS32_AVAILABLE: u8 = 0x9;
const TSS32_BUSY: u8 = 0xb;
/// The busy bit in a TSS descriptor's type.
const TSS_BUSY_BIT: u8 = 0x2;
/// Smallest limit of a 32-bit TSS.
const TSS32_MIN_LIMIT: u32 = 0x67;
/// Offsets in a 32-bit TSS.
const LINK: u64 = 0x00;
const CR3: u64 = 0x1c;
const EIP: u64 = 0x20;
const EFLAGS: u64 = 0x24;
const GPRS: u64 = 0x28;
const SELECTORS: u64 = 0x48;
const LDT: u64 = 0x60;

fn selector_error(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

/// The same exception with vector #TS, for a check that raises #GP outside task switches.
fn as_ts(e: Exception) -> Exception {
    if e.vector() == GP {
        Exception::ts(e.error().unwrap_or(0))
    } else {
        e
    }
}

impl Core {
    /// Switches to the task of the TSS whose GDT selector is `selector`, for `entry`; an
    /// exception delivered through a task gate pushes `error` on the new task's stack.
    /// Faults found after the switch is committed are raised in the new task.
    pub(crate) fn task_switch(
        &mut self,
        selector: u16,
        entry: TaskEntry,
        error: Option<u32>,
    ) -> Result<()> {
        self.end_block = true;
        let err = selector_error(selector);
        let fault = if entry == TaskEntry::Iret { TS } else { GP };
        if selector & 4 != 0 {
            return Err(Exception::with_error(fault, err));
        }
        let (raw, desc_addr) = self.read_descriptor(selector, fault)?;
        let new = from_descriptor(selector, raw);
        let wanted = if entry == TaskEntry::Iret {
            TSS32_BUSY
        } else {
            TSS32_AVAILABLE
        };
        if new.s != 0 || new.type_ != wanted {
            return Err(Exception::with_error(fault, err));
        }
        if new.present == 0 {
            return Err(Exception::np(err));
        }
        if new.limit < TSS32_MIN_LIMIT {
            return Err(Exception::ts(err));
        }
        let old = self.s.tr;
        if old.type_ != TSS32_BUSY || old.limit < TSS32_MIN_LIMIT {
            // 16-bit TSSes are not implemented.
            return Err(Exception::ts(selector_error(old.selector)));
        }
        // Read the whole new state first: a page fault here leaves everything unchanged.
        let mut image = [0u32; 26];
        for (n, v) in image.iter_mut().enumerate() {
            *v = self.read_lin::<4>(new.base.wrapping_add(4 * n as u64), false)? as u32;
        }
        self.save_task(&old, entry)?;
        if matches!(entry, TaskEntry::Jmp | TaskEntry::Iret) {
            self.set_tss_busy(old.selector, false)?;
        }
        if entry != TaskEntry::Iret {
            self.write_lin::<1>(desc_addr + 5, (raw >> 40) | u64::from(TSS_BUSY_BIT), false)?;
        }
        let mut flags = u64::from(image[(EFLAGS / 4) as usize]);
        if matches!(entry, TaskEntry::Call | TaskEntry::Gate) {
            self.write_lin::<2>(new.base + LINK, u64::from(old.selector), false)?;
            flags |= NT;
        }
        self.s.tr = Segment {
            type_: TSS32_BUSY,
            ..new
        };
        self.s.cr0 |= CR0_TS;
        if let Err(e) = self.load_task(&image, flags, error) {
            self.raise(e);
        }
        Ok(())
    }

    /// Writes the current task's registers into its TSS `old`.
    fn save_task(&mut self, old: &Segment, entry: TaskEntry) -> Result<()> {
        let mut flags = self.s.flags.get();
        if entry == TaskEntry::Iret {
            flags &= !NT;
        }
        let base = old.base;
        self.write_lin::<4>(base + EIP, self.s.rip & 0xffff_ffff, false)?;
        self.write_lin::<4>(base + EFLAGS, flags & 0xffff_ffff, false)?;
        for n in 0..8 {
            let v = self.s.gpr[n] & 0xffff_ffff;
            self.write_lin::<4>(base + GPRS + 4 * n as u64, v, false)?;
        }
        for n in 0..6 {
            let v = u64::from(self.s.seg[n].selector);
            self.write_lin::<2>(base + SELECTORS + 4 * n as u64, v, false)?;
        }
        Ok(())
    }

    /// Sets or clears the busy bit of the TSS descriptor for GDT selector `selector`.
    fn set_tss_busy(&mut self, selector: u16, busy: bool) -> Result<()> {
        let (raw, addr) = self.read_descriptor(selector, TS)?;
        let access = (raw >> 40) as u8;
        let access = if busy {
            access | TSS_BUSY_BIT
        } else {
            access & !TSS_BUSY_BIT
        };
        self.write_lin::<1>(addr + 5, u64::from(access), false)
    }

    /// Loads the new task's registers from its TSS `image` (32-bit words), with `flags` as
    /// RFLAGS, then pushes `error` if there is one.
    fn load_task(&mut self, image: &[u32; 26], flags: u64, error: Option<u32>) -> Result<()> {
        let word = |offset: u64| u64::from(image[(offset / 4) as usize]);
        if self.s.cr0 & CR0_PG != 0 {
            self.s.cr3 = word(CR3);
            self.tlb.flush(self.s.cr4 & CR4_PGE != 0);
        }
        self.s.rip = word(EIP);
        self.s.flags.set(flags | 2);
        for n in 0..8 {
            self.s.gpr[n] = word(GPRS + 4 * n as u64);
        }
        let selectors: [u16; 6] = std::array::from_fn(|n| word(SELECTORS + 4 * n as u64) as u16);
        // Selectors first, so that a fault while loading a descriptor reports the new task's.
        for (seg, &sel) in self.s.seg.iter_mut().zip(&selectors) {
            seg.selector = sel;
        }
        self.load_task_ldt(word(LDT) as u16)?;
        if flags & VM != 0 {
            for (n, &sel) in selectors.iter().enumerate() {
                self.s.seg[n] = Segment {
                    dpl: 3,
                    ..real_mode_segment(sel, n == CS)
                };
            }
            self.s.update_mode();
        } else {
            self.load_task_cs(selectors[CS])?;
            for n in [SS, 0, 3, 4, 5] {
                self.load_segment(n, selectors[n]).map_err(as_ts)?;
            }
        }
        if let Some(code) = error {
            let size = if self.s.mode.stack_bits == 16 { 2 } else { 4 };
            let sp = self.s.gpr[RSP];
            if let Err(e) = self.push(u64::from(code), size) {
                self.s.gpr[RSP] = sp;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Loads LDTR for the new task: null, or an LDT descriptor in the GDT (else #TS).
    fn load_task_ldt(&mut self, selector: u16) -> Result<()> {
        if selector & 0xfffc == 0 {
            self.s.ldt = Segment {
                selector,
                unusable: 1,
                ..Default::default()
            };
            return Ok(());
        }
        let err = Exception::ts(selector_error(selector));
        if selector & 4 != 0 {
            return Err(err);
        }
        let (raw, _) = self.read_descriptor(selector, TS)?;
        let ldt = from_descriptor(selector, raw);
        if ldt.s != 0 || ldt.type_ != 2 || ldt.present == 0 {
            return Err(err);
        }
        self.s.ldt = ldt;
        Ok(())
    }

    /// Loads CS for the new task: a code segment whose RPL becomes the CPL.
    fn load_task_cs(&mut self, selector: u16) -> Result<()> {
        if selector & 0xfffc == 0 {
            return Err(Exception::ts(0));
        }
        let (raw, addr) = self.read_descriptor(selector, TS)?;
        let rpl = (selector & 3) as u8;
        self.check_code_descriptor(selector, raw, rpl, true)
            .map_err(as_ts)?;
        self.mark_accessed(addr, raw)?;
        self.set_cs(selector, raw, rpl);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::segment::from_descriptor;
    use super::super::state::{CR0_TS, CS};
    use super::super::testmachine::{TestMachine, GDT};
    use super::super::Exit;

    const TSS_A: u64 = 0x3000;
    const TSS_B: u64 = 0x3100;
    const SEL_A: u16 = 0x18;
    const SEL_B: u16 = 0x20;
    /// Task B's code.
    const CODE_B: u64 = 0x1100;

    fn tss_descriptor(base: u64, access: u64) -> u64 {
        0x67 | (base << 16) | (access << 40)
    }

    /// A flat 32-bit protected-mode machine running `code` as task A (TR = 0x18, busy),
    /// with task B (TSS at 0x3100, available) set to run `code_b` with EAX = 0x1234.
    fn two_tasks(code: &[u8], code_b: &[u8]) -> TestMachine {
        let tss = [tss_descriptor(TSS_A, 0x8b), tss_descriptor(TSS_B, 0x89)];
        let mut m = TestMachine::flat32(code, &tss);
        m.write(CODE_B, code_b);
        let mut tss_b = [0u32; 26];
        tss_b[8] = CODE_B as u32; // EIP
        tss_b[9] = 2; // EFLAGS
        tss_b[10] = 0x1234; // EAX
        tss_b[14] = 0x7000; // ESP
        for n in 0..6 {
            tss_b[18 + n] = if n == CS { 0x08 } else { 0x10 };
        }
        let bytes: Vec<u8> = tss_b.iter().flat_map(|w| w.to_le_bytes()).collect();
        m.write(TSS_B, &bytes);
        m.cpu.core.s.tr = from_descriptor(SEL_A, tss[0]);
        m
    }

    fn read_u32(m: &TestMachine, addr: u64) -> u32 {
        use vm_memory::{Bytes, GuestAddress};
        m.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// The type of the TSS descriptor for `sel`.
    fn tss_type(m: &TestMachine, sel: u16) -> u32 {
        (read_u32(m, GDT + u64::from(sel) + 4) >> 8) & 0xf
    }

    #[test]
    fn far_jmp_to_a_tss_switches_tasks() {
        // jmp far 0x20:0; then hlt in task B.
        let mut m = two_tasks(&[0xea, 0, 0, 0, 0, 0x20, 0], &[0xf4]);
        assert_eq!(m.run(), Exit::Halted);
        let r = m.cpu.regs();
        assert_eq!((r.rax, r.rsp, r.rip), (0x1234, 0x7000, CODE_B + 1));
        assert_eq!(m.cpu.core.s.tr.selector, SEL_B);
        assert_ne!(m.cpu.core.s.cr0 & CR0_TS, 0);
        // A is left (available) with its EIP after the JMP; B is busy.
        assert_eq!((tss_type(&m, SEL_A), tss_type(&m, SEL_B)), (9, 0xb));
        assert_eq!(read_u32(&m, TSS_A + 0x20), 0x1007);
    }

    #[test]
    fn call_to_a_task_returns_with_iret() {
        // call far 0x20:0; hlt. Task B: pushf; pop ebx; iret.
        let mut m = two_tasks(&[0x9a, 0, 0, 0, 0, 0x20, 0, 0xf4], &[0x9c, 0x5b, 0xcf]);
        m.cpu.core.s.gpr[0] = 0x55;
        assert_eq!(m.run(), Exit::Halted);
        let r = m.cpu.regs();
        assert_eq!((r.rax, r.rip), (0x55, 0x1008));
        assert_eq!(m.cpu.core.s.tr.selector, SEL_A);
        // B linked back to A and ran nested (NT in the EBX it saved); its IRET left it
        // available again.
        assert_eq!(read_u32(&m, TSS_B) as u16, SEL_A);
        assert_ne!(read_u32(&m, TSS_B + 0x34) & (1 << 14), 0);
        assert_eq!((tss_type(&m, SEL_A), tss_type(&m, SEL_B)), (0xb, 9));
    }
}
