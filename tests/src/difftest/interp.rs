//! Running a case on Ember's software CPU (`arch::interp::Cpu`) with the same memory image
//! and registers as on KVM. Its I/O bus records the port write that ends the case and raises
//! the CPU's stop flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arch::cpuid::Topology;
use arch::interp::jit::JitOptions;
use arch::interp::lapic::Inbox;
use arch::interp::ram::{CodePages, GuestRam};
use arch::interp::time::Clock;
use arch::interp::{Cpu, Exit as CpuExit, IoBus};
use vm_memory::GuestAddress;

use super::gen::Case;
use super::layout;
use super::state::{write_case, Exit, FinalState, InitialState};

/// Blocks the CPU runs between looks at the stop flag's reason.
const BLOCKS_PER_RUN: u64 = 10_000;
/// Blocks after which a case counts as stuck.
const MAX_BLOCKS: u64 = 1_000_000;

/// The bus: records the first port access and stops the CPU.
struct Bus {
    stop: Arc<AtomicBool>,
    event: Mutex<Option<Exit>>,
    port: Mutex<Option<u16>>,
}

impl Bus {
    fn record(&self, exit: Exit, port: Option<u16>) {
        let mut e = self.event.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(exit);
            *self.port.lock().unwrap_or_else(|p| p.into_inner()) = port;
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl IoBus for Bus {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        self.record(Exit::Other(format!("read from port {port:#x}")), None);
    }

    fn pio_write(&self, port: u16, _data: &[u8]) {
        let exit = if port == layout::END_PORT {
            Exit::End
        } else if (layout::EXC_PORT..layout::EXC_PORT + u16::from(layout::VECTORS)).contains(&port)
        {
            Exit::Exception((port - layout::EXC_PORT) as u8)
        } else {
            Exit::Other(format!("write to unexpected port {port:#x}"))
        };
        let known = !matches!(exit, Exit::Other(_));
        self.record(exit, known.then_some(port));
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        data.fill(0xff);
        self.record(Exit::Other(format!("MMIO access at {addr:#x}")), None);
    }

    fn mmio_write(&self, addr: u64, _data: &[u8]) {
        self.record(Exit::Other(format!("MMIO access at {addr:#x}")), None);
    }
}

/// The software CPU's machine, reused from case to case (each case gets a fresh `Cpu`, so no
/// decoded block or TLB entry survives from the previous one).
pub struct InterpMachine {
    bus: Arc<Bus>,
    stop: Arc<AtomicBool>,
    ram: Arc<GuestRam>,
    code: Arc<CodePages>,
    clock: Clock,
    mem: Arc<arch::GuestMemory>,
    jit: JitOptions,
}

/// The software CPU's two tiers, as the differential tests run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The interpreter runs every instruction.
    Interpreter,
    /// Every block is translated to host code before its first run.
    Jit,
}

impl Tier {
    /// Both tiers.
    pub const ALL: [Tier; 2] = [Tier::Interpreter, Tier::Jit];

    /// The vCPU options for this tier.
    pub fn options(self) -> JitOptions {
        match self {
            Tier::Interpreter => JitOptions::OFF,
            Tier::Jit => JitOptions {
                hot_threshold: 1,
                ..JitOptions::default()
            },
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Interpreter => "interpreter",
            Tier::Jit => "JIT",
        })
    }
}

impl InterpMachine {
    /// Builds the machine, interpreting.
    pub fn new() -> Result<Self, String> {
        Self::with_tier(Tier::Interpreter)
    }

    /// Builds the machine, running cases on `tier`.
    pub fn with_tier(tier: Tier) -> Result<Self, String> {
        let mem = arch::GuestMemory::from_ranges(&[(GuestAddress(0), layout::RAM_SIZE as usize)])
            .map_err(|e| format!("allocating guest memory: {e}"))?;
        layout::write_infrastructure(&mem);
        let mem = Arc::new(mem);
        let ram = GuestRam::new(mem.clone());
        let code = CodePages::new(ram.pages());
        let stop = Arc::new(AtomicBool::new(false));
        Ok(InterpMachine {
            bus: Arc::new(Bus {
                stop: stop.clone(),
                event: Mutex::new(None),
                port: Mutex::new(None),
            }),
            stop,
            ram: Arc::new(ram),
            code: Arc::new(code),
            clock: Clock::default(),
            mem,
            jit: tier.options(),
        })
    }

    /// Runs `case` (whose initial state is `init`) and returns the state it ended in.
    pub fn run(&mut self, case: &Case, init: &InitialState) -> FinalState {
        write_case(self.mem.as_ref(), init, &case.code_pages(), case.code_addr);
        self.stop.store(false, Ordering::SeqCst);
        *self.bus.event.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.bus.port.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut cpu = Cpu::new(
            self.ram.clone(),
            self.code.clone(),
            self.bus.clone(),
            self.clock,
            0,
            &Topology::new(1, false),
            Arc::new(Inbox::new(0)),
        );
        cpu.set_jit(self.jit);
        for (msr, value) in arch::msr::boot_msrs() {
            cpu.set_msr(msr, value);
        }
        let sregs = layout::sregs(cpu.sregs());
        cpu.set_sregs(&sregs);
        cpu.set_regs(&init.regs(case.entry()));
        cpu.set_fpu(&init.fpu());
        let mut blocks = 0;
        let exit = loop {
            match cpu.run(&self.stop, BLOCKS_PER_RUN) {
                CpuExit::Yield => {
                    if self.stop.load(Ordering::SeqCst) {
                        let e = self.bus.event.lock().unwrap_or_else(|p| p.into_inner());
                        break e.clone().unwrap_or(Exit::Other("stopped".into()));
                    }
                    blocks += BLOCKS_PER_RUN;
                    if blocks >= MAX_BLOCKS {
                        break Exit::Other("no exit after 1M blocks".into());
                    }
                }
                CpuExit::Halted => break Exit::Other("HLT".into()),
                CpuExit::Shutdown(_) => break Exit::Shutdown,
            }
        };
        let port = *self.bus.port.lock().unwrap_or_else(|p| p.into_inner());
        FinalState::collect(
            exit,
            &cpu.regs(),
            cpu.sregs().cr2,
            &cpu.fpu(),
            self.mem.as_ref(),
            port,
            case.code_end(),
        )
    }
}
