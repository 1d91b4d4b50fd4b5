//! The host's Unix sockets: the listening socket at `uds_path` (mode 0600, replacing a stale
//! socket file only when nobody listens on it, removed again when it is dropped) and
//! non-blocking connections to `<uds_path>_<port>`.

use std::ffi::c_char;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the listening socket cannot be made. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Something other than a socket is there.
    #[error("{}: exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// A process listens on it.
    #[error("{}: in use (another process listens on it)", .0.display())]
    InUse(PathBuf),
    /// The system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The listening socket at `uds_path`. Dropping it removes the socket file, if the file is
/// still the one it made.
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, to recognise it at removal.
    file_id: (u64, u64),
}

impl Listener {
    /// Listens at `path` (non-blocking, mode 0600). A socket file already there is replaced
    /// only if connecting to it is refused, that is if its listener is gone.
    pub fn bind(path: &Path) -> Result<Listener, ListenError> {
        let io_error = |source| ListenError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ListenError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match connect(path) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("vsock: replacing the stale socket {}", path.display());
                    std::fs::remove_file(path).map_err(io_error)?;
                }
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(io_error(e)),
                _ => return Err(ListenError::InUse(path.to_path_buf())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        let socket = UnixListener::bind(path).map_err(io_error)?;
        // Built before the guard, so that a failure below removes the file again.
        let mut listener = Listener {
            socket,
            path: path.to_path_buf(),
            file_id: (0, 0),
        };
        let meta = std::fs::symlink_metadata(path).map_err(io_error)?;
        listener.file_id = (meta.dev(), meta.ino());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
        listener.socket.set_nonblocking(true).map_err(io_error)?;
        Ok(listener)
    }

    /// The next waiting connection, non-blocking; `None` when there is none.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.socket.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("vsock: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Connects to the listener at `path` without blocking: a listener whose backlog is full
/// refuses (`WouldBlock`) instead of stalling the caller. The stream is non-blocking.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data, for which all zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or not a C string",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call, and `len` does not exceed
    // its size (the path is shorter than sun_path, which ends in a zero byte).
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-vsock-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn the_socket_is_private_and_removed_on_drop() {
        let path = scratch("private.sock");
        let listener = Listener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = connect(&path).unwrap();
        assert!(listener.accept().unwrap().is_some());
        assert!(listener.accept().unwrap().is_none(), "non-blocking");
        drop(client);
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
        let path = scratch("stale.sock");
        // A socket file whose listener is gone.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = Listener::bind(&path).unwrap();
        let e = Listener::bind(&path).unwrap_err();
        assert!(matches!(e, ListenError::InUse(_)), "{e}");
        drop(listener);
        std::fs::write(&path, b"not a socket").unwrap();
        let e = Listener::bind(&path).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn connecting_where_nobody_listens_fails() {
        let path = scratch("nobody.sock");
        assert!(connect(&path).is_err());
        let long = PathBuf::from("/".repeat(200));
        assert_eq!(
            connect(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
