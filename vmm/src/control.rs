//! The VMM's side of the REST API: before start it puts the VM's configuration together
//! request by request, each change checked by the same validation the config file gets;
//! `InstanceStart` builds and runs the VM, and while it runs the API pauses, resumes and
//! pokes it. Without the API the same loop only boots the config file's VM and writes
//! metrics.

use std::path::PathBuf;
use std::sync::Arc;

use api::request::{ActionType, Reply, Request, VmState};
use api::server::{Pending, Requests};
use api::{BootSource, HostLimits, LogLevel, MachineConfig, VmConfig};
use serde_json::json;

use crate::launch::{Failure, EXIT_BAD_INPUT, EXIT_VM_FAILED};
use crate::logger;
use crate::metrics::Metrics;
use crate::stop::{StopReason, StopSignal};
use crate::vm::{self, Running, Supervisor, VmOptions};

/// What `GET /` calls this program.
const APP_NAME: &str = "Ember";
/// This program's version, as `GET /` and `GET /version` report it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The API's view of the VMM: the configuration (being put together, or the one the VM
/// runs), the request channel, and the metrics.
pub struct Control {
    requests: Option<Requests>,
    config: VmConfig,
    metrics: Metrics,
    limits: HostLimits,
    id: String,
    cli_log_level: Option<LogLevel>,
    started: bool,
    /// Requests that came with `InstanceStart`, answered once the VM runs.
    backlog: Vec<Pending>,
}

/// A configuration with no boot source yet: what the API starts from.
fn empty_config() -> VmConfig {
    VmConfig {
        boot_source: BootSource {
            kernel_image_path: PathBuf::new(),
            initrd_path: None,
            boot_args: None,
        },
        machine_config: MachineConfig::default(),
        drives: Vec::new(),
        network_interfaces: Vec::new(),
        vsock: None,
        balloon: None,
        entropy: None,
        logger: None,
        metrics: None,
        mmds_config: None,
    }
}

impl Control {
    /// A controller answering `requests` (none without the API), writing `metrics`, checking
    /// configurations against `limits`, reporting itself as `id`. `cli_log_level` wins over
    /// the level of `PUT /logger`.
    pub fn new(
        requests: Option<Requests>,
        metrics: Metrics,
        limits: HostLimits,
        id: String,
        cli_log_level: Option<LogLevel>,
    ) -> Self {
        Control {
            requests,
            config: empty_config(),
            metrics,
            limits,
            id,
            cli_log_level,
            started: false,
            backlog: Vec::new(),
        }
    }

    /// Boots `config` at once if given (a config file), else waits for the API to configure
    /// and start a VM; serves the API until the VM stops or a termination signal comes, and
    /// returns the exit status.
    pub fn run(mut self, config: Option<VmConfig>, opts: &VmOptions) -> Result<i32, Failure> {
        let idle = Arc::new(
            StopSignal::new().map_err(|e| Failure(EXIT_VM_FAILED, format!("eventfd: {e}")))?,
        );
        idle.catch_termination_signals()
            .map_err(|e| Failure(EXIT_VM_FAILED, format!("installing signal handlers: {e}")))?;
        if let Some(config) = config {
            self.config = config;
            let reason = self.start(opts, &mut None)?;
            return Ok(self.finish(reason));
        }
        loop {
            let fd = self.requests.as_ref().map(Requests::fd);
            if let Some(reason) = idle.wait_for(fd, Some(self.metrics.until_flush())) {
                return Ok(self.finish(reason));
            }
            self.metrics.flush_if_due();
            let mut pending = self.take_requests().into_iter();
            while let Some(p) = pending.next() {
                if p.request != Request::Action(ActionType::InstanceStart) {
                    let reply = self.handle(&p.request, None);
                    p.answer(reply);
                    continue;
                }
                self.backlog.extend(pending.by_ref());
                let mut start = Some(p);
                let result = self.start(opts, &mut start);
                match (result, start) {
                    (Ok(reason), _) => return Ok(self.finish(reason)),
                    (Err(Failure(_, message)), Some(p)) => {
                        p.answer(Reply::bad_request(format!(
                            "cannot start the VM: {message}"
                        )));
                        for p in std::mem::take(&mut self.backlog) {
                            let reply = self.handle(&p.request, None);
                            p.answer(reply);
                        }
                    }
                    (Err(failure), None) => return Err(failure),
                }
            }
        }
    }

    fn take_requests(&self) -> Vec<Pending> {
        self.requests
            .as_ref()
            .map(Requests::take)
            .unwrap_or_default()
    }

    /// Builds and runs the configured VM; `start` (the `InstanceStart` request) is answered
    /// once it runs, and left unanswered if the VM could not be started.
    fn start(
        &mut self,
        opts: &VmOptions,
        start: &mut Option<Pending>,
    ) -> Result<StopReason, Failure> {
        self.config
            .validate(&self.limits)
            .map_err(|e| Failure(EXIT_BAD_INPUT, e.to_string()))?;
        let stop =
            StopSignal::new().map_err(|e| Failure(EXIT_VM_FAILED, format!("eventfd: {e}")))?;
        let config = self.config.clone();
        let mut watch = Watch {
            control: self,
            start,
        };
        vm::run(&config, opts, &Arc::new(stop), &mut watch).map_err(|e| {
            let status = if e.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_VM_FAILED
            };
            Failure(status, e.to_string())
        })
    }

    /// Reports why the VM stopped, writes the last metrics, and gives the exit status.
    fn finish(&mut self, reason: StopReason) -> i32 {
        match &reason {
            StopReason::Fault(report) => eprint!("ember: {report}"),
            StopReason::Internal(message) => eprintln!("ember: error: {message}"),
            other => log::info!("VM stopped: {other:?}"),
        }
        if let Err(e) = self.metrics.flush() {
            log::warn!("{e}");
        }
        reason.exit_status()
    }

    /// Answers one request; `vm` is the running VM, if it has started.
    fn handle(&mut self, request: &Request, vm: Option<&Running<'_>>) -> Reply {
        match self.try_handle(request, vm) {
            Ok(reply) => reply,
            Err(message) => Reply::bad_request(message),
        }
    }

    fn state(&self, vm: Option<&Running<'_>>) -> &'static str {
        match vm {
            Some(vm) if vm.is_paused() => "Paused",
            Some(_) => "Running",
            None => "Not started",
        }
    }

    /// Refuses a change that only a VM that has not started can take.
    fn before_start(&self, what: &str) -> Result<(), String> {
        if self.started {
            Err(format!("{what} cannot be changed once the VM has started"))
        } else {
            Ok(())
        }
    }

    /// Replaces the configuration with `candidate`: before start if it passes validation;
    /// after start the caller has checked the section it changed (the rest is in use by the
    /// running VM, its vsock socket for one, and would not pass again).
    fn commit(&mut self, candidate: VmConfig) -> Result<Reply, String> {
        if !self.started {
            candidate
                .validate_sections(&self.limits)
                .map_err(|e| e.to_string())?;
        }
        self.config = candidate;
        Ok(Reply::no_content())
    }

    fn try_handle(&mut self, request: &Request, vm: Option<&Running<'_>>) -> Result<Reply, String> {
        let mut candidate = self.config.clone();
        match request {
            Request::GetInstanceInfo => Ok(Reply::json(&json!({
                "id": self.id,
                "state": self.state(vm),
                "vmm_version": VERSION,
                "app_name": APP_NAME,
            }))),
            Request::GetVersion => Ok(Reply::json(&json!({
                "firecracker_version": VERSION,
                "ember_version": VERSION,
            }))),
            Request::GetMachineConfig => Ok(Reply::json(&self.config.machine_config)),
            Request::GetVmConfig => Ok(Reply::json(&self.config)),
            Request::PutMachineConfig(mc) => {
                self.before_start("machine-config")?;
                candidate.machine_config = mc.clone();
                self.commit(candidate)
            }
            Request::PatchMachineConfig(update) => {
                self.before_start("machine-config")?;
                candidate.machine_config = update.applied_to(&self.config.machine_config);
                self.commit(candidate)
            }
            Request::PutBootSource(boot) => {
                self.before_start("boot-source")?;
                check_file("kernel_image_path", Some(&boot.kernel_image_path))?;
                check_file("initrd_path", boot.initrd_path.as_ref())?;
                candidate.boot_source = boot.clone();
                self.commit(candidate)
            }
            Request::PutDrive(drive) => {
                self.before_start("drives")?;
                match candidate
                    .drives
                    .iter_mut()
                    .find(|d| d.drive_id == drive.drive_id)
                {
                    Some(d) => *d = drive.clone(),
                    None => candidate.drives.push(drive.clone()),
                }
                self.commit(candidate)
            }
            Request::PatchDrive(update) => {
                let drive = candidate
                    .drives
                    .iter_mut()
                    .find(|d| d.drive_id == update.drive_id)
                    .ok_or_else(|| format!("drive_id: no drive `{}`", update.drive_id))?;
                if let Some(path) = &update.path_on_host {
                    drive.path_on_host = Some(path.clone());
                }
                if let Some(limiter) = &update.rate_limiter {
                    drive.rate_limiter = Some(limiter.clone());
                }
                let read_only = drive.is_read_only == Some(true);
                api::devices::check_drives(&candidate.drives).map_err(|e| e.to_string())?;
                if let Some(vm) = vm {
                    let limiter = update.rate_limiter.clone().map(Some);
                    vm.update_drive(
                        &update.drive_id,
                        update.path_on_host.as_deref(),
                        read_only,
                        limiter.as_ref(),
                    )?;
                }
                self.commit(candidate)
            }
            Request::PutNetworkInterface(iface) => {
                self.before_start("network-interfaces")?;
                let list = &mut candidate.network_interfaces;
                match list.iter_mut().find(|n| n.iface_id == iface.iface_id) {
                    Some(n) => *n = iface.clone(),
                    None => list.push(iface.clone()),
                }
                self.commit(candidate)
            }
            Request::PatchNetworkInterface(update) => {
                let iface = candidate
                    .network_interfaces
                    .iter_mut()
                    .find(|n| n.iface_id == update.iface_id)
                    .ok_or_else(|| format!("iface_id: no interface `{}`", update.iface_id))?;
                if let Some(limiter) = &update.rx_rate_limiter {
                    iface.rx_rate_limiter = Some(limiter.clone());
                }
                if let Some(limiter) = &update.tx_rate_limiter {
                    iface.tx_rate_limiter = Some(limiter.clone());
                }
                api::devices::check_network_interfaces(&candidate.network_interfaces)
                    .map_err(|e| e.to_string())?;
                if let Some(vm) = vm {
                    let iface = candidate
                        .network_interfaces
                        .iter()
                        .find(|n| n.iface_id == update.iface_id)
                        .ok_or("the interface went away")?;
                    vm.update_interface(
                        &iface.iface_id,
                        &iface.rx_rate_limiter,
                        &iface.tx_rate_limiter,
                    )?;
                }
                self.commit(candidate)
            }
            Request::PutVsock(vsock) => {
                self.before_start("vsock")?;
                candidate.vsock = Some(vsock.clone());
                self.commit(candidate)
            }
            Request::PutEntropy(entropy) => {
                self.before_start("entropy")?;
                candidate.entropy = Some(entropy.clone());
                self.commit(candidate)
            }
            Request::PutBalloon(balloon) => {
                self.before_start("balloon")?;
                candidate.balloon = Some(balloon.clone());
                self.commit(candidate)
            }
            Request::GetBalloon => {
                let balloon = self
                    .config
                    .balloon
                    .as_ref()
                    .ok_or("no balloon is configured")?;
                let mut value = json!(balloon);
                if let Some(state) = vm.and_then(Running::balloon_state) {
                    value["amount_mib"] = json!(state.target_mib());
                }
                Ok(Reply::json(&value))
            }
            Request::PatchBalloon(update) => {
                let balloon = candidate
                    .balloon
                    .as_mut()
                    .ok_or("no balloon is configured")?;
                balloon.amount_mib = update.amount_mib;
                api::devices::check_balloon(balloon, candidate.machine_config.mem_size_mib)
                    .map_err(|e| e.to_string())?;
                if let Some(vm) = vm {
                    vm.set_balloon_target(update.amount_mib)?;
                }
                self.commit(candidate)
            }
            Request::GetBalloonStats => {
                let balloon = self
                    .config
                    .balloon
                    .as_ref()
                    .ok_or("no balloon is configured")?;
                if balloon.stats_polling_interval_s == 0 {
                    return Err("balloon statistics are off (stats_polling_interval_s is 0)".into());
                }
                let state = vm
                    .and_then(Running::balloon_state)
                    .ok_or("the VM has not started: there are no statistics yet")?;
                Ok(Reply::json(&balloon_stats(&state)))
            }
            Request::PatchBalloonStats(update) => {
                let balloon = candidate
                    .balloon
                    .as_mut()
                    .ok_or("no balloon is configured")?;
                balloon.stats_polling_interval_s = update.stats_polling_interval_s;
                if let Some(vm) = vm {
                    vm.set_balloon_stats_period(update.stats_polling_interval_s)
                        .map_err(|e| format!("stats_polling_interval_s: {e}"))?;
                }
                self.commit(candidate)
            }
            Request::PutLogger(section) => {
                logger::configure(section, self.cli_log_level)?;
                self.config.logger = Some(section.clone());
                Ok(Reply::no_content())
            }
            Request::PutMetrics(section) => {
                if self.metrics.has_sink() {
                    return Err("metrics: the metrics sink is already set".into());
                }
                self.metrics.set_sink(&section.metrics_path)?;
                self.config.metrics = Some(section.clone());
                Ok(Reply::no_content())
            }
            Request::Action(ActionType::InstanceStart) => {
                Err("InstanceStart: the VM has already started".into())
            }
            Request::Action(ActionType::FlushMetrics) => {
                if !self.metrics.has_sink() {
                    return Err("FlushMetrics: no metrics sink is set (PUT /metrics)".into());
                }
                self.metrics.flush()?;
                Ok(Reply::no_content())
            }
            Request::Action(ActionType::SendCtrlAltDel) => {
                let vm = vm.ok_or("SendCtrlAltDel: the VM has not started")?;
                vm.send_ctrl_alt_del()?;
                Ok(Reply::no_content())
            }
            Request::PatchVm(state) => {
                let vm = vm.ok_or("vm: the VM has not started")?;
                match state {
                    VmState::Paused => vm.pause()?,
                    VmState::Resumed => vm.resume()?,
                }
                Ok(Reply::no_content())
            }
        }
    }
}

/// Checks that `path`, if given, names a regular file; the error names `field`.
fn check_file(field: &str, path: Option<&PathBuf>) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{field}: {} is not a regular file", path.display())),
        Err(e) => Err(format!("{field}: {}: {e}", path.display())),
    }
}

/// The balloon's statistics in Firecracker's `GET /balloon/statistics` form.
fn balloon_stats(state: &devices::virtio::balloon::BalloonState) -> serde_json::Value {
    const NAMES: [&str; 10] = [
        "swap_in",
        "swap_out",
        "major_faults",
        "minor_faults",
        "free_memory",
        "total_memory",
        "available_memory",
        "disk_caches",
        "hugetlb_allocations",
        "hugetlb_failures",
    ];
    let mut value = json!({
        "target_mib": state.target_mib(),
        "actual_mib": state.actual_mib(),
        "target_pages": state.target_mib() * 256,
        "actual_pages": state.actual_mib() * 256,
    });
    for (tag, amount) in state.stats().entries {
        if let Some(name) = NAMES.get(usize::from(tag)) {
            value[*name] = json!(amount);
        }
    }
    value
}

/// The controller while the VM runs: answers the start request, then every request until
/// the VM stops, writing metrics on their period.
struct Watch<'a> {
    control: &'a mut Control,
    start: &'a mut Option<Pending>,
}

impl Supervisor for Watch<'_> {
    fn supervise(&mut self, vm: &Running<'_>) -> StopReason {
        let control = &mut *self.control;
        control.started = true;
        control.metrics.set_devices(vm.device_counters().to_vec());
        if let Some(start) = self.start.take() {
            start.answer(Reply::no_content());
        }
        for p in std::mem::take(&mut control.backlog) {
            let reply = control.handle(&p.request, Some(vm));
            p.answer(reply);
        }
        loop {
            let fd = control.requests.as_ref().map(Requests::fd);
            if let Some(reason) = vm.stop.wait_for(fd, Some(control.metrics.until_flush())) {
                return reason;
            }
            control.metrics.flush_if_due();
            for p in control.take_requests() {
                let reply = control.handle(&p.request, Some(vm));
                p.answer(reply);
            }
        }
    }
}
