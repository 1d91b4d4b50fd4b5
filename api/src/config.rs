//! The microVM configuration: Firecracker's `--config-file` schema as serde types.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Most vCPUs a microVM may have.
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory, in MiB: enough for the boot structures below 1 MiB and a small image.
pub const MIN_MEM_MIB: u64 = 2;
/// Kernel command line used when `boot-source.boot_args` is absent.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1";

/// A whole microVM description, as read from a `--config-file`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The kernel, initrd and command line.
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    /// vCPUs and memory; Firecracker's defaults when absent.
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    /// virtio-block devices.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// virtio-net devices backed by host tap devices.
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<Vsock>,
    /// The virtio-balloon device.
    #[serde(default)]
    pub balloon: Option<Balloon>,
    /// The virtio-rng device.
    #[serde(default)]
    pub entropy: Option<Entropy>,
    /// Where and how much the VMM logs.
    #[serde(default)]
    pub logger: Option<Logger>,
    /// Where the VMM writes its metrics.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// The microVM metadata service.
    #[serde(rename = "mmds-config", default)]
    pub mmds_config: Option<MmdsConfig>,
}

/// `boot-source`: what to boot.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// A Linux ELF vmlinux, a bzImage, or a Multiboot v1 ELF32 image.
    pub kernel_image_path: PathBuf,
    /// An initramfs (Linux) or the first Multiboot module.
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
    /// The kernel command line; [`DEFAULT_BOOT_ARGS`] when absent.
    #[serde(default)]
    pub boot_args: Option<String>,
}

impl BootSource {
    /// The command line to pass to the kernel.
    pub fn boot_args(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS)
    }
}

/// `machine-config`: vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpu_count: u8,
    /// Guest RAM in MiB.
    pub mem_size_mib: u64,
    /// Whether vCPUs are presented as hyperthread pairs.
    #[serde(default)]
    pub smt: bool,
    /// Whether KVM logs dirty guest pages (for snapshots).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// A Firecracker static CPU template name; only "None" is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Backing page size of guest memory: "None" (4 KiB) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl Default for MachineConfig {
    /// Firecracker's defaults: one vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

/// A token bucket of a rate limiter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size in bytes or operations.
    pub size: u64,
    /// Extra tokens available once at start.
    #[serde(default)]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the whole bucket.
    pub refill_time: u64,
}

/// A device rate limiter: a bandwidth and an operations bucket.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes per refill period.
    #[serde(default)]
    pub bandwidth: Option<TokenBucket>,
    /// Operations per refill period.
    #[serde(default)]
    pub ops: Option<TokenBucket>,
}

/// One entry of `drives`: a virtio-block device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Unique name of the drive.
    pub drive_id: String,
    /// Host file backing the drive.
    #[serde(default)]
    pub path_on_host: Option<PathBuf>,
    /// Whether this drive is the guest's root device.
    pub is_root_device: bool,
    /// Whether the guest may only read it.
    #[serde(default)]
    pub is_read_only: Option<bool>,
    /// Root partition UUID, for a root device with partitions.
    #[serde(default)]
    pub partuuid: Option<String>,
    /// "Unsafe" or "Writeback".
    #[serde(default)]
    pub cache_type: Option<String>,
    /// I/O limits.
    #[serde(default)]
    pub rate_limiter: Option<RateLimiter>,
    /// "Sync" or "Async".
    #[serde(default)]
    pub io_engine: Option<String>,
    /// A vhost-user-block backend socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// One entry of `network-interfaces`: a virtio-net device on a tap device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Unique name of the interface.
    pub iface_id: String,
    /// Host tap device name.
    pub host_dev_name: String,
    /// The guest's MAC address.
    #[serde(default)]
    pub guest_mac: Option<String>,
    /// Receive limits.
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit limits.
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `vsock`: the virtio-vsock device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated device name, accepted and ignored as in Firecracker.
    #[serde(default)]
    pub vsock_id: Option<String>,
    /// The guest's context ID (3 or more).
    pub guest_cid: u32,
    /// Host Unix socket that guest connections are forwarded to.
    pub uds_path: PathBuf,
}

/// `balloon`: the virtio-balloon device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Whether the guest may deflate the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Statistics polling interval in seconds; 0 disables statistics.
    #[serde(default)]
    pub stats_polling_interval_s: u16,
}

/// `entropy`: the virtio-rng device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    /// Limits on bytes handed to the guest.
    #[serde(default)]
    pub rate_limiter: Option<RateLimiter>,
}

/// `logger`: the VMM's log.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// File (or named pipe) the log goes to; standard error when absent.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Least severe level logged.
    #[serde(default)]
    pub level: Option<LogLevel>,
    /// Whether each line carries its level.
    #[serde(default)]
    pub show_level: bool,
    /// Whether each line carries the source file and line.
    #[serde(default)]
    pub show_log_origin: bool,
    /// Only log from modules whose path starts with this.
    #[serde(default)]
    pub module: Option<String>,
}

/// `metrics`: the VMM's metrics sink.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// File (or named pipe) metrics are written to.
    pub metrics_path: PathBuf,
}

/// `mmds-config`: the microVM metadata service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    /// "V1" or "V2".
    #[serde(default)]
    pub version: Option<String>,
    /// Interfaces (by `iface_id`) the service answers on.
    pub network_interfaces: Vec<String>,
    /// The service's IPv4 address.
    #[serde(default)]
    pub ipv4_address: Option<String>,
}

/// Severity threshold of the VMM's log, as Firecracker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warning,
    /// Also what the VMM decided and why (the default).
    Info,
    /// Also device and boot details.
    Debug,
    /// Everything.
    Trace,
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(LogLevel::Off),
            "error" => Ok(LogLevel::Error),
            "warning" | "warn" => Ok(LogLevel::Warning),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "unknown log level `{s}` (expected Off, Error, Warning, Info, Debug or Trace)"
            )),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a configuration was refused. Every variant names the file or the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON is malformed or does not fit the schema.
    #[error("{origin}: {field}: {message}")]
    Parse {
        /// The file (or "request body").
        origin: String,
        /// Dotted path of the field at fault ("config" for the whole document).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value outside what Ember accepts.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field at fault.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn unsupported(field: &str, what: &str) -> Self {
        Self::invalid(
            field,
            format!("{what} is not supported yet; remove this section"),
        )
    }
}

/// Limits that depend on the host, checked by [`VmConfig::validate`].
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// Most guest memory, in MiB, this host can back.
    pub max_mem_mib: u64,
}

impl VmConfig {
    /// Parses a config document; `origin` names it in errors (a path or "request body").
    /// Unknown keys, wrong types and malformed JSON are errors naming the field.
    pub fn from_json(text: &str, origin: &str) -> Result<VmConfig, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            ConfigError::Parse {
                origin: origin.to_string(),
                field: if path == "." {
                    "config".to_string()
                } else {
                    path
                },
                message: err.into_inner().to_string(),
            }
        })
    }

    /// Checks ranges and cross-field rules; refuses sections whose feature Ember lacks.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        if self.boot_source.kernel_image_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "boot-source.kernel_image_path",
                "must name a kernel image file",
            ));
        }
        self.validate_sections(limits)
    }

    /// What [`VmConfig::validate`] checks except the boot source, for a configuration that
    /// is still being put together (over the API).
    pub fn validate_sections(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        self.machine_config.validate(limits)?;
        crate::devices::check_drives(&self.drives)?;
        if let Some(entropy) = &self.entropy {
            crate::devices::check_entropy(entropy)?;
        }
        if let Some(vsock) = &self.vsock {
            crate::devices::check_vsock(vsock)?;
        }
        crate::devices::check_network_interfaces(&self.network_interfaces)?;
        if let Some(balloon) = &self.balloon {
            crate::devices::check_balloon(balloon, self.machine_config.mem_size_mib)?;
        }
        if self.mmds_config.is_some() {
            return Err(ConfigError::unsupported(
                "mmds-config",
                "the metadata service",
            ));
        }
        let devices = self.drives.len()
            + self.network_interfaces.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.balloon.is_some())
            + usize::from(self.entropy.is_some());
        if devices > crate::devices::MAX_VIRTIO_DEVICES {
            return Err(ConfigError::invalid(
                "drives",
                format!(
                    "{devices} virtio devices in all; at most {} fit",
                    crate::devices::MAX_VIRTIO_DEVICES
                ),
            ));
        }
        Ok(())
    }
}

impl MachineConfig {
    /// Checks the vCPU count, memory size, template and page size against `limits`.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        if !(1..=MAX_VCPUS).contains(&self.vcpu_count) {
            return Err(ConfigError::invalid(
                "machine-config.vcpu_count",
                format!(
                    "{} is out of range (allowed 1..={MAX_VCPUS})",
                    self.vcpu_count
                ),
            ));
        }
        if self.smt && self.vcpu_count > 1 && !self.vcpu_count.is_multiple_of(2) {
            return Err(ConfigError::invalid(
                "machine-config.vcpu_count",
                format!(
                    "{} vCPUs with smt: true; must be 1 or even",
                    self.vcpu_count
                ),
            ));
        }
        let max = limits.max_mem_mib.max(MIN_MEM_MIB);
        if !(MIN_MEM_MIB..=max).contains(&self.mem_size_mib) {
            return Err(ConfigError::invalid(
                "machine-config.mem_size_mib",
                format!(
                    "{} is out of range (allowed {MIN_MEM_MIB}..={max}, this host's RAM)",
                    self.mem_size_mib
                ),
            ));
        }
        if let Some(t) = self.cpu_template.as_deref().filter(|t| *t != "None") {
            return Err(ConfigError::invalid(
                "machine-config.cpu_template",
                format!("CPU template `{t}` is not supported yet (allowed: \"None\")"),
            ));
        }
        if let Some(p) = self.huge_pages.as_deref().filter(|p| *p != "None") {
            return Err(ConfigError::invalid(
                "machine-config.huge_pages",
                format!("`{p}` is not supported yet (allowed: \"None\")"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HostLimits = HostLimits { max_mem_mib: 4096 };

    fn parse(text: &str) -> Result<VmConfig, ConfigError> {
        VmConfig::from_json(text, "vm.json")
    }

    fn check(text: &str) -> Result<VmConfig, ConfigError> {
        let cfg = parse(text)?;
        cfg.validate(&LIMITS)?;
        Ok(cfg)
    }

    fn err(text: &str) -> String {
        check(text).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"{"boot-source": {"kernel_image_path": "vmlinux"}}"#;

    #[test]
    fn minimal_config_gets_firecracker_defaults() {
        let cfg = check(MINIMAL).unwrap();
        assert_eq!(cfg.machine_config, MachineConfig::default());
        assert_eq!(cfg.boot_source.boot_args(), DEFAULT_BOOT_ARGS);
        assert!(cfg.drives.is_empty() && cfg.vsock.is_none());
    }

    #[test]
    fn full_machine_config_parses() {
        let cfg = check(
            r#"{"boot-source": {"kernel_image_path": "k", "initrd_path": "i", "boot_args": "a=b"},
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 512, "smt": true,
                                   "track_dirty_pages": true, "huge_pages": "None"},
                "logger": {"log_path": "/tmp/log", "level": "debug", "show_level": true}}"#,
        )
        .unwrap();
        assert_eq!(cfg.machine_config.vcpu_count, 2);
        assert_eq!(cfg.machine_config.mem_size_mib, 512);
        assert!(cfg.machine_config.smt && cfg.machine_config.track_dirty_pages);
        assert_eq!(cfg.boot_source.boot_args(), "a=b");
        assert_eq!(cfg.logger.unwrap().level, Some(LogLevel::Debug));
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "vcpus": 2}}"#);
        assert!(
            e.contains("machine-config") && e.contains("unknown field `vcpus`"),
            "{e}"
        );
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"}, "bogus": 1}"#);
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn vcpu_count_zero_names_field_and_range() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}}"#);
        assert!(
            e.contains("machine-config.vcpu_count") && e.contains("1..=32"),
            "{e}"
        );
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 33, "mem_size_mib": 64}}"#);
        assert!(e.contains("33 is out of range"), "{e}");
    }

    #[test]
    fn vcpu_count_of_wrong_type_is_named() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": -1, "mem_size_mib": 64}}"#);
        assert!(e.contains("machine-config.vcpu_count"), "{e}");
    }

    #[test]
    fn odd_vcpus_with_smt_are_refused() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 3, "mem_size_mib": 64, "smt": true}}"#);
        assert!(e.contains("must be 1 or even"), "{e}");
    }

    #[test]
    fn memory_beyond_host_names_field_and_range() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 999999}}"#);
        assert!(
            e.contains("machine-config.mem_size_mib") && e.contains("2..=4096"),
            "{e}"
        );
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 0}}"#);
        assert!(e.contains("0 is out of range"), "{e}");
    }

    #[test]
    fn missing_kernel_is_named() {
        let e = err(r#"{"boot-source": {"initrd_path": "i"}}"#);
        assert!(
            e.contains("boot-source") && e.contains("missing field `kernel_image_path`"),
            "{e}"
        );
        let e = err(r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#);
        assert!(e.contains("missing field `boot-source`"), "{e}");
        let e = err(r#"{"boot-source": {"kernel_image_path": ""}}"#);
        assert!(e.contains("boot-source.kernel_image_path"), "{e}");
    }

    #[test]
    fn malformed_json_gives_file_and_position() {
        let e = err("{\"boot-source\": {\"kernel_image_path\": \"k\"},\n}");
        assert!(e.starts_with("vm.json: ") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn sections_without_device_are_refused_not_ignored() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "mmds-config": {"network_interfaces": ["eth0"]}}"#);
        assert!(
            e.starts_with("mmds-config") && e.contains("not supported yet"),
            "{e}"
        );
        let metrics = r#"{"boot-source": {"kernel_image_path": "k"},
                "metrics": {"metrics_path": "/tmp/m"}}"#;
        assert!(check(metrics).is_ok(), "the metrics sink is supported");
    }

    #[test]
    fn templates_and_huge_pages_other_than_none_are_refused() {
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}}"#);
        assert!(e.contains("machine-config.cpu_template"), "{e}");
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}}"#);
        assert!(e.contains("machine-config.huge_pages"), "{e}");
    }

    /// A config with `drives` set to `drives` (JSON), validated.
    fn drives_err(drives: &str) -> String {
        let text =
            format!(r#"{{"boot-source": {{"kernel_image_path": "k"}}, "drives": {drives}}}"#);
        VmConfig::from_json(&text, "vm.json")
            .unwrap()
            .validate(&LIMITS)
            .map(|()| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn drives_are_checked_field_by_field() {
        let file = std::env::temp_dir().join(format!("ember-api-drive-{}", std::process::id()));
        std::fs::write(&file, [0u8; 512]).unwrap();
        let f = file.display();
        let drive = |id: &str, root: bool, extra: &str| {
            format!(
                r#"{{"drive_id": "{id}", "path_on_host": "{f}", "is_root_device": {root}{extra}}}"#
            )
        };
        assert_eq!(
            drives_err(&format!(
                "[{}, {}]",
                drive("root", true, ""),
                drive("data", false, "")
            )),
            ""
        );
        for (drives, needle) in [
            (format!("[{}, {}]", drive("a", false, ""), drive("a", false, "")), "drives[1].drive_id"),
            (format!("[{}]", drive("bad id", false, "")), "drives[0].drive_id"),
            (format!("[{}, {}]", drive("a", true, ""), drive("b", true, "")), "drives[1].is_root_device"),
            (format!("[{}]", drive("a", false, r#", "partuuid": "0eaa91a0-01""#)), "drives[0].partuuid"),
            (format!("[{}]", drive("a", true, r#", "partuuid": "not-a-uuid!""#)), "drives[0].partuuid"),
            (format!("[{}]", drive("a", false, r#", "io_engine": "Fast""#)), "drives[0].io_engine"),
            (format!("[{}]", drive("a", false, r#", "cache_type": "None""#)), "drives[0].cache_type"),
            (
                format!("[{}]", drive("a", false, r#", "rate_limiter": {"ops": {"size": 5, "refill_time": 0}}"#)),
                "drives[0].rate_limiter.ops.refill_time",
            ),
            (
                r#"[{"drive_id": "a", "path_on_host": "/nonexistent/disk", "is_root_device": false}]"#.into(),
                "drives[0].path_on_host",
            ),
            (
                r#"[{"drive_id": "a", "path_on_host": "/dev/null", "is_root_device": false}]"#.into(),
                "not a regular file",
            ),
            (
                r#"[{"drive_id": "a", "is_root_device": false}]"#.into(),
                "drives[0].path_on_host",
            ),
        ] {
            let e = drives_err(&drives);
            assert!(e.contains(needle), "{drives}: {e}");
        }
        let many: Vec<String> = (0..17)
            .map(|i| drive(&format!("d{i}"), false, ""))
            .collect();
        assert!(drives_err(&format!("[{}]", many.join(","))).contains("at most 16"));
        std::fs::remove_file(&file).unwrap();
    }

    /// A config with `vsock` set to `vsock` (JSON), validated: the error, or "".
    fn vsock_err(vsock: &str) -> String {
        let text = format!(r#"{{"boot-source": {{"kernel_image_path": "k"}}, "vsock": {vsock}}}"#);
        VmConfig::from_json(&text, "vm.json")
            .and_then(|c| c.validate(&LIMITS))
            .map(|()| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn vsock_is_checked_field_by_field() {
        let dir = std::env::temp_dir().join(format!("ember-api-vsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let vsock =
            |cid: u64, path: &str| format!(r#"{{"guest_cid": {cid}, "uds_path": "{path}"}}"#);
        assert_eq!(vsock_err(&vsock(3, &format!("{d}/v.sock"))), "");
        assert_eq!(
            vsock_err(&vsock(u64::from(u32::MAX) - 1, &format!("{d}/v.sock"))),
            ""
        );
        // A socket nobody listens on any more is stale: the device replaces it.
        let stale = dir.join("stale.sock");
        let _ = std::fs::remove_file(&stale);
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert_eq!(vsock_err(&vsock(3, &stale.display().to_string())), "");
        let live = dir.join("live.sock");
        let _ = std::fs::remove_file(&live);
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        for (body, needle) in [
            (vsock(2, &format!("{d}/v.sock")), "vsock.guest_cid"),
            (vsock(0, &format!("{d}/v.sock")), "0 is reserved"),
            (
                vsock(u64::from(u32::MAX), &format!("{d}/v.sock")),
                "vsock.guest_cid",
            ),
            (vsock(3, "/nonexistent/dir/v.sock"), "vsock.uds_path"),
            (
                vsock(3, &format!("{}/v.sock", file.display())),
                "not a directory",
            ),
            (vsock(3, &file.display().to_string()), "not a socket"),
            (vsock(3, &live.display().to_string()), "in use"),
            (vsock(3, ""), "vsock.uds_path"),
            (
                vsock(3, &format!("{d}/{}", "x".repeat(100))),
                "vsock.uds_path",
            ),
            (r#"{"uds_path": "/tmp/v.sock"}"#.to_string(), "guest_cid"),
        ] {
            let e = vsock_err(&body);
            assert!(e.contains(needle), "{body}: {e}");
        }
        // One device at most: a second section is a duplicate key.
        let text = format!(
            r#"{{"boot-source": {{"kernel_image_path": "k"}}, "vsock": {}, "vsock": {}}}"#,
            vsock(3, "/tmp/a"),
            vsock(4, "/tmp/b")
        );
        let e = VmConfig::from_json(&text, "vm.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate field `vsock`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn network_interfaces_are_checked_field_by_field() {
        let err = |interfaces: &str| {
            let text = format!(
                r#"{{"boot-source": {{"kernel_image_path": "k"}},
                    "network-interfaces": {interfaces}}}"#
            );
            VmConfig::from_json(&text, "vm.json")
                .unwrap()
                .validate(&LIMITS)
                .map(|()| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        let net = |id: &str, tap: &str, extra: &str| {
            format!(r#"{{"iface_id": "{id}", "host_dev_name": "{tap}"{extra}}}"#)
        };
        let mac = |m: &str| format!(r#", "guest_mac": "{m}""#);
        let good = format!(
            "[{}, {}]",
            net("eth0", "tap0", &mac("06:00:AC:10:00:02")),
            net("eth1", "tap1", "")
        );
        assert_eq!(err(&good), "");
        for (interfaces, needle) in [
            (
                format!("[{}, {}]", net("a", "t0", ""), net("a", "t1", "")),
                "network-interfaces[1].iface_id",
            ),
            (
                format!("[{}]", net("a b", "t0", "")),
                "network-interfaces[0].iface_id",
            ),
            (
                format!("[{}, {}]", net("a", "t0", ""), net("b", "t0", "")),
                "network-interfaces[1].host_dev_name",
            ),
            (
                format!("[{}]", net("a", "sixteen-chars-xx", "")),
                "network-interfaces[0].host_dev_name",
            ),
            (
                format!("[{}]", net("a", "", "")),
                "network-interfaces[0].host_dev_name",
            ),
            (
                format!("[{}]", net("a", "t/0", "")),
                "network-interfaces[0].host_dev_name",
            ),
            (
                format!("[{}]", net("a", "t0", &mac("06:00:ac:10:00"))),
                "network-interfaces[0].guest_mac",
            ),
            (
                format!("[{}]", net("a", "t0", &mac("06:00:ac:10:00:2"))),
                "network-interfaces[0].guest_mac",
            ),
            (
                format!("[{}]", net("a", "t0", &mac("06-00-ac-10-00-02"))),
                "network-interfaces[0].guest_mac",
            ),
            (
                format!("[{}]", net("a", "t0", &mac("06:00:ac:10:00:0g"))),
                "network-interfaces[0].guest_mac",
            ),
            (
                format!("[{}]", net("a", "t0", &mac("01:00:5e:00:00:01"))),
                "multicast",
            ),
            (
                format!(
                    "[{}, {}]",
                    net("a", "t0", &mac("06:00:00:00:00:01")),
                    net("b", "t1", &mac("06:00:00:00:00:01"))
                ),
                "network-interfaces[1].guest_mac",
            ),
            (
                format!(
                    "[{}]",
                    net(
                        "a",
                        "t0",
                        r#", "tx_rate_limiter": {"bandwidth": {"size": 5, "refill_time": 0}}"#
                    )
                ),
                "network-interfaces[0].tx_rate_limiter.bandwidth.refill_time",
            ),
            (
                format!(
                    "[{}]",
                    net(
                        "a",
                        "t0",
                        r#", "rx_rate_limiter": {"ops": {"size": 5, "refill_time": 0}}"#
                    )
                ),
                "network-interfaces[0].rx_rate_limiter.ops.refill_time",
            ),
        ] {
            let e = err(&interfaces);
            assert!(e.contains(needle), "{interfaces}: {e}");
        }
        assert_eq!(
            crate::devices::parse_mac("0a:1B:2c:3D:4e:5F"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(crate::devices::parse_mac("0a:1b:2c:3d:4e:5f:60"), None);
    }

    #[test]
    fn log_levels_parse_case_insensitively() {
        assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warning));
        assert_eq!("trace".parse::<LogLevel>(), Ok(LogLevel::Trace));
        assert!("loud".parse::<LogLevel>().is_err());
        let e = err(r#"{"boot-source": {"kernel_image_path": "k"}, "logger": {"level": "loud"}}"#);
        assert!(
            e.contains("logger.level") && e.contains("unknown log level"),
            "{e}"
        );
    }
}
