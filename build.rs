//! Compiles the calgate.v1 protos and writes the descriptor set that server
//! reflection serves. protoc comes from `protoc-bin-vendored` so a fresh
//! machine needs no system package; `PROTOC` overrides it when set.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` on every message: the codec looks up a request's shape by name.
    config.enable_type_names();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("calgate_descriptor.bin"))
        // The vendored google/rpc/status.proto is tonic-types' Status.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // prost's codec behind a wire pre-scan that bounds what decoding allocates.
        .codec_path("crate::grpc::codec::BoundedCodec")
        .compile_with_config(config, &["proto/calgate/v1/calgate.proto"], &["proto"])?;
    // Declaring any rerun trigger replaces cargo's default (rerun on any change),
    // so name both inputs: every file under proto/, and PROTOC.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
