//! Whatever bytes arrive, the contract's edge answers with an error, never a
//! panic: request messages decoded from arbitrary bytes and then checked
//! (the instruction header, the identities), and receipts verified from
//! arbitrary payloads and signatures. Property tests over raw bytes: 256
//! cases each in CI (`PROPTEST_CASES=100000 cargo test -p dsr-connector
//! --test malformed` for a longer run by hand).

use std::collections::BTreeSet;

use dsr_connector::grpc::{identities_from_pb, instruction, verify_receipt};
use dsr_domain::identity::Organisationsnummer;
use dsr_proto::system::v1 as pb;
use proptest::prelude::*;
use prost::Message as _;

proptest! {
    #[test]
    fn any_bytes_as_a_write_are_refused_or_checked_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        // What tonic's codec would decode; a decode error is the layer's
        // INVALID_ARGUMENT, anything decoded goes through the checks.
        if let Ok(req) = pb::EraseRequest::decode(bytes.as_slice()) {
            let controllers: BTreeSet<Organisationsnummer> =
                [Organisationsnummer::parse("556134-1248").unwrap()].into();
            let _ = instruction(req.instruction, "crm", &controllers);
        }
        if let Ok(req) = pb::LocateRequest::decode(bytes.as_slice()) {
            let _ = identities_from_pb(req.identities, "identities");
        }
    }

    #[test]
    fn any_receipt_bytes_fail_verification_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let signed = pb::SignedReceipt {
            payload,
            key_id: "k".into(),
            signature,
        };
        let keys = [pb::SigningKey {
            key_id: "k".into(),
            algorithm: "Ed25519".into(),
            public_key: key,
            not_after: None,
        }];
        prop_assert!(verify_receipt(&signed, &keys).is_err());
    }
}
