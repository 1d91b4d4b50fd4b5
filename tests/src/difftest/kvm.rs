//! Running a case on KVM: a VM with one vCPU and no interrupt controller, the case's memory
//! image written into its single RAM slot, registers set through the KVM API, then KVM_RUN
//! until the terminator's or an exception stub's port write.

use std::fmt;

use kvm_bindings::{kvm_fpu, kvm_userspace_memory_region, kvm_xsave, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::gen::Case;
use super::layout;
use super::state::{write_case, Exit, FinalState, InitialState};

/// Why KVM could not give a result for a case.
#[derive(Debug)]
pub enum KvmError {
    /// Setting up the VM failed (no usable /dev/kvm, or an ioctl refused).
    Setup(String),
    /// KVM could not run the case (KVM_EXIT_INTERNAL_ERROR, e.g. an instruction its emulator
    /// lacks): the case is inconclusive, not a mismatch.
    Inconclusive(String),
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmError::Setup(s) => write!(f, "KVM setup failed: {s}"),
            KvmError::Inconclusive(s) => write!(f, "KVM could not run the case: {s}"),
        }
    }
}

impl std::error::Error for KvmError {}

fn setup<E: fmt::Display>(what: &'static str) -> impl Fn(E) -> KvmError {
    move |e| KvmError::Setup(format!("{what}: {e}"))
}

/// Offset of XSTATE_BV in the XSAVE area.
const XSTATE_BV: usize = 512;

fn xsave_bytes(x: &kvm_xsave) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The most exits one case may take before it counts as stuck.
const MAX_EXITS: usize = 64;

/// A VM to run cases in, reused from case to case.
pub struct KvmMachine {
    vcpu: VcpuFd,
    // Kept alive for the vCPU; dropped after it.
    _vm: VmFd,
    _kvm: Kvm,
    mem: arch::GuestMemory,
}

impl KvmMachine {
    /// Opens /dev/kvm and builds the machine.
    pub fn new() -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(setup("opening /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?;
        vm.set_tss_address(arch::layout::KVM_TSS_ADDR as usize)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        let mem = arch::GuestMemory::from_ranges(&[(GuestAddress(0), layout::RAM_SIZE as usize)])
            .map_err(setup("allocating guest memory"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(setup("guest memory has no host mapping"))?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: GuestMemoryRegion::len(region),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mmap of `memory_size` bytes owned by
            // `mem`, which this struct keeps until after the VM (field order: the vCPU and VM
            // are dropped first).
            unsafe { vm.set_user_memory_region(desc) }
                .map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let vcpu = vm.create_vcpu(0).map_err(setup("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(setup("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(setup("KVM_SET_CPUID2"))?;
        layout::write_infrastructure(&mem);
        Ok(KvmMachine {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
        })
    }

    /// Runs `case` (whose initial state is `init`) and returns the state it ended in.
    pub fn run(&mut self, case: &Case, init: &InitialState) -> Result<FinalState, KvmError> {
        write_case(&self.mem, init, &case.code_pages(), case.code_addr);
        let sregs = self.vcpu.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
        self.vcpu
            .set_sregs(&layout::sregs(sregs))
            .map_err(setup("KVM_SET_SREGS"))?;
        self.vcpu
            .set_regs(&init.regs(case.entry()))
            .map_err(setup("KVM_SET_REGS"))?;
        self.set_fpu(&init.fpu())?;
        let mut port = None;
        let mut exit = None;
        for _ in 0..MAX_EXITS {
            let e = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(p, _)) => {
                    if layout::out_address(p, case.code_end()).is_some() {
                        port = Some(p);
                        if p == layout::END_PORT {
                            Exit::End
                        } else {
                            Exit::Exception((p - layout::EXC_PORT) as u8)
                        }
                    } else {
                        Exit::Other(format!("write to unexpected port {p:#x}"))
                    }
                }
                Ok(VcpuExit::IoIn(p, _)) => Exit::Other(format!("read from port {p:#x}")),
                Ok(VcpuExit::Hlt) => Exit::Other("HLT".into()),
                Ok(VcpuExit::Shutdown) => Exit::Shutdown,
                Ok(VcpuExit::MmioRead(a, _)) | Ok(VcpuExit::MmioWrite(a, _)) => {
                    Exit::Other(format!("MMIO access at {a:#x}"))
                }
                Ok(VcpuExit::InternalError) => {
                    return Err(KvmError::Inconclusive("KVM_EXIT_INTERNAL_ERROR".into()))
                }
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return Err(KvmError::Inconclusive(format!(
                        "KVM_EXIT_FAIL_ENTRY {reason:#x}"
                    )))
                }
                Ok(VcpuExit::Intr) => continue,
                Ok(other) => Exit::Other(format!("KVM exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) => return Err(KvmError::Inconclusive(format!("KVM_RUN: {e}"))),
            };
            exit = Some(e);
            break;
        }
        let exit = exit.unwrap_or_else(|| Exit::Other("too many exits".into()));
        let regs = self.vcpu.get_regs().map_err(setup("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
        let fpu = self.get_fpu()?;
        let state = FinalState::collect(
            exit,
            &regs,
            sregs.cr2,
            &fpu,
            &self.mem,
            port,
            case.code_end(),
        );
        self.complete_pending_io();
        Ok(state)
    }

    /// Sets x87 and SSE state through KVM_SET_XSAVE, marking both components present in
    /// XSTATE_BV. (KVM_SET_FPU leaves XSTATE_BV alone, so a vCPU whose SSE state is still in
    /// its initial configuration would start with zeroed XMM registers.)
    fn set_fpu(&mut self, f: &kvm_fpu) -> Result<(), KvmError> {
        let mut x = self.vcpu.get_xsave().map_err(setup("KVM_GET_XSAVE"))?;
        let mut b = xsave_bytes(&x);
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftwx;
        b[6..24].fill(0);
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        for i in 0..8 {
            b[32 + i * 16..48 + i * 16].copy_from_slice(&f.fpr[i]);
        }
        for i in 0..16 {
            b[160 + i * 16..176 + i * 16].copy_from_slice(&f.xmm[i]);
        }
        b[XSTATE_BV] |= 3;
        for (word, chunk) in x.region.iter_mut().zip(b.chunks(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        // SAFETY: no extended state is enabled dynamically in this process, so KVM reads no
        // more than the 4096 bytes of `kvm_xsave`.
        unsafe { self.vcpu.set_xsave(&x) }.map_err(setup("KVM_SET_XSAVE"))
    }

    /// Reads x87 and SSE state through KVM_GET_XSAVE; components XSTATE_BV marks absent are
    /// in their initial configuration.
    fn get_fpu(&mut self) -> Result<kvm_fpu, KvmError> {
        let x = self.vcpu.get_xsave().map_err(setup("KVM_GET_XSAVE"))?;
        let b = xsave_bytes(&x);
        let mut f = kvm_fpu {
            fcw: u16::from_le_bytes([b[0], b[1]]),
            fsw: u16::from_le_bytes([b[2], b[3]]),
            ftwx: b[4],
            mxcsr: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
            ..Default::default()
        };
        for i in 0..8 {
            f.fpr[i].copy_from_slice(&b[32 + i * 16..48 + i * 16]);
        }
        for i in 0..16 {
            f.xmm[i].copy_from_slice(&b[160 + i * 16..176 + i * 16]);
        }
        if b[XSTATE_BV] & 1 == 0 {
            f.fcw = 0x37f;
            f.fsw = 0;
            f.ftwx = 0;
            f.fpr = Default::default();
        }
        if b[XSTATE_BV] & 2 == 0 {
            f.xmm = Default::default();
        }
        Ok(f)
    }

    /// Lets KVM finish the `out` it exited on without entering the guest, so that the next
    /// case's registers are not disturbed by a pending completion.
    fn complete_pending_io(&mut self) {
        self.vcpu.set_kvm_immediate_exit(1);
        // EINTR is the expected result.
        let _ = self.vcpu.run();
        self.vcpu.set_kvm_immediate_exit(0);
    }
}
