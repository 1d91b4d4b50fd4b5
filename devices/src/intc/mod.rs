//! Interrupt controllers for vCPU backends that have none of their own (the software CPU;
//! KVM brings in-kernel ones).

pub mod ioapic;
pub mod pic;
