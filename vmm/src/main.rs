//! `ember`: boots a microVM from a Firecracker-schema config file and serves its exits.

mod cli;
mod console;
mod kvm;
mod logger;
mod soft;
mod stop;
mod timers;
mod vcpu;
mod vm;

use std::path::Path;

use api::{HostLimits, LogLevel, VmConfig};
use clap::Parser;

use crate::cli::Cli;
use crate::stop::StopReason;

/// Exit status for bad usage, configuration or guest images.
const EXIT_BAD_INPUT: i32 = 2;
/// Exit status when the VM cannot be started or fails while running.
pub(crate) const EXIT_VM_FAILED: i32 = 4;

/// An error that ends the VMM: its exit status and message.
struct Failure(i32, String);

fn bad_input(message: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_INPUT, message.into())
}

fn main() {
    let cli = Cli::parse();
    logger::init(cli.log_level.unwrap_or(LogLevel::Warning));
    let status = match run(&cli) {
        Ok(status) => status,
        Err(Failure(status, message)) => {
            eprintln!("ember: error: {message}");
            status
        }
    };
    log::logger().flush();
    std::process::exit(status);
}

fn run(cli: &Cli) -> Result<i32, Failure> {
    if let Some(sock) = &cli.api_sock {
        return Err(bad_input(format!(
            "--api-sock {}: the REST API is not supported yet; use --no-api with --config-file",
            sock.display()
        )));
    }
    if !cli.no_api {
        return Err(bad_input(
            "the REST API is not supported yet: pass --no-api and --config-file",
        ));
    }
    let path = cli
        .config_file
        .as_deref()
        .ok_or_else(|| bad_input("--no-api needs --config-file to know what to boot"))?;
    let config = load_config(path)?;
    if let Some(section) = &config.logger {
        logger::configure(section, cli.log_level).map_err(bad_input)?;
    }
    let opts = vm::VmOptions {
        accel: cli.accel,
        kvm_device: &cli.kvm_device,
    };
    let reason = vm::run(&config, &opts).map_err(|e| {
        let status = if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_VM_FAILED
        };
        Failure(status, e.to_string())
    })?;
    match &reason {
        StopReason::Fault(report) => eprint!("ember: {report}"),
        StopReason::Internal(message) => eprintln!("ember: error: {message}"),
        other => log::info!("VM stopped: {other:?}"),
    }
    Ok(reason.exit_status())
}

fn load_config(path: &Path) -> Result<VmConfig, Failure> {
    let config = VmConfig::from_file(path).map_err(|e| bad_input(e.to_string()))?;
    config
        .validate(&host_limits())
        .map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// What this host can give a guest.
fn host_limits() -> HostLimits {
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(u64::MAX);
    HostLimits {
        max_mem_mib: mem_total_kib / 1024,
    }
}
