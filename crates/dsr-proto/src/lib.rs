//! Code generated from `proto/` and the descriptor set for gRPC reflection.
//! Nothing else lives here: conversion to domain types happens in each
//! service's `grpc` module.

/// Shared nouns: identities, controllers, categories, legal bases, pages.
pub mod common {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.common.v1");
    }
}

/// Discovery: the registry of data systems and Locate across them.
pub mod discovery {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.discovery.v1");
    }
}

/// Erasure: plans, receipts, deferred erasures, holds, replay.
pub mod erasure {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.erasure.v1");
    }
}

/// Export: access and portability packages.
pub mod export {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.export.v1");
    }
}

/// Identity verification.
pub mod identity {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.identity.v1");
    }
}

/// Personal-data breaches and complaints to the DPO.
pub mod incident {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.incident.v1");
    }
}

/// Tasks for vendors without an API (manual systems).
pub mod manual {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.manual.v1");
    }
}

/// The portals' API: data-subject requests.
pub mod orchestrator {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.orchestrator.v1");
    }
}

/// The contract every data system implements.
pub mod system {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.system.v1");
    }
}

/// The transfer registry API.
pub mod transfer {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("dsr.transfer.v1");
    }
}

/// Encoded `FileDescriptorSet` of every DSR Mesh proto file (and the
/// well-known types they import), for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dsr_descriptor.bin"));
