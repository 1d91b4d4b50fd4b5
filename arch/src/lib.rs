//! x86-64 platform knowledge shared by every vCPU backend: the guest memory map, boot
//! protocols (Linux ELF/PVH/bzImage, Multiboot), the CPU state a guest starts in, CPUID
//! topology, boot MSRs and local APIC setup.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod disasm;
pub mod interp;
pub mod lapic;
pub mod layout;
pub mod msr;

/// Guest memory as every part of Ember sees it.
pub use memory::GuestMemory;
