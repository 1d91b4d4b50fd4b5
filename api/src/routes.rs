//! From an HTTP method, path and body to a [`Request`], or to the 400, 404 or 405 reply that
//! says what is wrong with it.

use serde::de::DeserializeOwned;

use crate::request::{ActionBody, Reply, Request, VmStateBody};

/// The endpoint a path names, with the ID in it for per-device paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Root,
    Version,
    MachineConfig,
    BootSource,
    Drive(&'a str),
    NetworkInterface(&'a str),
    Vsock,
    Entropy,
    Balloon,
    BalloonStats,
    Logger,
    Metrics,
    Actions,
    Vm,
    VmConfig,
    /// A Firecracker endpoint whose feature Ember does not have; the text names the feature.
    Unsupported(&'static str),
}

/// Firecracker endpoints Ember answers with 400, and the feature each belongs to.
const UNSUPPORTED: [(&str, &str); 8] = [
    ("mmds", "the microVM metadata service (MMDS)"),
    ("mmds/config", "the microVM metadata service (MMDS)"),
    ("snapshot/create", "snapshots"),
    ("snapshot/load", "snapshots"),
    ("cpu-config", "custom CPU templates"),
    ("hotplug/memory", "memory hotplug"),
    ("serial", "serial output redirection"),
    ("balloon/hinting", "free page hinting"),
];

fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let path = path.split('?').next().unwrap_or("");
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    if let Some(&(_, feature)) = UNSUPPORTED
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")))
    {
        return Some(Endpoint::Unsupported(feature));
    }
    let one_id = |rest: &'static str| {
        path.strip_prefix(rest)
            .filter(|id| !id.is_empty() && !id.contains('/'))
    };
    Some(match path {
        "" => Endpoint::Root,
        "version" => Endpoint::Version,
        "machine-config" => Endpoint::MachineConfig,
        "boot-source" => Endpoint::BootSource,
        "vsock" => Endpoint::Vsock,
        "entropy" => Endpoint::Entropy,
        "balloon" => Endpoint::Balloon,
        "balloon/statistics" => Endpoint::BalloonStats,
        "logger" => Endpoint::Logger,
        "metrics" => Endpoint::Metrics,
        "actions" => Endpoint::Actions,
        "vm" => Endpoint::Vm,
        "vm/config" => Endpoint::VmConfig,
        _ => {
            if let Some(id) = one_id("drives/") {
                Endpoint::Drive(id)
            } else if let Some(id) = one_id("network-interfaces/") {
                Endpoint::NetworkInterface(id)
            } else {
                return None;
            }
        }
    })
}

/// A name for the request's kind, for the metrics: the method and the path pattern, as
/// `PUT /drives/{id}`; `unknown` for paths the API does not have.
pub fn kind(method: &str, path: &str) -> String {
    let pattern = match endpoint(path) {
        None => return "unknown".to_string(),
        Some(Endpoint::Drive(_)) => "/drives/{id}".to_string(),
        Some(Endpoint::NetworkInterface(_)) => "/network-interfaces/{id}".to_string(),
        Some(Endpoint::Unsupported(_)) => "unsupported".to_string(),
        Some(_) => path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string(),
    };
    let pattern = if pattern.is_empty() { "/" } else { &pattern };
    format!("{} {pattern}", method.to_ascii_uppercase())
}

/// Parses a request. Unknown paths get 404, methods a path does not take 405, bodies that
/// are not the endpoint's JSON 400 naming the field; endpoints of features Ember lacks 400.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Request, Reply> {
    let Some(endpoint) = endpoint(path) else {
        return Err(Reply::fault(404, format!("no such endpoint: {path}")));
    };
    use Endpoint as E;
    let request = match (method, endpoint) {
        (_, E::Unsupported(feature)) => {
            return Err(Reply::bad_request(format!(
                "{path}: Ember does not support {feature}"
            )))
        }
        ("GET", E::Root) => Request::GetInstanceInfo,
        ("GET", E::Version) => Request::GetVersion,
        ("GET", E::MachineConfig) => Request::GetMachineConfig,
        ("PUT", E::MachineConfig) => Request::PutMachineConfig(json(body)?),
        ("PATCH", E::MachineConfig) => Request::PatchMachineConfig(json(body)?),
        ("PUT", E::BootSource) => Request::PutBootSource(json(body)?),
        ("PUT", E::Drive(id)) => {
            let drive: crate::Drive = json(body)?;
            same_id("drive_id", id, &drive.drive_id)?;
            Request::PutDrive(drive)
        }
        ("PATCH", E::Drive(id)) => {
            let update: crate::request::DriveUpdate = json(body)?;
            same_id("drive_id", id, &update.drive_id)?;
            Request::PatchDrive(update)
        }
        ("PUT", E::NetworkInterface(id)) => {
            let iface: crate::NetworkInterface = json(body)?;
            same_id("iface_id", id, &iface.iface_id)?;
            Request::PutNetworkInterface(iface)
        }
        ("PATCH", E::NetworkInterface(id)) => {
            let update: crate::request::NetworkInterfaceUpdate = json(body)?;
            same_id("iface_id", id, &update.iface_id)?;
            Request::PatchNetworkInterface(update)
        }
        ("PUT", E::Vsock) => Request::PutVsock(json(body)?),
        ("PUT", E::Entropy) => Request::PutEntropy(json(body)?),
        ("GET", E::Balloon) => Request::GetBalloon,
        ("PUT", E::Balloon) => Request::PutBalloon(json(body)?),
        ("PATCH", E::Balloon) => Request::PatchBalloon(json(body)?),
        ("GET", E::BalloonStats) => Request::GetBalloonStats,
        ("PATCH", E::BalloonStats) => Request::PatchBalloonStats(json(body)?),
        ("PUT", E::Logger) => Request::PutLogger(json(body)?),
        ("PUT", E::Metrics) => Request::PutMetrics(json(body)?),
        ("PUT", E::Actions) => Request::Action(json::<ActionBody>(body)?.action_type),
        ("PATCH", E::Vm) => Request::PatchVm(json::<VmStateBody>(body)?.state),
        ("GET", E::VmConfig) => Request::GetVmConfig,
        _ => {
            return Err(Reply::fault(
                405,
                format!("{path} does not take {method} requests"),
            ))
        }
    };
    Ok(request)
}

/// The ID in a body must be the one in the path.
fn same_id(field: &str, in_path: &str, in_body: &str) -> Result<(), Reply> {
    if in_path == in_body {
        Ok(())
    } else {
        Err(Reply::bad_request(format!(
            "{field}: `{in_body}` in the body differs from `{in_path}` in the path"
        )))
    }
}

/// The body as `T`: well-formed JSON with only the fields `T` has, nothing after it.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::bad_request("the request needs a JSON body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        Reply::bad_request(format!("{field}: {}", err.into_inner()))
    })?;
    de.end()
        .map_err(|e| Reply::bad_request(format!("body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ActionType, VmState};

    fn fault(r: Result<Request, Reply>) -> (u16, String) {
        let reply = r.unwrap_err();
        (reply.status, reply.body.unwrap_or_default())
    }

    #[test]
    fn paths_and_methods_map_to_requests() {
        assert_eq!(parse("GET", "/", b""), Ok(Request::GetInstanceInfo));
        assert_eq!(parse("GET", "/vm/config", b""), Ok(Request::GetVmConfig));
        assert_eq!(
            parse("PUT", "/actions", br#"{"action_type": "InstanceStart"}"#),
            Ok(Request::Action(ActionType::InstanceStart))
        );
        assert_eq!(
            parse("PATCH", "/vm", br#"{"state": "Paused"}"#),
            Ok(Request::PatchVm(VmState::Paused))
        );
        let drive = br#"{"drive_id": "root", "path_on_host": "/d", "is_root_device": true}"#;
        assert!(matches!(
            parse("PUT", "/drives/root", drive),
            Ok(Request::PutDrive(_))
        ));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(fault(parse("GET", "/nope", b"")).0, 404);
        assert_eq!(fault(parse("GET", "/drives/", b"")).0, 404);
        assert_eq!(fault(parse("GET", "/drives/a/b", b"")).0, 404);
        assert_eq!(fault(parse("DELETE", "/", b"")).0, 405);
        assert_eq!(fault(parse("GET", "/boot-source", b"")).0, 405);
    }

    #[test]
    fn bad_bodies_are_400_naming_the_field() {
        for (body, needle) in [
            (
                &br#"{"vcpu_count": "two", "mem_size_mib": 64}"#[..],
                "vcpu_count",
            ),
            (
                br#"{"vcpu_count": 1, "mem_size_mib": 64, "vcpus": 2}"#,
                "unknown field `vcpus`",
            ),
            (br#"{"vcpu_count": 1, "mem_size_mib": 64"#, "EOF"),
            (
                br#"{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 64}"#,
                "duplicate field",
            ),
            (br#"{"vcpu_count": 1, "mem_size_mib": 64} x"#, "trailing"),
            (b"", "needs a JSON body"),
        ] {
            let (status, text) = fault(parse("PUT", "/machine-config", body));
            assert_eq!(status, 400);
            assert!(
                text.contains("fault_message") && text.contains(needle),
                "{text}"
            );
        }
    }

    #[test]
    fn ids_in_path_and_body_must_agree() {
        let body = br#"{"drive_id": "b", "path_on_host": "/d", "is_root_device": false}"#;
        let (status, text) = fault(parse("PUT", "/drives/a", body));
        assert_eq!(status, 400);
        assert!(text.contains("drive_id"), "{text}");
    }

    #[test]
    fn missing_features_say_so() {
        for path in ["/mmds", "/snapshot/create", "/snapshot/load", "/cpu-config"] {
            let (status, text) = fault(parse("PUT", path, b"{}"));
            assert_eq!(status, 400, "{path}");
            assert!(text.contains("does not support"), "{text}");
        }
    }

    #[test]
    fn kinds_name_the_pattern() {
        assert_eq!(kind("put", "/drives/x"), "PUT /drives/{id}");
        assert_eq!(kind("GET", "/"), "GET /");
        assert_eq!(kind("GET", "/vm/config?x"), "GET /vm/config");
        assert_eq!(kind("GET", "/zzz"), "unknown");
    }
}
