//! Address buses that route guest port I/O and MMIO accesses to devices.
//!
//! A [`Bus`] is built before the vCPUs start and is then shared read-only between them, so
//! dispatching an access takes no bus-wide lock and allocates nothing: a binary search for the
//! range, then the device's own lock.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A device on a bus. Offsets are relative to the base of the range it was inserted at.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Takes what the guest writes at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else drives it (an input thread, say).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Which address space a bus serves; names it in log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// x86 I/O ports.
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusKind::Pio => "port",
            BusKind::Mmio => "MMIO address",
        })
    }
}

/// Why a device could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around.
    #[error("invalid {kind} range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Bus.
        kind: BusKind,
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("{kind} range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Bus.
        kind: BusKind,
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Range {
    base: u64,
    len: u64,
    device: SharedDevice,
    /// The device offset of `base`.
    device_offset: u64,
}

/// Most distinct unassigned addresses reported before the bus stops logging them.
const MAX_LOGGED_UNASSIGNED: usize = 256;

/// A set of non-overlapping device ranges.
pub struct Bus {
    kind: BusKind,
    ranges: Vec<Range>,
    logged_unassigned: Mutex<HashSet<u64>>,
}

impl Bus {
    /// An empty bus.
    pub fn new(kind: BusKind) -> Self {
        Bus {
            kind,
            ranges: Vec::new(),
            logged_unassigned: Mutex::new(HashSet::new()),
        }
    }

    /// Adds `device` at `[base, base + len)`; it sees offsets from `base`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        self.insert_window(device, base, len, 0)
    }

    /// Adds a window of `device` at `[base, base + len)` whose first address the device sees
    /// as `device_offset`: one device can decode several scattered ranges (the i8042's ports
    /// 0x60 and 0x64, say) without claiming the addresses between them.
    pub fn insert_window(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
        device_offset: u64,
    ) -> Result<(), BusError> {
        let (kind, end) = (self.kind, base.checked_add(len));
        let end = end
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { kind, base, len })?;
        if self
            .ranges
            .iter()
            .any(|r| base < r.base + r.len && r.base < end)
        {
            return Err(BusError::Overlap { kind, base, len });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(
            at,
            Range {
                base,
                len,
                device,
                device_offset,
            },
        );
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Range, u64)> {
        let i = self
            .ranges
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        (addr - r.base < r.len).then_some((r, addr - r.base + r.device_offset))
    }

    /// Performs a guest read at `addr`. Unassigned addresses read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((r, offset)) => lock(&r.device).read(offset, data),
            None => {
                data.fill(0xff);
                self.log_unassigned("read", addr, data.len());
            }
        }
    }

    /// Performs a guest write at `addr`. Writes to unassigned addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((r, offset)) => lock(&r.device).write(offset, data),
            None => self.log_unassigned("write", addr, data.len()),
        }
    }

    fn log_unassigned(&self, access: &str, addr: u64, len: usize) {
        let mut logged = self
            .logged_unassigned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged.len() < MAX_LOGGED_UNASSIGNED && logged.insert(addr) {
            log::info!(
                "guest {access} of {len} byte(s) at unassigned {} {addr:#x}{}",
                self.kind,
                if logged.len() == MAX_LOGGED_UNASSIGNED {
                    " (further unassigned accesses are not logged)"
                } else {
                    ""
                }
            );
        }
    }
}

/// Locks a device, carrying on if another thread panicked while holding it: device state is
/// plain registers, always consistent between accesses.
pub fn lock<T: ?Sized>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_relative_offsets() {
        let mut bus = Bus::new(BusKind::Pio);
        let a = Arc::new(Mutex::new(Probe::default()));
        let b = Arc::new(Mutex::new(Probe::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x60, 1).unwrap();
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        bus.write(0x60, &[0xfe]);
        assert_eq!(b.lock().unwrap().last_write, Some((0, vec![0xfe])));
        assert_eq!(a.lock().unwrap().last_write, None);
    }

    #[test]
    fn windows_of_one_device_see_their_device_offsets() {
        let mut bus = Bus::new(BusKind::Pio);
        let kbd = Arc::new(Mutex::new(Probe::default()));
        bus.insert_window(kbd.clone(), 0x60, 1, 0).unwrap();
        bus.insert_window(kbd.clone(), 0x64, 1, 4).unwrap();
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x61, 1)
            .unwrap();
        bus.write(0x64, &[0xfe]);
        assert_eq!(kbd.lock().unwrap().last_write, Some((4, vec![0xfe])));
        let mut data = [0u8; 1];
        bus.read(0x61, &mut data);
        assert_eq!(data, [0], "0x61 belongs to another device");
    }

    #[test]
    fn unassigned_reads_are_all_ones_and_writes_dropped() {
        let mut bus = Bus::new(BusKind::Mmio);
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x1000, 0x100)
            .unwrap();
        let mut data = [0u8; 4];
        for addr in [0xfff, 0x1100, 0, u64::MAX] {
            bus.read(addr, &mut data);
            assert_eq!(data, [0xff; 4], "{addr:#x}");
            bus.write(addr, &[1, 2]);
        }
        // Logging is bounded however many distinct addresses a guest touches.
        for addr in 0..10_000u64 {
            bus.read(0x10_0000 + addr, &mut data);
        }
        assert_eq!(
            bus.logged_unassigned.lock().unwrap().len(),
            MAX_LOGGED_UNASSIGNED
        );
    }

    #[test]
    fn overlapping_or_empty_ranges_are_refused() {
        let mut bus = Bus::new(BusKind::Pio);
        let dev = || Arc::new(Mutex::new(Probe::default()));
        bus.insert(dev(), 0x10, 0x10).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0x1f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x8, 9),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x30, 0),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(dev(), 0x20, 1).unwrap();
        bus.insert(dev(), 0x0, 0x10).unwrap();
    }
}
