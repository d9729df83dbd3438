//! The workspace's layering, read from `cargo metadata`:
//!
//! - a service (a crate under `services/`) does not depend on another
//!   service: services talk over gRPC, and what they share lives in
//!   `crates/` (the contract in `dsr-proto`, tokens in `dsr-auth`, rules in
//!   `dsr-domain`). A service's tests may run against another service's
//!   crate as a real peer (dev-dependencies);
//! - `dsr-domain` (the rules) knows no transport, database or runtime:
//!   no tonic, prost, sea-orm, sqlx or tokio;
//! - crates made for tests (tempfile, proptest) are not normal
//!   dependencies, except where a command uses them at run time (`dsr
//!   bench` seeds its databases in a temporary directory).
//!
//! `dsr` itself (`crates/dsr-cli`) composes every service: it is the one
//! crate that links them.
//!
//! And, read from the sources: no service builds a client of the data
//! systems of its own; discovery, export and erasure share
//! `dsr_mesh_client::DataSystems` (its clients, its Describe cache, the
//! instruction header); the wire's types (generated code, prost, a gRPC
//! status) stay in each service's gRPC edge, its `grpc` modules.

use std::process::Command;

use serde_json::Value;

/// Crates meant for tests, and the workspace crates that may use one at run
/// time (with why).
const TEST_ONLY: &[(&str, &[&str])] = &[
    // `dsr bench` creates its databases in a temporary directory.
    ("tempfile", &["dsr-cli"]),
    ("proptest", &[]),
];

/// What the rules pure of any transport, database or runtime must not use.
const NOT_IN_DOMAIN: &[&str] = &["tonic", "prost", "sea-orm", "sqlx", "tokio"];

/// Every breach of the rules in a `cargo metadata --no-deps` document.
fn violations(meta: &Value) -> Vec<String> {
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let is_service = |name: &str| {
        packages.iter().any(|p| {
            p["name"] == name
                && p["manifest_path"]
                    .as_str()
                    .is_some_and(|m| m.replace('\\', "/").contains("/services/"))
        })
    };
    let mut out = Vec::new();
    for p in &packages {
        let name = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            // null: a normal dependency; "dev" or "build" otherwise.
            let kind = d["kind"].as_str();
            if is_service(name) && is_service(dep) && kind != Some("dev") {
                out.push(format!("service {name} depends on service {dep}"));
            }
            if name == "dsr-domain" && NOT_IN_DOMAIN.contains(&dep) && kind != Some("dev") {
                out.push(format!("dsr-domain depends on {dep}"));
            }
            if kind.is_none()
                && let Some((_, allowed)) = TEST_ONLY.iter().find(|(t, _)| *t == dep)
                && !allowed.contains(&name)
                && d["optional"] != true
            {
                out.push(format!(
                    "{name} has the test crate {dep} as a normal dependency"
                ));
            }
        }
    }
    out
}

/// Where a service's sources (path, text) build a data-system client of
/// their own instead of using `dsr_mesh_client::DataSystems`.
fn own_system_clients(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, text)| {
            text.contains("data_system_client::DataSystemClient")
                || text.contains("DataSystemClient::new")
        })
        .map(|(path, _)| format!("{path} builds its own DataSystem client"))
        .collect()
}

/// The Rust sources under `services/*/src`, with paths from the workspace.
fn service_sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut out = Vec::new();
    for service in std::fs::read_dir(root.join("services")).unwrap().flatten() {
        let src = service.path().join("src");
        if src.is_dir() {
            walk(&src, root, &mut out);
        }
    }
    out
}

/// Where the wire's types may appear in a service: its gRPC edge, the
/// modules named `grpc` (`grpc.rs`, `grpc/`), which parse, call the domain
/// and map. Outside the rule, with why: the manual vendor's task API is a
/// gRPC service of its own (`manual/api.rs`); the privacy centre is a
/// client of the mesh whose pages render its answers.
fn outside_the_wire_edge(path: &str) -> bool {
    let path = path.replace('\\', "/");
    !(path.ends_with("/grpc.rs")
        || path.contains("/grpc/")
        || path.ends_with("dsr-system-sql/src/manual/api.rs")
        || path.starts_with("services/dsr-portal/"))
}

/// The service modules outside their gRPC edge that use the wire's types
/// (the generated code, prost) or answer with a gRPC status.
fn wire_types_outside_the_edge(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(path, _)| outside_the_wire_edge(path))
        .filter_map(|(path, text)| {
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            [
                "dsr_proto::",
                "prost::",
                "prost_types::",
                "tonic::Status",
                "tonic::Request",
            ]
            .iter()
            .find(|needle| code.contains(*needle))
            .map(|needle| format!("{path} uses {needle} outside the gRPC edge"))
        })
        .collect()
}

#[test]
fn the_wire_types_stay_in_each_services_grpc_edge() {
    let files = service_sources();
    assert!(
        files
            .iter()
            .any(|(p, _)| p.ends_with("dsr-orchestrator/src/ledger.rs")),
        "the services' sources were found"
    );
    assert_eq!(wire_types_outside_the_edge(&files), Vec::<String>::new());
    // The check names a breach, and leaves the edge alone.
    assert_eq!(
        wire_types_outside_the_edge(&[
            (
                "services/x/src/ledger.rs".into(),
                "use dsr_proto::orchestrator::v1 as pb;".into()
            ),
            (
                "services/x/src/grpc/mod.rs".into(),
                "use dsr_proto::orchestrator::v1 as pb;".into()
            ),
            (
                "services/x/src/queue.rs".into(),
                "// dsr_proto:: in a comment".into()
            ),
        ]),
        vec!["services/x/src/ledger.rs uses dsr_proto:: outside the gRPC edge".to_owned()]
    );
}

/// The Rust sources of the `dsr` binary (this package), paths from the
/// workspace.
fn cli_sources() -> Vec<(String, String)> {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut out = Vec::new();
    let mut dirs = vec![root.join("crates/dsr-cli/src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// Where the binary wires a service's parts itself (its gRPC service, its
/// workers, its clients) instead of calling the service's
/// `assembly::build`.
fn wired_outside_the_service(files: &[(String, String)]) -> Vec<String> {
    const PARTS: [&str; 6] = [
        "::grpc::service(",
        "Worker::new(",
        "Eraser::new(",
        "Exporter::new(",
        "Locator::new(",
        "Verifier::new(",
    ];
    files
        .iter()
        .filter_map(|(path, text)| {
            PARTS
                .iter()
                .find(|p| text.contains(*p))
                .map(|p| format!("{path} wires {p}..) itself"))
        })
        .collect()
}

#[test]
fn the_binary_composes_each_service_through_its_assembly() {
    let cli = cli_sources();
    assert!(cli.iter().any(|(p, _)| p.ends_with("services/compose.rs")));
    assert_eq!(wired_outside_the_service(&cli), Vec::<String>::new());
    // Every service has its assembly.
    let services = service_sources();
    for s in [
        "dsr-transfer-registry",
        "dsr-identity",
        "dsr-discovery",
        "dsr-export",
        "dsr-erasure",
        "dsr-orchestrator",
        "dsr-system-sql",
    ] {
        assert!(
            services
                .iter()
                .any(|(p, text)| p.ends_with(&format!("{s}/src/assembly.rs"))
                    && text.contains("pub fn build")
                    || p.ends_with(&format!("{s}/src/assembly.rs"))
                        && text.contains("pub async fn build")),
            "{s} has no assembly::build"
        );
    }
    // The check names a breach.
    assert_eq!(
        wired_outside_the_service(&[(
            "crates/dsr-cli/src/up.rs".into(),
            "set.add(dsr_erasure::grpc::service(eraser, v));".into()
        )]),
        vec!["crates/dsr-cli/src/up.rs wires ::grpc::service(..) itself".to_owned()]
    );
}

#[test]
fn no_service_builds_its_own_data_system_client() {
    let files = service_sources();
    assert!(
        files.iter().any(|(p, _)| p.contains("dsr-export")),
        "the services' sources were found"
    );
    assert_eq!(own_system_clients(&files), Vec::<String>::new());
    // The check names a breach.
    assert_eq!(
        own_system_clients(&[(
            "services/x/src/grpc.rs".into(),
            "let c = DataSystemClient::new(channel);".into()
        )]),
        vec!["services/x/src/grpc.rs builds its own DataSystem client".to_owned()]
    );
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_workspace_keeps_its_layers() {
    let meta = metadata();
    let names: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // The rules are read over the real workspace.
    for expected in ["dsr-domain", "dsr-orchestrator", "dsr-identity", "dsr-cli"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert_eq!(violations(&meta), Vec::<String>::new());
}

/// The check itself: each rule broken once in a document shaped like
/// cargo's is named.
#[test]
fn a_broken_layer_is_named() {
    let meta = serde_json::json!({
        "packages": [
            {
                "name": "dsr-orchestrator",
                "manifest_path": "/w/services/dsr-orchestrator/Cargo.toml",
                "dependencies": [
                    { "name": "dsr-identity", "kind": null },
                    { "name": "dsr-system-sql", "kind": "dev" },
                    { "name": "tempfile", "kind": null, "optional": false }
                ]
            },
            {
                "name": "dsr-identity",
                "manifest_path": "/w/services/dsr-identity/Cargo.toml",
                "dependencies": []
            },
            {
                "name": "dsr-system-sql",
                "manifest_path": "/w/services/dsr-system-sql/Cargo.toml",
                "dependencies": []
            },
            {
                "name": "dsr-domain",
                "manifest_path": "/w/crates/dsr-domain/Cargo.toml",
                "dependencies": [
                    { "name": "tokio", "kind": null },
                    { "name": "tokio", "kind": "dev" }
                ]
            },
            {
                "name": "dsr-store",
                "manifest_path": "/w/crates/dsr-store/Cargo.toml",
                "dependencies": [
                    { "name": "tempfile", "kind": null, "optional": true },
                    { "name": "tempfile", "kind": "dev" }
                ]
            }
        ]
    });
    assert_eq!(
        violations(&meta),
        [
            "service dsr-orchestrator depends on service dsr-identity",
            "dsr-orchestrator has the test crate tempfile as a normal dependency",
            "dsr-domain depends on tokio",
        ]
    );
}
