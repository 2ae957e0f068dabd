//! paygate: a payments gateway that takes payments through hosted-checkout providers behind one
//! gRPC API (`paygate.v1.PaymentService`), with an HTTP side for callbacks and hosted pages.

pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod providers;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod watch;

/// Generated protobuf and gRPC code for `paygate.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("paygate.v1");

    /// Encoded descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("paygate_descriptor");
}
