//! The software CPU backend: Ember's x86-64 interpreter running the same memory and devices,
//! with the interrupt controllers and timers KVM would otherwise provide in the kernel: a
//! local APIC per vCPU (in the interpreter), an IOAPIC on the MMIO bus, the 8259 PICs and the
//! 8254 PIT on the I/O bus, and a timer thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arch::cpuid::Topology;
use arch::interp::apicbus::ApicBus;
use arch::interp::jit::JitOptions;
use arch::interp::lapic::{ExtIntController, Inbox, TimerQueue};
use arch::interp::ram::{CodePages, DmaWatch, GuestRam};
use arch::interp::time::Clock;
use arch::interp::{Cpu, Exit, IoBus};
use arch::GuestMemory;
use devices::bus::{lock, Bus, BusError, SharedDevice};
use devices::intc::ioapic::{InterruptMessages, IoApic};
use devices::intc::pic::{Pic, PIC_MASTER_PORT, PIC_PORTS, PIC_SLAVE_PORT};
use devices::irq::InterruptLine;
use devices::legacy::pit::{DeadlineTimer, Pit, PIT_PORT, PIT_PORTS, PORT_B};

use crate::event_loop::Subscriber;
use crate::report::FaultReport;
use crate::stop::StopSignal;
use crate::threads::VmThread;
use crate::timers::{TimerId, TimerService};
use crate::vcpu::{StateError, VcpuBackend, VcpuExit};
use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Blocks a software vCPU runs before it looks back at the VMM.
const BLOCKS_PER_RUN: u64 = 100_000;
/// How often a halted vCPU looks at the stop flag.
const HALT_POLL: Duration = Duration::from_millis(50);

/// The IOAPIC's messages go to the local APICs.
struct ApicMessages(Arc<ApicBus>);

impl InterruptMessages for ApicMessages {
    fn deliver(&self, dest: u32, logical: bool, mode: u8, vector: u8) {
        self.0.deliver(dest, logical, mode, vector);
    }
}

/// Local APIC timers on the timer thread.
struct ApicTimers {
    service: TimerService,
    ids: Vec<TimerId>,
}

impl TimerQueue for ApicTimers {
    fn arm(&self, cpu: usize, deadline: Option<Instant>) {
        if let Some(&id) = self.ids.get(cpu) {
            self.service.arm(id, deadline);
        }
    }
}

/// A device interrupt line: into the IOAPIC and, for ISA interrupts (0..16), the 8259s too,
/// as on a PC; the guest masks the controller it does not use.
struct GsiLine {
    ioapic: Arc<Mutex<IoApic>>,
    pic: Arc<Mutex<Pic>>,
    gsi: u32,
}

impl InterruptLine for GsiLine {
    fn trigger(&self) -> std::io::Result<()> {
        if self.gsi < 16 {
            lock(&self.pic).pulse(self.gsi);
        }
        lock(&self.ioapic).pulse(self.gsi as usize);
        Ok(())
    }
}

/// Carries a device's interrupt eventfd into the software interrupt controllers: on the
/// event loop, each write to the eventfd becomes an edge on its GSI.
struct InterruptRoute {
    event: EventFd,
    line: Arc<dyn InterruptLine>,
}

impl MutEventSubscriber for InterruptRoute {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.event, EventSet::IN)) {
            log::error!("software CPU: cannot watch a device interrupt: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if self.event.read().is_ok() {
            // The software controllers cannot fail to take an edge.
            let _ = self.line.trigger();
        }
    }
}

/// The 8259's INT output: LINT0 of the boot vCPU.
struct PicOutput(Arc<Inbox>);

impl InterruptLine for PicOutput {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.post(Inbox::EXTINT);
        Ok(())
    }
}

/// The boot vCPU's INTA cycle, answered by the 8259s.
struct PicAcknowledge(Arc<Mutex<Pic>>);

impl ExtIntController for PicAcknowledge {
    fn acknowledge(&self) -> Option<u8> {
        lock(&self.0).acknowledge()
    }
}

/// The PIT's interrupt timer, on the timer thread.
struct PitTimer {
    service: TimerService,
    id: TimerId,
}

impl DeadlineTimer for PitTimer {
    fn arm(&self, deadline: Option<Instant>) {
        self.service.arm(self.id, deadline);
    }
}

/// The VM's time base, which stands still while the VM is paused.
#[derive(Default)]
struct GuestTime {
    /// The clock the vCPUs run on.
    clock: Mutex<Clock>,
    /// Guest uptime when the VM was paused, while it is.
    frozen: Mutex<Option<Duration>>,
}

impl GuestTime {
    fn clock(&self) -> Clock {
        *lock(&self.clock)
    }
}

/// What all software vCPUs of a VM share: RAM, code-page tracking, the time base and the
/// interrupt controllers.
pub struct SoftMachine {
    ram: Arc<GuestRam>,
    code: Arc<CodePages>,
    time: Arc<GuestTime>,
    inboxes: Vec<Arc<Inbox>>,
    /// Per vCPU: set by [`SoftMachine::kick_all`] to end the vCPU's current run.
    attention: Vec<Arc<AtomicBool>>,
    apic_bus: Arc<ApicBus>,
    timers: Arc<ApicTimers>,
    ioapic: Arc<Mutex<IoApic>>,
    pic: Arc<Mutex<Pic>>,
    pit: Arc<Mutex<Pit>>,
    jit: JitOptions,
}

impl SoftMachine {
    /// A machine of `vcpus` vCPUs over `mem` whose vCPUs translate hot code as `jit` says,
    /// with its timer thread (returned too, for teardown to join after
    /// [`SoftMachine::shut_down`]); a timer thread failure stops the VM through `stop`.
    pub fn new(
        mem: Arc<GuestMemory>,
        vcpus: usize,
        jit: JitOptions,
        stop: Arc<StopSignal>,
    ) -> std::io::Result<(Self, VmThread)> {
        let ram = Arc::new(GuestRam::new(mem.clone()));
        let code = Arc::new(CodePages::new(ram.pages()));
        // Device writes (DMA) over decoded code make it stale, as the vCPUs' stores do.
        memory::watch_writes(&mem, Arc::new(DmaWatch::new(ram.clone(), code.clone())));
        let inboxes: Vec<Arc<Inbox>> = (0..vcpus as u32)
            .map(|id| Arc::new(Inbox::new(id)))
            .collect();
        let apic_bus = Arc::new(ApicBus::new(inboxes.clone()));
        let (service, timer_thread) = TimerService::start(stop.clone())?;
        let ids = inboxes
            .iter()
            .map(|inbox| {
                let inbox = inbox.clone();
                service.add(Arc::new(move || inbox.post(Inbox::TIMER)))
            })
            .collect();
        let ioapic = Arc::new(Mutex::new(IoApic::new(Arc::new(ApicMessages(
            apic_bus.clone(),
        )))));
        let pic = Arc::new(Mutex::new(Pic::new(Arc::new(PicOutput(
            inboxes[0].clone(),
        )))));
        let pit_slot: Arc<OnceLock<Arc<Mutex<Pit>>>> = Arc::default();
        let slot = pit_slot.clone();
        let pit_timer = PitTimer {
            id: service.add(Arc::new(move || {
                if let Some(pit) = slot.get() {
                    lock(pit).expire(Instant::now());
                }
            })),
            service: service.clone(),
        };
        let irq0 = Arc::new(GsiLine {
            ioapic: ioapic.clone(),
            pic: pic.clone(),
            gsi: 0,
        });
        let pit = Arc::new(Mutex::new(Pit::new(irq0, Arc::new(pit_timer))));
        let _ = pit_slot.set(pit.clone());
        let attention: Vec<Arc<AtomicBool>> = (0..vcpus).map(|_| Arc::default()).collect();
        for (flag, inbox) in attention.iter().zip(&inboxes) {
            let (flag, inbox) = (flag.clone(), inbox.clone());
            // Translated code notices a stop request through the kick.
            stop.on_stop(Box::new(move || {
                flag.store(true, Ordering::Release);
                inbox.post(Inbox::KICK);
            }));
        }
        let machine = SoftMachine {
            ram,
            code,
            time: Arc::default(),
            attention,
            inboxes,
            apic_bus,
            timers: Arc::new(ApicTimers { service, ids }),
            ioapic,
            jit,
            pic,
            pit,
        };
        Ok((machine, timer_thread))
    }

    /// Wakes every vCPU (halted or running, even in the middle of a long instruction) so
    /// that it returns to the exit loop, which looks at the stop flag and the pause gate.
    pub fn kick_all(&self) {
        for (inbox, attention) in self.inboxes.iter().zip(&self.attention) {
            attention.store(true, Ordering::Release);
            inbox.post(Inbox::KICK);
        }
    }

    /// Notes guest time, once every vCPU is paused: it goes on from there on resume.
    pub fn freeze_clock(&self) {
        *lock(&self.time.frozen) = Some(self.time.clock().uptime());
    }

    /// Makes the VM's clock go on from where [`SoftMachine::freeze_clock`] stopped it; each
    /// vCPU takes it up as it resumes.
    pub fn thaw_clock(&self) {
        if let Some(uptime) = lock(&self.time.frozen).take() {
            *lock(&self.time.clock) = Clock::with_uptime(uptime);
        }
    }

    /// Ends the timer thread once the vCPUs have stopped.
    pub fn shut_down(&self) {
        self.timers.service.shut_down();
    }

    /// Adds the 8259s, the 8254 and port B to the I/O bus `pio`.
    pub fn add_legacy_ports(&self, pio: &mut Bus) -> Result<(), BusError> {
        let (pic, pit): (SharedDevice, SharedDevice) = (self.pic.clone(), self.pit.clone());
        pio.insert(pic.clone(), PIC_MASTER_PORT, PIC_PORTS)?;
        let slave = PIC_SLAVE_PORT - PIC_MASTER_PORT;
        pio.insert_window(pic, PIC_SLAVE_PORT, PIC_PORTS, slave)?;
        pio.insert(pit.clone(), PIT_PORT, PIT_PORTS)?;
        pio.insert_window(pit, PORT_B, 1, PORT_B - PIT_PORT)
    }

    /// Programs the 8259s and the 8254 the way a PC BIOS leaves them (see
    /// [`arch::boot::bios`]).
    pub fn set_bios_interrupt_state(&self) {
        use arch::boot::bios;
        lock(&self.pic).set_bios_state(
            bios::PIC_MASTER_BASE,
            bios::PIC_MASTER_MASK,
            bios::PIC_SLAVE_BASE,
            bios::PIC_SLAVE_MASK,
        );
        // A reload of 0x10000 is written as 0.
        lock(&self.pit).set_bios_state(bios::PIT_CHANNEL0_MODE, bios::PIT_CHANNEL0_RELOAD as u16);
    }

    /// The IOAPIC, for the MMIO bus.
    pub fn ioapic(&self) -> Arc<Mutex<IoApic>> {
        self.ioapic.clone()
    }

    /// A route from a device's interrupt eventfd `event` to IOAPIC input `gsi`, for the
    /// device event loop.
    pub fn interrupt_route(&self, event: &EventFd, gsi: u32) -> std::io::Result<Subscriber> {
        Ok(Arc::new(Mutex::new(InterruptRoute {
            event: event.try_clone()?,
            line: self.interrupt_line(gsi),
        })))
    }

    /// An interrupt line into IOAPIC input `gsi`.
    pub fn interrupt_line(&self, gsi: u32) -> Arc<dyn InterruptLine> {
        Arc::new(GsiLine {
            ioapic: self.ioapic.clone(),
            pic: self.pic.clone(),
            gsi,
        })
    }

    /// Creates vCPU `index` in its reset state; application processors wait for INIT and
    /// STARTUP IPIs.
    pub fn create_vcpu(
        &self,
        index: usize,
        topology: &Topology,
        io: Arc<dyn IoBus>,
        stop: Arc<StopSignal>,
    ) -> SoftVcpu {
        let mut cpu = Cpu::new(
            self.ram.clone(),
            self.code.clone(),
            io,
            self.time.clock(),
            index,
            topology,
            self.inboxes[index].clone(),
        );
        cpu.set_jit(self.jit);
        let extint: Option<Arc<dyn ExtIntController>> =
            (index == 0).then(|| Arc::new(PicAcknowledge(self.pic.clone())) as _);
        cpu.connect(self.apic_bus.clone(), self.timers.clone(), extint);
        SoftVcpu {
            index,
            cpu,
            stop,
            time: self.time.clone(),
            attention: self.attention[index].clone(),
        }
    }
}

/// One software vCPU.
pub struct SoftVcpu {
    index: usize,
    cpu: Cpu,
    stop: Arc<StopSignal>,
    time: Arc<GuestTime>,
    attention: Arc<AtomicBool>,
}

impl SoftVcpu {
    fn fault(&mut self, reason: String) -> Box<FaultReport> {
        let mut bytes = [0u8; 15];
        let n = self.cpu.code_bytes(&mut bytes);
        Box::new(FaultReport {
            vcpu: self.index,
            reason,
            regs: self.regs().ok(),
            sregs: self.sregs().ok(),
            instruction: bytes[..n].to_vec(),
        })
    }

    /// Sleeps until an interrupt or a kick arrives, or a while has passed.
    fn halt(&self) {
        if !self.attention.load(Ordering::Acquire) && !self.stop.is_stopping() {
            self.cpu.wait_until(Instant::now() + HALT_POLL);
        }
    }
}

impl VcpuBackend for SoftVcpu {
    fn regs(&self) -> Result<kvm_regs, StateError> {
        Ok(self.cpu.regs())
    }

    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), StateError> {
        self.cpu.set_regs(regs);
        Ok(())
    }

    fn sregs(&self) -> Result<kvm_sregs, StateError> {
        Ok(self.cpu.sregs())
    }

    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), StateError> {
        self.cpu.set_sregs(sregs);
        Ok(())
    }

    fn set_fpu(&mut self, fpu: &kvm_fpu) -> Result<(), StateError> {
        self.cpu.set_fpu(fpu);
        Ok(())
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<usize, StateError> {
        Ok(msrs
            .iter()
            .take_while(|&&(index, value)| self.cpu.set_msr(index, value))
            .count())
    }

    fn resume_time(&mut self) {
        self.cpu.set_clock(self.time.clock());
    }

    fn run(&mut self) -> VcpuExit<'_> {
        // A kick that came before this point was for the exit loop, which has looked at the
        // stop flag and the gate since; one that comes later ends this run.
        self.attention.store(false, Ordering::Release);
        if self.stop.is_stopping() {
            return VcpuExit::Interrupted;
        }
        let attention = self.attention.clone();
        match self.cpu.run(&attention, BLOCKS_PER_RUN) {
            Exit::Yield => VcpuExit::Interrupted,
            Exit::Halted => {
                self.halt();
                VcpuExit::Interrupted
            }
            Exit::Shutdown(why) => VcpuExit::Fault(self.fault(format!("software CPU: {why}"))),
        }
    }
}
