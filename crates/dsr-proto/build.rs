//! Compiles `proto/` with the pure-Rust `protox` compiler (no `protoc` on the
//! build machine) and writes the descriptor set that reflection serves.
use std::{env, path::PathBuf};

const PROTO_ROOT: &str = "../../proto";
const PROTOS: &[&str] = &[
    "dsr/common/v1/common.proto",
    "dsr/discovery/v1/discovery.proto",
    "dsr/erasure/v1/erasure.proto",
    "dsr/export/v1/export.proto",
    "dsr/identity/v1/identity.proto",
    "dsr/incident/v1/incident.proto",
    "dsr/manual/v1/manual.proto",
    "dsr/orchestrator/v1/orchestrator.proto",
    "dsr/system/v1/system.proto",
    "dsr/transfer/v1/transfer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("dsr_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
