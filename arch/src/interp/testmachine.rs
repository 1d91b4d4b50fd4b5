//! Test-only support: one software vCPU over 1 MiB of RAM that starts in real mode at
//! 0000:1000 (or in flat 32-bit protected mode), with an I/O bus that records port writes,
//! for tests that run machine code.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::lapic::Inbox;
use super::ram::{CodePages, GuestRam};
use super::segment::from_descriptor;
use super::state::{real_mode_segment, CR0_PE, CS, RSP};
use super::time::Clock;
use super::{Cpu, Exit, IoBus};
use crate::cpuid::Topology;
use crate::GuestMemory;

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
/// Where [`TestMachine::flat32`] puts the GDT.
pub const GDT: u64 = 0x500;
/// Flat 32-bit ring-0 code and data descriptors.
const FLAT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
const FLAT_DATA32: u64 = 0x00cf_9300_0000_ffff;

/// A vCPU, its RAM and its port log.
pub struct TestMachine {
    pub cpu: Cpu,
    pub mem: Arc<GuestMemory>,
    pub ports: Arc<PortLog>,
    pub inbox: Arc<Inbox>,
}

impl TestMachine {
    /// A machine with `code` at [`CODE`], CS:IP at it and SP at [`STACK`], in real mode.
    pub fn new(code: &[u8]) -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_slice(code, GuestAddress(CODE)).unwrap();
        let mem = Arc::new(mem);
        let ram = GuestRam::new(mem.clone());
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

    /// A machine with `code` at [`CODE`] running in flat 32-bit protected mode: the GDT at
    /// [`GDT`] holds a null descriptor, flat code (0x08), flat data (0x10, in SS, DS, ES, FS
    /// and GS) and then `extra` (from selector 0x18).
    pub fn flat32(code: &[u8], extra: &[u64]) -> Self {
        let mut m = TestMachine::new(code);
        let mut gdt = vec![0, FLAT_CODE32, FLAT_DATA32];
        gdt.extend(extra);
        for (n, d) in gdt.iter().enumerate() {
            m.write(GDT + 8 * n as u64, &d.to_le_bytes());
        }
        let core = &mut m.cpu.core;
        core.s.gdt.base = GDT;
        core.s.gdt.limit = 8 * gdt.len() as u16 - 1;
        core.s.cr0 |= CR0_PE;
        for n in 0..6 {
            core.s.seg[n] = if n == CS {
                from_descriptor(0x08, FLAT_CODE32)
            } else {
                from_descriptor(0x10, FLAT_DATA32)
            };
        }
        core.s.update_mode();
        m
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
