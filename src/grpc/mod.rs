//! The gRPC layer: generated calgate.v1 code, thin handlers, request
//! conversion, authentication and the status mapping.

pub mod codec;
pub mod connections;
pub mod convert;
pub(crate) mod deadline;
pub mod decode_budget;
pub(crate) mod interceptor;
mod service;
pub(crate) mod status;
pub mod stream_limits;
pub mod wire_scan;

pub use service::CalendarWriteApi;

/// Code generated from `proto/calgate/v1/calgate.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("calgate.v1");

    /// Encoded descriptor set served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("calgate_descriptor");
}
