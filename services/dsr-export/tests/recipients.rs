//! Who an access package says received the person's data (Art. 15(1)(c)):
//! the transfer registry is asked for the recipients of what the subject
//! map names while the records are read, and asked again for what the
//! records showed when that is more, so the package lists exactly the
//! recipients of the categories found. A request has one package.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsr_domain::category::{LegalBasis, Sensitivity};
use dsr_domain::group::Group;
use dsr_domain::identity::Organisationsnummer;
use dsr_export::exporter::Exporter;
use dsr_export::model::{
    BuildRequest, Category, Disclosure, DisclosureText, Field, Header, Kind, Language, MapStore,
    MapSystem, Record, RecordBatches, SourceError, Sources, SubjectMap, SystemInfo,
};
use dsr_export::store::Packages;
use dsr_store::testing::TestDb;
use tokio::sync::Notify;

mod support;

const EMAIL: &str = "contact.email";
const PHONE: &str = "contact.phone";

/// A system declaring an e-mail and a phone category whose one record
/// holds `fields`, and a registry with one recipient per category. The
/// record is given only once the registry was asked, or after five
/// seconds (`asked_while_reading` says which).
struct Fake {
    fields: Vec<&'static str>,
    asked: Mutex<Vec<(Vec<String>, Vec<String>)>>,
    registry_called: Notify,
    asked_while_reading: Mutex<Option<bool>>,
}

fn category(id: &str) -> Category {
    Category {
        id: id.into(),
        display_name: id.into(),
        sensitivity: Sensitivity::Ordinary,
        purposes: vec!["customer relationship".into()],
        legal_basis: Some(LegalBasis::Contract),
        retention: "while a customer".into(),
        retention_legal_ground: String::new(),
        source: String::new(),
        provided_by_subject: true,
        portable: true,
        automated_decision: false,
        automated_decision_logic: String::new(),
        texts: BTreeMap::new(),
    }
}

#[tonic::async_trait]
impl Sources for Fake {
    async fn describe(&self, system: &str) -> Result<SystemInfo, SourceError> {
        Ok(SystemInfo {
            id: system.into(),
            display_name: "CRM".into(),
            display_names: BTreeMap::new(),
            role: "controller".into(),
            operator_recipient_id: String::new(),
            categories: vec![category(EMAIL), category(PHONE)],
        })
    }

    async fn access(
        &self,
        _system: &str,
        _header: &Header,
        stores: Vec<MapStore>,
        _portable_only: bool,
    ) -> Result<RecordBatches, SourceError> {
        let asked = tokio::time::timeout(Duration::from_secs(5), self.registry_called.notified())
            .await
            .is_ok();
        *self.asked_while_reading.lock().unwrap() = Some(asked);
        let record = Record {
            store: stores[0].store.clone(),
            key: stores[0].keys[0].clone(),
            fields: self
                .fields
                .iter()
                .map(|c| Field {
                    name: (*c).into(),
                    category: (*c).into(),
                    value: Some("x".into()),
                })
                .collect(),
            restricted: false,
            objected_purposes: Vec::new(),
            attested_by: None,
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(vec![record])])))
    }

    async fn disclosures(
        &self,
        _controller: &Organisationsnummer,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Disclosure>, SourceError> {
        self.asked
            .lock()
            .unwrap()
            .push((systems.to_vec(), categories.to_vec()));
        self.registry_called.notify_one();
        Ok(categories
            .iter()
            .map(|c| Disclosure {
                recipient_id: format!("receives-{c}"),
                name: format!("Receives {c}"),
                role: "processor".into(),
                country: "SE".into(),
                purpose: "service".into(),
                categories: vec![c.clone()],
                outside_eea: false,
                lawful: true,
                transfer_basis: "within_eea".into(),
                safeguard: String::new(),
                decision_reference: String::new(),
                sv: DisclosureText {
                    name: format!("Tar emot {c}"),
                    purpose: "tjänst".into(),
                    safeguard: String::new(),
                },
            })
            .collect())
    }
}

/// An exporter over `Fake` sources whose record holds `fields`, storing
/// in a fresh database and directory.
async fn exporter(
    fields: Vec<&'static str>,
) -> (TestDb, tempfile::TempDir, Packages, Exporter, Arc<Fake>) {
    let (db, dir, packages) = support::store(7).await;
    let fake = Arc::new(Fake {
        fields,
        asked: Mutex::new(Vec::new()),
        registry_called: Notify::new(),
        asked_while_reading: Mutex::new(None),
    });
    let exporter = Exporter::new(
        fake.clone(),
        packages.clone(),
        Arc::new(Group::shipped()),
        chrono::Duration::days(30),
    );
    (db, dir, packages, exporter, fake)
}

/// The access request of a person the map finds in the CRM with e-mail
/// only.
fn request() -> BuildRequest {
    BuildRequest {
        request_id: "request-1".into(),
        kind: Kind::Access,
        controller: Group::shipped().controllers[0].organisation_number.clone(),
        due_date: "2027-01-07".parse().unwrap(),
        language: Language::En,
        map: SubjectMap {
            identities: Vec::new(),
            systems: vec![
                MapSystem {
                    system_id: "crm".into(),
                    stores: vec![MapStore {
                        store: "contacts".into(),
                        keys: vec!["1".into()],
                        categories: vec![EMAIL.into()],
                    }],
                },
                MapSystem {
                    system_id: "print-mail".into(),
                    stores: Vec::new(),
                },
            ],
            partial: false,
        },
        submitted_by: None,
    }
}

/// Builds the package of [`request`] whose record holds `fields`; returns
/// the registry's questions, whether it was asked while the records were
/// read, and the package's recipient ids.
async fn build(fields: Vec<&'static str>) -> (Vec<(Vec<String>, Vec<String>)>, bool, Vec<String>) {
    let (db, _dir, packages, exporter, fake) = exporter(fields).await;
    let info = exporter.build(request()).await.unwrap();
    let mut rx = packages.open(&info.id, "access.json").await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = rx.recv().await {
        bytes.extend(chunk.unwrap());
    }
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let recipients = doc["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient_id"].as_str().unwrap().to_owned())
        .collect();
    let asked = fake.asked.lock().unwrap().clone();
    let during = fake.asked_while_reading.lock().unwrap().unwrap();
    db.finish().await;
    (asked, during, recipients)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn the_registry_is_asked_while_the_records_are_read_once_when_they_hold_what_the_map_names() {
    let (asked, during, recipients) = build(vec![EMAIL]).await;
    assert!(during, "the registry was asked only after the records");
    assert_eq!(asked, vec![(strings(&["crm"]), strings(&[EMAIL]))]);
    assert_eq!(recipients, strings(&["receives-contact.email"]));
}

#[tokio::test]
async fn records_holding_a_category_the_map_did_not_name_have_its_recipients_listed_too() {
    let (asked, _, recipients) = build(vec![EMAIL, PHONE]).await;
    assert_eq!(
        asked,
        vec![
            (strings(&["crm"]), strings(&[EMAIL])),
            (strings(&["crm"]), strings(&[EMAIL, PHONE])),
        ]
    );
    assert_eq!(
        recipients,
        strings(&["receives-contact.email", "receives-contact.phone"])
    );
}

/// A build asked again for the same request (the orchestrator retrying
/// after it lost the first answer) gives the package built first, and no
/// second one is kept.
#[tokio::test]
async fn a_request_built_again_gets_the_package_built_first() {
    let (db, dir, packages, exporter, _) = exporter(vec![EMAIL]).await;
    let first = exporter.build(request()).await.unwrap();
    let again = exporter.build(request()).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at, first.created_at);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .collect();
    assert_eq!(left.len(), 1, "one package file: {left:?}");
    assert_eq!(
        packages.by_request("request-1").await.unwrap().unwrap().id,
        first.id
    );
    db.finish().await;
}
