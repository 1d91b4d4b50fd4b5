//! The KVM backend: a VM with in-kernel irqchip and PIT, and vCPUs that report exits in the
//! backend-neutral form of [`crate::vcpu`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use arch::cpuid::Topology;
use arch::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use arch::GuestMemory;
use devices::irq::{EventFdLine, InterruptLine};
use devices::GuestExit;
use kvm_bindings::{
    kvm_clock_data, kvm_fpu, kvm_irqchip, kvm_msr_entry, kvm_pit_config, kvm_regs, kvm_run,
    kvm_sregs, kvm_userspace_memory_region, CpuId, Msrs, KVM_EXIT_IO_IN,
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit as KvmExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::report::FaultReport;
use crate::vcpu::{StateError, VcpuBackend, VcpuExit};

/// A KVM failure, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The KVM device could not be opened.
    #[error("cannot open KVM device {path}: {source}")]
    Open {
        /// The device path.
        path: String,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// KVM lacks something Ember needs.
    #[error("KVM at {path} lacks {what}")]
    Missing {
        /// The device path.
        path: String,
        /// The capability.
        what: &'static str,
    },
    /// An ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Ioctl {
        /// The operation.
        what: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

fn state(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
    move |e| StateError {
        what,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// PIT access mode "low byte, then high byte" (also KVM's read/write state for it).
const PIT_RW_LOBYTE_HIBYTE: u8 = 3;

/// Capabilities the backend relies on.
const REQUIRED_CAPS: [(Cap, &str); 7] = [
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (
        Cap::Irqchip,
        "KVM_CAP_IRQCHIP (in-kernel interrupt controllers)",
    ),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
];

/// A KVM virtual machine with its guest memory registered.
pub struct KvmMachine {
    vm: VmFd,
    supported_cpuid: CpuId,
    // Keeps the KVM system fd open for as long as the VM; dropped after `vm`.
    _kvm: Kvm,
    /// The memory registered with the VM, dropped after `vm`: the kernel's memory slots
    /// point into it until the VM is gone (each vCPU also holds it, as the VM lives on in the
    /// kernel until its vCPU descriptors close).
    registered: Option<Arc<GuestMemory>>,
    /// The VM's kvmclock while it is paused.
    frozen_clock: std::sync::Mutex<Option<kvm_clock_data>>,
}

impl KvmMachine {
    /// Opens `device`, checks its capabilities and creates a VM with an in-kernel irqchip
    /// and PIT.
    pub fn new(device: &Path) -> Result<Self, KvmError> {
        let path = device.display().to_string();
        let c_path = CString::new(device.as_os_str().as_bytes()).map_err(|_| KvmError::Open {
            path: path.clone(),
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        let kvm = Kvm::new_with_path(&c_path).map_err(|source| KvmError::Open {
            path: path.clone(),
            source,
        })?;
        for (cap, what) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(KvmError::Missing { path, what });
            }
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
        Ok(KvmMachine {
            vm,
            supported_cpuid,
            _kvm: kvm,
            registered: None,
            frozen_clock: std::sync::Mutex::new(None),
        })
    }

    /// Notes the VM's kvmclock once its vCPUs are paused, so that it can go on from there.
    pub fn freeze_clock(&self) -> Result<(), KvmError> {
        let clock = self.vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?;
        *self.frozen_clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock);
        Ok(())
    }

    /// Sets the kvmclock back to where [`KvmMachine::freeze_clock`] found it, so that the
    /// guest does not see the pause.
    pub fn thaw_clock(&self) -> Result<(), KvmError> {
        let frozen = self
            .frozen_clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(clock) = frozen {
            let clock = kvm_clock_data {
                clock: clock.clock,
                ..Default::default()
            };
            self.vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))?;
        }
        Ok(())
    }

    /// Registers every region of `mem` as a KVM memory slot, and keeps `mem` for as long as
    /// the VM exists.
    pub fn register_memory(
        &mut self,
        mem: &Arc<GuestMemory>,
        track_dirty_pages: bool,
    ) -> Result<(), KvmError> {
        self.registered = Some(mem.clone());
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|_| KvmError::Ioctl {
                    what: "KVM_SET_USER_MEMORY_REGION (region has no host mapping)",
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                })?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if track_dirty_pages {
                    KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mmap of `memory_size` bytes owned by
            // `mem`, which `self.registered` and every vCPU keep alive as long as the VM.
            unsafe { self.vm.set_user_memory_region(desc) }
                .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Programs the in-kernel PICs and PIT the way a PC BIOS leaves them
    /// (see [`arch::boot::bios`]).
    pub fn set_bios_interrupt_state(&self) -> Result<(), KvmError> {
        use arch::boot::bios;
        for (chip_id, base, mask) in [
            (
                KVM_IRQCHIP_PIC_MASTER,
                bios::PIC_MASTER_BASE,
                bios::PIC_MASTER_MASK,
            ),
            (
                KVM_IRQCHIP_PIC_SLAVE,
                bios::PIC_SLAVE_BASE,
                bios::PIC_SLAVE_MASK,
            ),
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut chip)
                .map_err(ioctl("KVM_GET_IRQCHIP"))?;
            // SAFETY: `chip_id` names a PIC, so `pic` is the member KVM filled in.
            let pic = unsafe { &mut chip.chip.pic };
            pic.irq_base = base;
            pic.imr = mask;
            pic.init_state = 0;
            pic.init4 = 1;
            self.vm
                .set_irqchip(&chip)
                .map_err(ioctl("KVM_SET_IRQCHIP"))?;
        }
        let mut pit = self.vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?;
        let channel = &mut pit.channels[0];
        channel.count = bios::PIT_CHANNEL0_RELOAD;
        channel.mode = bios::PIT_CHANNEL0_MODE;
        channel.rw_mode = PIT_RW_LOBYTE_HIBYTE;
        channel.read_state = PIT_RW_LOBYTE_HIBYTE;
        channel.write_state = PIT_RW_LOBYTE_HIBYTE;
        channel.bcd = 0;
        channel.gate = 1;
        self.vm.set_pit2(&pit).map_err(ioctl("KVM_SET_PIT2"))
    }

    /// An edge-triggered line into the in-kernel IOAPIC/PIC input `gsi`.
    pub fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, KvmError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| KvmError::Ioctl {
            what: "eventfd",
            source: kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        self.interrupt_on_event(&evt, gsi)?;
        Ok(Arc::new(EventFdLine(evt)))
    }

    /// Makes every write to `evt` raise an edge on the in-kernel IOAPIC/PIC input `gsi`
    /// (an irqfd), without leaving the kernel.
    pub fn interrupt_on_event(&self, evt: &EventFd, gsi: u32) -> Result<(), KvmError> {
        self.vm.register_irqfd(evt, gsi).map_err(ioctl("KVM_IRQFD"))
    }

    /// Makes a 4-byte guest write of `value` to MMIO address `addr` signal `evt` inside
    /// KVM (an ioeventfd), instead of exiting to the VMM.
    pub fn notify_on_write(&self, evt: &EventFd, addr: u64, value: u32) -> Result<(), KvmError> {
        self.vm
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), value)
            .map_err(ioctl("KVM_IOEVENTFD"))
    }

    /// Creates vCPU `index` with its CPUID topology, boot MSRs and LAPIC wiring. The boot
    /// vCPU gets `entry`; the others wait for INIT/SIPI from the guest.
    pub fn create_vcpu(
        &self,
        index: usize,
        topology: &Topology,
        mem: Arc<GuestMemory>,
    ) -> Result<KvmVcpu, KvmError> {
        let fd = self
            .vm
            .create_vcpu(index as u64)
            .map_err(ioctl("KVM_CREATE_VCPU"))?;
        let mut cpuid = self.supported_cpuid.clone();
        arch::cpuid::apply_topology(cpuid.as_mut_slice(), index as u8, topology);
        fd.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;

        let mut lapic = fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
        arch::lapic::set_lint_delivery(&mut lapic.regs);
        fd.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))?;

        Ok(KvmVcpu {
            index,
            fd,
            mem,
            paused_tsc: None,
        })
    }
}

/// One KVM vCPU.
pub struct KvmVcpu {
    index: usize,
    fd: VcpuFd,
    mem: Arc<GuestMemory>,
    /// The guest's TSC when the vCPU was paused, written back when it resumes.
    paused_tsc: Option<u64>,
}

/// IA32_TIME_STAMP_COUNTER.
const MSR_IA32_TSC: u32 = 0x10;

/// What KVM_RUN returned, without borrowing the vCPU.
enum Outcome {
    Io,
    Mmio,
    InternalError,
    Fault(String),
}

impl KvmVcpu {
    /// The port I/O exit KVM just reported, with its data inside the shared `kvm_run` page.
    fn io_exit(&mut self) -> VcpuExit<'_> {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_IO, so `io` is the active member of the union.
        let io = unsafe { (*run).__bindgen_anon_1.io };
        let len = usize::from(io.size) * io.count as usize;
        // SAFETY: KVM places `count` elements of `size` bytes at `data_offset` inside the
        // kvm_run mapping of this vCPU, which lives as long as `self.fd`; the slice borrows
        // `self` mutably, so nothing else touches the page while it exists.
        let data = unsafe {
            std::slice::from_raw_parts_mut(run.cast::<u8>().add(io.data_offset as usize), len)
        };
        let (port, size) = (io.port, usize::from(io.size));
        if u32::from(io.direction) == KVM_EXIT_IO_IN {
            VcpuExit::IoIn { port, size, data }
        } else {
            VcpuExit::IoOut { port, size, data }
        }
    }

    /// The MMIO exit KVM just reported.
    fn mmio_exit(&mut self) -> VcpuExit<'_> {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_MMIO, so `mmio` is the active member.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let len = (mmio.len as usize).min(mmio.data.len());
        let addr = mmio.phys_addr;
        if mmio.is_write != 0 {
            VcpuExit::MmioWrite {
                addr,
                data: &mmio.data[..len],
            }
        } else {
            VcpuExit::MmioRead {
                addr,
                data: &mut mmio.data[..len],
            }
        }
    }

    /// Describes a KVM_EXIT_INTERNAL_ERROR and returns the instruction bytes KVM supplied.
    fn internal_error(&mut self) -> (String, Vec<u8>) {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned KVM_EXIT_INTERNAL_ERROR: `internal` is the active member,
        // and `emulation_failure` is its documented layout for emulation failures.
        let (internal, emulation) = unsafe {
            (
                run.__bindgen_anon_1.internal,
                run.__bindgen_anon_1.emulation_failure,
            )
        };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
            let mut bytes = Vec::new();
            if ndata >= 3
                && emulation.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
                    != 0
            {
                // SAFETY: the flag says the instruction bytes member is filled in.
                let insn = unsafe { emulation.__bindgen_anon_1.__bindgen_anon_1 };
                let n = usize::from(insn.insn_size).min(insn.insn_bytes.len());
                bytes.extend_from_slice(&insn.insn_bytes[..n]);
            }
            (
                "KVM_EXIT_INTERNAL_ERROR: KVM could not emulate an instruction (suberror 1, \
                 emulation failure)"
                    .to_string(),
                bytes,
            )
        } else {
            let data: Vec<String> = internal.data[..ndata]
                .iter()
                .map(|d| format!("{d:#x}"))
                .collect();
            (
                format!(
                    "KVM_EXIT_INTERNAL_ERROR: suberror {}, data [{}]",
                    internal.suberror,
                    data.join(", ")
                ),
                Vec::new(),
            )
        }
    }

    /// Reads up to 15 bytes at CS:RIP through the guest's page tables.
    fn bytes_at_rip(&self, regs: &kvm_regs, cs_base: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut linear = cs_base.wrapping_add(regs.rip);
        while bytes.len() < 15 {
            let Ok(t) = self.fd.translate_gva(linear) else {
                break;
            };
            if t.valid == 0 {
                break;
            }
            let in_page = (0x1000 - (linear & 0xfff)) as usize;
            let n = in_page.min(15 - bytes.len());
            let mut chunk = vec![0u8; n];
            if self
                .mem
                .read_slice(&mut chunk, GuestAddress(t.physical_address))
                .is_err()
            {
                break;
            }
            bytes.extend_from_slice(&chunk);
            linear = linear.wrapping_add(n as u64);
        }
        bytes
    }

    fn fault(&mut self, reason: String, mut instruction: Vec<u8>) -> Box<FaultReport> {
        let regs = self.regs().ok();
        let sregs = self.sregs().ok();
        if instruction.is_empty() {
            if let (Some(r), Some(s)) = (&regs, &sregs) {
                instruction = self.bytes_at_rip(r, s.cs.base);
            }
        }
        Box::new(FaultReport {
            vcpu: self.index,
            reason,
            regs,
            sregs,
            instruction,
        })
    }
}

impl VcpuBackend for KvmVcpu {
    fn regs(&self) -> Result<kvm_regs, StateError> {
        self.fd.get_regs().map_err(state("KVM_GET_REGS"))
    }

    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), StateError> {
        self.fd.set_regs(regs).map_err(state("KVM_SET_REGS"))
    }

    fn sregs(&self) -> Result<kvm_sregs, StateError> {
        self.fd.get_sregs().map_err(state("KVM_GET_SREGS"))
    }

    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), StateError> {
        self.fd.set_sregs(sregs).map_err(state("KVM_SET_SREGS"))
    }

    fn set_fpu(&mut self, fpu: &kvm_fpu) -> Result<(), StateError> {
        self.fd.set_fpu(fpu).map_err(state("KVM_SET_FPU"))
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<usize, StateError> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| StateError {
            what: "building the MSR list",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        self.fd.set_msrs(&msrs).map_err(state("KVM_SET_MSRS"))
    }

    fn pause_time(&mut self) {
        let mut msrs = match Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_TSC,
            ..Default::default()
        }]) {
            Ok(msrs) => msrs,
            Err(_) => return,
        };
        match self.fd.get_msrs(&mut msrs) {
            Ok(1) => self.paused_tsc = Some(msrs.as_slice()[0].data),
            other => log::warn!(
                "vCPU {}: cannot read the TSC to pause it: {other:?}",
                self.index
            ),
        }
    }

    fn resume_time(&mut self) {
        if let Some(tsc) = self.paused_tsc.take() {
            match self.set_msrs(&[(MSR_IA32_TSC, tsc)]) {
                Ok(1) => {}
                other => log::warn!("vCPU {}: cannot set the TSC back: {other:?}", self.index),
            }
        }
    }

    fn run(&mut self) -> VcpuExit<'_> {
        let outcome = match self.fd.run() {
            Ok(KvmExit::IoIn(..) | KvmExit::IoOut(..)) => Outcome::Io,
            Ok(KvmExit::MmioRead(..) | KvmExit::MmioWrite(..)) => Outcome::Mmio,
            Ok(KvmExit::Intr) => return VcpuExit::Interrupted,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return VcpuExit::Interrupted
            }
            Ok(KvmExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => {
                return VcpuExit::Guest(GuestExit::PowerOff)
            }
            Ok(KvmExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_RESET => {
                return VcpuExit::Guest(GuestExit::Reset)
            }
            Ok(KvmExit::InternalError) => Outcome::InternalError,
            Ok(KvmExit::Shutdown) => Outcome::Fault(
                "KVM_EXIT_SHUTDOWN: triple fault (an exception while delivering a double fault)"
                    .into(),
            ),
            Ok(KvmExit::FailEntry(reason, cpu)) => Outcome::Fault(format!(
                "KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the guest (reason {reason:#x}, \
                 host CPU {cpu})"
            )),
            Ok(other) => Outcome::Fault(format!("unexpected KVM exit {other:?}")),
            Err(e) => Outcome::Fault(format!("KVM_RUN failed: {e}")),
        };
        match outcome {
            Outcome::Io => self.io_exit(),
            Outcome::Mmio => self.mmio_exit(),
            Outcome::InternalError => {
                let (reason, bytes) = self.internal_error();
                VcpuExit::Fault(self.fault(reason, bytes))
            }
            Outcome::Fault(reason) => VcpuExit::Fault(self.fault(reason, Vec::new())),
        }
    }
}
