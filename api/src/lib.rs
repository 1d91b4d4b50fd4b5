//! Ember's configuration model.
//!
//! One serde model of a microVM, in Firecracker's `--config-file` schema, shared by the command
//! line (`ember --config-file`) and, later, the REST API. Parsing rejects unknown keys and names
//! the offending field; [`VmConfig::validate`] checks ranges and cross-field rules.

mod config;
pub mod devices;

pub use config::*;
pub use devices::MAX_VIRTIO_DEVICES;
