//! Moving data between a file (or socket) and guest buffers with one vectored system call per
//! request: the guest memory ranges of a chain become an iovec list, and preadv/pwritev fill or
//! drain them directly, without copying through a bounce buffer.

use std::os::fd::AsRawFd;

use vm_memory::{GuestMemory as _, Permissions};

use super::chain::{ranges, Segment};
use crate::GuestMemory;

/// Most iovecs one call takes (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Which way [`IoVecs::transfer`] moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// preadv: the file fills guest buffers.
    FileToGuest,
    /// pwritev: guest buffers go to the file.
    GuestToFile,
}

/// A reusable list of host iovecs pointing into guest memory.
#[derive(Default)]
pub struct IoVecs {
    iovs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers are only ever handed to the kernel within one call, while the guest
// memory they point into is kept mapped by the caller's `GuestMemory`.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// Points the list at `len` bytes of `segments` from offset `at`. False if a range is not
    /// in guest memory (the chain walker checked, so this means a bug) or needs more than
    /// [`IOV_MAX`] entries.
    fn fill(
        &mut self,
        mem: &GuestMemory,
        segments: &[Segment],
        at: u64,
        len: u64,
        access: Permissions,
    ) -> bool {
        self.iovs.clear();
        for piece in ranges(segments, at, len) {
            let Ok(slices) = mem.get_slices(piece.addr, piece.len as usize, access) else {
                return false;
            };
            for slice in slices {
                let Ok(slice) = slice else {
                    return false;
                };
                if self.iovs.len() == IOV_MAX {
                    return false;
                }
                self.iovs.push(libc::iovec {
                    iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                    iov_len: slice.len(),
                });
            }
        }
        true
    }

    /// Moves `len` bytes between `file` at `offset` and the guest buffers `segments` (from
    /// their offset `at`), in the direction `dir`. False on an I/O error or a short transfer.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &mut self,
        dir: Direction,
        mem: &GuestMemory,
        segments: &[Segment],
        at: u64,
        len: u64,
        file: &impl AsRawFd,
        offset: u64,
    ) -> bool {
        let access = match dir {
            Direction::FileToGuest => Permissions::Write,
            Direction::GuestToFile => Permissions::Read,
        };
        let mut done = 0u64;
        while done < len {
            if !self.fill(mem, segments, at + done, len - done, access) {
                return false;
            }
            let Ok(position) = libc::off_t::try_from(offset + done) else {
                return false;
            };
            let fd = file.as_raw_fd();
            let (iov, count) = (self.iovs.as_ptr(), self.iovs.len() as libc::c_int);
            // SAFETY: every iovec points into guest memory that `mem` keeps mapped for the
            // whole call, with the length the memory's own slice gave; the kernel copies into
            // or out of it and keeps no reference after returning.
            let n = unsafe {
                if access == Permissions::Write {
                    libc::preadv(fd, iov, count, position)
                } else {
                    libc::pwritev(fd, iov, count, position)
                }
            };
            match n {
                n if n > 0 => {
                    if access == Permissions::Write {
                        // The kernel wrote through raw pointers: say so, as vm-memory's own
                        // writes do (a software CPU may hold code decoded from these pages).
                        for piece in ranges(segments, at + done, n as u64) {
                            memory::report_written(mem, piece.addr, piece.len as usize);
                        }
                    }
                    done += n as u64;
                }
                0 => return false, // end of file before the request was served
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Default)]
    struct Log(Mutex<Vec<(u64, usize)>>);

    impl memory::WriteObserver for Log {
        fn written(&self, gpa: u64, len: usize) {
            self.0.lock().unwrap().push((gpa, len));
        }
    }

    #[test]
    fn a_file_read_into_guest_buffers_is_reported_as_written() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let log = Arc::new(Log::default());
        memory::watch_writes(&mem, log.clone());
        let mut file = tempfile();
        file.write_all(&[0xab; 0x1800]).unwrap();
        let segments = [
            Segment {
                addr: GuestAddress(0x2000),
                len: 0x1000,
            },
            Segment {
                addr: GuestAddress(0x8000),
                len: 0x800,
            },
        ];
        let mut iovs = IoVecs::default();
        assert!(iovs.transfer(Direction::FileToGuest, &mem, &segments, 0, 0x1800, &file, 0));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x87ff)).unwrap(), 0xab);
        assert_eq!(
            *log.0.lock().unwrap(),
            vec![(0x2000, 0x1000), (0x8000, 0x800)]
        );
        log.0.lock().unwrap().clear();
        assert!(iovs.transfer(Direction::GuestToFile, &mem, &segments, 0, 0x1800, &file, 0));
        assert!(
            log.0.lock().unwrap().is_empty(),
            "reading guest memory writes nothing"
        );
    }

    /// An unlinked temporary file.
    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("ember-iov-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
