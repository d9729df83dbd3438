use super::*;

// ---------------------------------------------------------------------------
// Every service its own process.

pub(crate) const SERVICES: [&str; 10] = [
    "transfer-registry",
    "crm",
    "print-mail",
    "legal",
    "identity",
    "discovery",
    "export",
    "erasure",
    "orchestrator",
    "orchestrator-2",
];

pub(crate) struct Mesh {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) key: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) ports: BTreeMap<&'static str, u16>,
    pub(crate) procs: BTreeMap<&'static str, Proc>,
    pub(crate) token: String,
    pub(crate) db_url: Option<String>,
    /// Set in every process's environment.
    pub(crate) env: Vec<(String, String)>,
}

impl Mesh {
    pub(crate) async fn new(db_url: Option<&str>) -> Self {
        Self::with_env(db_url, Vec::new()).await
    }

    pub(crate) async fn with_env(db_url: Option<&str>, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let key = dir.path().join("mesh-key.pem");
        let key_path = key.clone();
        let (signer, jwks) = dsr_auth::TokenSigner::from_key_file(&key, None, "e2e").unwrap();
        let jwks_file = dir.path().join("mesh-jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();
        let base = consecutive_ports(SERVICES.len() as u16);
        let ports: BTreeMap<&'static str, u16> = SERVICES
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, base + i as u16))
            .collect();
        let url = |s: &str| format!("http://127.0.0.1:{}", ports[s]);
        let key = key.display();
        let config = format!(
            r#"data_dir = "{data}"
log_format = "json"

[auth]
issuers = ["e2e"]
jwks_file = "{jwks}"
# One key for every service of this test mesh: its issuer holds every scope.
grants = {{ e2e = [{all_scopes}] }}

[database]
url = "{db}"
migrate_on_start = true

[discovery]
timeout_ms = 1500
service_key_file = "{key}"
service_token_issuer = "e2e"
systems = [
  {{ id = "crm", endpoint = "{crm}", operator_recipient_id = "crm-vendor" }},
  {{ id = "print-mail", endpoint = "{pm}", operator_recipient_id = "print-mail" }},
  {{ id = "legal", endpoint = "{legal}", operator_recipient_id = "legal-representatives" }},
]

[export]
registry_endpoint = "{registry}"
service_key_file = "{key}"
service_token_issuer = "e2e"

[erasure]
registry_endpoint = "{registry}"
service_key_file = "{key}"
service_token_issuer = "e2e"
# No scheduled sweep: it would erase the seeded people whose retention has
# run out (Per Johansson's contact among them) under the tests' feet.
sweep_every_hours = 0

[orchestrator]
identity_endpoint = "{identity}"
discovery_endpoint = "{discovery}"
export_endpoint = "{export}"
erasure_endpoint = "{erasure}"
# Erasures for Intrum Finans wait for a case handler after planning.
approval_controllers = ["556885-5265"]
service_key_file = "{key}"
service_token_issuer = "e2e"
# Long enough for a renewal to get through 200 requests on two cores.
lease_secs = 20
poll_ms = 50
backoff_base_ms = 200
backoff_max_secs = 1
call_timeout_secs = 20
workers = 16
privacy_centre_url = "https://mina-uppgifter.bolaget.se"
"#,
            data = data.display(),
            jwks = jwks_file.display(),
            all_scopes = ALL_SCOPES
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            db = db_url.unwrap_or_default(),
            crm = url("crm"),
            pm = url("print-mail"),
            legal = url("legal"),
            registry = url("transfer-registry"),
            identity = url("identity"),
            discovery = url("discovery"),
            export = url("export"),
            erasure = url("erasure"),
        );
        let config_path = dir.path().join("dsr.toml");
        std::fs::write(&config_path, config).unwrap();
        let token = signer
            .mint(&dsr_auth::TokenRequest {
                subject: "e2e-portal".into(),
                audiences: vec!["dsr-orchestrator".into(), "dsr-identity".into()],
                scopes: vec![
                    "requests:submit".into(),
                    "requests:read".into(),
                    "requests:manage".into(),
                    "incidents:report".into(),
                    "incidents:manage".into(),
                    "identity:verify".into(),
                    "identity:attest".into(),
                ],
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        let mut mesh = Self {
            key: key_path,
            _dir: dir,
            data,
            config: config_path,
            ports,
            procs: BTreeMap::new(),
            token,
            db_url: db_url.map(str::to_owned),
            env,
        };
        for s in &SERVICES[..9] {
            mesh.start(s).await;
        }
        mesh
    }

    pub(crate) async fn start(&mut self, name: &'static str) {
        let port = self.ports[name];
        let mut cmd = Command::new(&*DSR);
        cmd.arg("serve");
        match name {
            "crm" | "print-mail" | "legal" => {
                cmd.args(["system-sql", "--reference", name]);
            }
            "orchestrator-2" => {
                cmd.arg("orchestrator")
                    .env("DSR_ORCHESTRATOR__WORKER_ID", "replica-2");
            }
            "orchestrator" => {
                cmd.arg("orchestrator")
                    .env("DSR_ORCHESTRATOR__WORKER_ID", "replica-1");
            }
            other => {
                cmd.arg(other);
            }
        }
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", self.config.to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let p = Proc::spawn(name, &mut cmd);
        ready(port, &p).await;
        self.procs.insert(name, p);
    }

    pub(crate) fn stop(&mut self, name: &'static str) -> String {
        self.procs.remove(name).unwrap().kill()
    }

    pub(crate) async fn requests(&self) -> RequestsClient<Channel> {
        RequestsClient::new(channel(self.ports["orchestrator"]).await)
    }

    /// A verification token for `who`, the way a portal gets one.
    pub(crate) async fn verification_token(&self, who: &str) -> String {
        let mut id = IdentityVerificationClient::new(channel(self.ports["identity"]).await);
        let seen = outbox_len(&self.data);
        let started = id
            .start_verification(bearer(
                &self.token,
                idv::StartVerificationRequest {
                    claimed: vec![email(who)],
                    method: idv::Method::EmailCode as i32,
                    idp_assertion: String::new(),
                    attestation: None,
                    language: "sv".into(),
                    dry_run: false,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let code = code_in_outbox(&self.data, who, seen).unwrap();
        id.complete_verification(bearer(
            &self.token,
            idv::CompleteVerificationRequest {
                challenge_id: started.challenge_id,
                code,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .jwt
    }

    /// A verification token from a case handler's attestation (no code,
    /// so no rate limit): a fresh one per request, as each verifies one.
    pub(crate) async fn attested_token(&self, who: &str) -> String {
        let mut id = IdentityVerificationClient::new(channel(self.ports["identity"]).await);
        id.start_verification(bearer(
            &self.token,
            idv::StartVerificationRequest {
                claimed: vec![email(who)],
                method: idv::Method::CaseHandlerAttestation as i32,
                idp_assertion: String::new(),
                attestation: Some(idv::Attestation {
                    evidence: idv::AttestationEvidence::InPerson as i32,
                    note: "e2e".into(),
                }),
                language: "sv".into(),
                dry_run: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .jwt
    }

    pub(crate) async fn submit_with_token(&self, key: &str, vt: &str) -> String {
        let mut c = self.requests().await;
        c.submit(bearer(
            &self.token,
            pb::SubmitRequest {
                kind: pb::Kind::Access as i32,
                controller: controller(SVERIGE),
                claimed: vec![],
                verification_token: vt.into(),
                language: "en".into(),
                idempotency_key: key.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id
    }

    /// Submits a request of `kind` for Intrum Finans with a verification
    /// token.
    pub(crate) async fn submit_finans(&self, key: &str, vt: &str, kind: pb::Kind) -> String {
        let mut c = self.requests().await;
        c.submit(bearer(
            &self.token,
            pb::SubmitRequest {
                kind: kind as i32,
                controller: controller(FINANS),
                verification_token: vt.into(),
                idempotency_key: key.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id
    }

    /// A service's own database (a system's, erasure's, ...).
    pub(crate) async fn db(&self, name: &str) -> sea_orm::DatabaseConnection {
        let file = name.to_owned();
        let (url, schema) = match &self.db_url {
            Some(u) => (u.clone(), Some(format!("dsr_{}", file.replace('-', "_")))),
            None => (
                dsr_store::sqlite_url(&self.data.join(format!("{file}.db"))),
                None,
            ),
        };
        dsr_store::connect(
            &url,
            &dsr_store::StoreConfig {
                max_connections: 1,
                schema,
                ..dsr_store::StoreConfig::default()
            },
        )
        .await
        .unwrap()
    }

    /// A client of the erasure service with `erasure:read`.
    pub(crate) async fn erasure(&self) -> (ErasureClient<Channel>, String) {
        let signer = dsr_auth::TokenSigner::from_key_file(&self.key, None, "e2e")
            .unwrap()
            .0;
        let token = signer
            .mint(&dsr_auth::TokenRequest {
                subject: "e2e-case-handler".into(),
                audiences: vec!["dsr-erasure".into()],
                scopes: vec!["erasure:read".into()],
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        (
            ErasureClient::new(channel(self.ports["erasure"]).await),
            token,
        )
    }

    /// The orchestrator's step log, read from its database.
    pub(crate) async fn step_log(&self, id: &str) -> Vec<dsr_orchestrator::queue::StepRun> {
        let (url, schema) = match &self.db_url {
            Some(u) => (u.clone(), Some("dsr_orchestrator".to_owned())),
            None => (
                dsr_store::sqlite_url(&self.data.join("orchestrator.db")),
                None,
            ),
        };
        let db = dsr_store::connect(
            &url,
            &dsr_store::StoreConfig {
                max_connections: 1,
                schema,
                ..dsr_store::StoreConfig::default()
            },
        )
        .await
        .unwrap();
        let ledger = dsr_orchestrator::ledger::Ledger::new(
            db.clone(),
            dsr_domain::deadline::HolidayCalendar::swedish(),
        );
        let log = ledger.step_log(id).await.unwrap();
        let _ = db.close().await;
        log
    }
}
