//! The HTTP server on a Unix socket: tiny_http parses HTTP/1.1; each request is read (up to
//! the payload limit) and parsed on a thread of its own, handed to the VMM over a channel
//! with an eventfd to wake its loop, and answered with the VMM's reply. A slow or silent
//! client holds only its own threads.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::counters::ApiCounters;
use crate::request::{Reply, Request};
use crate::routes;

/// Firecracker's default limit on request bodies, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 51_200;

/// A request waiting for the VMM's answer.
pub struct Pending {
    /// The request.
    pub request: Request,
    reply: Sender<Reply>,
}

impl Pending {
    /// Sends `reply` to the client (a client that has gone away is not an error).
    pub fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// The VMM's end of the server: requests arrive here, and [`Requests::fd`] becomes readable
/// when there may be some.
pub struct Requests {
    rx: Receiver<Pending>,
    wake: Arc<EventFd>,
}

impl Requests {
    /// A descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Every request that has arrived, oldest first; clears the wake-up first, so a request
    /// that arrives meanwhile wakes the next poll.
    pub fn take(&self) -> Vec<Pending> {
        // Nonblocking: an empty counter just means nothing new.
        let _ = self.wake.read();
        self.rx.try_iter().collect()
    }
}

/// The running server. Dropping it stops the listening thread and removes the socket file
/// before it returns (requests already being served finish on their own threads).
pub struct ApiServer {
    path: PathBuf,
    server: Arc<tiny_http::Server>,
    listening: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The listening thread holds the server too, and tiny_http removes the socket's path
        // when the last holder drops it: wait for that thread, so that nothing removes the
        // path after this returns (a file put there later would go).
        self.server.unblock();
        if let Some(thread) = self.listening.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What each request thread needs.
struct Shared {
    to_vmm: Sender<Pending>,
    wake: Arc<EventFd>,
    counters: Arc<ApiCounters>,
    max_payload: usize,
}

/// Serves the API on a socket at `path` (mode 0600). An existing socket there is replaced
/// only if nobody listens on it; any other file there is an error. Bodies over
/// `max_payload` bytes get 400. Each request is counted in `counters`.
pub fn start(
    path: &Path,
    max_payload: usize,
    counters: Arc<ApiCounters>,
) -> Result<(ApiServer, Requests), String> {
    let named = |e: &dyn std::fmt::Display| format!("--api-sock {}: {e}", path.display());
    let listener = bind_private(path).map_err(|e| named(&e))?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(|e| {
        let _ = std::fs::remove_file(path);
        named(&e)
    })?;
    let server = Arc::new(server);
    let wake = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| named(&e))?);
    let (to_vmm, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        to_vmm,
        wake: wake.clone(),
        counters,
        max_payload,
    });
    let accepting = server.clone();
    let listening = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || accept(&accepting, &shared))
        .map_err(|e| named(&e))?;
    Ok((
        ApiServer {
            path: path.to_path_buf(),
            server,
            listening: Some(listening),
        },
        Requests { rx, wake },
    ))
}

/// Binds a listening socket at `path` that only this user can connect to.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The mask is the process's: two binds at once would each restore the other's.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: umask(2) only swaps the process's file mode mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    bound
}

/// Hands each request to a thread of its own until the server is unblocked.
fn accept(server: &tiny_http::Server, shared: &Arc<Shared>) {
    while let Ok(request) = server.recv() {
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("api-request".into())
            .spawn(move || serve(request, &for_thread));
        if let Err(e) = spawned {
            log::error!("API: cannot start a thread for a request: {e}");
        }
    }
}

/// Reads, parses, forwards and answers one request.
fn serve(mut request: tiny_http::Request, shared: &Shared) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let reply = match read_body(&mut request, shared.max_payload) {
        Err(reply) => reply,
        Ok(body) => match routes::parse(&method, &url, &body) {
            Err(reply) => reply,
            Ok(parsed) => ask_vmm(parsed, shared),
        },
    };
    shared
        .counters
        .count(&routes::kind(&method, &url), reply.status);
    log::debug!("API: {method} {url} -> {}", reply.status);
    let response = match reply.body {
        Some(body) => tiny_http::Response::from_string(body)
            .with_status_code(reply.status)
            .with_header(json_header()),
        None => tiny_http::Response::from_string(String::new()).with_status_code(reply.status),
    };
    // A client that has gone away needs no answer.
    let _ = request.respond(response);
}

fn json_header() -> tiny_http::Header {
    tiny_http::Header {
        field: "Content-Type".parse().expect("a valid header name"),
        value: "application/json".parse().expect("a valid header value"),
    }
}

/// The body, if it is at most `max` bytes.
fn read_body(request: &mut tiny_http::Request, max: usize) -> Result<Vec<u8>, Reply> {
    let too_big = || {
        Reply::bad_request(format!(
            "the request body exceeds the limit of {max} bytes (--http-api-max-payload-size)"
        ))
    };
    if request.body_length().is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Reply::bad_request(format!("reading the request body: {e}")))?;
    if body.len() > max {
        return Err(too_big());
    }
    Ok(body)
}

/// Sends `request` to the VMM and waits for its answer.
fn ask_vmm(request: Request, shared: &Shared) -> Reply {
    let (reply, answer) = mpsc::channel();
    let shutting_down = || Reply::bad_request("the VMM is shutting down");
    if shared.to_vmm.send(Pending { request, reply }).is_err() {
        return shutting_down();
    }
    // The counter cannot overflow from one write per request.
    let _ = shared.wake.write(1);
    answer.recv().unwrap_or_else(|_| shutting_down())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("api.sock")
    }

    #[test]
    fn socket_is_private_and_removed_on_drop() {
        let path = temp("private");
        let (server, _requests) = start(&path, 10, Arc::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_and_files_refused() {
        let path = temp("stale");
        drop(UnixListener::bind(&path).unwrap());
        let (server, _requests) = start(&path, 10, Arc::default()).unwrap();
        let e = start(&path, 10, Arc::default()).err().unwrap();
        assert!(e.contains("listening"), "{e}");
        drop(server);
        std::fs::write(&path, b"x").unwrap();
        let e = start(&path, 10, Arc::default()).err().unwrap();
        assert!(e.contains("not a socket"), "{e}");
        assert!(path.exists(), "a file that is not ours is left alone");
    }
}
