//! Building a microVM from its config and running it to the end.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::VmConfig;
use arch::acpi::{CmosRtc, Platform, PmRegisters, Uart};
use arch::boot::{BootError, EntryState, KernelSpec};
use arch::cpuid::Topology;
use arch::{layout, GuestMemory};
use devices::acpi_pm::{self, AcpiPm, ACPI_PM_PORT, ACPI_PM_PORTS};
use devices::bus::{Bus, BusError, BusKind, SharedDevice};
use devices::intc::ioapic::{IOAPIC_ADDR, IOAPIC_SIZE};
use devices::irq::InterruptLine;
use devices::legacy::debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORTS};
use devices::legacy::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use devices::legacy::rtc::{self, Rtc, RTC_PORT, RTC_PORTS};
use devices::legacy::serial::{Serial, COM1_IRQ, COM1_PORT, UART_PORTS};
use devices::legacy::testdev::{TestMemory, IOMEM_ADDR, IOMEM_SIZE, TESTDEV_PORT, TESTDEV_PORTS};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::cli::Accel;
use crate::console::{self, RawTerminal};
use crate::kvm::{KvmError, KvmMachine};
use crate::soft::SoftMachine;
use crate::stop::{StopReason, StopSignal};
use crate::vcpu::{self, run_loop, Buses, StateError, VcpuBackend};

/// How to run the VM, from the command line.
pub struct VmOptions<'a> {
    /// Requested CPU backend.
    pub accel: Accel,
    /// KVM device path.
    pub kvm_device: &'a Path,
}

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A guest image or the command line is unusable.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// KVM is missing or failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Memory {
        /// Size asked for.
        mib: u64,
        /// Why not.
        reason: String,
    },
    /// The ACPI tables do not fit (a bug in the machine layout).
    #[error("ACPI tables: {0}")]
    Acpi(String),
    /// A vCPU's boot state could not be set.
    #[error("setting up a vCPU: {0}")]
    VcpuState(#[from] StateError),
    /// Devices overlap (a bug in the machine layout).
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    /// A host resource (thread, eventfd, signal handler) could not be set up.
    #[error("{what}: {source}")]
    Host {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

impl VmError {
    /// Whether the fault lies with what the user gave (config, images) rather than the host.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, VmError::Boot(_))
    }
}

fn host(what: &'static str) -> impl FnOnce(io::Error) -> VmError {
    move |source| VmError::Host { what, source }
}

/// Present when the host's KVM is `kvm_pvm`: KVM without hardware virtualization (shadow
/// paging inside a nested guest), whose instruction emulator cannot run stock Linux kernels.
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// How long stopping vCPUs may take before the VMM gives up waiting for them.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds the VM `config` describes, runs it until it stops, and returns why it stopped.
pub fn run(config: &VmConfig, opts: &VmOptions) -> Result<StopReason, VmError> {
    let machine_config = &config.machine_config;
    let mib = machine_config.mem_size_mib;
    let mem =
        GuestMemory::from_ranges(&layout::ram_ranges(mib << 20)).map_err(|e| VmError::Memory {
            mib,
            reason: e.to_string(),
        })?;
    let mem = Arc::new(mem);

    let rsdp_addr = arch::acpi::write_tables(&mem, &acpi_platform(machine_config.vcpu_count))
        .map_err(VmError::Acpi)?;
    let boot = &config.boot_source;
    let setup = arch::boot::load(
        &mem,
        &KernelSpec {
            kernel: &boot.kernel_image_path,
            initrd: boot.initrd_path.as_deref(),
            cmdline: boot.boot_args(),
            rsdp_addr: Some(rsdp_addr),
            prefer_pvh: true,
        },
    )?;
    log::info!(
        "loaded {} as {:?} at {:#x}..{:#x}, entry {:#x}",
        boot.kernel_image_path.display(),
        setup.protocol,
        setup.kernel_range.0,
        setup.kernel_range.1,
        setup.entry.rip
    );

    let backend = Backend::select(opts, machine_config.vcpu_count, &mem)?;
    match &backend {
        Backend::Kvm(kvm) => {
            kvm.register_memory(&mem, machine_config.track_dirty_pages)?;
            if setup.bios_interrupts {
                kvm.set_bios_interrupt_state()?;
            }
        }
        Backend::Soft(soft) if setup.bios_interrupts => soft.set_bios_interrupt_state(),
        Backend::Soft(_) => {}
    }

    let stop = Arc::new(StopSignal::new().map_err(host("eventfd"))?);
    stop.catch_termination_signals()
        .map_err(host("installing signal handlers"))?;

    let stdout = console::stdout_writer().map_err(host("standard output"))?;
    let serial = Serial::new(backend.interrupt_line(COM1_IRQ)?, Box::new(stdout))
        .map_err(host("serial port"))?;
    let serial = Arc::new(Mutex::new(serial));
    let mut pio = Bus::new(BusKind::Pio);
    pio.insert(serial.clone(), COM1_PORT, UART_PORTS)?;
    let i8042: SharedDevice = Arc::new(Mutex::new(I8042::new(stop.clone())));
    pio.insert_window(i8042.clone(), I8042_DATA_PORT, 1, 0)?;
    pio.insert_window(
        i8042,
        I8042_COMMAND_PORT,
        1,
        I8042_COMMAND_PORT - I8042_DATA_PORT,
    )?;
    let debug_exit: SharedDevice = Arc::new(Mutex::new(DebugExit::new(stop.clone())));
    pio.insert(debug_exit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORTS)?;
    let cmos: SharedDevice = Arc::new(Mutex::new(Rtc::new()));
    pio.insert(cmos, RTC_PORT, RTC_PORTS)?;
    let acpi_pm: SharedDevice = Arc::new(Mutex::new(AcpiPm::new(stop.clone())));
    pio.insert(acpi_pm, ACPI_PM_PORT, ACPI_PM_PORTS)?;
    let mut mmio = Bus::new(BusKind::Mmio);
    if setup.bios_interrupts {
        // A Multiboot test guest: QEMU's pc-testdev, which kvm-unit-tests expect.
        pio.insert(
            Arc::new(Mutex::new(TestMemory::new(TESTDEV_PORTS))),
            TESTDEV_PORT,
            TESTDEV_PORTS,
        )?;
        mmio.insert(
            Arc::new(Mutex::new(TestMemory::new(IOMEM_SIZE))),
            IOMEM_ADDR,
            IOMEM_SIZE,
        )?;
    }
    if let Backend::Soft(soft) = &backend {
        soft.add_legacy_ports(&mut pio)?;
        mmio.insert(soft.ioapic(), IOAPIC_ADDR, IOAPIC_SIZE)?;
    }
    let buses = Arc::new(Buses { pio, mmio });

    let topology = Topology::new(machine_config.vcpu_count, machine_config.smt);
    let vcpus = (0..usize::from(machine_config.vcpu_count))
        .map(|i| {
            let entry = (i == 0).then_some(&setup.entry);
            backend.create_vcpu(i, &topology, entry, &mem, &buses, &stop)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let terminal = RawTerminal::enter();
    console::spawn_input(serial, stop.clone(), terminal.is_active())
        .map_err(host("console input thread"))?;

    register_signal_handler(SIGRTMIN(), on_kick).map_err(|e| VmError::Host {
        what: "installing the vCPU kick handler",
        source: io::Error::from_raw_os_error(e.errno()),
    })?;
    let mut threads = Vec::with_capacity(vcpus.len());
    for (i, mut vcpu) in vcpus.into_iter().enumerate() {
        let (buses, stop) = (buses.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || {
                let _guard = StopWhenDone(&stop, i);
                run_loop(vcpu.as_mut(), &buses, &stop)
            })
            .map_err(host("starting a vCPU thread"))?;
        threads.push(thread);
    }

    let reason = stop.wait();
    stop_vcpus(threads);
    drop(terminal);
    Ok(reason)
}

/// The CPU backend of a VM.
enum Backend {
    Kvm(KvmMachine),
    Soft(SoftMachine),
}

impl Backend {
    /// Picks the backend `--accel` asks for: KVM, the software CPU, or KVM when usable.
    fn select(opts: &VmOptions, vcpu_count: u8, mem: &GuestMemory) -> Result<Backend, VmError> {
        let soft = || {
            SoftMachine::new(mem, usize::from(vcpu_count))
                .map(Backend::Soft)
                .map_err(host("starting the software CPU's timer thread"))
        };
        match opts.accel {
            Accel::Interp => {
                log::info!("accelerator: software CPU (--accel interp)");
                soft()
            }
            Accel::Kvm => {
                let kvm = KvmMachine::new(opts.kvm_device)?;
                log::info!("accelerator: KVM ({})", opts.kvm_device.display());
                Ok(Backend::Kvm(kvm))
            }
            Accel::Auto => match KvmMachine::new(opts.kvm_device) {
                Ok(_) if Path::new(KVM_PVM_MODULE).exists() => {
                    log::warn!(
                        "accelerator: software CPU, because {} is served by kvm_pvm, which \
                         cannot run stock Linux kernels (--accel kvm forces it)",
                        opts.kvm_device.display()
                    );
                    soft()
                }
                Ok(kvm) => {
                    log::info!("accelerator: KVM ({} is usable)", opts.kvm_device.display());
                    Ok(Backend::Kvm(kvm))
                }
                Err(e) => {
                    log::warn!("accelerator: software CPU, because KVM is not usable: {e}");
                    soft()
                }
            },
        }
    }

    /// An interrupt line into the backend's interrupt controller for `gsi`.
    fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, VmError> {
        match self {
            Backend::Kvm(kvm) => Ok(kvm.interrupt_line(gsi)?),
            Backend::Soft(soft) => Ok(soft.interrupt_line(gsi)),
        }
    }

    /// Creates vCPU `index`; the boot vCPU gets `entry`.
    fn create_vcpu(
        &self,
        index: usize,
        topology: &Topology,
        entry: Option<&EntryState>,
        mem: &Arc<GuestMemory>,
        buses: &Arc<Buses>,
        stop: &Arc<StopSignal>,
    ) -> Result<Box<dyn VcpuBackend>, VmError> {
        let mut vcpu: Box<dyn VcpuBackend> = match self {
            Backend::Kvm(kvm) => Box::new(kvm.create_vcpu(index, topology, mem.clone())?),
            Backend::Soft(soft) => {
                Box::new(soft.create_vcpu(index, topology, buses.clone(), stop.clone()))
            }
        };
        vcpu::prepare(vcpu.as_mut(), entry)?;
        Ok(vcpu)
    }
}

/// Stops the VM if a vCPU thread panics: the VM must not go on without that vCPU.
struct StopWhenDone<'a>(&'a StopSignal, usize);

impl Drop for StopWhenDone<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop(StopReason::Internal(format!(
                "vCPU {} thread panicked",
                self.1
            )));
        }
    }
}

/// The platform the ACPI tables describe: the vCPUs, COM1 and the power-management ports.
fn acpi_platform(vcpu_count: u8) -> Platform {
    let port = |offset: u64| (ACPI_PM_PORT + offset) as u16;
    Platform {
        vcpu_count,
        pm: PmRegisters {
            sleep_control_port: port(acpi_pm::SLEEP_CONTROL),
            sleep_status_port: port(acpi_pm::SLEEP_STATUS),
            reset_port: port(acpi_pm::RESET),
            reset_value: acpi_pm::RESET_VALUE,
            s5_sleep_type: acpi_pm::S5_SLEEP_TYPE,
        },
        uarts: vec![Uart {
            port: COM1_PORT as u16,
            irq: COM1_IRQ,
        }],
        rtc: CmosRtc {
            port: RTC_PORT as u16,
            century_register: rtc::CENTURY,
        },
    }
}

extern "C" fn on_kick(_num: libc::c_int, _info: *mut libc::siginfo_t, _unused: *mut libc::c_void) {
    // Only there so the signal interrupts KVM_RUN; the vCPU loop then sees the stop flag.
}

/// Kicks every vCPU thread out of the guest until it notices the stop flag, then joins it.
fn stop_vcpus(threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    // A kick that lands just before a thread enters KVM_RUN is lost, so keep kicking.
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(SIGRTMIN());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("a vCPU thread did not stop within {VCPU_STOP_TIMEOUT:?}");
        }
    }
}
