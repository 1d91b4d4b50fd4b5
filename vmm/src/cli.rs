//! The `ember` command line.

use std::path::PathBuf;

use api::LogLevel;
use clap::{Parser, ValueEnum};

/// Where the API socket goes when --api-sock is not given.
pub const DEFAULT_API_SOCK: &str = "/run/ember.socket";

/// Which CPU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm is usable (and not the nested kvm_pvm backend, which cannot run
    /// stock kernels), else the software CPU; a log line says which and why.
    Auto,
    /// Hardware virtualization through KVM only.
    Kvm,
    /// Ember's software x86-64 CPU, on any host.
    Interp,
}

/// Ember: a KVM-accelerated virtual machine monitor for Linux microVMs.
///
/// Serves Firecracker's REST API on a Unix socket (--api-sock, default /run/ember.socket),
/// through which the microVM is configured and started; or, with --config-file, boots the
/// microVM that JSON document describes at once (and keeps serving the API unless --no-api
/// is given). The guest's
/// serial console (COM1) is this process's standard input and output; when standard input is
/// a terminal it is put in raw mode, and Ctrl-A x quits (Ctrl-A Ctrl-A sends Ctrl-A).
///
/// Exit status: 0 when the guest powers off or reboots (a guest reboot ends the VMM, as in
/// Firecracker) or Ctrl-A x is typed; (value << 1) | 1 when the guest writes a value below
/// 127 to the debug-exit port 0xf4 (see --debug-exit), 255 for larger values; 2 for bad
/// usage, configuration or guest images; 4 when the VM fails (triple fault, an instruction
/// the hypervisor cannot run, a hypervisor error, a VMM thread failure); 128 + N when ended
/// by signal N.
#[derive(Debug, Parser)]
#[command(name = "ember", version, verbatim_doc_comment)]
pub struct Cli {
    /// Boot the microVM described by this JSON file (Firecracker's --config-file schema:
    /// boot-source, machine-config, drives, network-interfaces, vsock, balloon, entropy,
    /// logger, metrics, mmds-config).
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Run without the REST API server; requires --config-file.
    #[arg(long, conflicts_with = "api_sock")]
    pub no_api: bool,

    /// Serve Firecracker's REST API on this Unix socket (created with mode 0600; a stale
    /// socket nobody listens on is replaced; removed when the VMM exits).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_API_SOCK)]
    pub api_sock: PathBuf,

    /// Largest request body the API accepts, in bytes; larger ones get 400.
    #[arg(long, value_name = "BYTES", default_value_t = api::server::DEFAULT_MAX_PAYLOAD)]
    pub http_api_max_payload_size: usize,

    /// The instance ID the API reports in GET /.
    #[arg(long, value_name = "ID", default_value = "anonymous-instance")]
    pub id: String,

    /// Write the VMM's log to this file or named pipe instead of standard error.
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,

    /// Write metrics (one JSON line a minute, and on FlushMetrics) to this file or named
    /// pipe.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,

    /// CPU backend: kvm (hardware virtualization), interp (Ember's software x86-64 CPU, any
    /// host), or auto (KVM when usable, else the software CPU).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,

    /// Least severe log messages shown on standard error: Off, Error, Warning, Info, Debug or
    /// Trace [default: Warning; the config file's logger.level applies when this is absent].
    #[arg(long, alias = "level", value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Give the guest the debug-exit port 0xf4 (QEMU's isa-debug-exit), through which it
    /// chooses the VMM's exit status. Multiboot test images always have it; other guests
    /// (Linux) get it only with this option.
    #[arg(long)]
    pub debug_exit: bool,

    /// Run every guest instruction in the software CPU's interpreter: translate no hot code
    /// to host code (for debugging and for comparing the two tiers).
    #[arg(long)]
    pub no_jit: bool,

    /// The KVM device to open.
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm")]
    pub kvm_device: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_style_invocation() {
        let cli = Cli::try_parse_from([
            "ember",
            "--no-api",
            "--config-file",
            "vm.json",
            "--level",
            "debug",
        ])
        .unwrap();
        assert!(cli.no_api);
        assert_eq!(cli.config_file, Some(PathBuf::from("vm.json")));
        assert_eq!(cli.log_level, Some(LogLevel::Debug));
        assert_eq!(cli.accel, Accel::Auto);
        assert_eq!(cli.kvm_device, PathBuf::from("/dev/kvm"));
        assert_eq!(cli.api_sock, PathBuf::from(DEFAULT_API_SOCK));
        assert_eq!(cli.http_api_max_payload_size, 51_200);
    }

    #[test]
    fn rejects_unknown_accelerator_and_level() {
        assert!(Cli::try_parse_from(["ember", "--accel", "tcg"]).is_err());
        assert!(Cli::try_parse_from(["ember", "--log-level", "loud"]).is_err());
        assert!(Cli::try_parse_from(["ember", "--no-api", "--api-sock", "a"]).is_err());
    }
}
