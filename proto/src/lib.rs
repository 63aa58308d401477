//! ward's gRPC API: the `ward.v1` package.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ward.v1");
}
