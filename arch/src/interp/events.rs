//! Which pending event the vCPU takes at an instruction boundary: an NMI (unless one is
//! being handled: NMIs stay blocked from delivery to the next IRET), else a maskable
//! interrupt when RFLAGS.IF is set; neither right after STI or a load of SS (the interrupt
//! shadow covers the next instruction). And the single-step trap (RFLAGS.TF) after an
//! instruction.

use super::fault::{self, Exception};
use super::flags::IF;
use super::interrupt::Source;
use super::state::Shadow;
use super::Core;

/// Index of DR6 in `State::dr`.
const DR6: usize = 4;
/// DR6.BS: the #DB is a single-step trap.
const DR6_BS: u64 = 1 << 14;

impl Core {
    /// Delivers the event due at this boundary, if any; true if one was delivered (or its
    /// delivery faulted and the fault was raised).
    pub(crate) fn take_event(&mut self) -> bool {
        if self.nmi_pending && !self.s.nmi_blocked {
            self.nmi_pending = false;
            self.s.nmi_blocked = true;
            self.halted = false;
            if let Err(e) = self.deliver(fault::NMI, None, Source::External) {
                self.raise(e);
            }
            return true;
        }
        if !self.s.flags.has(IF) {
            return false;
        }
        let Some(vector) = self.next_interrupt() else {
            return false;
        };
        self.halted = false;
        if let Err(e) = self.deliver(vector, None, Source::External) {
            self.raise(e);
        }
        true
    }
}

impl Core {
    /// Raises the single-step trap due after the instruction just run: #DB with DR6.BS,
    /// unless the instruction delivered an event itself or loaded SS (the trap then comes
    /// after the next instruction).
    #[inline]
    pub(crate) fn finish_step(&mut self) {
        if std::mem::take(&mut self.single_step)
            && !self.event_taken
            && self.s.interrupt_shadow != Shadow::MovSs
        {
            self.s.dr[DR6] |= DR6_BS;
            // A trap after HLT is taken at once, as an interrupt would be.
            self.halted = false;
            self.raise(Exception::new(fault::DB));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lapic::Inbox;
    use super::super::testmachine::{TestMachine, CODE};
    use super::super::Exit;
    use super::{DR6, DR6_BS};

    /// Handler at 0x2000: `out 0x80, al; iret`.
    const REPORT_AL: [u8; 3] = [0xe6, 0x80, 0xcf];

    fn machine(code: &[u8], vector: u8) -> TestMachine {
        let mut m = TestMachine::new(code);
        m.write(0x2000, &REPORT_AL);
        m.set_ivt(vector, 0x2000);
        // Software-enable the local APIC so that it takes fixed interrupts.
        m.cpu.core.apic_write(0xf0, &0x1ffu32.to_le_bytes());
        m
    }

    #[test]
    fn an_interrupt_comes_after_the_instruction_following_sti() {
        // mov al,1; sti; mov al,2; mov al,3; cli; hlt
        let code = [0xb0, 1, 0xfb, 0xb0, 2, 0xb0, 3, 0xfa, 0xf4];
        let mut m = machine(&code, 0x30);
        m.inbox.post_vector(0x30);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.written(0x80), [2]);
    }

    #[test]
    fn a_second_nmi_waits_for_the_iret_of_the_first() {
        // NMI handler at 0x3000: out 0x80,al; inc al; nop; nop; iret. Main code: nops, hlt.
        let mut code = vec![0x90; 8];
        code.push(0xf4);
        let mut m = machine(&code, 0x30);
        m.write(0x3000, &[0xe6, 0x80, 0xfe, 0xc0, 0x90, 0x90, 0xcf]);
        m.set_ivt(2, 0x3000);
        m.inbox.post(Inbox::NMI);
        // The first NMI is taken at the first boundary; post the second one while its
        // handler runs by running one block at a time.
        let stop = std::sync::atomic::AtomicBool::new(false);
        m.cpu.run(&stop, 1);
        m.inbox.post(Inbox::NMI);
        assert_eq!(m.run(), Exit::Halted);
        // The second NMI came after the first handler's IRET (AL = 1 then), not inside it.
        assert_eq!(m.written(0x80), [0, 1]);
        assert_eq!(m.cpu.regs().rip, CODE + code.len() as u64);
    }

    /// #DB handler at 0x2000: writes the low byte of the trap's IP to port 0x80.
    /// push bp; mov bp,sp; push ax; mov ax,[bp+2]; out 0x80,al; pop ax; pop bp; iret
    const REPORT_IP: [u8; 12] = [
        0x55, 0x89, 0xe5, 0x50, 0x8b, 0x46, 0x02, 0xe6, 0x80, 0x58, 0x5d, 0xcf,
    ];

    /// Code that sets TF (pushf; pop ax; or ah,1; push ax; popf: 7 bytes), then `body`,
    /// then clears it (and ah,0xfe; push ax; popf) and halts.
    fn single_step(body: &[u8]) -> TestMachine {
        let mut code = vec![0x9c, 0x58, 0x80, 0xcc, 0x01, 0x50, 0x9d];
        code.extend(body);
        code.extend([0x80, 0xe4, 0xfe, 0x50, 0x9d, 0xf4]);
        let m = TestMachine::new(&code);
        m.write(0x2000, &REPORT_IP);
        m.set_ivt(1, 0x2000);
        m
    }

    #[test]
    fn tf_traps_after_each_instruction_from_the_one_after_popf() {
        // nop at 0x1007; the clearing sequence at 0x1008, 0x100b, 0x100c; hlt at 0x100d.
        let mut m = single_step(&[0x90]);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.written(0x80), [0x08, 0x0b, 0x0c, 0x0d]);
        assert_ne!(m.cpu.core.s.dr[DR6] & DR6_BS, 0);
    }

    #[test]
    fn mov_ss_holds_the_single_step_trap_for_one_instruction() {
        // mov cx,ss at 0x1007; mov ss,cx at 0x1009 (no trap after it); nop at 0x100b.
        let mut m = single_step(&[0x8c, 0xd1, 0x8e, 0xd1, 0x90]);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.written(0x80), [0x09, 0x0c, 0x0f, 0x10, 0x11]);
    }

    #[test]
    fn sti_does_not_hold_the_single_step_trap() {
        // sti at 0x1007, nop at 0x1008.
        let mut m = single_step(&[0xfb, 0x90]);
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.written(0x80), [0x08, 0x09, 0x0c, 0x0d, 0x0e]);
    }
}
