//! virtio-blk on a raw disk image: reads and writes, read-only drives, FLUSH as fdatasync,
//! GET_ID with the drive's ID as serial, DISCARD and WRITE_ZEROES by punching holes where the
//! host file system can (WRITE_ZEROES writes zeros where it cannot), a rate limiter, and an
//! advisory lock on the image so that two VMMs never write one image. Counters: bytes and
//! requests read (to the guest) and written (from it).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use super::activation::{watch_limiter, DEVICE_TOKEN_BASE};
use super::chain::ChainBuffers;
use super::iov::{Direction, IoVecs};
use super::serve::Served;
use super::{read_config_bytes, Counters, DeviceCore, Handled, VirtioDevice, COMMON_FEATURES};
use crate::rate_limiter::{BucketConfig, RateLimiter};
use crate::GuestMemory;

/// Bytes in a sector, the unit of every block request.
pub const SECTOR_SIZE: u64 = 512;
/// The request queue's size.
const QUEUE_SIZE: u16 = 256;
/// Data buffers per request the driver may use (announced as `seg_max`): all the queue can
/// hold but the header and the status.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Requests served per wake-up before the loop moves on to other devices.
const BUDGET: usize = 32;
/// Ranges in one DISCARD or WRITE_ZEROES request (announced as `max_*_seg`).
const MAX_RANGES: u32 = 16;
/// Sectors in one discard or write-zeroes range (announced as `max_*_sectors`).
const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// Bytes of the request header: type, reserved, sector.
const HEADER_LEN: u64 = 16;
/// Bytes of one DISCARD / WRITE_ZEROES range: sector, sector count, flags.
const RANGE_LEN: u64 = 16;
/// Event data of the rate limiter's timer.
const LIMITER_TOKEN: u32 = DEVICE_TOKEN_BASE;

/// Why a disk image cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// It could not be opened (missing, unreadable, read-only but configured writable).
    #[error("{}: cannot open{}: {source}", path.display(), if *read_only { "" } else { " for writing" })]
    Open {
        /// The image.
        path: PathBuf,
        /// Whether it was opened read-only.
        read_only: bool,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a regular file or block device.
    #[error("{}: not a regular file or block device", path.display())]
    NotADisk {
        /// The image.
        path: PathBuf,
    },
    /// Its size is not a whole number of sectors.
    #[error("{}: its size, {size} bytes, is not a multiple of 512", path.display())]
    Size {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Another process (or drive) holds a conflicting lock on it.
    #[error("{}: in use by another VMM or drive (cannot lock it{})", path.display(), if *read_only { " for reading" } else { " for writing" })]
    Locked {
        /// The image.
        path: PathBuf,
        /// Whether a shared (read-only) lock was asked for.
        read_only: bool,
    },
}

/// An open disk image.
pub struct Disk {
    file: File,
    sectors: u64,
    read_only: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// Whether the host file system punched holes the last time it was asked.
    can_punch: bool,
}

impl Disk {
    /// Opens `path` (read-only if `read_only`) and locks it: exclusively for a writable
    /// drive, shared for a read-only one. `id` becomes the serial (first 20 bytes).
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Disk, DiskError> {
        let open_error = |source| DiskError::Open {
            path: path.to_path_buf(),
            read_only,
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_error)?;
        let kind = file.metadata().map_err(open_error)?.file_type();
        use std::os::unix::fs::FileTypeExt;
        if !kind.is_file() && !kind.is_block_device() {
            return Err(DiskError::NotADisk {
                path: path.to_path_buf(),
            });
        }
        let size = file.seek(SeekFrom::End(0)).map_err(open_error)?;
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(DiskError::Size {
                path: path.to_path_buf(),
                size,
            });
        }
        let how = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
            return Err(DiskError::Locked {
                path: path.to_path_buf(),
                read_only,
            });
        }
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let id = id.as_bytes();
        let n = id.len().min(serial.len());
        serial[..n].copy_from_slice(&id[..n]);
        Ok(Disk {
            file,
            sectors: size / SECTOR_SIZE,
            read_only,
            serial,
            can_punch: true,
        })
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether `count` sectors from `sector` lie on the disk.
    fn covers(&self, sector: u64, count: u64) -> bool {
        sector
            .checked_add(count)
            .is_some_and(|end| end <= self.sectors)
    }

    /// Makes `[offset, offset + len)` read as zeros: a punched hole where the file system
    /// allows it, else written zeros when `must_zero`. False on an I/O error.
    fn zero_range(&mut self, offset: u64, len: u64, must_zero: bool) -> bool {
        if self.can_punch {
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: fallocate(2) on our own descriptor; offsets were bounds-checked.
            let rc =
                unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
            if rc == 0 {
                return true;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                log::warn!("virtio-blk: punching a hole failed: {err}");
                return false;
            }
            self.can_punch = false;
        }
        if !must_zero {
            return true; // a discard is only a hint
        }
        let zeros = [0u8; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            if std::os::unix::fs::FileExt::write_all_at(&self.file, &zeros[..n], offset + done)
                .is_err()
            {
                return false;
            }
            done += n as u64;
        }
        true
    }
}

/// The block device.
pub struct Block {
    name: String,
    disk: Disk,
    core: DeviceCore,
    limiter: RateLimiter,
    buffers: ChainBuffers,
    iovs: IoVecs,
}

impl Block {
    /// A block device on `disk` limited by `limiter`; `name` (the drive ID) names it in logs.
    pub fn new(name: &str, disk: Disk, limiter: RateLimiter) -> std::io::Result<Self> {
        Ok(Block {
            name: format!("virtio-blk {name}"),
            disk,
            core: DeviceCore::new()?,
            limiter,
            buffers: ChainBuffers::new(),
            iovs: IoVecs::default(),
        })
    }

    /// Serves requests from `disk` from now on (a drive whose backing file the VMM
    /// replaced), and tells the driver that the capacity may have changed.
    pub fn replace_disk(&mut self, disk: Disk) {
        self.disk = disk;
        self.core.signals.config_changed();
    }

    /// Replaces the rate limiter's buckets.
    pub fn update_limiter(&mut self, bytes: Option<BucketConfig>, ops: Option<BucketConfig>) {
        self.limiter.update(bytes, ops);
    }

    fn config_space(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        for (at, v) in [
            (36, MAX_RANGE_SECTORS), // max_discard_sectors
            (40, MAX_RANGES),        // max_discard_seg
            (44, 1),                 // discard_sector_alignment
            (48, MAX_RANGE_SECTORS), // max_write_zeroes_sectors
            (52, MAX_RANGES),        // max_write_zeroes_seg
        ] {
            c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        c[56] = 1; // write_zeroes_may_unmap
        c
    }

    fn serve(&mut self) {
        let (disk, buffers, limiter) = (&mut self.disk, &mut self.buffers, &mut self.limiter);
        let iovs = &mut self.iovs;
        let counters = self.core.counters.clone();
        self.core.serve(&self.name, 0, BUDGET, |mem, chain| {
            buffers.parse(mem, chain).map_err(|e| e.to_string())?;
            Requests {
                disk: &mut *disk,
                buffers: &*buffers,
                limiter: &mut *limiter,
                counters: &counters,
                mem,
                iovs: &mut *iovs,
            }
            .serve_one()
        });
    }
}

/// What serving one request needs.
struct Requests<'a> {
    disk: &'a mut Disk,
    buffers: &'a ChainBuffers,
    limiter: &'a mut RateLimiter,
    counters: &'a Counters,
    mem: &'a GuestMemory,
    iovs: &'a mut IoVecs,
}

impl Requests<'_> {
    /// Serves the parsed chain in `self.buffers`.
    fn serve_one(&mut self) -> Result<Served, String> {
        let b = self.buffers;
        if b.readable_len() < HEADER_LEN || b.writable_len() < 1 {
            return Err(format!(
                "request {} lacks a header or a status byte",
                b.head()
            ));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        b.read_at(self.mem, 0, &mut header);
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let data_in = b.writable_len() - 1; // all but the status byte
        let data_out = b.readable_len() - HEADER_LEN;
        let bytes = match kind {
            VIRTIO_BLK_T_IN => data_in,
            VIRTIO_BLK_T_OUT => data_out,
            _ => 0,
        };
        if !self.limiter.consume(bytes) {
            Counters::add(&self.counters.throttled, 1);
            return Ok(Served::Later);
        }
        let (status, written) = match kind {
            VIRTIO_BLK_T_IN => self.read(sector, data_in),
            VIRTIO_BLK_T_OUT => (self.write(sector, data_out), 0),
            VIRTIO_BLK_T_FLUSH => (self.flush(), 0),
            VIRTIO_BLK_T_GET_ID => self.get_id(data_in),
            VIRTIO_BLK_T_DISCARD => (self.zero_ranges(data_out, false), 0),
            VIRTIO_BLK_T_WRITE_ZEROES => (self.zero_ranges(data_out, true), 0),
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        if status == VIRTIO_BLK_S_IOERR {
            Counters::add(&self.counters.errors, 1);
        }
        let b = self.buffers;
        b.write_at(self.mem, b.writable_len() - 1, &[status as u8]);
        Ok(Served::Used(written as u32 + 1))
    }

    /// IN: `len` bytes from `sector` into the writable buffers; (status, bytes written).
    fn read(&mut self, sector: u64, len: u64) -> (u32, u64) {
        if !len.is_multiple_of(SECTOR_SIZE) || !self.disk.covers(sector, len / SECTOR_SIZE) {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let (mem, buffers) = (self.mem, self.buffers);
        let offset = sector * SECTOR_SIZE;
        let (file, to_guest) = (&self.disk.file, Direction::FileToGuest);
        if !self
            .iovs
            .transfer(to_guest, mem, buffers.writable(), 0, len, file, offset)
        {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        Counters::add(&self.counters.bytes_to_guest, len);
        Counters::add(&self.counters.ops_to_guest, 1);
        (VIRTIO_BLK_S_OK, len)
    }

    /// OUT: `len` bytes of the readable buffers (after the header) to `sector`.
    fn write(&mut self, sector: u64, len: u64) -> u32 {
        if self.disk.read_only
            || !len.is_multiple_of(SECTOR_SIZE)
            || !self.disk.covers(sector, len / SECTOR_SIZE)
        {
            return VIRTIO_BLK_S_IOERR;
        }
        let (mem, buffers) = (self.mem, self.buffers);
        let offset = sector * SECTOR_SIZE;
        let (file, from_guest) = (&self.disk.file, Direction::GuestToFile);
        let readable = buffers.readable();
        if !self
            .iovs
            .transfer(from_guest, mem, readable, HEADER_LEN, len, file, offset)
        {
            return VIRTIO_BLK_S_IOERR;
        }
        Counters::add(&self.counters.bytes_from_guest, len);
        Counters::add(&self.counters.ops_from_guest, 1);
        VIRTIO_BLK_S_OK
    }

    fn flush(&mut self) -> u32 {
        if self.disk.read_only {
            return VIRTIO_BLK_S_OK;
        }
        match self.disk.file.sync_data() {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(_) => VIRTIO_BLK_S_IOERR,
        }
    }

    fn get_id(&mut self, room: u64) -> (u32, u64) {
        let n = (room as usize).min(self.disk.serial.len());
        let written = self.buffers.write_at(self.mem, 0, &self.disk.serial[..n]);
        (VIRTIO_BLK_S_OK, written as u64)
    }

    /// DISCARD (`must_zero` false) or WRITE_ZEROES over the ranges in the readable data.
    fn zero_ranges(&mut self, len: u64, must_zero: bool) -> u32 {
        if self.disk.read_only {
            return VIRTIO_BLK_S_IOERR;
        }
        if len == 0 || !len.is_multiple_of(RANGE_LEN) || len / RANGE_LEN > u64::from(MAX_RANGES) {
            return VIRTIO_BLK_S_IOERR;
        }
        for i in 0..len / RANGE_LEN {
            let mut range = [0u8; RANGE_LEN as usize];
            self.buffers
                .read_at(self.mem, HEADER_LEN + i * RANGE_LEN, &mut range);
            let sector = u64::from_le_bytes(range[0..8].try_into().unwrap_or_default());
            let count = u32::from_le_bytes(range[8..12].try_into().unwrap_or_default());
            if count > MAX_RANGE_SECTORS || !self.disk.covers(sector, u64::from(count)) {
                return VIRTIO_BLK_S_IOERR;
            }
            let (offset, bytes) = (sector * SECTOR_SIZE, u64::from(count) * SECTOR_SIZE);
            if !self.disk.zero_range(offset, bytes, must_zero) {
                return VIRTIO_BLK_S_IOERR;
            }
        }
        VIRTIO_BLK_S_OK
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_DISCARD
            | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        if self.disk.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.activation.init(ops);
        watch_limiter(ops, &self.limiter, LIMITER_TOKEN, &self.name);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.core.handle(&events, ops) {
            Handled::Activation | Handled::Queue(_) => self.serve(),
            Handled::Device(LIMITER_TOKEN) => {
                self.limiter.timer_expired();
                self.serve();
            }
            Handled::Device(other) => log::debug!("{}: unexpected event {other}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::ActiveQueues;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const RAM: u64 = 0x10_0000;

    /// A small xorshift generator: the property test is reproducible from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn disk_file(name: &str, sectors: u64) -> PathBuf {
        let path = std::env::temp_dir().join(format!("ember-blk-{}-{name}", std::process::id()));
        std::fs::write(&path, vec![0u8; (sectors * SECTOR_SIZE) as usize]).unwrap();
        path
    }

    /// A block device on a fresh 64-sector disk with its queue set up in `mem` as `vq`.
    fn device(name: &str, mem: &GuestMemory, vq: &MockSplitQueue<GuestMemory>) -> Block {
        let path = disk_file(name, 64);
        let disk = Disk::open(&path, false, name).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut block = Block::new(name, disk, RateLimiter::new(None, None).unwrap()).unwrap();
        let queue = vq.create_queue().unwrap();
        block
            .core
            .activation
            .activate(ActiveQueues {
                mem: mem.clone(),
                queues: vec![queue],
                events: vec![EventFd::new(0).unwrap()],
                acked_features: COMMON_FEATURES,
            })
            .unwrap();
        block
    }

    fn store(vq: &MockSplitQueue<GuestMemory>, i: u16, addr: u64, len: u32, flags: u32, next: u16) {
        let d = RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next));
        vq.desc_table().store(i, d).unwrap();
    }

    fn offer(vq: &MockSplitQueue<GuestMemory>, heads: &[u16]) {
        for (i, &h) in heads.iter().enumerate() {
            vq.avail().ring().ref_at(i).unwrap().store(u16::to_le(h));
        }
        vq.avail().idx().store(u16::to_le(heads.len() as u16));
    }

    #[test]
    fn a_read_request_returns_the_disk_and_status_ok() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut block = device("read", &mem, &vq);
        mem.write_slice(
            &[
                VIRTIO_BLK_T_IN as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                2,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
            GuestAddress(0x8000),
        )
        .unwrap();
        mem.write_slice(&[0xff; 513], GuestAddress(0x9000)).unwrap();
        store(&vq, 0, 0x8000, 16, VRING_DESC_F_NEXT, 1);
        store(
            &vq,
            1,
            0x9000,
            512,
            VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
            2,
        );
        store(&vq, 2, 0xa000, 1, VRING_DESC_F_WRITE, 0);
        offer(&vq, &[0]);
        block.serve();
        assert!(!block.core.signals.is_broken());
        assert_eq!(vq.used().idx().load(), 1);
        let mut data = [0xffu8; 512];
        mem.read_slice(&mut data, GuestAddress(0x9000)).unwrap();
        assert!(data.iter().all(|&b| b == 0), "sector 2 of a zeroed disk");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_OK as u8
        );
        assert_eq!(
            block
                .core
                .counters
                .ops_to_guest
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn requests_past_the_end_of_the_disk_fail_with_ioerr() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut block = device("past-end", &mem, &vq);
        let mut header = [0u8; 16];
        header[8..16].copy_from_slice(&64u64.to_le_bytes()); // one past the last sector
        mem.write_slice(&header, GuestAddress(0x8000)).unwrap();
        store(&vq, 0, 0x8000, 16, VRING_DESC_F_NEXT, 1);
        store(
            &vq,
            1,
            0x9000,
            512,
            VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
            2,
        );
        store(&vq, 2, 0xa000, 1, VRING_DESC_F_WRITE, 0);
        offer(&vq, &[0]);
        block.serve();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_IOERR as u8
        );
        assert!(
            !block.core.signals.is_broken(),
            "a bad sector is the request's error"
        );
    }

    /// Random descriptor tables, avail rings and request headers, thousands of times: the
    /// device never panics, never writes outside guest RAM (it would fault), never uses more
    /// chains than were offered, and either serves or marks itself broken.
    #[test]
    fn hostile_queues_never_panic_or_overrun() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let flags = [
            0,
            VRING_DESC_F_NEXT,
            VRING_DESC_F_WRITE,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            VRING_DESC_F_INDIRECT,
        ];
        for round in 0..2000 {
            let mem = GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
            let vq = MockSplitQueue::new(&mem, 16);
            let mut block = device("fuzz", &mem, &vq);
            for i in 0..16u16 {
                let r = rng.next();
                let addr = match r % 4 {
                    0 => rng.next(),                       // anywhere at all
                    1 => RAM - (rng.next() % 64),          // straddling the end
                    _ => 0x8000 + (rng.next() % 0x7_0000), // in RAM
                };
                let len = match (r >> 8) % 4 {
                    0 => rng.next() as u32,
                    1 => 0,
                    _ => (rng.next() % 2048) as u32,
                };
                let f = flags[((r >> 16) % flags.len() as u64) as usize];
                store(&vq, i, addr, len, f, (rng.next() % 20) as u16);
            }
            // Random request headers where descriptors are likely to point.
            for page in 0..0x70u64 {
                let kind = [0u32, 1, 4, 8, 11, 13, 99][(rng.next() % 7) as usize];
                let mut header = [0u8; 16];
                header[..4].copy_from_slice(&kind.to_le_bytes());
                header[8..16].copy_from_slice(&(rng.next() % 80).to_le_bytes());
                mem.write_slice(&header, GuestAddress(0x8000 + page * 0x1000))
                    .unwrap();
            }
            let count = (rng.next() % 20) as u16; // sometimes more than the queue size
            for i in 0..count.min(16) {
                vq.avail()
                    .ring()
                    .ref_at(i as usize)
                    .unwrap()
                    .store(u16::to_le((rng.next() % 24) as u16));
            }
            vq.avail().idx().store(u16::to_le(count));
            block.serve();
            // The device's own count: the guest may have told it to overwrite the used ring.
            let active = block.core.activation.active().unwrap();
            let used = active.queues[0].next_used();
            assert!(
                used <= count,
                "round {round}: {used} used of {count} offered"
            );
            assert!(
                used == count || block.core.signals.is_broken() || count > 16,
                "round {round}"
            );
        }
    }
}
