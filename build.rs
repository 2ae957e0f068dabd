//! Generates the gRPC code for `proto/paygate/v1` with the vendored protoc.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PROTOC", protoc) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let include = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::LeanCodec")
        .file_descriptor_set_path(out.join("paygate_descriptor.bin"))
        .compile_protos(&[PathBuf::from("proto/paygate/v1/payments.proto")], &[PathBuf::from("proto"), include])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
