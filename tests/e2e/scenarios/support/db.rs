use super::*;

// ---------------------------------------------------------------------------
// Erasure under `dsr up`.

pub(crate) const CRM_TABLES: [&str; 8] = [
    "companies",
    "contacts",
    "kyc_documents",
    "pep_screenings",
    "event_registrations",
    "survey_responses",
    "prospects",
    "prospect_interactions",
];

/// The CRM's own database, as its operator (and a backup) sees it.
pub(crate) async fn crm_db(data: &Path, pg: Option<&TestDb>) -> sea_orm::DatabaseConnection {
    let (url, schema) = match pg {
        Some(p) => (p.url.clone(), Some("dsr_system_crm".to_owned())),
        None => (dsr_store::sqlite_url(&data.join("system-crm.db")), None),
    };
    dsr_store::connect(
        &url,
        &dsr_store::StoreConfig {
            schema,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

pub(crate) async fn rows(db: &sea_orm::DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    use sea_orm::ConnectionTrait as _;
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
}

pub(crate) async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    rows(db, &format!("SELECT COUNT(*) AS n FROM ({sql}) q"))
        .await
        .first()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

pub(crate) async fn table_counts(db: &sea_orm::DatabaseConnection) -> Vec<i64> {
    let mut v = Vec::new();
    for t in CRM_TABLES {
        v.push(count(db, &format!("SELECT id FROM {t}")).await);
    }
    v
}

pub(crate) async fn exec(db: &sea_orm::DatabaseConnection, sql: &str) {
    use sea_orm::ConnectionTrait as _;
    db.execute_unprepared(sql).await.unwrap();
}

/// Polls `sql` (a count) until it is `want`, for up to 30 s.
pub(crate) async fn eventually(db: &sea_orm::DatabaseConnection, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(db, sql).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
