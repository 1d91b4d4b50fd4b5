//! Test-only support: one software vCPU over 1 MiB of RAM that starts in real mode at
//! 0000:1000, with an I/O bus that records port writes, for tests that run machine code.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::lapic::Inbox;
use super::ram::{CodePages, GuestRam};
use super::state::{real_mode_segment, CS, RSP};
use super::time::Clock;
use super::{Cpu, Exit, IoBus};
use crate::cpuid::Topology;

/// Where [`TestMachine::new`] puts the code and starts the vCPU.
pub const CODE: u64 = 0x1000;

/// Records `out` writes as (port, first byte).
#[derive(Default)]
pub struct PortLog(Mutex<Vec<(u16, u8)>>);

impl IoBus for PortLog {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        self.0.lock().unwrap().push((port, data[0]));
    }

    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
}

/// Initial stack pointer (SS = 0).
pub const STACK: u64 = 0x8000;

/// A vCPU, its RAM and its port log.
pub struct TestMachine {
    pub cpu: Cpu,
    pub mem: GuestMemoryMmap<()>,
    pub ports: Arc<PortLog>,
    pub inbox: Arc<Inbox>,
}

impl TestMachine {
    /// A machine with `code` at [`CODE`], CS:IP at it and SP at [`STACK`], in real mode.
    pub fn new(code: &[u8]) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_slice(code, GuestAddress(CODE)).unwrap();
        let ram = GuestRam::new(&mem);
        let pages = CodePages::new(ram.pages());
        let ports = Arc::new(PortLog::default());
        let inbox = Arc::new(Inbox::new(0));
        let mut cpu = Cpu::new(
            Arc::new(ram),
            Arc::new(pages),
            ports.clone(),
            Clock::default(),
            0,
            &Topology::new(1, false),
            inbox.clone(),
        );
        cpu.core.s.seg[CS] = real_mode_segment(0, true);
        cpu.core.s.rip = CODE;
        cpu.core.s.gpr[RSP] = STACK;
        cpu.core.s.update_mode();
        TestMachine {
            cpu,
            mem,
            ports,
            inbox,
        }
    }

    /// Points real-mode interrupt vector `vector` at 0000:`handler`.
    pub fn set_ivt(&self, vector: u8, handler: u16) {
        let entry = u32::from(handler);
        self.mem
            .write_obj(entry, GuestAddress(u64::from(vector) * 4))
            .unwrap();
    }

    /// Writes `bytes` at guest physical `addr`.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    /// Runs until the vCPU halts or shuts down (or 1000 blocks pass).
    pub fn run(&mut self) -> Exit {
        self.cpu.run(&AtomicBool::new(false), 1000)
    }

    /// The bytes written to port `port`, in order.
    pub fn written(&self, port: u16) -> Vec<u8> {
        let log = self.ports.0.lock().unwrap();
        log.iter()
            .filter(|(p, _)| *p == port)
            .map(|&(_, v)| v)
            .collect()
    }
}
