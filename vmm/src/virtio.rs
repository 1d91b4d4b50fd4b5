//! The VM's virtio devices: where each goes (an MMIO window and an interrupt, decided before
//! the ACPI tables and the kernel command line are written), what the guest is told about
//! them, and building them from the configuration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::VmConfig;
use arch::acpi::VirtioMmio;
use arch::layout::{VIRTIO_GSIS, VIRTIO_MMIO_START};
use arch::GuestMemory;
use devices::rate_limiter::{BucketConfig, RateLimiter};
use devices::virtio::balloon::Balloon;
use devices::virtio::block::{Block, Disk};
use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE};
use devices::virtio::net::{tap::Tap, Net};
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{Listener, Vsock};
use devices::virtio::{Counters, VirtioDevice};
use event_manager::MutEventSubscriber;

use crate::event_loop::Subscriber;

const _: () = assert!(api::MAX_VIRTIO_DEVICES <= VIRTIO_GSIS.len());

/// What kind of device a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `drives[i]`.
    Block(usize),
    /// `network-interfaces[i]`.
    Net(usize),
    /// `entropy`.
    Rng,
    /// `balloon`.
    Balloon,
    /// `vsock`.
    Vsock,
}

/// Where one device goes.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The device.
    pub kind: Kind,
    /// Its ID (the drive or interface ID, or the section name).
    pub id: String,
    /// Guest physical address of its register window.
    pub addr: u64,
    /// Its interrupt.
    pub gsi: u32,
}

impl Slot {
    /// The device's name in the metrics: its kind, and its ID for drives and interfaces.
    pub fn metrics_name(&self) -> String {
        match self.kind {
            Kind::Block(_) => format!("block_{}", self.id),
            Kind::Net(_) => format!("net_{}", self.id),
            Kind::Rng => "entropy".into(),
            Kind::Balloon => "balloon".into(),
            Kind::Vsock => "vsock".into(),
        }
    }
}

/// Places every configured device: the root drive first (so that it is `/dev/vda`), then the
/// other drives in order, the network interfaces in order, then the entropy device, the
/// balloon and the vsock device.
pub fn plan(config: &VmConfig) -> Vec<Slot> {
    let root = config.drives.iter().position(|d| d.is_root_device);
    let drives = root
        .into_iter()
        .chain((0..config.drives.len()).filter(|&i| Some(i) != root));
    let mut kinds: Vec<(Kind, String)> = drives
        .map(|i| (Kind::Block(i), config.drives[i].drive_id.clone()))
        .collect();
    let interfaces = config.network_interfaces.iter().enumerate();
    kinds.extend(interfaces.map(|(i, n)| (Kind::Net(i), n.iface_id.clone())));
    if config.entropy.is_some() {
        kinds.push((Kind::Rng, "entropy".into()));
    }
    if config.balloon.is_some() {
        kinds.push((Kind::Balloon, "balloon".into()));
    }
    if config.vsock.is_some() {
        kinds.push((Kind::Vsock, "vsock".into()));
    }
    kinds
        .into_iter()
        .zip(VIRTIO_GSIS)
        .enumerate()
        .map(|(i, ((kind, id), gsi))| Slot {
            kind,
            id,
            addr: VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW_SIZE,
            gsi,
        })
        .collect()
}

/// The devices as the DSDT describes them.
pub fn acpi_entries(slots: &[Slot]) -> Vec<VirtioMmio> {
    slots
        .iter()
        .map(|s| VirtioMmio {
            addr: s.addr as u32,
            size: MMIO_WINDOW_SIZE as u32,
            gsi: s.gsi,
        })
        .collect()
}

/// `boot_args` with what the kernel needs to know about the devices: each one as
/// `virtio_mmio.device=` (for kernels that take devices from the command line; stock kernels
/// find them through ACPI) and, for a root drive, `root=` as Firecracker sets it. They go
/// before a `--`, whose words belong to init.
pub fn kernel_args(config: &VmConfig, slots: &[Slot], boot_args: &str) -> String {
    let mut extra = String::new();
    for s in slots {
        extra.push_str(&format!(
            " virtio_mmio.device={}K@{:#x}:{}",
            MMIO_WINDOW_SIZE >> 10,
            s.addr,
            s.gsi
        ));
    }
    if let Some(root) = config.drives.iter().find(|d| d.is_root_device) {
        let device = match &root.partuuid {
            Some(uuid) => format!("PARTUUID={uuid}"),
            None => "/dev/vda".to_string(),
        };
        let mode = if root.is_read_only == Some(true) {
            "ro"
        } else {
            "rw"
        };
        extra.push_str(&format!(" root={device} {mode}"));
    }
    match boot_args.find(" -- ") {
        Some(at) => format!("{}{extra}{}", &boot_args[..at], &boot_args[at..]),
        None if boot_args.starts_with("-- ") => format!("{} {boot_args}", extra.trim_start()),
        None => format!("{boot_args}{extra}"),
    }
}

/// A device that is built and ready to be connected.
pub struct Built {
    /// Where it goes.
    pub slot: Slot,
    /// Its transport, for the MMIO bus and the backend's notification and interrupt wiring.
    pub transport: Arc<Mutex<MmioTransport>>,
    /// The device, for the event loop.
    pub subscriber: Subscriber,
    /// What the device has done, for the metrics.
    pub counters: Arc<Counters>,
    /// The device itself, for the changes the VMM makes to a running one.
    pub handle: Handle,
}

/// A running device the VMM can change.
#[derive(Clone)]
pub enum Handle {
    /// A drive: its backing file and rate limiter.
    Block(Arc<Mutex<Block>>),
    /// A network interface: its rate limiters.
    Net(Arc<Mutex<Net>>),
    /// The balloon: its target and statistics period.
    Balloon(Arc<Mutex<Balloon>>),
    /// Nothing to change.
    Fixed,
}

/// The buckets of a configured rate limiter.
pub fn buckets(config: &Option<api::RateLimiter>) -> (Option<BucketConfig>, Option<BucketConfig>) {
    match config {
        Some(c) => (bucket(&c.bandwidth), bucket(&c.ops)),
        None => (None, None),
    }
}

/// A device as its transport and as the event loop see it.
type Shared = (Arc<Mutex<dyn VirtioDevice>>, Subscriber);

/// One device behind one lock, seen by its transport and by the event loop.
fn shared<D>(device: D) -> Shared
where
    D: VirtioDevice + MutEventSubscriber + Send + 'static,
{
    shared_with_handle(device).0
}

/// As [`shared`], and the device itself.
fn shared_with_handle<D>(device: D) -> (Shared, Arc<Mutex<D>>)
where
    D: VirtioDevice + MutEventSubscriber + Send + 'static,
{
    let device = Arc::new(Mutex::new(device));
    ((device.clone(), device.clone()), device)
}

fn bucket(b: &Option<api::TokenBucket>) -> Option<BucketConfig> {
    b.as_ref().filter(|b| b.size > 0).map(|b| BucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst.unwrap_or(0),
        refill_time_ms: b.refill_time,
    })
}

fn limiter(config: &Option<api::RateLimiter>) -> std::io::Result<RateLimiter> {
    let (bytes, ops) = buckets(config);
    RateLimiter::new(bytes, ops)
}

/// `network-interfaces[i]` on its tap. A tap that cannot be used is an error naming the
/// interface and the tap.
fn net_device(config: &VmConfig, i: usize) -> Result<Net, String> {
    let n = &config.network_interfaces[i];
    let named =
        |e: &dyn std::fmt::Display| format!("network-interfaces[{i}] ({}): {e}", n.iface_id);
    let tap = Tap::open(&n.host_dev_name).map_err(|e| named(&e))?;
    let mac = n.guest_mac.as_deref().and_then(api::devices::parse_mac);
    let (rx, tx) = (limiter(&n.rx_rate_limiter), limiter(&n.tx_rate_limiter));
    Net::new(
        &n.iface_id,
        tap,
        mac,
        rx.map_err(|e| named(&e))?,
        tx.map_err(|e| named(&e))?,
    )
    .map_err(|e| named(&e))
}

/// Builds the devices `slots` describe over guest memory `mem`. A disk or tap that cannot be
/// used is an error naming the drive or interface and its file or tap; a vsock socket that
/// cannot be made names `vsock.uds_path`.
pub fn build(
    config: &VmConfig,
    slots: &[Slot],
    mem: &Arc<GuestMemory>,
) -> Result<Vec<Built>, String> {
    slots
        .iter()
        .map(|slot| {
            let io = |e: std::io::Error| format!("{}: {e}", slot.id);
            let mut handle = Handle::Fixed;
            let ((device, subscriber), name) = match slot.kind {
                Kind::Block(i) => {
                    let drive = &config.drives[i];
                    let path = drive
                        .path_on_host
                        .as_deref()
                        .ok_or_else(|| format!("drives[{i}].path_on_host is required"))?;
                    let read_only = drive.is_read_only == Some(true);
                    let disk = Disk::open(path, read_only, &drive.drive_id)
                        .map_err(|e| format!("drives[{i}] ({}): {e}", drive.drive_id))?;
                    let block = Block::new(
                        &drive.drive_id,
                        disk,
                        limiter(&drive.rate_limiter).map_err(io)?,
                    )
                    .map_err(io)?;
                    let (shared, block) = shared_with_handle(block);
                    handle = Handle::Block(block);
                    (shared, format!("virtio-blk {}", drive.drive_id))
                }
                Kind::Net(i) => {
                    let (shared, net) = shared_with_handle(net_device(config, i)?);
                    handle = Handle::Net(net);
                    (shared, format!("virtio-net {}", slot.id))
                }
                Kind::Rng => {
                    let section = config.entropy.as_ref().and_then(|e| e.rate_limiter.clone());
                    let rng = Rng::new(limiter(&section).map_err(io)?).map_err(io)?;
                    (shared(rng), "virtio-rng".to_string())
                }
                Kind::Balloon => {
                    let b = config.balloon.as_ref().ok_or("balloon section missing")?;
                    let period = (b.stats_polling_interval_s > 0)
                        .then(|| Duration::from_secs(u64::from(b.stats_polling_interval_s)));
                    let balloon =
                        Balloon::new(b.amount_mib, b.deflate_on_oom, period).map_err(io)?;
                    let (shared, balloon) = shared_with_handle(balloon);
                    handle = Handle::Balloon(balloon);
                    (shared, "virtio-balloon".to_string())
                }
                Kind::Vsock => {
                    let section = config.vsock.as_ref().ok_or("vsock: no section")?;
                    let listener = Listener::bind(&section.uds_path)
                        .map_err(|e| format!("vsock.uds_path: {e}"))?;
                    let vsock = Vsock::new(u64::from(section.guest_cid), listener).map_err(io)?;
                    (shared(vsock), "virtio-vsock".to_string())
                }
            };
            let counters = devices::bus::lock(&device).core().counters.clone();
            let transport = MmioTransport::new(device, (**mem).clone(), name).map_err(io)?;
            Ok(Built {
                slot: slot.clone(),
                transport: Arc::new(Mutex::new(transport)),
                subscriber,
                counters,
                handle,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> VmConfig {
        VmConfig::from_json(json, "test").unwrap()
    }

    #[test]
    fn the_root_drive_comes_first_and_every_device_gets_a_window_and_an_interrupt() {
        let c = config(
            r#"{"boot-source": {"kernel_image_path": "k"},
                "drives": [
                  {"drive_id": "data", "path_on_host": "d", "is_root_device": false},
                  {"drive_id": "rootfs", "path_on_host": "r", "is_root_device": true,
                   "is_read_only": true}],
                "entropy": {}}"#,
        );
        let slots = plan(&c);
        let ids: Vec<&str> = slots.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["rootfs", "data", "entropy"]);
        assert_eq!(slots[1].addr, VIRTIO_MMIO_START + MMIO_WINDOW_SIZE);
        assert_eq!(slots[2].gsi, VIRTIO_GSIS[2]);
        let args = kernel_args(&c, &slots, "console=ttyS0 -- init-arg");
        assert_eq!(
            args,
            "console=ttyS0 virtio_mmio.device=4K@0xc0000000:5 \
             virtio_mmio.device=4K@0xc0001000:6 virtio_mmio.device=4K@0xc0002000:7 \
             root=/dev/vda ro -- init-arg"
        );
    }

    #[test]
    fn network_interfaces_come_after_the_drives_in_order() {
        let c = config(
            r#"{"boot-source": {"kernel_image_path": "k"},
                "drives": [{"drive_id": "d", "path_on_host": "d", "is_root_device": false}],
                "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"},
                                       {"iface_id": "eth1", "host_dev_name": "tap1"}],
                "entropy": {}}"#,
        );
        let kinds: Vec<Kind> = plan(&c).iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Block(0), Kind::Net(0), Kind::Net(1), Kind::Rng]
        );
    }

    #[test]
    fn a_partuuid_names_the_root_partition() {
        let c = config(
            r#"{"boot-source": {"kernel_image_path": "k"},
                "drives": [{"drive_id": "r", "path_on_host": "r", "is_root_device": true,
                            "partuuid": "0eaa91a0-01"}]}"#,
        );
        let args = kernel_args(&c, &plan(&c), "quiet");
        assert!(args.ends_with("root=PARTUUID=0eaa91a0-01 rw"), "{args}");
    }
}
