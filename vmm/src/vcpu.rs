//! The vCPU backend seam and the exit loop every backend shares.
//!
//! A backend runs guest code until something needs the VMM (an I/O access, a fatal fault)
//! and reports it as a [`VcpuExit`]; [`run_loop`] serves port and MMIO accesses from the
//! device buses, so devices never learn which backend runs them.

use std::io;

use arch::boot::EntryState;
use devices::bus::Bus;
use devices::GuestExit;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use crate::metrics;
use crate::pause::PauseGate;
use crate::report::FaultReport;
use crate::stop::{StopReason, StopSignal};

/// What a backend stopped running guest code for.
pub enum VcpuExit<'a> {
    /// `in`/`ins`: fill `data` (a multiple of `size` bytes, one element per repetition).
    IoIn {
        /// Port.
        port: u16,
        /// Access width in bytes.
        size: usize,
        /// Elements to fill.
        data: &'a mut [u8],
    },
    /// `out`/`outs`: `data` holds one or more elements of `size` bytes.
    IoOut {
        /// Port.
        port: u16,
        /// Access width in bytes.
        size: usize,
        /// Elements written.
        data: &'a [u8],
    },
    /// A read from a guest physical address that is not RAM.
    MmioRead {
        /// Guest physical address.
        addr: u64,
        /// Bytes to fill.
        data: &'a mut [u8],
    },
    /// A write to a guest physical address that is not RAM.
    MmioWrite {
        /// Guest physical address.
        addr: u64,
        /// Bytes written.
        data: &'a [u8],
    },
    /// Nothing to serve (a kick from another thread); look at the stop flag and go on.
    Interrupted,
    /// The guest asked the machine to power off or reset through the hypervisor.
    Guest(GuestExit),
    /// The vCPU cannot go on.
    Fault(Box<FaultReport>),
}

/// A vCPU's architectural state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StateError {
    /// What was being read or written (e.g. `KVM_SET_SREGS`).
    pub what: &'static str,
    /// Why it failed.
    pub source: io::Error,
}

/// A vCPU as the VMM drives it: the exit loop runs it; its state is read and written the
/// same way whichever backend it is. Interrupts reach it through the backend's interrupt
/// lines (`devices::irq::InterruptLine`), not through the vCPU.
pub trait VcpuBackend: Send {
    /// Runs guest code until the next exit.
    fn run(&mut self) -> VcpuExit<'_>;
    /// The general registers, RIP and RFLAGS.
    fn regs(&self) -> Result<kvm_regs, StateError>;
    /// Replaces the general registers, RIP and RFLAGS.
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), StateError>;
    /// Segment, descriptor-table and control registers, and EFER.
    fn sregs(&self) -> Result<kvm_sregs, StateError>;
    /// Replaces segment, descriptor-table and control registers, and EFER.
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), StateError>;
    /// Replaces the x87, MMX and SSE state (with MXCSR).
    fn set_fpu(&mut self, fpu: &kvm_fpu) -> Result<(), StateError>;
    /// Writes MSRs in order; returns how many were accepted (a refusal stops the rest).
    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<usize, StateError>;
    /// Called on the vCPU's thread as it parks for a pause: a backend whose vCPUs keep
    /// their own time (KVM's TSC) notes it.
    fn pause_time(&mut self) {}
    /// Called on the vCPU's thread as it leaves a pause, before it runs guest code again:
    /// guest time goes on from where [`VcpuBackend::pause_time`] (or the VM) stopped it.
    fn resume_time(&mut self) {}
}

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision.
const FCW_INIT: u16 = 0x37f;
/// MXCSR at reset: all SIMD exceptions masked.
const MXCSR_INIT: u32 = 0x1f80;

/// Puts a new vCPU in its boot state: the MSRs Linux expects, and for the boot vCPU the
/// registers `entry` describes with a freshly initialized FPU. Application processors keep
/// their reset state and wait for INIT and STARTUP.
pub fn prepare(vcpu: &mut dyn VcpuBackend, entry: Option<&EntryState>) -> Result<(), StateError> {
    let msrs = arch::msr::boot_msrs();
    let accepted = vcpu.set_msrs(&msrs)?;
    if let Some((index, _)) = msrs.get(accepted) {
        log::warn!("the vCPU refused boot MSR {index:#x}; the guest starts with its default");
    }
    let Some(entry) = entry else {
        return Ok(());
    };
    vcpu.set_regs(&entry.regs())?;
    let mut sregs = vcpu.sregs()?;
    entry.apply_sregs(&mut sregs);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_fpu(&kvm_fpu {
        fcw: FCW_INIT,
        mxcsr: MXCSR_INIT,
        ..Default::default()
    })
}

/// The devices a vCPU reaches through port I/O and MMIO.
pub struct Buses {
    /// x86 I/O ports.
    pub pio: Bus,
    /// Memory-mapped I/O.
    pub mmio: Bus,
}

/// The software CPU's port and MMIO accesses, counted as the exits they would be under KVM.
impl arch::interp::IoBus for Buses {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        metrics::count(&metrics::EXITS.io_in);
        self.pio.read(u64::from(port), data);
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        metrics::count(&metrics::EXITS.io_out);
        self.pio.write(u64::from(port), data);
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        metrics::count(&metrics::EXITS.mmio_read);
        self.mmio.read(addr, data);
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        metrics::count(&metrics::EXITS.mmio_write);
        self.mmio.write(addr, data);
    }
}

/// Runs `vcpu` until the VM stops, serving its I/O from `buses` and parking at `gate` while
/// the VM is paused. A fault or guest exit stops the whole VM through `stop`. Each exit is
/// counted in [`metrics::EXITS`].
pub fn run_loop(vcpu: &mut dyn VcpuBackend, buses: &Buses, stop: &StopSignal, gate: &PauseGate) {
    let exits = &metrics::EXITS;
    while !stop.is_stopping() {
        if gate.is_paused() {
            vcpu.pause_time();
            if !gate.pass(stop) {
                break;
            }
            vcpu.resume_time();
        }
        match vcpu.run() {
            VcpuExit::IoIn { port, size, data } => {
                metrics::count(&exits.io_in);
                for element in data.chunks_mut(size.max(1)) {
                    buses.pio.read(u64::from(port), element);
                }
            }
            VcpuExit::IoOut { port, size, data } => {
                metrics::count(&exits.io_out);
                for element in data.chunks(size.max(1)) {
                    buses.pio.write(u64::from(port), element);
                }
            }
            VcpuExit::MmioRead { addr, data } => {
                metrics::count(&exits.mmio_read);
                buses.mmio.read(addr, data);
            }
            VcpuExit::MmioWrite { addr, data } => {
                metrics::count(&exits.mmio_write);
                buses.mmio.write(addr, data);
            }
            VcpuExit::Interrupted => metrics::count(&exits.interrupted),
            VcpuExit::Guest(exit) => {
                metrics::count(&exits.guest);
                stop.stop(StopReason::Guest(exit));
            }
            VcpuExit::Fault(report) => {
                metrics::count(&exits.fault);
                stop.stop(StopReason::Fault(report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::{BusDevice, BusKind};
    use std::sync::{Arc, Mutex};

    /// A scripted backend: returns its exits in order, then faults. Its state is plain
    /// fields; it accepts the first `msr_limit` MSRs of a write.
    #[derive(Default)]
    struct Script {
        step: usize,
        inbuf: [u8; 4],
        seen_in: Arc<Mutex<Vec<u8>>>,
        regs: kvm_regs,
        sregs: kvm_sregs,
        fpu: Option<kvm_fpu>,
        msrs: Vec<(u32, u64)>,
        msr_limit: usize,
    }

    impl VcpuBackend for Script {
        fn regs(&self) -> Result<kvm_regs, StateError> {
            Ok(self.regs)
        }

        fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), StateError> {
            self.regs = *regs;
            Ok(())
        }

        fn sregs(&self) -> Result<kvm_sregs, StateError> {
            Ok(self.sregs)
        }

        fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), StateError> {
            self.sregs = *sregs;
            Ok(())
        }

        fn set_fpu(&mut self, fpu: &kvm_fpu) -> Result<(), StateError> {
            self.fpu = Some(*fpu);
            Ok(())
        }

        fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<usize, StateError> {
            let n = msrs.len().min(self.msr_limit);
            self.msrs.extend_from_slice(&msrs[..n]);
            Ok(n)
        }

        fn run(&mut self) -> VcpuExit<'_> {
            self.step += 1;
            match self.step {
                1 => VcpuExit::IoOut {
                    port: 0x80,
                    size: 1,
                    data: b"ab",
                },
                2 => VcpuExit::IoIn {
                    port: 0x80,
                    size: 2,
                    data: &mut self.inbuf,
                },
                3 => {
                    self.seen_in.lock().unwrap().extend_from_slice(&self.inbuf);
                    VcpuExit::Interrupted
                }
                _ => VcpuExit::Guest(GuestExit::DebugExit(3)),
            }
        }
    }

    /// Records each access as one entry.
    #[derive(Default)]
    struct Port(Vec<Vec<u8>>);

    impl BusDevice for Port {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            self.0.push(vec![0; data.len()]);
            data.fill(self.0.len() as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.push(data.to_vec());
        }
    }

    #[test]
    fn string_io_is_split_into_elements_and_guest_exit_stops() {
        let port = Arc::new(Mutex::new(Port::default()));
        let mut pio = Bus::new(BusKind::Pio);
        pio.insert(port.clone(), 0x80, 1).unwrap();
        let buses = Buses {
            pio,
            mmio: Bus::new(BusKind::Mmio),
        };
        let stop = StopSignal::new().unwrap();
        let seen_in = Arc::new(Mutex::new(Vec::new()));
        let mut vcpu = Script {
            seen_in: seen_in.clone(),
            ..Script::default()
        };
        run_loop(&mut vcpu, &buses, &stop, &PauseGate::default());
        assert!(stop.is_stopping());
        assert_eq!(stop.wait().exit_status(), 7);
        let accesses = &port.lock().unwrap().0;
        assert_eq!(accesses[0], b"a");
        assert_eq!(accesses[1], b"b");
        assert_eq!(accesses.len(), 4, "two 2-byte reads");
        assert_eq!(seen_in.lock().unwrap().as_slice(), &[3, 3, 4, 4]);
    }

    #[test]
    fn prepare_sets_boot_state_on_the_boot_vcpu_and_only_msrs_on_others() {
        let entry = EntryState {
            mode: arch::boot::CpuMode::Long64,
            rip: 0x100_0000,
            rsp: 0,
            rax: 0,
            rbx: 0,
            rsi: 0x7000,
        };
        let mut boot = Script {
            msr_limit: usize::MAX,
            ..Script::default()
        };
        prepare(&mut boot, Some(&entry)).unwrap();
        // What Linux relies on, spelled out from the SDM rather than taken from the code
        // under test: TSC at 0, fast strings on, MTRRs on with write-back by default.
        for expected in [(0x10, 0), (0x1a0, 1), (0x2ff, 0x806)] {
            assert!(
                boot.msrs.contains(&expected),
                "{expected:x?} in {:x?}",
                boot.msrs
            );
        }
        assert_eq!(boot.msrs.len(), 11, "every boot MSR was offered");
        assert_eq!((boot.regs.rip, boot.regs.rsi), (0x100_0000, 0x7000));
        assert_ne!(boot.sregs.cr0 & 1, 0, "protected mode");
        let fpu = boot.fpu.expect("FPU initialized");
        assert_eq!((fpu.fcw, fpu.mxcsr), (FCW_INIT, MXCSR_INIT));

        let mut ap = Script {
            msr_limit: 3,
            ..Script::default()
        };
        prepare(&mut ap, None).unwrap();
        assert_eq!(ap.msrs.len(), 3, "a refused MSR is reported, not fatal");
        assert_eq!(ap.regs.rip, 0);
        assert!(ap.fpu.is_none());
    }
}
