//! What the REST API asks of the VMM and what the VMM answers: parsed, typed requests and
//! replies that carry their HTTP status.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    Balloon, BootSource, Drive, Entropy, Logger, MachineConfig, Metrics, NetworkInterface,
    RateLimiter, Vsock,
};

/// One request, parsed and checked for shape (types, unknown fields, IDs that match the
/// path); the VMM checks it against the VM's state and configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `GET /`.
    GetInstanceInfo,
    /// `GET /version`.
    GetVersion,
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /boot-source`.
    PutBootSource(BootSource),
    /// `PUT /drives/{id}`.
    PutDrive(Drive),
    /// `PATCH /drives/{id}`.
    PatchDrive(DriveUpdate),
    /// `PUT /network-interfaces/{id}`.
    PutNetworkInterface(NetworkInterface),
    /// `PATCH /network-interfaces/{id}`.
    PatchNetworkInterface(NetworkInterfaceUpdate),
    /// `PUT /vsock`.
    PutVsock(Vsock),
    /// `PUT /entropy`.
    PutEntropy(Entropy),
    /// `GET /balloon`.
    GetBalloon,
    /// `PUT /balloon`.
    PutBalloon(Balloon),
    /// `PATCH /balloon`.
    PatchBalloon(BalloonUpdate),
    /// `GET /balloon/statistics`.
    GetBalloonStats,
    /// `PATCH /balloon/statistics`.
    PatchBalloonStats(BalloonStatsUpdate),
    /// `PUT /logger`.
    PutLogger(Logger),
    /// `PUT /metrics`.
    PutMetrics(Metrics),
    /// `PUT /actions`.
    Action(ActionType),
    /// `PATCH /vm`.
    PatchVm(VmState),
    /// `GET /vm/config`.
    GetVmConfig,
}

/// `PATCH /machine-config`: the fields to change; absent fields keep their value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// Number of vCPUs.
    pub vcpu_count: Option<u8>,
    /// Guest RAM in MiB.
    pub mem_size_mib: Option<u64>,
    /// Hyperthread pairs.
    pub smt: Option<bool>,
    /// Dirty page tracking.
    pub track_dirty_pages: Option<bool>,
    /// CPU template name.
    pub cpu_template: Option<String>,
    /// Backing page size.
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// `base` with the fields this update gives replaced.
    pub fn applied_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            cpu_template: self.cpu_template.clone().or(base.cpu_template.clone()),
            huge_pages: self.huge_pages.clone().or(base.huge_pages.clone()),
        }
    }
}

/// `PATCH /drives/{id}`: a new backing file and/or rate limiter for an existing drive.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    /// The drive, as in the path.
    pub drive_id: String,
    /// A new backing file.
    pub path_on_host: Option<PathBuf>,
    /// New I/O limits.
    pub rate_limiter: Option<RateLimiter>,
}

/// `PATCH /network-interfaces/{id}`: new rate limiters for an existing interface.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    /// The interface, as in the path.
    pub iface_id: String,
    /// New receive limits.
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New transmit limits.
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PATCH /balloon`: a new target size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
}

/// `PATCH /balloon/statistics`: a new statistics polling interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    /// Seconds between statistics requests; 0 turns them off.
    pub stats_polling_interval_s: u16,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// What to do.
    pub action_type: ActionType,
}

/// What `PUT /actions` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ActionType {
    /// Build the configured VM and start its vCPUs.
    InstanceStart,
    /// Press Ctrl-Alt-Del on the i8042 keyboard.
    SendCtrlAltDel,
    /// Write the metrics now.
    FlushMetrics,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateBody {
    /// The state asked for.
    pub state: VmState,
}

/// The run state `PATCH /vm` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum VmState {
    /// Stop running guest code; guest time stands still.
    Paused,
    /// Run guest code again.
    Resumed,
}

/// The VMM's answer: an HTTP status and an optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// JSON text of the body, if any.
    pub body: Option<String>,
}

impl Reply {
    /// 204 No Content.
    pub fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
        }
    }

    /// 200 with `value` as JSON.
    pub fn json<T: Serialize>(value: &T) -> Self {
        match serde_json::to_string(value) {
            Ok(text) => Reply {
                status: 200,
                body: Some(text),
            },
            Err(e) => Reply::fault(500, format!("cannot encode the answer: {e}")),
        }
    }

    /// `status` with `{"fault_message": message}`.
    pub fn fault(status: u16, message: impl Into<String>) -> Self {
        let body = serde_json::json!({ "fault_message": message.into() });
        Reply {
            status,
            body: Some(body.to_string()),
        }
    }

    /// 400 with `{"fault_message": message}`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Reply::fault(400, message)
    }
}
