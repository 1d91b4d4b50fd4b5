//! A tap device opened by name: an existing interface (it is never created here), attached
//! with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and the 12-byte virtio-net header, nonblocking.
//! Each read gives one frame and each write sends one, both with the header in front.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::header::{HEADER_LEN, PROBED_OFFLOADS};

/// Longest interface name Linux takes (IFNAMSIZ less the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why a tap cannot be used. Every variant names the interface.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("tap `{0}`: not an interface name (1 to {MAX_NAME_LEN} bytes, no `/`, `:` or spaces)")]
    Name(String),
    /// No interface has that name in this network namespace.
    #[error("tap `{0}`: no such network interface in this network namespace")]
    Missing(String),
    /// /dev/net/tun could not be opened.
    #[error("tap `{name}`: cannot open /dev/net/tun: {source}")]
    Open {
        /// The interface.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The interface exists but could not be attached to.
    #[error(
        "tap `{name}`: cannot attach to it ({}): {source}",
        attach_hint(source)
    )]
    Attach {
        /// The interface.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The virtio-net header could not be set up.
    #[error("tap `{name}`: cannot set the virtio-net header size: {source}")]
    Header {
        /// The interface.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

fn attach_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => "another process has it open",
        Some(libc::EINVAL) => "it is not a tap device",
        Some(libc::EPERM) => "no permission to use it",
        _ => "TUNSETIFF failed",
    }
}

/// An attached tap device.
pub struct Tap {
    file: File,
    /// The offload flags set now (TUNSETOFFLOAD).
    offloads: u32,
    /// The largest offload set the tap accepted when probed.
    accepted: u32,
}

/// Checks that `name` can name a network interface.
pub fn check_name(name: &str) -> Result<CString, TapError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    match CString::new(name) {
        Ok(c) if ok => Ok(c),
        _ => Err(TapError::Name(name.to_string())),
    }
}

/// Does an ioctl whose argument is an int passed by value.
fn ioctl_value(fd: RawFd, request: libc::Ioctl, value: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: the tun ioctls used here take an integer argument by value and touch no memory
    // of this process.
    if unsafe { libc::ioctl(fd, request, libc::c_ulong::from(value)) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Attaches to the existing tap interface `name` with the virtio-net header, and probes
    /// which offloads it accepts (then turns them off until a driver asks for them).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let cname = check_name(name)?;
        // SAFETY: if_nametoindex(3) reads the NUL-terminated string it is given.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| TapError::Open {
                name: name.to_string(),
                source,
            })?;
        // SAFETY: ifreq is plain data, for which all zeros is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in request.ifr_name.iter_mut().zip(cname.as_bytes()) {
            *dst = src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: TUNSETIFF reads and writes the ifreq it is given, which lives on this stack
        // frame for the duration of the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
            return Err(TapError::Attach {
                name: name.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        let header_len = HEADER_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &header_len) } < 0 {
            return Err(TapError::Header {
                name: name.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        let fd = file.as_raw_fd();
        let accepted = PROBED_OFFLOADS
            .into_iter()
            .find(|&flags| ioctl_value(fd, libc::TUNSETOFFLOAD, flags).is_ok())
            .unwrap_or(0);
        let mut tap = Tap {
            file,
            offloads: accepted,
            accepted,
        };
        tap.set_offloads(0).map_err(|source| TapError::Header {
            name: name.to_string(),
            source,
        })?;
        Ok(tap)
    }

    /// The largest set of offload flags the tap accepted.
    pub fn accepted_offloads(&self) -> u32 {
        self.accepted
    }

    /// Sets the offload flags (TUNSETOFFLOAD): which kinds of frame the tap may hand over
    /// (partial checksums, TSO). Nothing is done when they are already set.
    pub fn set_offloads(&mut self, flags: u32) -> std::io::Result<()> {
        if flags != self.offloads {
            ioctl_value(self.file.as_raw_fd(), libc::TUNSETOFFLOAD, flags)?;
            self.offloads = flags;
        }
        Ok(())
    }

    /// Reads one frame (header first) into `buf`; `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Sends one frame (header first); `WouldBlock` when the tap's queue is full.
    pub fn write(&self, frame: &[u8]) -> std::io::Result<usize> {
        (&self.file).write(frame)
    }

    /// A datagram socket standing in for a tap in tests: no offloads.
    #[cfg(test)]
    pub fn from_socket(socket: std::os::unix::net::UnixDatagram) -> Tap {
        socket.set_nonblocking(true).unwrap();
        Tap {
            file: File::from(std::os::fd::OwnedFd::from(socket)),
            offloads: 0,
            accepted: 0,
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_opened() {
        for bad in ["", "sixteen-chars-xx", "a/b", "a b", "a:1", ".", ".."] {
            assert!(matches!(check_name(bad), Err(TapError::Name(_))), "{bad:?}");
        }
        assert!(check_name("tap0").is_ok());
        assert!(check_name("fifteen-chars-x").is_ok());
    }

    #[test]
    fn a_missing_interface_is_named() {
        let e = Tap::open("ember-nosuch0").err().unwrap();
        assert!(matches!(e, TapError::Missing(_)), "{e}");
        assert!(e.to_string().contains("ember-nosuch0"), "{e}");
    }
}
