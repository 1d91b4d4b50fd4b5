//! Ember's VMM: builds a microVM from its configuration and runs it on KVM or the software
//! CPU, configured by a Firecracker-schema config file or through the REST API
//! (`control.rs`). The `ember` binary is [`launch::main`] over the parsed command line.

pub mod cli;
mod console;
mod control;
mod event_loop;
mod kvm;
pub mod launch;
mod logger;
mod metrics;
mod pause;
mod report;
mod running;
mod soft;
pub mod stop;
mod threads;
mod timers;
mod vcpu;
mod virtio;
pub mod vm;
