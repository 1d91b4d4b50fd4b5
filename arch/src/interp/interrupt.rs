//! Delivering exceptions and interrupts through the IVT (real mode) or the IDT (protected and
//! long mode: gates, privilege changes, stack switches through the TSS, IST, task gates),
//! double and triple faults, and returning with IRET.

use super::fault::{Exception, Result, DB, DF, GP, PF, SS as SS_FAULT, TS};
use super::flags::{AC, IF, NT, RF, TF, VM};
use super::insn::size_mask;
use super::segment::{from_descriptor, is_canonical};
use super::state::{Segment, Shadow, CS, DS, ES, FS, GS, RSP, SS};
use super::task::TaskEntry;
use super::Core;

/// What raised an event, which decides RIP, privilege checks and the EXT error-code bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fault or trap raised by an instruction (RIP as the caller set it).
    Exception,
    /// INT n, INT3, INTO: gate DPL is checked against CPL.
    Software,
    /// An external (hardware) interrupt or NMI.
    External,
}

/// Gate types in the IDT.
const GATE_TASK: u8 = 0x5;
const GATE_INT16: u8 = 0x6;
const GATE_TRAP16: u8 = 0x7;
const GATE_INT32: u8 = 0xe;
const GATE_TRAP32: u8 = 0xf;

impl Core {
    /// Delivers `e` raised by the instruction at the current RIP, escalating to #DF and to a
    /// triple fault (shutdown) per the architecture's rules.
    pub(crate) fn raise(&mut self, e: Exception) {
        if e.vector() == PF {
            self.s.cr2 = self.fault_addr;
        }
        let first = e;
        let Err(second) = self.deliver(e.vector(), e.error(), Source::Exception) else {
            return;
        };
        if first.vector() == DF {
            self.triple_fault(format!(
                "exception {} while delivering a double fault",
                second.vector()
            ));
            return;
        }
        let benign = !(first.is_contributory() || first.vector() == PF)
            || !(second.is_contributory() || second.vector() == PF)
            || (first.is_contributory() && second.vector() == PF);
        if benign {
            // Deliver the second exception instead.
            if second.vector() == PF {
                self.s.cr2 = self.fault_addr;
            }
            if let Err(third) = self.deliver(second.vector(), second.error(), Source::Exception) {
                self.triple_fault(format!(
                    "exception {} while delivering exception {}",
                    third.vector(),
                    second.vector()
                ));
            }
            return;
        }
        if let Err(third) = self.deliver(DF, Some(0), Source::Exception) {
            self.triple_fault(format!(
                "exception {} while delivering a double fault (after {} then {})",
                third.vector(),
                first.vector(),
                second.vector()
            ));
        }
    }

    /// Records a triple fault: the vCPU stops and the VM shuts down.
    pub(crate) fn triple_fault(&mut self, why: String) {
        self.shutdown = Some(format!("triple fault: {why}"));
    }

    /// Delivers vector `vector` (with `error` code if given). On error, nothing but possibly
    /// stack memory has changed.
    pub(crate) fn deliver(&mut self, vector: u8, error: Option<u32>, source: Source) -> Result<()> {
        self.end_block = true;
        self.s.interrupt_shadow = Shadow::None;
        self.event_taken = true;
        if !self.s.mode.protected {
            return self.deliver_real(vector);
        }
        let ext = u32::from(source == Source::External);
        let idt_err = |v: u8| (u32::from(v) << 3) | 2 | ext;
        let entry_size: u64 = if self.s.mode.long { 16 } else { 8 };
        let offset = u64::from(vector) * entry_size;
        if offset + entry_size - 1 > u64::from(self.s.idt.limit) {
            return Err(Exception::gp(idt_err(vector)));
        }
        let addr = self.s.idt.base.wrapping_add(offset);
        let lo = self.read_lin::<8>(addr, false)?;
        let hi = if self.s.mode.long {
            self.read_lin::<8>(addr + 8, false)?
        } else {
            0
        };
        let kind = ((lo >> 40) & 0xf) as u8;
        let gate_dpl = ((lo >> 45) & 3) as u8;
        let present = (lo >> 47) & 1 != 0;
        let valid = if self.s.mode.long {
            matches!(kind, GATE_INT32 | GATE_TRAP32)
        } else {
            matches!(kind, GATE_INT16 | GATE_TRAP16 | GATE_INT32 | GATE_TRAP32)
        };
        let task_gate = kind == GATE_TASK && !self.s.mode.long;
        if !valid && !task_gate {
            return Err(Exception::gp(idt_err(vector)));
        }
        if source == Source::Software && gate_dpl < self.s.mode.cpl {
            return Err(Exception::gp(idt_err(vector)));
        }
        if !present {
            return Err(Exception::np(idt_err(vector)));
        }
        let selector = (lo >> 16) as u16;
        if task_gate {
            return self.task_switch(selector, TaskEntry::Gate, error);
        }
        let mut target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
        if self.s.mode.long {
            target |= hi << 32;
        }
        let gate32 = kind >= GATE_INT32;
        let interrupt_gate = kind == GATE_INT16 || kind == GATE_INT32;
        let ist = (hi_ist(lo)) as u64;
        // Faults push RFLAGS with RF set, so the handler's IRET does not retrigger an
        // instruction breakpoint; #DB (a trap here) and interrupts push it as it is.
        let rf_before = self.s.flags.has(RF);
        if source == Source::Exception && vector != DB {
            self.s.flags.assign(RF, true);
        }
        let delivered =
            self.deliver_protected(error, selector, target, gate32, interrupt_gate, ist, ext);
        if delivered.is_err() {
            self.s.flags.assign(RF, rf_before);
        }
        delivered
    }

    fn deliver_real(&mut self, vector: u8) -> Result<()> {
        let offset = u64::from(vector) * 4;
        if offset + 3 > u64::from(self.s.idt.limit) {
            return Err(Exception::gp0());
        }
        let entry = self.read_lin::<4>(self.s.idt.base.wrapping_add(offset), false)?;
        let flags = self.s.flags.get();
        let cs = u64::from(self.s.seg[CS].selector);
        let ip = self.s.rip;
        self.push(flags & 0xffff, 2)?;
        self.push(cs, 2)?;
        self.push(ip & 0xffff, 2)?;
        self.jump_real((entry >> 16) as u16, entry & 0xffff);
        self.s.flags.assign(IF, false);
        self.s.flags.assign(TF, false);
        self.s.flags.assign(AC, false);
        self.s.flags.assign(RF, false);
        Ok(())
    }

    /// Reads the stack pointer for privilege level `dpl` (or IST entry `ist`) from the TSS.
    fn tss_stack(&mut self, dpl: u8, ist: u64) -> Result<(u16, u64)> {
        let tr = self.s.tr;
        let err = Exception::ts(u32::from(tr.selector & 0xfffc));
        if self.s.mode.long {
            let offset = if ist != 0 {
                36 + 8 * (ist - 1)
            } else {
                4 + 8 * u64::from(dpl)
            };
            if offset + 7 > u64::from(tr.limit) {
                return Err(err);
            }
            let rsp = self.read_lin::<8>(tr.base.wrapping_add(offset), false)?;
            return Ok((0, rsp));
        }
        if tr.type_ & 0x8 != 0 {
            let offset = 4 + 8 * u64::from(dpl);
            if offset + 5 > u64::from(tr.limit) {
                return Err(err);
            }
            let esp = self.read_lin::<4>(tr.base.wrapping_add(offset), false)?;
            let ss = self.read_lin::<2>(tr.base.wrapping_add(offset + 4), false)? as u16;
            Ok((ss, esp))
        } else {
            let offset = 2 + 4 * u64::from(dpl);
            if offset + 3 > u64::from(tr.limit) {
                return Err(err);
            }
            let sp = self.read_lin::<2>(tr.base.wrapping_add(offset), false)?;
            let ss = self.read_lin::<2>(tr.base.wrapping_add(offset + 2), false)? as u16;
            Ok((ss, sp))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_protected(
        &mut self,
        error: Option<u32>,
        selector: u16,
        target: u64,
        gate32: bool,
        interrupt_gate: bool,
        ist: u64,
        ext: u32,
    ) -> Result<()> {
        let sel_err = u32::from(selector & 0xfffc) | ext;
        if selector & 0xfffc == 0 {
            return Err(Exception::gp(ext));
        }
        let (raw, _) = self.read_descriptor(selector, GP)?;
        let desc = from_descriptor(selector, raw);
        if desc.s == 0 || desc.type_ & 0x8 == 0 || desc.dpl > self.s.mode.cpl {
            return Err(Exception::gp(sel_err));
        }
        if desc.present == 0 {
            return Err(Exception::np(sel_err));
        }
        if self.s.mode.long && (desc.l == 0 || desc.db != 0) {
            return Err(Exception::gp(sel_err));
        }
        let conforming = desc.type_ & 0x4 != 0;
        let old_cpl = self.s.mode.cpl;
        let new_cpl = if conforming { old_cpl } else { desc.dpl };
        let v86 = self.s.mode.v86;
        if v86 && new_cpl != 0 {
            return Err(Exception::gp(sel_err));
        }
        let old_flags = self.s.flags.get();
        let old_ss = self.s.seg[SS];
        let old_rsp = self.s.gpr[RSP];
        let old_cs = self.s.seg[CS].selector;
        let old_rip = self.s.rip;

        if self.s.mode.long {
            let mut rsp = if ist != 0 || new_cpl != old_cpl {
                self.tss_stack(new_cpl, ist)?.1
            } else {
                old_rsp
            };
            if !is_canonical(rsp) {
                return Err(Exception::ss(ext));
            }
            rsp &= !0xf;
            let mut frame = [
                u64::from(old_ss.selector),
                old_rsp,
                old_flags,
                u64::from(old_cs),
                old_rip,
                0,
            ];
            let n = if let Some(code) = error {
                frame[5] = u64::from(code);
                6
            } else {
                5
            };
            let user = new_cpl == 3;
            for (k, v) in frame[..n].iter().enumerate() {
                let at = rsp.wrapping_sub(8 * (k as u64 + 1));
                if !is_canonical(at) {
                    return Err(Exception::ss(ext));
                }
                self.write_lin::<8>(at, *v, user)?;
            }
            rsp = rsp.wrapping_sub(8 * n as u64);
            if new_cpl != old_cpl {
                self.s.seg[SS] = Segment {
                    selector: u16::from(new_cpl),
                    unusable: 1,
                    dpl: new_cpl,
                    ..old_ss
                };
            }
            self.set_cs(selector, raw, new_cpl);
            self.s.gpr[RSP] = rsp;
            self.s.rip = target;
        } else {
            let (ss_sel, ss_seg, mut sp) = if new_cpl < old_cpl {
                let (ss_sel, sp) = self.tss_stack(new_cpl, 0)?;
                let ss_err = u32::from(ss_sel & 0xfffc) | ext;
                if ss_sel & 0xfffc == 0 {
                    return Err(Exception::ts(ext));
                }
                let (ss_raw, _) = self.read_descriptor(ss_sel, TS)?;
                let ss_desc = from_descriptor(ss_sel, ss_raw);
                let writable = ss_desc.s != 0 && ss_desc.type_ & 0xa == 0x2;
                if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl != new_cpl || !writable {
                    return Err(Exception::ts(ss_err));
                }
                if ss_desc.present == 0 {
                    return Err(Exception::with_error(SS_FAULT, ss_err));
                }
                (ss_sel, ss_desc, sp)
            } else {
                (old_ss.selector, old_ss, old_rsp)
            };
            let size: u32 = if gate32 { 4 } else { 2 };
            let sp_mask = if ss_seg.db != 0 { 0xffff_ffff } else { 0xffff };
            let mut frame = [0u64; 10];
            let mut n = 0;
            let mut put = |v: u64| {
                frame[n] = v;
                n += 1;
            };
            if v86 {
                for s in [GS, FS, DS, ES] {
                    put(u64::from(self.s.seg[s].selector));
                }
            }
            if new_cpl < old_cpl {
                put(u64::from(old_ss.selector));
                put(old_rsp);
            }
            put(old_flags);
            put(u64::from(old_cs));
            put(old_rip);
            if let Some(code) = error {
                put(u64::from(code));
            }
            let user = new_cpl == 3;
            for v in &frame[..n] {
                sp = sp.wrapping_sub(u64::from(size)) & sp_mask;
                let lin = ss_seg.base.wrapping_add(sp) & 0xffff_ffff;
                if size == 4 {
                    self.write_lin::<4>(lin, *v, user)?;
                } else {
                    self.write_lin::<2>(lin, *v, user)?;
                }
            }
            if v86 {
                for s in [GS, FS, DS, ES] {
                    self.s.seg[s] = Segment {
                        selector: 0,
                        unusable: 1,
                        ..self.s.seg[s]
                    };
                }
            }
            if new_cpl < old_cpl {
                self.s.seg[SS] = Segment {
                    type_: ss_seg.type_ | 1,
                    ..ss_seg
                };
                self.s.seg[SS].selector = ss_sel;
            }
            self.s.flags.assign(VM, false);
            self.set_cs(selector, raw, new_cpl);
            if ss_seg.db != 0 {
                self.s.gpr[RSP] = sp;
            } else {
                self.s.gpr[RSP] = (self.s.gpr[RSP] & !0xffff) | sp;
            }
            self.s.rip = target & if gate32 { 0xffff_ffff } else { 0xffff };
        }
        self.s.flags.assign(TF, false);
        self.s.flags.assign(NT, false);
        self.s.flags.assign(RF, false);
        self.s.flags.assign(VM, false);
        if interrupt_gate {
            self.s.flags.assign(IF, false);
        }
        self.s.update_mode();
        Ok(())
    }

    /// IRET with operand size `size` (2, 4 or 8).
    pub(crate) fn iret(&mut self, size: u32) -> Result<()> {
        self.end_block = true;
        self.s.nmi_blocked = false;
        let v86 = self.s.mode.v86;
        if !self.s.mode.protected || v86 {
            if v86 && self.iopl() < 3 {
                return Err(Exception::gp0());
            }
            let ip = self.peek(0, size)?;
            let cs = self.peek(u64::from(size), size)? as u16;
            let flags = self.peek(2 * u64::from(size), size)?;
            self.set_sp(self.s.gpr[RSP].wrapping_add(3 * u64::from(size)));
            self.jump_real(cs, ip & size_mask(size));
            if !v86 {
                self.write_flags_checked(flags, size);
                return Ok(());
            }
            // IOPL is not changed from virtual-8086 mode.
            let keep = self.s.flags.get() & (super::flags::IOPL | VM);
            let changeable = if size == 2 { 0xffff } else { 0xffff_ffff }
                & !(super::flags::IOPL | VM | super::flags::VIP | super::flags::VIF);
            self.s.flags.set(
                keep | (flags & changeable)
                    | (self.s.flags.get() & !changeable & !(super::flags::IOPL | VM)),
            );
            return Ok(());
        }
        if self.s.flags.has(NT) && !self.s.mode.long {
            let link = self.read_lin::<2>(self.s.tr.base, false)? as u16;
            return self.task_switch(link, TaskEntry::Iret, None);
        }
        let n = u64::from(size);
        let rip = self.peek(0, size)?;
        let cs = self.peek(n, size)? as u16;
        let flags = self.peek(2 * n, size)?;
        let cpl = self.s.mode.cpl;
        if flags & VM != 0 && cpl == 0 && !self.s.mode.long && size == 4 {
            return self.iret_to_v86(rip, cs, flags);
        }
        let rpl = (cs & 3) as u8;
        if cs & 0xfffc == 0 {
            return Err(Exception::gp0());
        }
        let (raw, _) = self.read_descriptor(cs, GP)?;
        if rpl < cpl {
            return Err(Exception::gp(u32::from(cs & 0xfffc)));
        }
        self.check_code_descriptor(cs, raw, rpl, false)?;
        let desc = from_descriptor(cs, raw);
        let conforming = desc.type_ & 0x4 != 0;
        if (conforming && desc.dpl > rpl) || (!conforming && desc.dpl != rpl) {
            return Err(Exception::gp(u32::from(cs & 0xfffc)));
        }
        let to_64 = self.s.mode.long && desc.l != 0;
        if to_64 && !is_canonical(rip) {
            return Err(Exception::gp0());
        }
        let pops_stack = rpl > cpl || self.s.mode.code_bits == 64;
        let (new_sp, new_ss) = if pops_stack {
            (self.peek(3 * n, size)?, self.peek(4 * n, size)? as u16)
        } else {
            (0, 0)
        };
        // Validate SS before changing anything.
        let ss_state = if pops_stack {
            if new_ss & 0xfffc == 0 {
                if !(self.s.mode.long && to_64 && rpl != 3) {
                    return Err(Exception::gp0());
                }
                None
            } else {
                let (ss_raw, ss_addr) = self.read_descriptor(new_ss, GP)?;
                let ss_desc = from_descriptor(new_ss, ss_raw);
                let writable = ss_desc.s != 0 && ss_desc.type_ & 0xa == 0x2;
                if (new_ss & 3) as u8 != rpl || ss_desc.dpl != rpl || !writable {
                    return Err(Exception::gp(u32::from(new_ss & 0xfffc)));
                }
                if ss_desc.present == 0 {
                    return Err(Exception::ss(u32::from(new_ss & 0xfffc)));
                }
                Some((ss_raw, ss_addr))
            }
        } else {
            None
        };
        let old_mode_cpl = cpl;
        self.set_cs(cs, raw, rpl);
        self.s.rip = if to_64 {
            rip
        } else {
            rip & size_mask(size.min(4))
        };
        // Flags are written with the privilege of the old CPL.
        let saved_cpl_mode = self.s.mode;
        self.s.mode.cpl = old_mode_cpl;
        self.write_flags_checked(flags, size);
        self.s.mode = saved_cpl_mode;
        if pops_stack {
            match ss_state {
                Some((ss_raw, ss_addr)) => {
                    self.mark_accessed(ss_addr, ss_raw)?;
                    let d = from_descriptor(new_ss, ss_raw);
                    self.s.seg[SS] = Segment {
                        type_: d.type_ | 1,
                        ..d
                    };
                }
                None => {
                    self.s.seg[SS] = Segment {
                        selector: new_ss,
                        unusable: 1,
                        dpl: rpl,
                        ..self.s.seg[SS]
                    };
                }
            }
            self.s.update_mode();
            self.s.gpr[RSP] = if self.s.mode.stack_bits == 64 {
                new_sp
            } else if self.s.mode.stack_bits == 32 {
                new_sp & 0xffff_ffff
            } else {
                (self.s.gpr[RSP] & !0xffff) | (new_sp & 0xffff)
            };
            if rpl > cpl {
                self.invalidate_segments_for(rpl);
            }
        } else {
            self.set_sp(self.s.gpr[RSP].wrapping_add(3 * n));
        }
        self.s.update_mode();
        Ok(())
    }

    fn iret_to_v86(&mut self, eip: u64, cs: u16, flags: u64) -> Result<()> {
        let mut v = [0u64; 6];
        for (k, slot) in v.iter_mut().enumerate() {
            *slot = self.peek(12 + 4 * k as u64, 4)?;
        }
        let [esp, ss, es, ds, fs, gs] = v;
        self.s.flags.set(flags);
        let real = |sel: u64| super::state::real_mode_segment(sel as u16, false);
        self.s.seg[ES] = real(es);
        self.s.seg[DS] = real(ds);
        self.s.seg[FS] = real(fs);
        self.s.seg[GS] = real(gs);
        self.s.seg[SS] = real(ss);
        self.s.seg[CS] = super::state::real_mode_segment(cs, true);
        for s in &mut self.s.seg {
            s.dpl = 3;
        }
        self.s.gpr[RSP] = esp & 0xffff_ffff;
        self.s.rip = eip & 0xffff;
        self.s.update_mode();
        Ok(())
    }
}

/// The IST field of a 64-bit gate's low quadword.
fn hi_ist(lo: u64) -> u8 {
    ((lo >> 32) & 7) as u8
}
