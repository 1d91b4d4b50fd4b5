//! From the command line to a finished VMM: reads the config file, sets up the log, the
//! metrics and the API socket, runs the VM under the API controller (`control.rs`), and
//! turns the outcome into the process's exit status. The API socket is removed on every way
//! out.

use std::path::Path;
use std::sync::Arc;

use api::counters::ApiCounters;
use api::{HostLimits, LogLevel, VmConfig};
use arch::boot::input_file::read_regular_file;
use arch::layout;

use crate::cli::Cli;
use crate::control::Control;
use crate::metrics::Metrics;
use crate::{logger, vm};

/// Exit status for bad usage, configuration or guest images.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status when the VM cannot be started or fails while running.
pub const EXIT_VM_FAILED: i32 = 4;

/// An error that ends the VMM: its exit status and message.
pub struct Failure(pub i32, pub String);

fn bad_input(message: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_INPUT, message.into())
}

/// Runs the VMM `cli` describes to its end and returns the process's exit status (see
/// `ember --help`); errors are printed on standard error.
pub fn main(cli: &Cli) -> i32 {
    logger::init(cli.log_level.unwrap_or(LogLevel::Warning));
    let status = match run(cli) {
        Ok(status) => status,
        Err(Failure(status, message)) => {
            eprintln!("ember: error: {message}");
            status
        }
    };
    log::logger().flush();
    status
}

fn run(cli: &Cli) -> Result<i32, Failure> {
    if cli.no_api && cli.config_file.is_none() {
        return Err(bad_input(
            "--no-api needs --config-file to know what to boot",
        ));
    }
    let config = cli.config_file.as_deref().map(load_config).transpose()?;
    if let Some(section) = config.as_ref().and_then(|c| c.logger.as_ref()) {
        logger::configure(section, cli.log_level).map_err(bad_input)?;
    }
    if let Some(path) = &cli.log_path {
        let section = api::Logger {
            log_path: Some(path.clone()),
            level: cli.log_level,
            show_level: true,
            show_log_origin: false,
            module: None,
        };
        logger::configure(&section, cli.log_level)
            .map_err(|e| bad_input(e.replace("logger.log_path", "--log-path")))?;
    }
    let api_counters = Arc::new(ApiCounters::default());
    let mut metrics = Metrics::new(api_counters.clone());
    let metrics_path = cli.metrics_path.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|c| c.metrics.as_ref())
            .map(|m| m.metrics_path.clone())
    });
    if let Some(path) = metrics_path {
        metrics.set_sink(&path).map_err(bad_input)?;
    }
    let (server, requests) = if cli.no_api {
        (None, None)
    } else {
        let (server, requests) =
            api::server::start(&cli.api_sock, cli.http_api_max_payload_size, api_counters)
                .map_err(bad_input)?;
        (Some(server), Some(requests))
    };
    let opts = vm::VmOptions {
        accel: cli.accel,
        kvm_device: &cli.kvm_device,
        debug_exit: cli.debug_exit,
        jit: !cli.no_jit,
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let control = Control::new(
        requests,
        metrics,
        host_limits(meminfo.as_deref()),
        cli.id.clone(),
        cli.log_level,
    );
    let outcome = control.run(config, &opts);
    // The socket file goes before the process does, whatever the outcome.
    drop(server);
    outcome
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
