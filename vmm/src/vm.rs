//! Building a microVM from its config and running it to the end.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::VmConfig;
use arch::acpi::{CmosRtc, Keyboard, Platform, PmRegisters, Uart};
use arch::boot::{BootError, BootSetup, EntryState, KernelSpec, Protocol};
use arch::cpuid::Topology;
use arch::interp::jit::JitOptions;
use arch::{layout, GuestMemory};
use devices::acpi_pm::{self, AcpiPm, ACPI_PM_PORT, ACPI_PM_PORTS};
use devices::bus::{lock, Bus, BusError, BusKind, SharedDevice};
use devices::intc::ioapic::{IOAPIC_ADDR, IOAPIC_SIZE};
use devices::irq::InterruptLine;
use devices::legacy::debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORTS};
use devices::legacy::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KBD_IRQ};
use devices::legacy::rtc::{self, Rtc, RTC_PORT, RTC_PORTS};
use devices::legacy::serial::{Serial, COM1_IRQ, COM1_PORT, UART_PORTS};
use devices::legacy::testdev::{TestMemory, IOMEM_ADDR, IOMEM_SIZE, TESTDEV_PORT, TESTDEV_PORTS};
use devices::virtio::mmio::MMIO_WINDOW_SIZE;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::cli::Accel;
use crate::console::{self, RawTerminal};
use crate::event_loop::EventLoop;
use crate::kvm::{KvmError, KvmMachine};
use crate::pause::PauseGate;
pub use crate::running::Running;
use crate::soft::SoftMachine;
use crate::stop::{StopReason, StopSignal};
use crate::threads::{self, VmThread};
use crate::vcpu::{self, run_loop, Buses, StateError, VcpuBackend};
use crate::virtio;

/// How to run the VM, from the command line.
pub struct VmOptions<'a> {
    /// Requested CPU backend.
    pub accel: Accel,
    /// KVM device path.
    pub kvm_device: &'a Path,
    /// Give the guest the debug-exit port (Multiboot images always have it).
    pub debug_exit: bool,
    /// Let the software CPU translate hot code to host code.
    pub jit: bool,
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
    /// A configured device cannot be built (its backing file, say); the text names it.
    #[error("{0}")]
    Device(String),
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
        matches!(self, VmError::Boot(_) | VmError::Device(_))
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

/// How long service threads (timers, console) may take to end once the vCPUs have stopped.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Watches a running VM until it stops: waits for the stop request, and meanwhile may pause,
/// resume or poke the VM (the REST API does).
pub trait Supervisor {
    /// Called once the vCPUs run; returns why the VM stopped, once `vm.stop` is raised.
    fn supervise(&mut self, vm: &Running<'_>) -> StopReason;
}

/// Builds the VM `config` describes, runs it under `supervisor` until `stop` is raised, and
/// returns why it stopped. Every thread it starts is stopped and joined before it returns
/// (or, if one cannot be, named in a warning; it keeps its own reference to guest memory,
/// so nothing is unmapped under it).
pub fn run(
    config: &VmConfig,
    opts: &VmOptions,
    stop: &Arc<StopSignal>,
    supervisor: &mut dyn Supervisor,
) -> Result<StopReason, VmError> {
    let machine_config = &config.machine_config;
    let mib = machine_config.mem_size_mib;
    let memory_error = |reason: String| VmError::Memory { mib, reason };
    let bytes = mib
        .checked_mul(1 << 20)
        .ok_or_else(|| memory_error("more than a 64-bit address space".into()))?;
    let mem = GuestMemory::from_ranges(&layout::ram_ranges(bytes))
        .map_err(|e| memory_error(e.to_string()))?;
    let mem = Arc::new(mem);

    let slots = virtio::plan(config);
    let platform = acpi_platform(machine_config.vcpu_count, &slots);
    let rsdp_addr = arch::acpi::write_tables(&mem, &platform).map_err(VmError::Acpi)?;
    let boot = &config.boot_source;
    let cmdline = virtio::kernel_args(config, &slots, boot.boot_args());
    let setup = arch::boot::load(
        &mem,
        &KernelSpec {
            kernel: &boot.kernel_image_path,
            initrd: boot.initrd_path.as_deref(),
            cmdline: &cmdline,
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

    stop.catch_termination_signals()
        .map_err(host("installing signal handlers"))?;
    let mut service_threads = Vec::new();
    let backend = Backend::select(opts, machine_config.vcpu_count, &mem, stop)?;
    let backend = match backend {
        (Backend::Kvm(mut kvm), _) => {
            kvm.register_memory(&mem, machine_config.track_dirty_pages)?;
            if setup.bios_interrupts {
                kvm.set_bios_interrupt_state()?;
            }
            Backend::Kvm(kvm)
        }
        (Backend::Soft(soft), timer_thread) => {
            if setup.bios_interrupts {
                soft.set_bios_interrupt_state();
            }
            service_threads.extend(timer_thread);
            Backend::Soft(soft)
        }
    };
    let vm = Assembly {
        config,
        opts,
        setup: &setup,
        slots: &slots,
        mem: &mem,
        backend: &backend,
        stop,
    };
    let result = vm.assemble_and_run(&mut service_threads, supervisor);
    if result.is_err() {
        stop.stop(StopReason::Internal("the VM could not be started".into()));
    }
    backend.shut_down();
    for name in threads::join_all(service_threads, SERVICE_STOP_TIMEOUT, |_| {}) {
        log::warn!("the {name} thread did not stop within {SERVICE_STOP_TIMEOUT:?}");
    }
    result
}

/// What a VM is built from, once its memory is loaded and its backend chosen.
struct Assembly<'a> {
    config: &'a VmConfig,
    opts: &'a VmOptions<'a>,
    setup: &'a BootSetup,
    slots: &'a [virtio::Slot],
    mem: &'a Arc<GuestMemory>,
    backend: &'a Backend,
    stop: &'a Arc<StopSignal>,
}

impl Assembly<'_> {
    /// Puts the devices on their buses, starts the device loop, the console and the vCPUs,
    /// hands the running VM to `supervisor` until the stop request and stops the vCPUs again.
    /// Threads that outlive the vCPUs go to `service_threads`.
    fn assemble_and_run(
        &self,
        service_threads: &mut Vec<VmThread>,
        supervisor: &mut dyn Supervisor,
    ) -> Result<StopReason, VmError> {
        let Assembly {
            config,
            opts,
            setup,
            slots,
            mem,
            backend,
            stop,
        } = *self;
        let machine_config = &config.machine_config;
        let stdout = console::stdout_writer().map_err(host("standard output"))?;
        let serial = Serial::new(backend.interrupt_line(COM1_IRQ)?, Box::new(stdout))
            .map_err(host("serial port"))?;
        let serial = Arc::new(Mutex::new(serial));
        let mut pio = Bus::new(BusKind::Pio);
        pio.insert(serial.clone(), COM1_PORT, UART_PORTS)?;
        let keyboard_irq = backend.interrupt_line(I8042_KBD_IRQ)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(stop.clone(), keyboard_irq)));
        pio.insert_window(i8042.clone(), I8042_DATA_PORT, 1, 0)?;
        pio.insert_window(
            i8042.clone(),
            I8042_COMMAND_PORT,
            1,
            I8042_COMMAND_PORT - I8042_DATA_PORT,
        )?;
        if setup.protocol == Protocol::Multiboot || opts.debug_exit {
            // Test images end the VM with a status of their choosing; other guests get this only
            // when asked for (--debug-exit): it lets the guest pick the VMM's exit status.
            let debug_exit: SharedDevice = Arc::new(Mutex::new(DebugExit::new(stop.clone())));
            pio.insert(debug_exit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORTS)?;
        }
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
        if let Backend::Soft(soft) = backend {
            soft.add_legacy_ports(&mut pio)?;
            mmio.insert(soft.ioapic(), IOAPIC_ADDR, IOAPIC_SIZE)?;
        }
        let mut event_loop = EventLoop::new().map_err(host("the device event loop"))?;
        let mut counters = Vec::new();
        let mut handles = Vec::new();
        for device in virtio::build(config, slots, mem).map_err(VmError::Device)? {
            backend.connect_virtio(&device, &mut event_loop)?;
            counters.push((device.slot.metrics_name(), device.counters.clone()));
            handles.push((device.slot.id.clone(), device.handle.clone()));
            mmio.insert(device.transport.clone(), device.slot.addr, MMIO_WINDOW_SIZE)?;
            event_loop.add(device.subscriber);
        }
        service_threads.push(
            event_loop
                .start(stop.clone())
                .map_err(host("the device event loop thread"))?,
        );
        let buses = Arc::new(Buses { pio, mmio });

        let topology = Topology::new(machine_config.vcpu_count, machine_config.smt);
        let vcpus = (0..usize::from(machine_config.vcpu_count))
            .map(|i| {
                let entry = (i == 0).then_some(&setup.entry);
                backend.create_vcpu(i, &topology, entry, mem, &buses, stop)
            })
            .collect::<Result<Vec<_>, _>>()?;

        register_signal_handler(SIGRTMIN(), on_kick).map_err(|e| VmError::Host {
            what: "installing the vCPU kick handler",
            source: io::Error::from_raw_os_error(e.errno()),
        })?;
        let terminal = RawTerminal::enter();
        service_threads.push(
            console::spawn_input(serial, stop.clone(), terminal.is_active())
                .map_err(host("console input thread"))?,
        );
        let mut vcpu_threads = Vec::with_capacity(vcpus.len());
        let mut started = Ok(());
        let gate = Arc::new(PauseGate::default());
        for (i, mut vcpu) in vcpus.into_iter().enumerate() {
            let (buses, thread_stop, gate) = (buses.clone(), stop.clone(), gate.clone());
            let thread = VmThread::spawn(format!("vcpu{i}"), stop.clone(), move || {
                run_loop(vcpu.as_mut(), &buses, &thread_stop, &gate)
            });
            match thread {
                Ok(thread) => vcpu_threads.push(thread),
                Err(e) => {
                    started = Err(host("starting a vCPU thread")(e));
                    stop.stop(StopReason::Internal("a vCPU thread could not start".into()));
                    break;
                }
            }
        }
        let reason = if started.is_ok() {
            supervisor.supervise(&Running {
                stop,
                backend,
                vcpu_threads: &vcpu_threads,
                gate: &gate,
                i8042: &i8042,
                counters,
                handles,
            })
        } else {
            stop.wait()
        };
        let stuck = threads::join_all(vcpu_threads, VCPU_STOP_TIMEOUT, |thread| {
            backend.kick_all();
            thread.signal(SIGRTMIN());
        });
        for name in stuck {
            log::warn!("the {name} thread did not stop within {VCPU_STOP_TIMEOUT:?}");
        }
        drop(terminal);
        started.map(|()| reason)
    }
}

/// The CPU backend of a VM.
pub(crate) enum Backend {
    Kvm(KvmMachine),
    Soft(SoftMachine),
}

impl Backend {
    /// Picks the backend `--accel` asks for: KVM, the software CPU, or KVM when usable. The
    /// software CPU comes with its timer thread.
    fn select(
        opts: &VmOptions,
        vcpu_count: u8,
        mem: &Arc<GuestMemory>,
        stop: &Arc<StopSignal>,
    ) -> Result<(Backend, Option<VmThread>), VmError> {
        let soft = || {
            let jit = if opts.jit {
                JitOptions::default()
            } else {
                JitOptions::OFF
            };
            SoftMachine::new(mem.clone(), usize::from(vcpu_count), jit, stop.clone())
                .map(|(soft, timers)| (Backend::Soft(soft), Some(timers)))
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
                Ok((Backend::Kvm(kvm), None))
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
                    Ok((Backend::Kvm(kvm), None))
                }
                Err(e) => {
                    log::warn!("accelerator: software CPU, because KVM is not usable: {e}");
                    soft()
                }
            },
        }
    }

    /// Wakes every vCPU of the software backend so that it sees the stop flag at once (KVM
    /// vCPUs are woken by a signal instead).
    pub(crate) fn kick_all(&self) {
        if let Backend::Soft(soft) = self {
            soft.kick_all();
        }
    }

    /// Stops guest time once every vCPU is paused.
    pub(crate) fn freeze_time(&self) -> Result<(), String> {
        match self {
            Backend::Kvm(kvm) => kvm.freeze_clock().map_err(|e| e.to_string()),
            Backend::Soft(soft) => {
                soft.freeze_clock();
                Ok(())
            }
        }
    }

    /// Lets guest time go on from where [`Backend::freeze_time`] stopped it.
    pub(crate) fn thaw_time(&self) -> Result<(), String> {
        match self {
            Backend::Kvm(kvm) => kvm.thaw_clock().map_err(|e| e.to_string()),
            Backend::Soft(soft) => {
                soft.thaw_clock();
                Ok(())
            }
        }
    }

    /// Ends the backend's service threads once its vCPUs have stopped.
    fn shut_down(&self) {
        if let Backend::Soft(soft) = self {
            soft.shut_down();
        }
    }

    /// Wires a virtio device's queue notifications and interrupt into the backend: KVM
    /// signals the queue eventfds itself (ioeventfd) and raises the interrupt from its
    /// eventfd (irqfd); on the software CPU the transport signals the queues, and the event
    /// loop carries the interrupt eventfd into the IOAPIC.
    fn connect_virtio(
        &self,
        device: &virtio::Built,
        event_loop: &mut EventLoop,
    ) -> Result<(), VmError> {
        let transport = lock(&device.transport);
        match self {
            Backend::Kvm(kvm) => {
                let notify = device.slot.addr + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY);
                for (queue, evt) in transport.queue_events().iter().enumerate() {
                    kvm.notify_on_write(evt, notify, queue as u32)?;
                }
                kvm.interrupt_on_event(transport.interrupt_event(), device.slot.gsi)?;
            }
            Backend::Soft(soft) => {
                let route = soft
                    .interrupt_route(transport.interrupt_event(), device.slot.gsi)
                    .map_err(host("an interrupt route"))?;
                event_loop.add(route);
            }
        }
        Ok(())
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

/// The platform the ACPI tables describe: the vCPUs, COM1 and the power-management ports.
fn acpi_platform(vcpu_count: u8, slots: &[virtio::Slot]) -> Platform {
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
        keyboard: Keyboard {
            data_port: I8042_DATA_PORT as u16,
            command_port: I8042_COMMAND_PORT as u16,
            irq: I8042_KBD_IRQ,
        },
        rtc: CmosRtc {
            port: RTC_PORT as u16,
            century_register: rtc::CENTURY,
        },
        virtio: virtio::acpi_entries(slots),
    }
}

extern "C" fn on_kick(_num: libc::c_int, _info: *mut libc::siginfo_t, _unused: *mut libc::c_void) {
    // Only there so the signal interrupts KVM_RUN; the vCPU loop then sees the stop flag.
}
