//! Compiles the .proto files with protox (pure Rust), so building ward
//! needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["ward/v1/agent.proto", "ward/v1/coordinator.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
