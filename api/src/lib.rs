//! Ember's configuration model and its REST API.
//!
//! One serde model of a microVM, in Firecracker's `--config-file` schema, shared by the command
//! line (`ember --config-file`), the REST API and `GET /vm/config`. Parsing rejects unknown
//! keys and names the offending field; [`VmConfig::validate`] checks ranges and cross-field
//! rules. The API server ([`server`]) parses HTTP requests into [`request::Request`]s and
//! hands them to the VMM over a channel; it knows nothing of the VMM itself.

mod config;
pub mod counters;
pub mod devices;
pub mod request;
pub mod routes;
pub mod server;

pub use config::*;
pub use devices::MAX_VIRTIO_DEVICES;
