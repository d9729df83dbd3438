//! The contract's own rules for how it grows, read from the compiled
//! descriptors (docs/api-evolution.md):
//!
//! - a timestamp field is named `*_time` (AIP-142); the other names v1
//!   shipped with (`*_at` mostly) are listed here and stay until v2, no new
//!   one joins them;
//! - the nouns v1 declares twice (a restriction's ground, a correction) say
//!   the same in both packages, names and numbers, until v2 keeps one in
//!   `dsr.common.v1`;
//! - a field marked deprecated stays documented with what replaces it.

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// v1's timestamp fields not named `*_time` (package.message.field),
/// kept as they are for the wire and the JSON mapping until v2.
const V1_OTHER_NAMES: &[&str] = &[
    "dsr.discovery.v1.SystemInfo.described_at",
    "dsr.erasure.v1.Hold.lifted_at",
    "dsr.erasure.v1.Hold.placed_at",
    "dsr.erasure.v1.Plan.created_at",
    "dsr.erasure.v1.ReplayErasuresRequest.since",
    "dsr.erasure.v1.StoredReceipt.received_at",
    "dsr.identity.v1.StartVerificationResponse.challenge_expires_at",
    "dsr.identity.v1.VerificationToken.expires_at",
    "dsr.manual.v1.Task.created_at",
    "dsr.manual.v1.Task.due_at",
    "dsr.manual.v1.Task.escalated_at",
    "dsr.orchestrator.v1.AuditEntry.time",
    "dsr.orchestrator.v1.Step.done_at",
    "dsr.orchestrator.v1.Step.next_attempt_at",
    "dsr.system.v1.Attestation.attested_at",
    "dsr.system.v1.Instruction.expires_at",
    "dsr.system.v1.Instruction.issued_at",
    "dsr.system.v1.Receipt.completed_at",
    "dsr.system.v1.SigningKey.not_after",
    "dsr.system.v1.StoreResult.backup_expiry",
    "dsr.system.v1.StoreResult.hidden_at",
    "dsr.system.v1.StoreResult.purge_deadline",
    "dsr.transfer.v1.CheckTransferRequest.at",
];

fn set() -> FileDescriptorSet {
    FileDescriptorSet::decode(dsr_proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// Every message of the contract (nested ones too), by full name.
fn messages(set: &FileDescriptorSet) -> Vec<(String, DescriptorProto)> {
    fn walk(prefix: &str, m: &DescriptorProto, out: &mut Vec<(String, DescriptorProto)>) {
        let name = format!("{prefix}.{}", m.name());
        for n in &m.nested_type {
            walk(&name, n, out);
        }
        out.push((name, m.clone()));
    }
    let mut out = Vec::new();
    for f in set.file.iter().filter(|f| f.package().starts_with("dsr.")) {
        for m in &f.message_type {
            walk(f.package(), m, &mut out);
        }
    }
    out
}

#[test]
fn timestamps_are_named_time_but_for_the_names_v1_shipped_with() {
    let set = set();
    let mut at = Vec::new();
    for (name, m) in messages(&set) {
        for f in &m.field {
            if f.r#type() == Type::Message
                && f.type_name() == ".google.protobuf.Timestamp"
                && !f.name().ends_with("_time")
            {
                at.push(format!("{name}.{}", f.name()));
            }
        }
    }
    at.sort();
    let mut known: Vec<String> = V1_OTHER_NAMES.iter().map(|s| (*s).to_owned()).collect();
    known.sort();
    assert_eq!(
        at, known,
        "a new timestamp field is named *_time (AIP-142); the v1 *_at fields stay as they are"
    );
}

#[test]
fn the_nouns_v1_declares_twice_say_the_same_in_both_packages() {
    let set = set();
    let file = |pkg: &str| {
        set.file
            .iter()
            .find(|f| f.package() == pkg)
            .unwrap_or_else(|| panic!("{pkg}"))
            .clone()
    };
    let (orch, era) = (file("dsr.orchestrator.v1"), file("dsr.erasure.v1"));
    let values = |f: &prost_types::FileDescriptorProto, e: &str| -> Vec<(String, i32)> {
        let e = f.enum_type.iter().find(|x| x.name() == e).unwrap();
        e.value
            .iter()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect()
    };
    assert_eq!(
        values(&orch, "RestrictionGround"),
        values(&era, "RestrictionGround")
    );
    let fields = |f: &prost_types::FileDescriptorProto, m: &str| -> Vec<(String, i32, Type)> {
        let m = f.message_type.iter().find(|x| x.name() == m).unwrap();
        m.field
            .iter()
            .map(|x| (x.name().to_owned(), x.number(), x.r#type()))
            .collect()
    };
    assert_eq!(fields(&orch, "Correction"), fields(&era, "Correction"));
}

#[test]
fn a_deprecated_field_says_what_replaces_it() {
    let set = set();
    let mut undocumented = Vec::new();
    let mut deprecated = 0;
    for f in set.file.iter().filter(|f| f.package().starts_with("dsr.")) {
        let info = f.source_code_info.clone().unwrap_or_default();
        // Paths of top-level messages' fields: [4, message, 2, field].
        for (mi, m) in f.message_type.iter().enumerate() {
            for (fi, field) in m.field.iter().enumerate() {
                if !field.options.as_ref().is_some_and(|o| o.deprecated()) {
                    continue;
                }
                deprecated += 1;
                let path = [4, i32::try_from(mi).unwrap(), 2, i32::try_from(fi).unwrap()];
                let says = info
                    .location
                    .iter()
                    .find(|l| l.path == path)
                    .map(|l| l.leading_comments().to_owned())
                    .unwrap_or_default();
                if !says.contains("Deprecated") || !says.contains('`') {
                    undocumented.push(format!("{}.{}", m.name(), field.name()));
                }
            }
        }
    }
    assert!(
        deprecated >= 9,
        "the deprecated v1 fields are read from the descriptors"
    );
    assert!(undocumented.is_empty(), "{undocumented:?}");
}
