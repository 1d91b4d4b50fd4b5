//! The test device QEMU's `pc-testdev` provides, for external test suites that expect it
//! (kvm-unit-tests' `emulator`): a 32-bit scratch register at ports 0xe0-0xe3 and a 64 KiB
//! buffer at 0xff000000 that behaves like RAM but is MMIO, so every access to it goes
//! through the vCPU backend's MMIO path.

use crate::bus::BusDevice;

/// First port of the scratch register.
pub const TESTDEV_PORT: u64 = 0xe0;
/// Ports of the scratch register.
pub const TESTDEV_PORTS: u64 = 4;
/// Guest physical address of the MMIO buffer.
pub const IOMEM_ADDR: u64 = 0xff00_0000;
/// Size of the MMIO buffer.
pub const IOMEM_SIZE: u64 = 0x1_0000;

/// Bytes that read back what was written, at any width and alignment: the scratch register
/// (an access of width `w` at port `0xe0 + k` covers bytes `k..k + w`) and the MMIO buffer.
/// Accesses beyond the end read as ones and are dropped.
#[derive(Debug)]
pub struct TestMemory {
    bytes: Vec<u8>,
}

impl TestMemory {
    /// `len` zeroed bytes: [`TESTDEV_PORTS`] for the scratch register, [`IOMEM_SIZE`] for
    /// the buffer.
    pub fn new(len: u64) -> Self {
        TestMemory {
            bytes: vec![0; len as usize],
        }
    }
}

impl BusDevice for TestMemory {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.bytes.get(offset as usize + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            if let Some(slot) = self.bytes.get_mut(offset as usize + i) {
                *slot = byte;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_register_keeps_byte_lanes() {
        let mut port = TestMemory::new(TESTDEV_PORTS);
        port.write(0, &[0x99, 0x99]);
        port.write(2, &[0x12]);
        let mut word = [0u8; 4];
        port.read(0, &mut word);
        assert_eq!(word, [0x99, 0x99, 0x12, 0]);
        let mut beyond = [0u8; 2];
        port.read(3, &mut beyond);
        assert_eq!(beyond, [0, 0xff]);
    }

    #[test]
    fn iomem_reads_back_what_was_written() {
        let mut mem = TestMemory::new(IOMEM_SIZE);
        mem.write(0xfffe, &[1, 2]);
        mem.write(0x10, &[7; 16]);
        let mut out = [0u8; 4];
        mem.read(0xfffe, &mut out);
        assert_eq!(out, [1, 2, 0xff, 0xff]);
        let mut sse = [0u8; 16];
        mem.read(0x10, &mut sse);
        assert_eq!(sse, [7; 16]);
    }
}
