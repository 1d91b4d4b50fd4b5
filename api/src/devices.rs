//! Validation of the device sections of a configuration: drives, network interfaces, entropy,
//! the balloon and vsock. Each error names the field, as `drives[1].path_on_host`.

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::{
    Balloon, ConfigError, Drive, Entropy, NetworkInterface, RateLimiter, TokenBucket, Vsock,
};

/// Most virtio devices one microVM may have: each takes an MMIO window and an interrupt.
pub const MAX_VIRTIO_DEVICES: usize = 16;
/// Longest device ID accepted.
const MAX_ID_LEN: usize = 64;

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a device ID: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn check_id(field: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field.to_string(),
            format!("`{id}` must be 1 to {MAX_ID_LEN} letters, digits, `_` or `-`"),
        ))
    }
}

fn check_bucket(field: &str, bucket: &TokenBucket) -> Result<(), ConfigError> {
    if bucket.size > 0 && bucket.refill_time == 0 {
        return Err(invalid(
            format!("{field}.refill_time"),
            "must be at least 1 (milliseconds) for a bucket with a size",
        ));
    }
    Ok(())
}

/// Checks both buckets of a rate limiter at `field`.
pub fn check_rate_limiter(field: &str, limiter: &Option<RateLimiter>) -> Result<(), ConfigError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    if let Some(b) = &limiter.bandwidth {
        check_bucket(&format!("{field}.bandwidth"), b)?;
    }
    if let Some(b) = &limiter.ops {
        check_bucket(&format!("{field}.ops"), b)?;
    }
    Ok(())
}

/// Checks the `drives` section: unique IDs, at most one root device, a backing file that is
/// a regular file or block device, and the options Ember serves.
pub fn check_drives(drives: &[Drive]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut root = None;
    for (i, d) in drives.iter().enumerate() {
        let field = |name: &str| format!("drives[{i}].{name}");
        check_id(&field("drive_id"), &d.drive_id)?;
        if !ids.insert(d.drive_id.as_str()) {
            return Err(invalid(
                field("drive_id"),
                format!("`{}` is used twice", d.drive_id),
            ));
        }
        if d.socket.is_some() {
            return Err(invalid(
                field("socket"),
                "vhost-user block devices are not supported; give path_on_host",
            ));
        }
        let Some(path) = &d.path_on_host else {
            return Err(invalid(field("path_on_host"), "is required"));
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() || m.file_type().is_block_device() => {}
            Ok(_) => {
                return Err(invalid(
                    field("path_on_host"),
                    format!("{} is not a regular file or block device", path.display()),
                ))
            }
            Err(e) => {
                return Err(invalid(
                    field("path_on_host"),
                    format!("{}: {e}", path.display()),
                ))
            }
        }
        if d.is_root_device {
            if let Some(other) = root.replace(&d.drive_id) {
                return Err(invalid(
                    field("is_root_device"),
                    format!("`{other}` is already the root device"),
                ));
            }
        }
        if let Some(uuid) = &d.partuuid {
            if !d.is_root_device {
                return Err(invalid(
                    field("partuuid"),
                    "is only used with is_root_device",
                ));
            }
            if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                return Err(invalid(
                    field("partuuid"),
                    format!("`{uuid}` is not a UUID"),
                ));
            }
        }
        if let Some(c) = d
            .cache_type
            .as_deref()
            .filter(|c| !matches!(*c, "Unsafe" | "Writeback"))
        {
            return Err(invalid(
                field("cache_type"),
                format!("`{c}` (allowed: Unsafe, Writeback)"),
            ));
        }
        if let Some(e) = d
            .io_engine
            .as_deref()
            .filter(|e| !matches!(*e, "Sync" | "Async"))
        {
            return Err(invalid(
                field("io_engine"),
                format!("`{e}` (allowed: Sync, Async)"),
            ));
        }
        check_rate_limiter(&field("rate_limiter"), &d.rate_limiter)?;
    }
    Ok(())
}

/// Longest host interface name Linux takes (IFNAMSIZ less the terminating NUL).
const MAX_IFNAME_LEN: usize = 15;

/// The six bytes of a MAC address written `xx:xx:xx:xx:xx:xx` (hex digits, either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Checks the `network-interfaces` section: unique IDs, tap names that can name an interface
/// and are used once, unicast MAC addresses in `xx:xx:xx:xx:xx:xx` form used once, and the
/// rate limiters.
pub fn check_network_interfaces(interfaces: &[NetworkInterface]) -> Result<(), ConfigError> {
    let (mut ids, mut taps, mut macs) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (i, n) in interfaces.iter().enumerate() {
        let field = |name: &str| format!("network-interfaces[{i}].{name}");
        check_id(&field("iface_id"), &n.iface_id)?;
        if !ids.insert(n.iface_id.as_str()) {
            return Err(invalid(
                field("iface_id"),
                format!("`{}` is used twice", n.iface_id),
            ));
        }
        let tap = &n.host_dev_name;
        let tap_ok = !tap.is_empty()
            && tap.len() <= MAX_IFNAME_LEN
            && tap != "."
            && tap != ".."
            && tap
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !tap_ok {
            return Err(invalid(
                field("host_dev_name"),
                format!(
                    "`{tap}` is not an interface name (1 to {MAX_IFNAME_LEN} characters, \
                     no `/`, `:` or spaces)"
                ),
            ));
        }
        if !taps.insert(tap.as_str()) {
            return Err(invalid(
                field("host_dev_name"),
                format!("`{tap}` is used by two interfaces"),
            ));
        }
        if let Some(text) = &n.guest_mac {
            let Some(mac) = parse_mac(text) else {
                return Err(invalid(
                    field("guest_mac"),
                    format!("`{text}` is not a MAC address (xx:xx:xx:xx:xx:xx)"),
                ));
            };
            if mac[0] & 1 != 0 {
                return Err(invalid(
                    field("guest_mac"),
                    format!("`{text}` is a multicast address"),
                ));
            }
            if !macs.insert(mac) {
                return Err(invalid(
                    field("guest_mac"),
                    format!("`{text}` is used by two interfaces"),
                ));
            }
        }
        check_rate_limiter(&field("rx_rate_limiter"), &n.rx_rate_limiter)?;
        check_rate_limiter(&field("tx_rate_limiter"), &n.tx_rate_limiter)?;
    }
    Ok(())
}

/// Checks the `entropy` section.
pub fn check_entropy(entropy: &Entropy) -> Result<(), ConfigError> {
    check_rate_limiter("entropy.rate_limiter", &entropy.rate_limiter)
}

/// Checks the `balloon` section against guest memory of `mem_size_mib`.
pub fn check_balloon(balloon: &Balloon, mem_size_mib: u64) -> Result<(), ConfigError> {
    if u64::from(balloon.amount_mib) > mem_size_mib {
        return Err(invalid(
            "balloon.amount_mib".into(),
            format!(
                "{} is more than the guest's {mem_size_mib} MiB",
                balloon.amount_mib
            ),
        ));
    }
    Ok(())
}

/// Longest `uds_path` accepted, in bytes: `<uds_path>_<port>` must still fit in a Unix socket
/// address (107 bytes).
const MAX_UDS_PATH: usize = 96;

/// Checks the `vsock` section: a guest CID that is not reserved (3 up to 2^32 - 2), and a
/// `uds_path` in an existing directory where nothing lies but, at most, a socket nobody
/// listens on any more (the device replaces it).
pub fn check_vsock(vsock: &Vsock) -> Result<(), ConfigError> {
    if vsock.guest_cid < 3 || vsock.guest_cid == u32::MAX {
        return Err(invalid(
            "vsock.guest_cid".into(),
            format!(
                "{} is reserved (allowed 3..={})",
                vsock.guest_cid,
                u32::MAX - 1
            ),
        ));
    }
    let path = &vsock.uds_path;
    let field = || "vsock.uds_path".to_string();
    let len = path.as_os_str().len();
    if len == 0 || len > MAX_UDS_PATH {
        return Err(invalid(
            field(),
            format!("must name a socket path of 1 to {MAX_UDS_PATH} bytes"),
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                field(),
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) => return Err(invalid(field(), format!("{}: {e}", dir.display()))),
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(invalid(field(), format!("{}: {e}", path.display()))),
        Ok(m) if !m.file_type().is_socket() => Err(invalid(
            field(),
            format!("{} exists and is not a socket", path.display()),
        )),
        Ok(_) if std::os::unix::net::UnixStream::connect(path).is_ok() => Err(invalid(
            field(),
            format!(
                "{} is in use: another process listens on it",
                path.display()
            ),
        )),
        Ok(_) => Ok(()),
    }
}
