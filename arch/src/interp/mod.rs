//! Ember's software x86-64 CPU: an interpreter of decoded basic blocks.
//!
//! [`Core`] runs guest code from guest RAM with the same architectural state a hypervisor
//! vCPU has (it takes and gives `kvm_regs`/`kvm_sregs`/`kvm_fpu`), in real, protected and
//! long mode, with paging, exceptions and interrupts. Port I/O and MMIO go to an [`IoBus`].
//! Instructions are decoded once per basic block by iced-x86 and cached (see `block.rs`);
//! guest memory is reached through a software TLB (`mmu.rs`).

pub mod apicbus;
mod block;
pub mod cpuid;
mod decode;
mod events;
mod exec;
pub mod fault;
pub mod flags;
pub mod fpu;
pub mod hostcpu;
mod insn;
mod interrupt;
pub mod jit;
pub mod lapic;
mod mmu;
mod msr;
pub mod ram;
mod segment;
pub mod simd;
pub mod state;
mod task;
#[cfg(test)]
mod testmachine;
pub mod time;
pub mod x87;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use crate::cpuid::Topology;

use block::BlockCache;
use cpuid::CpuidTable;
use lapic::{ExtIntController, Inbox, IpiBus, LocalApic, TimerQueue};
use mmu::Tlb;
use ram::{CodePages, GuestRam};
use state::{DescTable, Shadow, State};
use time::Clock;

/// Where the software CPU's port I/O and MMIO accesses go.
pub trait IoBus: Send + Sync {
    /// An `in` from `port`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// An `out` to `port`.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// A read of guest physical address `addr` that is not RAM.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// A write of guest physical address `addr` that is not RAM.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// Why [`Core::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// HLT (or waiting for a STARTUP IPI): call [`Core::wait`], then run again.
    Halted,
    /// The stop flag was raised or the block budget ran out.
    Yield,
    /// The processor shut down (triple fault); the text says why.
    Shutdown(String),
}

/// IA32_APIC_BASE: the APIC is globally enabled.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Default IA32_APIC_BASE: xAPIC enabled at 0xFEE00000.
const APIC_BASE_DEFAULT: u64 = 0xfee0_0000 | APIC_BASE_ENABLE;
const APIC_BASE_BSP: u64 = 1 << 8;

/// The state of one software vCPU that instruction handlers work on: registers, TLB,
/// local APIC and the paths to memory and devices.
pub struct Core {
    /// Architectural state.
    pub s: State,
    pub(crate) tlb: Tlb,
    pub(crate) ram: Arc<GuestRam>,
    pub(crate) code: Arc<CodePages>,
    pub(crate) io: Arc<dyn IoBus>,
    pub(crate) clock: Clock,
    pub(crate) cpuid: CpuidTable,
    /// Set by a handler to end the current block after its instruction.
    pub(crate) end_block: bool,
    /// An exception or interrupt was delivered (set by every delivery).
    pub(crate) event_taken: bool,
    /// A single-step trap is due after the instruction being run (RFLAGS.TF before it;
    /// SYSCALL and SYSRET set it from TF after them).
    pub(crate) single_step: bool,
    /// HLT executed; waiting for an interrupt.
    pub(crate) halted: bool,
    /// Triple fault (or another reason the processor cannot go on).
    pub(crate) shutdown: Option<String>,
    /// Linear address of the last page fault raised, for CR2 when it is delivered.
    pub(crate) fault_addr: u64,
    apic_base: u64,
    lapic: LocalApic,
    extint: Option<Arc<dyn ExtIntController>>,
    /// The 8259 raised INTR and it has not been acknowledged yet.
    extint_pending: bool,
    /// An NMI arrived and has not been delivered yet.
    nmi_pending: bool,
    /// An application processor waiting for its STARTUP IPI.
    wait_for_sipi: bool,
    /// Block runs translated code may still chain before returning.
    pub(crate) loop_budget: u64,
    /// Set by translated code leaving through an exit that is not linked yet: the exit's
    /// chain slot plus one (0: none).
    pub(crate) chain_request: u32,
    /// The TLB and code epochs (`tlb << 32 | code`, see `jit::Stamps`) the dispatcher last
    /// entered translated code under: its exits check links against them.
    pub(crate) chain_stamp: u64,
}

impl Core {
    /// A vCPU in the architectural reset state, as vCPU `index` (APIC ID `index`) of a
    /// machine with `topology`, over guest RAM `ram`, receiving interrupts through `inbox`.
    /// Application processors (`index` > 0) wait for INIT/STARTUP IPIs.
    pub(crate) fn new(
        ram: Arc<GuestRam>,
        code: Arc<CodePages>,
        io: Arc<dyn IoBus>,
        clock: Clock,
        index: usize,
        topology: &Topology,
        inbox: Arc<Inbox>,
    ) -> Self {
        code.notify_writes(inbox.clone());
        Core {
            s: State::default(),
            tlb: Tlb::default(),
            ram,
            code,
            io,
            clock,
            cpuid: CpuidTable::new(index as u8, topology),
            end_block: false,
            event_taken: false,
            single_step: false,
            halted: false,
            shutdown: None,
            fault_addr: 0,
            apic_base: APIC_BASE_DEFAULT | if index == 0 { APIC_BASE_BSP } else { 0 },
            lapic: LocalApic::new(index, inbox),
            extint: None,
            extint_pending: false,
            nmi_pending: false,
            wait_for_sipi: index != 0,
            loop_budget: 0,
            chain_request: 0,
            chain_stamp: 0,
        }
    }

    /// Puts RIP back at `i` after it faulted (handlers run with RIP at the next
    /// instruction), so the exception is delivered with the faulting instruction's address.
    pub(crate) fn fault_at(&mut self, i: &insn::Insn) {
        let mask = match self.s.mode.code_bits {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        self.s.rip = i.next.wrapping_sub(u64::from(i.len)) & mask;
        self.end_block = false;
    }

    /// Connects the local APIC to the other APICs and the timer service, and (on the boot
    /// vCPU) to the 8259 for ExtINT interrupts.
    pub(crate) fn connect(
        &mut self,
        ipi: Arc<dyn IpiBus>,
        timers: Arc<dyn TimerQueue>,
        extint: Option<Arc<dyn ExtIntController>>,
    ) {
        self.lapic.connect(ipi, timers);
        self.extint = extint;
    }

    /// Blocks a halted vCPU until something is posted to its inbox or `deadline` passes.
    pub(crate) fn wait_until(&self, deadline: std::time::Instant) {
        self.lapic.inbox().wait(Some(deadline));
    }

    /// The vector of the interrupt to deliver now, if any (RFLAGS.IF is set).
    fn next_interrupt(&mut self) -> Option<u8> {
        if self.extint_pending && self.lapic.accepts_extint() {
            self.extint_pending = false;
            if let Some(v) = self.extint.as_ref().and_then(|pic| pic.acknowledge()) {
                return Some(v);
            }
        }
        if self.lapic.has_deliverable() {
            return self.lapic.acknowledge();
        }
        None
    }

    /// Processes what other threads posted: vectors, timer expiry, INIT, STARTUP, NMI.
    fn take_posted(&mut self) {
        let (irr, events) = self.lapic.inbox().take();
        self.lapic.accept_posted(irr);
        if events & Inbox::TIMER != 0 {
            self.lapic.timer_expired(&self.clock);
        }
        if events & Inbox::EXTINT != 0 {
            self.extint_pending = true;
        }
        if events & Inbox::INIT != 0 && self.apic_base & APIC_BASE_BSP == 0 {
            self.init_reset();
        }
        if events & Inbox::SIPI != 0 && self.wait_for_sipi {
            let vector = self.lapic.inbox().sipi_vector();
            self.start_at_sipi(vector);
        }
        if events & Inbox::NMI != 0 {
            self.nmi_pending = true;
        }
    }

    /// INIT: the processor resets and waits for a STARTUP IPI.
    fn init_reset(&mut self) {
        let fpu = std::mem::take(&mut self.s.fpu);
        let msr = self.s.msr.clone();
        self.s = State::default();
        self.s.fpu = fpu;
        self.s.msr = msr;
        self.lapic.init_reset();
        self.tlb.flush(false);
        self.halted = false;
        self.wait_for_sipi = true;
    }

    /// STARTUP: begin in real mode at `vector` * 4096.
    fn start_at_sipi(&mut self, vector: u8) {
        let sel = u16::from(vector) << 8;
        self.s.seg[state::CS] = state::real_mode_segment(sel, true);
        self.s.rip = 0;
        self.s.update_mode();
        self.wait_for_sipi = false;
        self.halted = false;
    }

    /// General registers.
    pub(crate) fn regs(&self) -> kvm_regs {
        let g = &self.s.gpr;
        kvm_regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: self.s.rip,
            rflags: self.s.flags.get(),
        }
    }

    /// Sets the general registers.
    pub(crate) fn set_regs(&mut self, r: &kvm_regs) {
        self.s.gpr[..16].copy_from_slice(&[
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ]);
        self.s.rip = r.rip;
        self.s.flags.set(r.rflags);
        self.s.update_mode();
    }

    /// Segment, descriptor-table and control registers.
    pub(crate) fn sregs(&self) -> kvm_sregs {
        let s = &self.s;
        kvm_sregs {
            es: s.seg[0],
            cs: s.seg[1],
            ss: s.seg[2],
            ds: s.seg[3],
            fs: s.seg[4],
            gs: s.seg[5],
            tr: s.tr,
            ldt: s.ldt,
            gdt: kvm_bindings::kvm_dtable {
                base: s.gdt.base,
                limit: s.gdt.limit,
                padding: [0; 3],
            },
            idt: kvm_bindings::kvm_dtable {
                base: s.idt.base,
                limit: s.idt.limit,
                padding: [0; 3],
            },
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: self.lapic.cr8(),
            efer: s.efer,
            apic_base: self.apic_base,
            interrupt_bitmap: [0; 4],
        }
    }

    /// Sets the segment, descriptor-table and control registers.
    pub(crate) fn set_sregs(&mut self, r: &kvm_sregs) {
        let s = &mut self.s;
        s.seg = [r.es, r.cs, r.ss, r.ds, r.fs, r.gs];
        s.tr = r.tr;
        s.ldt = r.ldt;
        s.gdt = DescTable {
            base: r.gdt.base,
            limit: r.gdt.limit,
        };
        s.idt = DescTable {
            base: r.idt.base,
            limit: r.idt.limit,
        };
        s.cr0 = r.cr0;
        s.cr2 = r.cr2;
        s.cr3 = r.cr3;
        s.cr4 = r.cr4;
        s.efer = r.efer;
        self.apic_base = r.apic_base;
        self.lapic.set_cr8(r.cr8);
        s.update_mode();
        self.tlb.flush(false);
    }

    /// x87 and SSE state.
    pub(crate) fn fpu(&self) -> kvm_fpu {
        let f = &self.s.fpu;
        let mut out = kvm_fpu {
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftw,
            last_opcode: f.fop,
            last_ip: f.fip,
            last_dp: f.fdp,
            mxcsr: f.mxcsr,
            ..Default::default()
        };
        let top = f.top();
        for st in 0..8 {
            out.fpr[st][..10].copy_from_slice(&f.regs[(top + st) % 8]);
        }
        for (n, x) in f.xmm.iter().enumerate() {
            out.xmm[n] = x.to_le_bytes();
        }
        out
    }

    /// Sets the x87 and SSE state.
    pub(crate) fn set_fpu(&mut self, v: &kvm_fpu) {
        let f = &mut self.s.fpu;
        f.fcw = v.fcw;
        f.fsw = v.fsw;
        f.ftw = v.ftwx;
        f.fop = v.last_opcode;
        f.fip = v.last_ip;
        f.fdp = v.last_dp;
        f.mxcsr = v.mxcsr;
        let top = f.top();
        for st in 0..8 {
            let mut r = [0u8; 10];
            r.copy_from_slice(&v.fpr[st][..10]);
            f.regs[(top + st) % 8] = r;
        }
        for (n, x) in f.xmm.iter_mut().enumerate() {
            *x = u128::from_le_bytes(v.xmm[n]);
        }
    }

    /// Reads an MSR as RDMSR would (None: the MSR does not exist).
    pub(crate) fn get_msr(&mut self, index: u32) -> Option<u64> {
        self.read_msr(index)
    }

    /// Writes an MSR as WRMSR would; false if it does not exist or the value is invalid.
    pub(crate) fn set_msr(&mut self, index: u32, value: u64) -> bool {
        self.write_msr(index, value)
    }

    /// The CPUID table this vCPU reports.
    pub(crate) fn cpuid(&self) -> &CpuidTable {
        &self.cpuid
    }

    pub(crate) fn apic_base(&self) -> u64 {
        self.apic_base
    }

    pub(crate) fn set_apic_base(&mut self, value: u64) -> bool {
        // x2APIC (bit 10) is not offered; the BSP flag is read-only.
        if value & !(0xf_ffff_f000 | APIC_BASE_ENABLE | APIC_BASE_BSP) != 0 {
            return false;
        }
        self.apic_base = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
        true
    }

    pub(crate) fn tsc_deadline(&self) -> u64 {
        self.lapic.tsc_deadline()
    }

    pub(crate) fn set_tsc_deadline(&mut self, value: u64) {
        let offset = self.s.msr.tsc_offset;
        self.lapic.set_tsc_deadline(value, offset, &self.clock);
    }

    /// The physical page of the local APIC's registers, when the APIC is enabled.
    #[inline(always)]
    pub(crate) fn apic_page(&self) -> Option<u64> {
        (self.apic_base & APIC_BASE_ENABLE != 0).then_some(self.apic_base & 0xf_ffff_f000)
    }

    /// A read of the local APIC page.
    pub(crate) fn apic_read(&self, offset: u64, data: &mut [u8]) {
        let v = self.lapic.read((offset & 0xff0) as u32, &self.clock);
        let bytes = v.to_le_bytes();
        let start = (offset & 3) as usize;
        for (n, b) in data.iter_mut().enumerate() {
            *b = bytes.get(start + n).copied().unwrap_or(0);
        }
    }

    /// A write of the local APIC page (32-bit accesses to register offsets).
    pub(crate) fn apic_write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let clock = self.clock;
        self.lapic
            .write((offset & 0xff0) as u32, u32::from_le_bytes(bytes), &clock);
        // New interrupts may have become deliverable (TPR, EOI) or targets posted.
        self.end_block = true;
    }

    /// CR8 (the APIC's task priority).
    pub(crate) fn cr8(&self) -> u64 {
        self.lapic.cr8()
    }

    /// Writes CR8.
    pub(crate) fn set_cr8(&mut self, value: u64) {
        self.lapic.set_cr8(value);
        self.end_block = true;
    }
}

impl Core {
    /// Reads up to `buf.len()` instruction bytes at CS:RIP (for fault reports); returns how
    /// many could be read.
    pub(crate) fn code_bytes(&mut self, buf: &mut [u8]) -> usize {
        let cs_base = self.s.seg[state::CS].base;
        let lin = if self.s.mode.code_bits == 64 {
            self.s.rip
        } else {
            cs_base.wrapping_add(self.s.rip) & 0xffff_ffff
        };
        let user = self.user();
        let mut n = 0;
        while n < buf.len() {
            match self.fetch_host(lin.wrapping_add(n as u64), user) {
                Ok(Some((host, _))) => {
                    // SAFETY: a fetch translation points at one byte of live guest RAM.
                    buf[n] = unsafe { std::ptr::read(host as *const u8) };
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }
}

/// One software vCPU: its state and its cache of decoded blocks.
pub struct Cpu {
    core: Core,
    cache: BlockCache,
}

impl Cpu {
    /// A vCPU in the architectural reset state, as vCPU `index` (APIC ID `index`) of a
    /// machine with `topology`, over guest RAM `ram`, receiving interrupts through `inbox`.
    /// Application processors (`index` > 0) wait for INIT/STARTUP IPIs.
    pub fn new(
        ram: Arc<GuestRam>,
        code: Arc<CodePages>,
        io: Arc<dyn IoBus>,
        clock: Clock,
        index: usize,
        topology: &Topology,
        inbox: Arc<Inbox>,
    ) -> Self {
        Cpu {
            core: Core::new(ram, code, io, clock, index, topology, inbox),
            cache: BlockCache::default(),
        }
    }

    /// Sets how this vCPU translates hot code (before it first runs; translations made
    /// so far are dropped).
    pub fn set_jit(&mut self, options: jit::JitOptions) {
        self.cache = BlockCache::new(options);
    }

    /// Replaces the vCPU's time base (between runs): guest time continues from what `clock`
    /// reads, as when a paused VM resumes with the time it was paused at.
    pub fn set_clock(&mut self, clock: Clock) {
        self.core.clock = clock;
    }

    /// Connects the local APIC to the other APICs and the timer service, and (on the boot
    /// vCPU) to the 8259 for ExtINT interrupts.
    pub fn connect(
        &mut self,
        ipi: Arc<dyn IpiBus>,
        timers: Arc<dyn TimerQueue>,
        extint: Option<Arc<dyn ExtIntController>>,
    ) {
        self.core.connect(ipi, timers, extint);
    }

    /// Runs guest code until it halts, shuts down, `stop` is raised, or `max_blocks` blocks
    /// have run. Translated code looks at `stop` only when it returns to the dispatcher
    /// (at the latest after `max_blocks` blocks): whoever raises it while the vCPU runs
    /// should also post [`lapic::Inbox::KICK`] to the vCPU, which every translated block
    /// notices at its exit.
    pub fn run(&mut self, stop: &AtomicBool, max_blocks: u64) -> Exit {
        let mut budget = max_blocks;
        let mut previous = None;
        loop {
            if self.core.shutdown.is_some() {
                return Exit::Shutdown(self.core.shutdown.take().unwrap_or_default());
            }
            if self.core.lapic.inbox().is_pending() {
                self.core.take_posted();
            }
            if self.core.wait_for_sipi {
                return Exit::Halted;
            }
            // In the interrupt shadow only the next instruction runs, then events are due;
            // with RFLAGS.TF set instructions run one at a time, each followed by a trap.
            let shadow = std::mem::take(&mut self.core.s.interrupt_shadow);
            if shadow == Shadow::None && self.core.take_event() {
                continue;
            }
            if self.core.halted {
                return Exit::Halted;
            }
            let step = self.core.s.flags.has(flags::TF);
            match self.cache.find(&mut self.core, previous) {
                Ok(idx) if shadow != Shadow::None || step => {
                    self.core.event_taken = false;
                    self.core.single_step = step;
                    self.cache.run(idx, &mut self.core, 1, 1);
                    self.core.finish_step();
                    previous = None;
                }
                Ok(idx) => {
                    self.core.event_taken = false;
                    let extra = self.cache.run(idx, &mut self.core, usize::MAX, budget);
                    budget = budget.saturating_sub(extra);
                    self.core.finish_step();
                    previous = Some(idx);
                }
                Err(e) => {
                    self.core.raise(e);
                    previous = None;
                }
            }
            budget = budget.saturating_sub(1);
            if budget == 0 || stop.load(Ordering::Relaxed) {
                return Exit::Yield;
            }
        }
    }

    /// Blocks a halted vCPU until something is posted to its inbox or `deadline` passes.
    pub fn wait_until(&self, deadline: std::time::Instant) {
        self.core.wait_until(deadline);
    }

    /// General registers.
    pub fn regs(&self) -> kvm_regs {
        self.core.regs()
    }

    /// Sets the general registers.
    pub fn set_regs(&mut self, r: &kvm_regs) {
        self.core.set_regs(r);
    }

    /// Segment, descriptor-table and control registers.
    pub fn sregs(&self) -> kvm_sregs {
        self.core.sregs()
    }

    /// Sets the segment, descriptor-table and control registers.
    pub fn set_sregs(&mut self, r: &kvm_sregs) {
        self.core.set_sregs(r);
    }

    /// x87 and SSE state.
    pub fn fpu(&self) -> kvm_fpu {
        self.core.fpu()
    }

    /// Sets the x87 and SSE state.
    pub fn set_fpu(&mut self, v: &kvm_fpu) {
        self.core.set_fpu(v);
    }

    /// Reads an MSR as RDMSR would (None: the MSR does not exist).
    pub fn get_msr(&mut self, index: u32) -> Option<u64> {
        self.core.get_msr(index)
    }

    /// Writes an MSR as WRMSR would; false if it does not exist or the value is invalid.
    pub fn set_msr(&mut self, index: u32, value: u64) -> bool {
        self.core.set_msr(index, value)
    }

    /// The CPUID table this vCPU reports.
    pub fn cpuid(&self) -> &CpuidTable {
        self.core.cpuid()
    }

    /// Reads up to `buf.len()` instruction bytes at CS:RIP (for fault reports); returns how
    /// many could be read.
    pub fn code_bytes(&mut self, buf: &mut [u8]) -> usize {
        self.core.code_bytes(buf)
    }
}
