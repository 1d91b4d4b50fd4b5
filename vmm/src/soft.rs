//! The software CPU backend: Ember's x86-64 interpreter running the same memory and devices.

use std::sync::Arc;

use arch::boot::EntryState;
use arch::cpuid::Topology;
use arch::interp::ram::{CodePages, GuestRam};
use arch::interp::time::Clock;
use arch::interp::{Cpu, Exit, IoBus};
use arch::GuestMemory;

use crate::stop::StopSignal;
use crate::vcpu::{FaultReport, VcpuBackend, VcpuExit};

/// Blocks a software vCPU runs before it looks back at the VMM.
const BLOCKS_PER_RUN: u64 = 100_000;

/// What all software vCPUs of a VM share: RAM, code-page tracking and the time base.
pub struct SoftMachine {
    ram: Arc<GuestRam>,
    code: Arc<CodePages>,
    clock: Clock,
}

impl SoftMachine {
    /// A machine over `mem`, which must outlive it.
    pub fn new(mem: &GuestMemory) -> Self {
        let ram = GuestRam::new(mem);
        let code = CodePages::new(ram.pages());
        SoftMachine {
            ram: Arc::new(ram),
            code: Arc::new(code),
            clock: Clock::default(),
        }
    }

    /// Creates vCPU `index`; the boot vCPU starts at `entry`.
    pub fn create_vcpu(
        &self,
        index: usize,
        topology: &Topology,
        entry: Option<&EntryState>,
        io: Arc<dyn IoBus>,
        stop: Arc<StopSignal>,
    ) -> SoftVcpu {
        let mut cpu = Cpu::new(
            self.ram.clone(),
            self.code.clone(),
            io,
            self.clock,
            index as u8,
            topology,
        );
        for (msr, value) in arch::msr::boot_msrs() {
            if !cpu.set_msr(msr, value) {
                log::warn!("software CPU refused boot MSR {msr:#x}");
            }
        }
        if let Some(entry) = entry {
            cpu.set_regs(&entry.regs());
            let mut sregs = cpu.sregs();
            entry.apply_sregs(&mut sregs);
            cpu.set_sregs(&sregs);
        }
        SoftVcpu { index, cpu, stop }
    }
}

/// One software vCPU.
pub struct SoftVcpu {
    index: usize,
    cpu: Cpu,
    stop: Arc<StopSignal>,
}

impl SoftVcpu {
    fn fault(&mut self, reason: String) -> Box<FaultReport> {
        let mut bytes = [0u8; 15];
        let n = self.cpu.code_bytes(&mut bytes);
        Box::new(FaultReport {
            vcpu: self.index,
            reason,
            regs: Some(self.cpu.regs()),
            sregs: Some(self.cpu.sregs()),
            instruction: bytes[..n].to_vec(),
        })
    }
}

impl VcpuBackend for SoftVcpu {
    fn run(&mut self) -> VcpuExit<'_> {
        match self.cpu.run(self.stop.flag(), BLOCKS_PER_RUN) {
            Exit::Yield => VcpuExit::Interrupted,
            Exit::Shutdown(why) => VcpuExit::Fault(self.fault(format!("software CPU: {why}"))),
            Exit::Halted => VcpuExit::Fault(
                self.fault("software CPU: HLT, and no interrupt controller can wake it yet".into()),
            ),
        }
    }
}

/// An interrupt line that goes nowhere: the software CPU has no interrupt controller yet.
pub struct UnwiredLine;

impl devices::irq::InterruptLine for UnwiredLine {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}
