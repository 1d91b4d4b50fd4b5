//! `ember`: boots a microVM from a Firecracker-schema config file and serves its exits.

mod cli;
mod console;
mod event_loop;
mod kvm;
mod logger;
mod report;
mod soft;
mod stop;
mod threads;
mod timers;
mod vcpu;
mod virtio;
mod vm;

use std::path::Path;

use api::{HostLimits, LogLevel, VmConfig};
use arch::boot::input_file::read_regular_file;
use arch::layout;
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
        debug_exit: cli.debug_exit,
        jit: !cli.no_jit,
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

/// The largest config file accepted: far above any real one, far below what could hurt.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn load_config(path: &Path) -> Result<VmConfig, Failure> {
    let bytes = read_regular_file(path, MAX_CONFIG_BYTES)
        .map_err(|e| bad_input(format!("config file {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        bad_input(format!(
            "config file {}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let config = VmConfig::from_json(&text, &path.display().to_string())
        .map_err(|e| bad_input(e.to_string()))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    config
        .validate(&host_limits(meminfo.as_deref()))
        .map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// What this host can give a guest, given the text of `/proc/meminfo` if it could be read:
/// at most its RAM, and never more than a guest can address.
fn host_limits(meminfo: Option<&str>) -> HostLimits {
    let addressable_mib = layout::MAX_RAM_SIZE >> 20;
    let mem_total_mib = meminfo.and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib / 1024)
    });
    HostLimits {
        max_mem_mib: mem_total_mib.map_or(addressable_mib, |m| m.min(addressable_mib)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_is_host_ram_capped_by_the_address_space() {
        let limit = |text: Option<&str>| host_limits(text).max_mem_mib;
        assert_eq!(limit(Some("MemTotal:       24576000 kB\n")), 24000);
        let addressable = layout::MAX_RAM_SIZE >> 20;
        for unusable in [
            None,
            Some(""),
            Some("MemTotal: lots kB"),
            Some("MemTotal: 99999999999999999999999 kB"),
            Some("MemTotal: 18446744073709551615 kB"),
        ] {
            assert_eq!(limit(unusable), addressable, "{unusable:?}");
        }
    }
}
