//! The reference systems on a real database (SQLite, or PostgreSQL with
//! DSR_TEST_POSTGRES_URL, or MariaDB/MySQL with DSR_TEST_MYSQL_URL): schema and seed, the manifest against the live
//! schema, index lookups, and the contract over gRPC.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::clock::Clock;
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use dsr_proto::system::v1::data_system_client::DataSystemClient;
use dsr_server::{ServerConfig, ServiceSet, serve};
use dsr_store::testing::TestDb;
use dsr_system_sql::grpc::{self, ProtoReceipts};
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::{self, Reference};
use dsr_system_sql::{schema, system::SqlSystem};
use prost::Message as _;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn seeded(r: Reference, subjects: usize) -> TestDb {
    let db = TestDb::system().await.unwrap();
    dsr_store::migrate::<dsr_connector::migration::Migrator>(&db.db)
        .await
        .unwrap();
    r.create_schema(&db.db).await.unwrap();
    r.seed(&db.db, subjects, 42, 0, reference::base_date())
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn manifests_match_their_schemas_and_a_bad_one_is_named() {
    for r in Reference::ALL {
        let db = seeded(r, 30).await;
        // Creating the schema again (a restart of `dsr serve --reference`)
        // changes nothing and fails nowhere.
        r.create_schema(&db.db).await.unwrap();
        let m = Manifest::parse(r.manifest(), r.manifest_name()).unwrap();
        schema::check(&db.db, &m, r.manifest_name()).await.unwrap();
        // The child tables whose link the database clears itself (ON DELETE
        // SET NULL); the connector detaches the rows it keeps in the others.
        let cleared = schema::cleared_on_delete(&db.db, &m).await.unwrap();
        let want: &[&str] = match r {
            Reference::Crm => &["kyc_documents", "pep_screenings", "survey_responses"],
            Reference::PrintMail => &[],
            Reference::Legal => &["case_documents", "cases"],
        };
        assert_eq!(
            cleared.iter().map(String::as_str).collect::<Vec<_>>(),
            want,
            "{}",
            r.id()
        );
        let broken = r.manifest().replacen(
            "restriction_column: restricted_at",
            "restriction_column: restricted_when",
            1,
        );
        let m = Manifest::parse(&broken, "broken.yaml").unwrap();
        let err = schema::check(&db.db, &m, "broken.yaml").await.unwrap_err();
        assert_eq!(err.field, "tables[0].restriction_column", "{err}");
        assert!(
            err.to_string().starts_with(
                "manifest broken.yaml: tables[0].restriction_column: no column restricted_when"
            ),
            "{err}"
        );
        db.finish().await;
    }
}

#[tokio::test]
#[allow(clippy::wildcard_enum_match_arm)]
async fn identity_lookups_use_indexes() {
    // Enough people for each controller's rows to be many (a table of a
    // few dozen rows is read whole by any planner).
    let db = seeded(Reference::Crm, 4000).await;
    // On PostgreSQL a small table is cheaper to scan (the seeding leaves
    // the planner its statistics): forbid scans, so the plan shows whether
    // an index can serve the lookup at all. In one transaction, so that the
    // setting and the plans are on the same connection of the pool.
    let conn = db.db.begin().await.unwrap();
    let postgres = db.backend() == DbBackend::Postgres;
    if postgres {
        conn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "SET LOCAL enable_seqscan = off",
        ))
        .await
        .unwrap();
    }
    let backend = db.backend();
    let sql = if backend == DbBackend::Sqlite {
        "EXPLAIN QUERY PLAN"
    } else {
        "EXPLAIN"
    };
    for (table, cond) in [
        ("contacts", "email = '1'"),
        ("contacts", "phone = '1'"),
        ("contacts", "personnummer = '1'"),
        ("prospects", "email = '1'"),
        ("kyc_documents", "contact_id = '1'"),
        // Locate's shape: one identity column, or (PostgreSQL, MySQL) every
        // identity column the person has values for in one statement,
        // within the controller's rows.
        ("contacts", "email = '1' AND controller_orgnr = '{ctrl}'"),
        (
            "contacts",
            "(email = '1' OR phone = '1' OR customer_number = '1') AND controller_orgnr = '{ctrl}'",
        ),
    ] {
        if cond.contains(" OR ") && backend == DbBackend::Sqlite {
            continue;
        }
        let cond = cond.replace("{ctrl}", reference::CONTROLLERS[0]);
        let q = format!("{sql} SELECT id FROM {table} WHERE {cond}");
        let rows = conn
            .query_all_raw(Statement::from_string(db.backend(), q))
            .await
            .unwrap();
        // PostgreSQL: the plan's lines; SQLite: the 4th column; MySQL and
        // MariaDB: the index chosen (`key`), NULL for a scan.
        let plan: Vec<String> = rows
            .iter()
            .map(|r| match backend {
                DbBackend::Postgres => r.try_get_by_index::<String>(0).unwrap(),
                DbBackend::MySql => r
                    .try_get::<Option<String>>("", "key")
                    .unwrap()
                    .map_or_else(|| "full scan".to_owned(), |k| format!("USING INDEX {k}")),
                _ => r.try_get_by_index::<String>(3).unwrap(),
            })
            .collect();
        let text = plan.join("\n");
        assert!(
            text.contains("USING INDEX")
                || text.contains("USING COVERING INDEX")
                || text.contains("Index Scan")
                || text.contains("Index Only Scan")
                || text.contains("Bitmap Index Scan"),
            "{table} where {cond}: {text}"
        );
        // Through the identity's own index, not by reading every row of
        // the controller's.
        assert!(
            !cond.contains("controller_orgnr") || text.contains("idx_contacts_email"),
            "{table} where {cond}: {text}"
        );
    }
    conn.rollback().await.unwrap();
    db.finish().await;
}

struct Running {
    client: DataSystemClient<Channel>,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(db: &TestDb, r: Reference) -> Running {
    start_at(db, r, Clock::system()).await
}

/// [`start`], the system reading the time from `clock`.
async fn start_at(db: &TestDb, r: Reference, clock: Clock) -> Running {
    start_with(db, r, r.manifest(), clock).await
}

/// [`start_at`] with `manifest` for `r`'s schema.
async fn start_with(db: &TestDb, r: Reference, manifest: &str, clock: Clock) -> Running {
    let m = Arc::new(Manifest::parse(manifest, r.manifest_name()).unwrap());
    schema::check(&db.db, &m, r.manifest_name()).await.unwrap();
    let system = SqlSystem::new(
        db.db.clone(),
        m,
        ReceiptSigner::generate("test"),
        Arc::new(ProtoReceipts),
    )
    .with_clock(clock);
    let keys = dsr_auth::generate_ed25519("k").unwrap();
    let validator = Arc::new(Validator::new(
        Arc::new(KeySet::from_jwks_json(&keys.jwks_json).unwrap()),
        ValidatorConfig {
            issuers: vec!["t".into()],
            audience: r.id().into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    let token = TokenSigner::from_ed25519_pem(&keys.private_pem, "k", "t")
        .unwrap()
        .mint(&TokenRequest {
            subject: "service:orchestrator".into(),
            audiences: vec![r.id().into()],
            scopes: vec![
                grpc::SCOPE_DESCRIBE.into(),
                grpc::SCOPE_READ.into(),
                grpc::SCOPE_WRITE.into(),
            ],
            ttl: Duration::from_secs(300),
        })
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut set = ServiceSet::new();
    set.add(grpc::service(system, validator))
        .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, set, &ServerConfig::default(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = DataSystemClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    Running {
        client,
        token,
        stop: Some(stop),
    }
}

impl Running {
    fn req<T>(&self, m: T) -> Request<T> {
        let mut r = Request::new(m);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }
}

fn header(system: &str, controller: &str, key: &str) -> Option<pb::Instruction> {
    let now = Utc::now();
    Some(pb::Instruction {
        request_id: "7f0c2a4e-0000-4000-8000-000000000001".into(),
        controller: Some(common::ControllerRef {
            organisation_number: controller.into(),
        }),
        system_id: system.into(),
        due_date: Some(common::Date {
            year: 2026,
            month: 12,
            day: 23,
        }),
        issued_at: Some(prost_types::Timestamp {
            seconds: now.timestamp() - 5,
            nanos: 0,
        }),
        expires_at: Some(prost_types::Timestamp {
            seconds: now.timestamp() + 300,
            nanos: 0,
        }),
        idempotency_key: key.into(),
    })
}

fn email(v: &str) -> common::Identity {
    common::Identity {
        r#type: common::IdentityType::Email as i32,
        format: common::IdentityFormat::Raw as i32,
        value: v.into(),
        hmac_key_id: String::new(),
    }
}

/// The integer keys `sql` selects (first column), as text, in order.
async fn int_keys(db: &sea_orm::DatabaseConnection, sql: String) -> Vec<String> {
    let mut k: Vec<String> = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0).unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn crm_locate_access_erase_restrict_over_grpc() {
    let db = seeded(Reference::Crm, 100).await;
    let mut s = start(&db, Reference::Crm).await;
    // person 0: a contact with KYC documents (idx % 5 == 0) and a prospect entry (idx % 5 < 2)
    let p = &reference::people(100, 42)[0];
    let ctrl = p.controller;

    let loc = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", ctrl, "locate-0001"),
            identities: vec![email(&p.email.to_uppercase())],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(loc.found);
    let stores: Vec<&str> = loc.stores.iter().map(|s| s.store.as_str()).collect();
    for want in ["contacts", "kyc_documents", "pep_screenings", "prospects"] {
        assert!(stores.contains(&want), "{want} missing from {stores:?}");
    }
    let linked: Vec<&str> = loc
        .linked_identities
        .iter()
        .map(|i| i.value.as_str())
        .collect();
    assert!(
        linked.contains(&p.phone.as_str()) && linked.contains(&p.customer_number.as_str()),
        "{linked:?}"
    );
    // Each store's keys exactly, read straight from the tables: the person's
    // contacts and prospects, and the rows below them, each in its own store.
    let keys = |sql: String| int_keys(&db.db, sql);
    let contact_ids = keys(format!(
        "SELECT id FROM contacts WHERE email = '{}' AND controller_orgnr = '{ctrl}'",
        p.email
    ))
    .await;
    let prospect_ids = keys(format!(
        "SELECT id FROM prospects WHERE email = '{}' AND controller_orgnr = '{ctrl}'",
        p.email
    ))
    .await;
    let mut expected = std::collections::BTreeMap::new();
    for child in [
        "kyc_documents",
        "pep_screenings",
        "event_registrations",
        "survey_responses",
    ] {
        expected.insert(
            child,
            keys(format!(
                "SELECT id FROM {child} WHERE contact_id IN ({})",
                contact_ids.join(", ")
            ))
            .await,
        );
    }
    expected.insert(
        "prospect_interactions",
        keys(format!(
            "SELECT id FROM prospect_interactions WHERE prospect_id IN ({})",
            prospect_ids.join(", ")
        ))
        .await,
    );
    expected.insert("contacts", contact_ids);
    expected.insert("prospects", prospect_ids);
    expected.retain(|_, k| !k.is_empty());
    let got: std::collections::BTreeMap<&str, Vec<String>> = loc
        .stores
        .iter()
        .map(|s| {
            let mut k: Vec<String> = s.records.iter().map(|r| r.key.clone()).collect();
            k.sort();
            (s.store.as_str(), k)
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        expected.len() >= 4,
        "the person has rows below them: {expected:?}"
    );

    // another controller sees nothing; an unknown person is an answer, not an error
    let other = reference::CONTROLLERS.iter().find(|c| **c != ctrl).unwrap();
    let none = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", other, "locate-0002"),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!none.found);
    let none = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", ctrl, "locate-0003"),
            identities: vec![email("nobody@nowhere.se")],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!none.found && none.stores.is_empty());

    // access streams every located record
    let records: Vec<pb::RecordRef> = loc.stores.iter().flat_map(|s| s.records.clone()).collect();
    let mut stream = s
        .client
        .access(s.req(pb::AccessRequest {
            instruction: header("crm", ctrl, "access-0001"),
            records: records.clone(),
            portable_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    let mut saw_email = false;
    while let Some(batch) = stream.message().await.unwrap() {
        for r in batch.records {
            seen += 1;
            saw_email |= r
                .fields
                .iter()
                .any(|f| f.name == "email" && f.value == p.email);
        }
    }
    assert_eq!(seen, records.len());
    assert!(saw_email);

    // erase: contacts deleted, AML documents retained (restricted) with their ground
    let erase = pb::EraseRequest {
        instruction: header("crm", ctrl, "erase-0000001"),
        records: records.clone(),
        acceptable_methods: vec![
            pb::ErasureMethod::Delete as i32,
            pb::ErasureMethod::Anonymise as i32,
            pb::ErasureMethod::Nullify as i32,
        ],
        retain: vec![],
    };
    let op = s
        .client
        .erase(s.req(erase.clone()))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(op.state, pb::OperationState::Succeeded as i32);
    let describe = s
        .client
        .describe(s.req(pb::DescribeRequest {}))
        .await
        .unwrap()
        .into_inner();
    let receipt =
        dsr_connector::grpc::verify_receipt(op.receipt.as_ref().unwrap(), &describe.signing_keys)
            .unwrap();
    let contacts = receipt
        .stores
        .iter()
        .find(|s| s.store == "contacts")
        .unwrap();
    assert_eq!(
        (contacts.matched, contacts.affected, contacts.method),
        (1, 1, pb::ErasureMethod::Delete as i32)
    );
    assert!(
        receipt
            .retained
            .iter()
            .any(|r| r.record.as_ref().unwrap().store == "kyc_documents"
                && r.legal_ground.contains("17(3)(b)"))
    );

    // the same key and instruction: the same receipt, byte for byte; another instruction: refused
    let again = s
        .client
        .erase(s.req(erase.clone()))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(again.receipt.unwrap().payload, op.receipt.unwrap().payload);
    let mut other_payload = erase.clone();
    other_payload.records.truncate(1);
    let err = s.client.erase(s.req(other_payload)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // the person is gone from contacts; locate now finds only what was retained
    let after = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", ctrl, "locate-0004"),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!after.stores.iter().any(|s| s.store == "contacts"));

    // misrouted and expired instructions are refused
    let err = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("legal", ctrl, "locate-0005"),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut expired = header("crm", ctrl, "locate-0006").unwrap();
    expired.expires_at = Some(prost_types::Timestamp {
        seconds: Utc::now().timestamp() - 1,
        nanos: 0,
    });
    expired.issued_at = Some(prost_types::Timestamp {
        seconds: Utc::now().timestamp() - 60,
        nanos: 0,
    });
    let err = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: Some(expired),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // restrict another person's records, then access shows them restricted
    let q = &reference::people(100, 42)[1];
    let loc = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", q.controller, "locate-0007"),
            identities: vec![email(&q.email)],
        }))
        .await
        .unwrap()
        .into_inner();
    let recs: Vec<pb::RecordRef> = loc.stores.iter().flat_map(|s| s.records.clone()).collect();
    let op = s
        .client
        .restrict(s.req(pb::RestrictRequest {
            instruction: header("crm", q.controller, "restrict-0001"),
            records: recs.clone(),
            lift: false,
            reason: "accuracy contested".into(),
            basis: pb::RestrictionReason::Request as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(op.state, pb::OperationState::Succeeded as i32);
    let mut stream = s
        .client
        .access(s.req(pb::AccessRequest {
            instruction: header("crm", q.controller, "access-0002"),
            records: recs.clone(),
            portable_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    while let Some(batch) = stream.message().await.unwrap() {
        assert!(batch.records.iter().all(|r| r.restricted
            && r.restriction_reasons == vec![pb::RestrictionReason::Request as i32]));
    }

    // an erasure leaves records under an Art. 18 restriction, and says so
    // per record; once the restriction is lifted, the next one erases
    let erase = |key: &str| pb::EraseRequest {
        instruction: header("crm", q.controller, key),
        records: recs.clone(),
        acceptable_methods: vec![
            pb::ErasureMethod::Delete as i32,
            pb::ErasureMethod::Anonymise as i32,
        ],
        retain: vec![],
    };
    let receipt_of =
        |op: pb::Operation| pb::Receipt::decode(op.receipt.unwrap().payload.as_slice()).unwrap();
    let kept = receipt_of(
        s.client
            .erase(s.req(erase("erase-kept-0001")))
            .await
            .unwrap()
            .into_inner()
            .operation
            .unwrap(),
    );
    assert_eq!(kept.records.len(), recs.len());
    assert!(
        kept.records
            .iter()
            .all(|o| o.result == pb::RecordResult::Retained as i32)
    );
    assert!(
        kept.retained
            .iter()
            .all(|x| x.reason == pb::RestrictionReason::Request as i32
                && x.legal_ground.contains("Art. 18"))
    );
    s.client
        .restrict(s.req(pb::RestrictRequest {
            instruction: header("crm", q.controller, "lift-0001"),
            records: recs.clone(),
            lift: true,
            reason: "Art. 18(3)".into(),
            basis: pb::RestrictionReason::Request as i32,
        }))
        .await
        .unwrap();
    let gone = receipt_of(
        s.client
            .erase(s.req(erase("erase-gone-0001")))
            .await
            .unwrap()
            .into_inner()
            .operation
            .unwrap(),
    );
    assert_eq!(gone.records.len(), recs.len());
    assert!(gone.records.iter().all(|o| {
        o.result == pb::RecordResult::Erased as i32
            || o.result == pb::RecordResult::Anonymised as i32
            || o.result == pb::RecordResult::Retained as i32
    }));
    assert!(
        gone.retained
            .iter()
            .all(|x| x.reason == pb::RestrictionReason::Retention as i32),
        "only what the system's own rule retains stays"
    );
    let again = receipt_of(
        s.client
            .erase(s.req(erase("erase-again-0001")))
            .await
            .unwrap()
            .into_inner()
            .operation
            .unwrap(),
    );
    assert!(
        again
            .records
            .iter()
            .filter(|o| o.result == pb::RecordResult::NotFound as i32)
            .count()
            >= gone
                .records
                .iter()
                .filter(|o| o.result == pb::RecordResult::Erased as i32)
                .count(),
        "what was erased is not found again"
    );

    // malformed input names the field
    let err = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", ctrl, "locate-0008"),
            identities: vec![email("not an email")],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    s.stop.take().unwrap().send(()).unwrap();
    db.finish().await;
}

/// An erasure that deletes a record keeps the records it keeps below it:
/// an event registration under an Art. 18 restriction and a prospect
/// interaction under a legal hold stay, detached, when the contact and the
/// prospect above them go (the reference schema's foreign keys cascade),
/// the receipt says so, and what was not kept went. Once the restriction is
/// lifted, the next erasure reaches the event registration.
/// All of a batch's tables are read in one statement (one part a table,
/// tagged and padded to the widest): every record comes back once, whole,
/// in batches of at most the size asked, exactly as read from its table
/// alone, for a whole access and for a portable one.
#[tokio::test]
async fn access_reads_several_tables_at_once_each_record_as_its_table_alone() {
    use dsr_system_sql::system::RecordRef;
    let db = seeded(Reference::Crm, 100).await;
    let m = Arc::new(Manifest::parse(Reference::Crm.manifest(), "crm.yaml").unwrap());
    let system = SqlSystem::new(
        db.db.clone(),
        m.clone(),
        ReceiptSigner::generate("test"),
        Arc::new(ProtoReceipts),
    );
    let ids = |sql: String| int_keys(&db.db, sql);
    // Three people of one controller, person 0 first (contacts with KYC
    // documents, PEP screenings, a prospect): tables of several widths.
    let people = reference::people(100, 42);
    let ctrl = people[0].controller;
    let mut refs = Vec::new();
    for p in people.iter().filter(|p| p.controller == ctrl).take(3) {
        let contacts = ids(format!(
            "SELECT id FROM contacts WHERE email = '{}' AND controller_orgnr = '{ctrl}'",
            p.email
        ))
        .await;
        for child in [
            "kyc_documents",
            "pep_screenings",
            "event_registrations",
            "survey_responses",
        ] {
            for key in ids(format!(
                "SELECT id FROM {child} WHERE contact_id IN ({})",
                contacts.join(", ")
            ))
            .await
            {
                refs.push(RecordRef {
                    store: child.into(),
                    key,
                });
            }
        }
        for key in ids(format!(
            "SELECT id FROM prospects WHERE email = '{}' AND controller_orgnr = '{ctrl}'",
            p.email
        ))
        .await
        {
            refs.push(RecordRef {
                store: "prospects".into(),
                key,
            });
        }
        for key in contacts {
            refs.push(RecordRef {
                store: "contacts".into(),
                key,
            });
        }
    }
    let stores: std::collections::BTreeSet<&str> = refs.iter().map(|r| r.store.as_str()).collect();
    assert!(stores.len() >= 4, "{stores:?}");
    let ctrl = dsr_domain::identity::Organisationsnummer::parse(ctrl).unwrap();
    async fn read(
        system: &SqlSystem,
        ctrl: &dsr_domain::identity::Organisationsnummer,
        refs: Vec<RecordRef>,
        portable: bool,
        batch: usize,
    ) -> Vec<dsr_system_sql::system::RecordData> {
        let mut rx = system.access(ctrl.clone(), refs, portable, batch).unwrap();
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            let b = b.unwrap();
            assert!(
                b.len() <= batch,
                "{} records in a batch of {batch}",
                b.len()
            );
            out.extend(b);
        }
        out
    }
    for portable in [false, true] {
        // The oracle: each table read alone, one record at a time.
        let mut alone = Vec::new();
        for r in &refs {
            alone.extend(read(&system, &ctrl, vec![r.clone()], portable, 1).await);
        }
        alone.sort_by(|a, b| a.reference.cmp(&b.reference));
        assert_eq!(alone.len(), refs.len());
        for r in &alone {
            let t = m.table(&r.reference.store).unwrap();
            let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
            let want: Vec<&str> = t
                .columns
                .iter()
                .filter(|c| {
                    !portable
                        || m.categories
                            .iter()
                            .any(|k| k.portable && k.id == c.category)
                })
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names, want, "{}", r.reference.store);
        }
        assert!(
            alone
                .iter()
                .any(|r| r.fields.iter().any(|f| f.value.is_some())),
            "values read"
        );
        for batch in [2, 3, 200] {
            let mut together = read(&system, &ctrl, refs.clone(), portable, batch).await;
            together.sort_by(|a, b| a.reference.cmp(&b.reference));
            assert_eq!(together, alone, "batch {batch}, portable {portable}");
        }
    }
    db.finish().await;
}

#[tokio::test]
async fn an_erasure_keeps_the_records_it_keeps_below_one_it_deletes() {
    let db = seeded(Reference::Crm, 100).await;
    let mut s = start(&db, Reference::Crm).await;
    // person 1: a contact with an event registration (idx % 10 < 3) and a
    // prospect with interactions (idx % 5 < 2)
    let p = &reference::people(100, 42)[1];
    let ctrl = p.controller;
    let loc = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", ctrl, "locate-kept-0001"),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap()
        .into_inner();
    let records: Vec<pb::RecordRef> = loc.stores.iter().flat_map(|s| s.records.clone()).collect();
    let of = |store: &str| -> Vec<pb::RecordRef> {
        records
            .iter()
            .filter(|r| r.store == store)
            .cloned()
            .collect()
    };
    let (contact, prospect) = (of("contacts"), of("prospects"));
    let (event, interactions) = (of("event_registrations"), of("prospect_interactions"));
    assert_eq!((contact.len(), prospect.len(), event.len()), (1, 1, 1));
    assert!(!interactions.is_empty(), "{records:?}");
    let held = &interactions[0];
    s.client
        .restrict(s.req(pb::RestrictRequest {
            instruction: header("crm", ctrl, "restrict-kept-0001"),
            records: event.clone(),
            lift: false,
            reason: "accuracy contested".into(),
            basis: pb::RestrictionReason::Request as i32,
        }))
        .await
        .unwrap();
    let erase = |key: &str, records: Vec<pb::RecordRef>, retain| pb::EraseRequest {
        instruction: header("crm", ctrl, key),
        records,
        acceptable_methods: vec![
            pb::ErasureMethod::Delete as i32,
            pb::ErasureMethod::Anonymise as i32,
            pb::ErasureMethod::Nullify as i32,
        ],
        retain,
    };
    let receipt_of = |op: pb::Operation| {
        assert_eq!(op.state, pb::OperationState::Succeeded as i32);
        pb::Receipt::decode(op.receipt.unwrap().payload.as_slice()).unwrap()
    };
    let receipt = receipt_of(
        s.client
            .erase(s.req(erase(
                "erase-kept-0001",
                records.clone(),
                vec![pb::RetentionOrder {
                    record: Some(held.clone()),
                    legal_ground: "GDPR Art. 17(3)(e): a dispute".into(),
                    retain_until: Some(common::Date {
                        year: 2030,
                        month: 1,
                        day: 1,
                    }),
                    reason: pb::RestrictionReason::Hold as i32,
                }],
            )))
            .await
            .unwrap()
            .into_inner()
            .operation
            .unwrap(),
    );
    let result = |r: &pb::RecordRef| {
        receipt
            .records
            .iter()
            .find(|o| o.record.as_ref() == Some(r))
            .map(|o| o.result)
    };
    for r in [&event[0], held] {
        assert_eq!(
            result(r),
            Some(pb::RecordResult::Retained as i32),
            "{}",
            r.store
        );
    }
    for r in contact.iter().chain(&prospect).chain(&interactions[1..]) {
        assert_eq!(
            result(r),
            Some(pb::RecordResult::Erased as i32),
            "{}",
            r.store
        );
    }
    // In the database: what the receipt keeps is there, detached from the
    // rows that went; what it erased is gone.
    let link = |table: &str, column: &str, key: &str| {
        let q = format!("SELECT CAST({column} AS CHAR(20)) FROM {table} WHERE id = {key}");
        let db = db.db.clone();
        async move {
            db.query_all_raw(Statement::from_string(db.get_database_backend(), q))
                .await
                .unwrap()
                .first()
                .map(|r| r.try_get_by_index::<Option<String>>(0).unwrap())
        }
    };
    assert_eq!(
        link("event_registrations", "contact_id", &event[0].key).await,
        Some(None)
    );
    assert_eq!(
        link("prospect_interactions", "prospect_id", &held.key).await,
        Some(None)
    );
    assert_eq!(link("contacts", "id", &contact[0].key).await, None);
    assert_eq!(link("prospects", "id", &prospect[0].key).await, None);
    for r in &interactions[1..] {
        assert_eq!(link("prospect_interactions", "id", &r.key).await, None);
    }
    // The restriction lifted, the next erasure reaches the detached record.
    s.client
        .restrict(s.req(pb::RestrictRequest {
            instruction: header("crm", ctrl, "lift-kept-0001"),
            records: event.clone(),
            lift: true,
            reason: "Art. 18(3)".into(),
            basis: pb::RestrictionReason::Request as i32,
        }))
        .await
        .unwrap();
    let again = receipt_of(
        s.client
            .erase(s.req(erase("erase-kept-0002", event.clone(), vec![])))
            .await
            .unwrap()
            .into_inner()
            .operation
            .unwrap(),
    );
    assert_eq!(
        again.records.iter().map(|o| o.result).collect::<Vec<_>>(),
        vec![pb::RecordResult::Erased as i32]
    );
    assert_eq!(link("event_registrations", "id", &event[0].key).await, None);
    s.stop.take().unwrap().send(()).unwrap();
    db.finish().await;
}

#[tokio::test]
async fn rectify_object_and_sweep() {
    let db = seeded(Reference::Crm, 100).await;
    let mut s = start(&db, Reference::Crm).await;
    let people = reference::people(100, 42);
    let p = &people[1]; // a contact and a prospect (idx % 5 < 2)
    let loc = s
        .client
        .locate(s.req(pb::LocateRequest {
            instruction: header("crm", p.controller, "locate-1001"),
            identities: vec![email(&p.email)],
        }))
        .await
        .unwrap()
        .into_inner();
    let contact = loc
        .stores
        .iter()
        .find(|x| x.store == "contacts")
        .unwrap()
        .records[0]
        .clone();
    let prospect = loc
        .stores
        .iter()
        .find(|x| x.store == "prospects")
        .unwrap()
        .records[0]
        .clone();

    // rectify: a field is corrected; an identity field is normalised, a bad one refused
    let changes = vec![
        pb::FieldChange {
            record: Some(contact.clone()),
            field: "job_title".into(),
            value: "Chief financial officer".into(),
        },
        pb::FieldChange {
            record: Some(contact.clone()),
            field: "phone".into(),
            value: "070-999 88 77".into(),
        },
    ];
    let op = s
        .client
        .rectify(s.req(pb::RectifyRequest {
            instruction: header("crm", p.controller, "rectify-0001"),
            changes,
        }))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(op.state, pb::OperationState::Succeeded as i32);
    let bad = vec![pb::FieldChange {
        record: Some(contact.clone()),
        field: "email".into(),
        value: "not an email".into(),
    }];
    let err = s
        .client
        .rectify(s.req(pb::RectifyRequest {
            instruction: header("crm", p.controller, "rectify-0002"),
            changes: bad,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let unknown = vec![pb::FieldChange {
        record: Some(contact.clone()),
        field: "salary".into(),
        value: "1".into(),
    }];
    let err = s
        .client
        .rectify(s.req(pb::RectifyRequest {
            instruction: header("crm", p.controller, "rectify-0003"),
            changes: unknown,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Art. 18(2): the lead scoring leaves a restricted prospect unscored,
    // and scores it once the restriction is lifted
    let key = &prospect.key;
    let score = |db: &TestDb| {
        let q = format!("SELECT lead_score FROM prospects WHERE id = {key}");
        let conn = db.db.clone();
        async move {
            let rows = conn
                .query_all_raw(Statement::from_string(conn.get_database_backend(), q))
                .await
                .unwrap();
            rows[0].try_get_by_index::<Option<i64>>(0).unwrap()
        }
    };
    let restrict = |lift: bool, k: &str| pb::RestrictRequest {
        instruction: header("crm", p.controller, k),
        records: vec![prospect.clone()],
        lift,
        reason: "accuracy contested".into(),
        basis: pb::RestrictionReason::Request as i32,
    };
    s.client
        .restrict(s.req(restrict(false, "restrict-0101")))
        .await
        .unwrap();
    db.db
        .execute_unprepared(&format!(
            "UPDATE prospects SET lead_score = NULL, score_factors = NULL WHERE id = {key}"
        ))
        .await
        .unwrap();
    let today = reference::base_date();
    Reference::Crm.score_prospects(&db.db, today).await.unwrap();
    assert_eq!(
        score(&db).await,
        None,
        "a restricted prospect is not scored"
    );
    s.client
        .restrict(s.req(restrict(true, "lift-0101")))
        .await
        .unwrap();
    let (scored, _) = Reference::Crm.score_prospects(&db.db, today).await.unwrap();
    assert!(scored >= 1);
    assert!(score(&db).await.is_some(), "scored again once lifted");

    // object to direct marketing on the prospect entry
    let op = s
        .client
        .object(s.req(pb::ObjectRequest {
            instruction: header("crm", p.controller, "object-0001"),
            records: vec![prospect.clone()],
            purposes: vec![],
            direct_marketing: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(op.state, pb::OperationState::Succeeded as i32);

    let mut stream = s
        .client
        .access(s.req(pb::AccessRequest {
            instruction: header("crm", p.controller, "access-1001"),
            records: vec![contact, prospect],
            portable_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(b) = stream.message().await.unwrap() {
        records.extend(b.records);
    }
    let c = records
        .iter()
        .find(|r| r.r#ref.as_ref().unwrap().store == "contacts")
        .unwrap();
    let field = |name: &str| {
        c.fields
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(field("job_title"), "Chief financial officer");
    assert_eq!(field("phone"), "+46709998877");
    let pr = records
        .iter()
        .find(|r| r.r#ref.as_ref().unwrap().store == "prospects")
        .unwrap();
    assert_eq!(pr.objected_purposes, ["direct_marketing"]);

    // sweep: a dry run counts, the real run erases exactly that, in batches
    let count = |table: &'static str| {
        let db = db.db.clone();
        async move {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!(
                        "SELECT CAST(COUNT(*) AS {}) FROM {table}",
                        if db.get_database_backend() == DbBackend::MySql {
                            "CHAR"
                        } else {
                            "TEXT"
                        }
                    ),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<String>(0)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    let before = count("contacts").await;
    let mut total_due = 0;
    for controller in reference::CONTROLLERS {
        let done = sweep(
            &mut s,
            "crm",
            controller,
            &format!("sweep-dry-{controller}"),
            true,
        )
        .await;
        let receipt = pb::Receipt::decode(done.receipt.unwrap().payload.as_slice()).unwrap();
        let contacts = receipt
            .stores
            .iter()
            .find(|x| x.store == "contacts")
            .unwrap();
        assert_eq!(contacts.affected, 0, "a dry run changes nothing");
        total_due += contacts.matched;
    }
    assert!(
        total_due > 0,
        "some relationships ended more than 24 months ago"
    );
    assert_eq!(count("contacts").await, before);
    let mut erased = 0;
    for controller in reference::CONTROLLERS {
        let done = sweep(
            &mut s,
            "crm",
            controller,
            &format!("sweep-run-{controller}"),
            false,
        )
        .await;
        let receipt = pb::Receipt::decode(done.receipt.unwrap().payload.as_slice()).unwrap();
        erased += receipt
            .stores
            .iter()
            .find(|x| x.store == "contacts")
            .unwrap()
            .affected;
    }
    assert_eq!(erased, total_due);
    assert_eq!(count("contacts").await, before - erased);
    s.stop.take().unwrap().send(()).unwrap();
    db.finish().await;
}

/// A row of a manifest table as the sweep's rule sees it.
#[derive(Clone, Debug)]
struct SweepRow {
    parent: Option<String>,
    controller: Option<String>,
    anchor: Option<String>,
    restricted: bool,
    reasons: Option<String>,
}

/// Every row of every table of `m`, by table and key.
async fn sweep_rows(
    db: &sea_orm::DatabaseConnection,
    m: &Manifest,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, SweepRow>> {
    let text = if db.get_database_backend() == DbBackend::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    let col =
        |c: Option<&str>| c.map_or_else(|| "NULL".to_owned(), |c| format!("CAST({c} AS {text})"));
    let mut out = std::collections::BTreeMap::new();
    for t in &m.tables {
        let q = format!(
            "SELECT {}, {}, {}, {}, {}, {} FROM {}",
            col(Some(&t.primary_key.column)),
            col(t.parent.as_ref().map(|p| p.column.as_str())),
            col(t.controller_column.as_deref()),
            col(t.retention.as_ref().map(|r| r.anchor_column.as_str())),
            col(Some(&t.restriction_column)),
            col(Some(&t.restriction_reasons_column)),
            t.name
        );
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), q))
            .await
            .unwrap();
        let get = |r: &sea_orm::QueryResult, i| r.try_get_by_index::<Option<String>>(i).unwrap();
        out.insert(
            t.name.clone(),
            rows.iter()
                .map(|r| {
                    (
                        get(r, 0).unwrap(),
                        SweepRow {
                            parent: get(r, 1),
                            controller: get(r, 2),
                            // A date, whatever the database prints after it.
                            anchor: get(r, 3).map(|d| d.chars().take(10).collect()),
                            restricted: get(r, 4).is_some(),
                            reasons: get(r, 5),
                        },
                    )
                })
                .collect(),
        );
    }
    out
}

/// The oracle: the keys a sweep for `controller` at `today` removes from
/// `rows`, by table: rows whose rule's period ended, not restricted (or
/// restricted for retention alone), and the controller's (its own column, or
/// its parent's, up the chain), or reaching no controller's row (a link up
/// the chain is empty), or in a table no controller's column reaches (a
/// system of one controller).
fn sweep_due(
    m: &Manifest,
    rows: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, SweepRow>>,
    controller: &str,
    today: chrono::NaiveDate,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let owner = |table: &str, key: &str| -> Option<String> {
        let (mut t, mut k) = (m.table(table)?, key.to_owned());
        loop {
            let row = rows.get(&t.name)?.get(&k)?;
            if t.controller_column.is_some() {
                return row.controller.clone();
            }
            k = row.parent.clone()?;
            t = m.table(&t.parent.as_ref()?.table)?;
        }
    };
    let unscoped = |t: &dsr_system_sql::manifest::TableSpec| {
        let mut cur = Some(t);
        while let Some(c) = cur {
            if c.controller_column.is_some() {
                return false;
            }
            cur = c.parent.as_ref().and_then(|p| m.table(&p.table));
        }
        true
    };
    let mut out = std::collections::BTreeMap::new();
    for t in &m.tables {
        let Some(rule) = &t.retention else { continue };
        let cutoff = today
            .checked_sub_months(chrono::Months::new(rule.months))
            .unwrap()
            .to_string();
        let due = rows[&t.name]
            .iter()
            .filter(|(k, r)| {
                r.anchor.as_ref().is_some_and(|a| *a < cutoff)
                    && (!r.restricted || r.reasons.as_deref() == Some("retention"))
                    && (unscoped(t) || {
                        let owner = owner(&t.name, k);
                        owner.is_none() || owner.as_deref() == Some(controller)
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        out.insert(t.name.clone(), due);
    }
    out
}

/// The retention sweep removes exactly what the rule allows for the
/// controller asking: on every reference system (a parent's children, a
/// grandchild through two parents), rows whose period ended and whose
/// controller is the one asking, or whose parent (or grandparent's) link is
/// gone; never another controller's, never a row restricted by a request or
/// a hold (a row kept for retention alone goes); a dry run counts the same
/// rows and changes nothing; pages of 7 rows. Nothing else goes: a row
/// that stays below a parent that goes is detached from it, whatever the
/// schema's foreign key would do (the reference schemas cascade events,
/// prospect interactions, letters and case documents). The same on the CRM
/// described as one controller's system whose tables name no controller:
/// every expired row goes, but the restricted ones.
#[tokio::test]
async fn a_sweep_removes_exactly_the_controllers_expired_rows() {
    let one_controller = Reference::Crm
        .manifest()
        .replace(
            r#"controllers: ["556134-1248", "556885-5265", "556786-4854", "556397-1414"]"#,
            r#"controllers: ["556134-1248"]"#,
        )
        .replace("    controller_column: controller_orgnr\n", "");
    let cases = Reference::ALL
        .iter()
        .map(|r| (*r, r.manifest().to_owned()))
        .chain([(Reference::Crm, one_controller)]);
    for (r, manifest) in cases {
        let db = seeded(r, 240).await;
        let m = Manifest::parse(&manifest, r.manifest_name()).unwrap();
        assert_eq!(
            m.controllers().len() == 1,
            m.tables.iter().all(|t| t.controller_column.is_none()),
            "{}: one controller and no controller column, or several and columns",
            r.id()
        );
        let today = reference::base_date() + chrono::Days::new(40);
        let clock = Clock::starting_at(today.and_hms_opt(12, 0, 0).unwrap().and_utc());
        let mut s = start_with(&db, r, &manifest, clock).await;
        // Make the cases the seed lacks: for each table with a rule, among
        // its rows past their period, one restricted by a request (stays),
        // one restricted for retention alone (goes), and on a child table
        // one whose parent is gone (goes, whoever sweeps first).
        let rows = sweep_rows(&db.db, &m).await;
        let mut marked = 0;
        for t in m.tables.iter().filter(|t| t.retention.is_some()) {
            let cutoff = today
                .checked_sub_months(chrono::Months::new(t.retention.as_ref().unwrap().months))
                .unwrap()
                .to_string();
            let past: Vec<&String> = rows[&t.name]
                .iter()
                .filter(|(_, x)| x.anchor.as_ref().is_some_and(|a| *a < cutoff))
                .map(|(k, _)| k)
                .collect();
            let set = |k: &String, assign: String| {
                let q = format!(
                    "UPDATE {} SET {assign} WHERE {} = {k}",
                    t.name, t.primary_key.column
                );
                let db = db.db.clone();
                async move {
                    db.execute_unprepared(&q).await.unwrap();
                }
            };
            if let [a, b, c, rest @ ..] = past.as_slice() {
                set(
                    a,
                    format!(
                        "{} = '2026-01-01', {} = 'request'",
                        t.restriction_column, t.restriction_reasons_column
                    ),
                )
                .await;
                set(
                    b,
                    format!(
                        "{} = '2026-01-01', {} = 'retention'",
                        t.restriction_column, t.restriction_reasons_column
                    ),
                )
                .await;
                if let Some(p) = &t.parent {
                    set(c, format!("{} = NULL", p.column)).await;
                    // A grandchild whose parent's own link is gone.
                    let up = m.table(&p.table).unwrap();
                    if let (Some(gp), Some(d)) = (&up.parent, rest.first())
                        && let Some(pk) = &rows[&t.name][*d].parent
                    {
                        db.db
                            .execute_unprepared(&format!(
                                "UPDATE {} SET {} = NULL WHERE {} = {pk}",
                                up.name, gp.column, up.primary_key.column
                            ))
                            .await
                            .unwrap();
                    }
                }
                marked += 1;
            }
        }
        assert!(
            marked > 0,
            "{}: no table has rows past their period",
            r.id()
        );

        let mut removed_any = false;
        for controller in m.controllers() {
            let controller = controller.as_str().to_owned();
            let before = sweep_rows(&db.db, &m).await;
            let due = sweep_due(&m, &before, &controller, today);
            let receipt = |op: pb::Operation| {
                let receipt = pb::Receipt::decode(op.receipt.unwrap().payload.as_slice()).unwrap();
                receipt
                    .stores
                    .iter()
                    .map(|x| (x.store.clone(), (x.matched, x.affected)))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            for dry_run in [true, false] {
                let key = format!("sweep-{}-{controller}-{dry_run}", r.id());
                let done = receipt(sweep(&mut s, r.id(), &controller, &key, dry_run).await);
                let after = sweep_rows(&db.db, &m).await;
                let removed: std::collections::BTreeMap<
                    &String,
                    std::collections::BTreeSet<&String>,
                > = before
                    .iter()
                    .map(|(t, rows)| {
                        (
                            t,
                            rows.keys().filter(|k| !after[t].contains_key(*k)).collect(),
                        )
                    })
                    .collect();
                for (table, keys) in &due {
                    let n = keys.len() as u64;
                    let want = if dry_run { (n, 0) } else { (n, n) };
                    assert_eq!(
                        done[table],
                        want,
                        "{} {table} {controller} dry {dry_run}",
                        r.id()
                    );
                    if dry_run {
                        assert!(
                            removed[table].is_empty(),
                            "{} {table}: a dry run removed rows",
                            r.id()
                        );
                    } else {
                        assert!(
                            keys.iter().all(|k| removed[table].contains(k)),
                            "{} {table} {controller}: {keys:?} due, {:?} removed",
                            r.id(),
                            removed[table]
                        );
                    }
                    removed_any |= !dry_run && n > 0;
                }
                // Nothing else went; a row left below one that went is
                // detached from it.
                for (table, keys) in &removed {
                    let t = m.table(table).unwrap();
                    for k in keys {
                        assert!(
                            due.get(*table).is_some_and(|d| d.contains(*k)),
                            "{} {table} {k}: removed, not due",
                            r.id()
                        );
                    }
                    for (k, row) in &after[*table] {
                        if let (Some(p), Some(pk)) = (&t.parent, &before[*table][k].parent)
                            && removed[&p.table].contains(pk)
                        {
                            assert_eq!(row.parent, None, "{} {table} {k}: still linked", r.id());
                        }
                    }
                }
            }
        }
        assert!(removed_any, "{}: the sweeps removed nothing", r.id());
        // Whatever is left past its period is restricted by a request or
        // belongs to no controller's scope.
        let left = sweep_rows(&db.db, &m).await;
        for controller in m.controllers() {
            for (table, keys) in sweep_due(&m, &left, controller.as_str(), today) {
                assert!(keys.is_empty(), "{} {table}: {keys:?} left", r.id());
            }
        }
        s.stop.take().unwrap().send(()).unwrap();
        db.finish().await;
    }
}

/// A sweep of `system` for `controller` in batches of 7, followed until it
/// ends.
async fn sweep(
    s: &mut Running,
    system: &str,
    controller: &str,
    key: &str,
    dry_run: bool,
) -> pb::Operation {
    let op = s
        .client
        .sweep(s.req(pb::SweepRequest {
            instruction: header(system, controller, key),
            dry_run,
            batch_size: 7,
        }))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    watch(s, &op.id).await
}

/// Follows WatchOperation until the operation ends.
async fn watch(s: &mut Running, id: &str) -> pb::Operation {
    let mut stream = s
        .client
        .watch_operation(s.req(pb::WatchOperationRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(m) = stream.message().await.unwrap() {
        last = m.operation;
    }
    let op = last.unwrap();
    assert_eq!(
        op.state,
        pb::OperationState::Succeeded as i32,
        "{}",
        op.error
    );
    op
}

/// What the reference systems declare about retention agrees with the
/// group's retention policy: every category is covered by a rule; the
/// controller's own system (the CRM), and a processor for data only it
/// holds, keep it for the rule's period from the rule's event (a processor
/// that also holds a copy of contact data keeps it by its own agreement,
/// e.g. letters 24 months after sending); a period set by law names the law
/// in both.
#[test]
fn reference_declarations_agree_with_the_retention_policy() {
    use dsr_system_sql::reference::Reference;
    let policy = dsr_domain::retention::RetentionPolicy::shipped();
    let manifests: Vec<_> = Reference::ALL
        .iter()
        .map(|r| {
            (
                *r,
                dsr_system_sql::manifest::Manifest::parse(r.manifest(), r.manifest_name()).unwrap(),
            )
        })
        .collect();
    let holders = |id: &str| {
        manifests
            .iter()
            .filter(|(_, m)| m.categories.iter().any(|c| c.id == id))
            .count()
    };
    for (r, m) in &manifests {
        for c in &m.categories {
            let rule = policy
                .rule_for(&c.id)
                .unwrap_or_else(|| panic!("{}: {} has no retention rule", r.id(), c.id));
            if let Some(months) = c.retention.months
                && (*r == Reference::Crm || holders(&c.id) == 1)
            {
                assert_eq!(months, rule.months, "{}: {}", r.id(), c.id);
                assert_eq!(c.retention.anchor, rule.anchor, "{}: {}", r.id(), c.id);
            }
            assert_eq!(
                c.retention.legal_ground.is_empty(),
                !rule.set_by_law(),
                "{}: {}",
                r.id(),
                c.id
            );
        }
    }
}

/// For a breach on the CRM's KYC documents: every contact of the
/// controller with such documents, once each, with their records counted,
/// their email and phone to reach them and their language; other
/// controllers' contacts left out; no category asked is refused.
#[tokio::test]
async fn crm_finds_the_people_a_breach_of_kyc_documents_touches() {
    let db = seeded(Reference::Crm, 100).await;
    let mut s = start(&db, Reference::Crm).await;
    let ctrl = reference::people(100, 42)[0].controller;
    let rows = db
        .db
        .query_all_raw(Statement::from_string(
            db.db.get_database_backend(),
            format!(
                "SELECT c.id, COUNT(k.id) FROM contacts c JOIN kyc_documents k ON k.contact_id = c.id \
                 WHERE c.controller_orgnr = '{ctrl}' GROUP BY c.id"
            ),
        ))
        .await
        .unwrap();
    let want_people = rows.len();
    let want_records: i64 = rows
        .iter()
        .map(|r| r.try_get_by_index::<i64>(1).unwrap())
        .sum();
    assert!(want_people > 0);
    let mut stream = s
        .client
        .find_affected(s.req(pb::FindAffectedRequest {
            instruction: header("crm", ctrl, "affected-0001"),
            category_ids: vec!["aml.identity_document".into()],
            from_time: None,
            to_time: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut people = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        people.push(p);
    }
    assert_eq!(people.len(), want_people);
    assert_eq!(
        people.iter().map(|p| p.record_count).sum::<u64>(),
        u64::try_from(want_records).unwrap()
    );
    for p in &people {
        assert_eq!(p.category_ids, vec!["aml.identity_document".to_owned()]);
        assert!(!p.window_applied);
        assert!(
            p.contacts
                .iter()
                .any(|c| c.r#type == common::IdentityType::Email as i32),
            "{p:?}"
        );
        assert!(matches!(p.language.as_str(), "sv" | "en"), "{p:?}");
    }
    // Nothing asked: refused.
    let st = s
        .client
        .find_affected(s.req(pb::FindAffectedRequest {
            instruction: header("crm", ctrl, "affected-0002"),
            category_ids: vec![],
            from_time: None,
            to_time: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    drop(s);
    db.finish().await;
}
