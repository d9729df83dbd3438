//! The privacy centre, wired from the configuration: `dsr serve portal`
//! and `dsr up` (on the base port + 9).

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;

/// The privacy centre's routes over the mesh at the configured endpoints.
pub(crate) fn router(cfg: &Config) -> anyhow::Result<axum::Router> {
    let p = &cfg.portal;
    for (name, v) in [
        ("portal.orchestrator_endpoint", &p.orchestrator_endpoint),
        ("portal.identity_endpoint", &p.identity_endpoint),
        ("portal.export_endpoint", &p.export_endpoint),
    ] {
        anyhow::ensure!(!v.is_empty(), "invalid configuration: {name} is required");
    }
    let group = crate::services::group(cfg)?;
    let controllers: Vec<(String, String)> = group
        .controllers
        .iter()
        .map(|c| (c.organisation_number.as_str().to_owned(), c.name.clone()))
        .collect();
    let orgs: Vec<String> = controllers.iter().map(|(o, _)| o.clone()).collect();
    let texts = if p.texts_file.is_empty() {
        dsr_portal::texts::Texts::parse(dsr_portal::texts::BUILT_IN, "texts.toml (shipped)", &orgs)?
    } else {
        let text = std::fs::read_to_string(&p.texts_file)
            .with_context(|| format!("cannot read portal.texts_file {}", p.texts_file))?;
        dsr_portal::texts::Texts::parse(&text, &p.texts_file, &orgs)?
    };
    let signer = crate::services::service_signer(
        cfg,
        &p.service_key_file,
        "portal",
        &p.service_token_issuer,
    )?;
    let mesh = dsr_portal::mesh::Mesh::new(
        &dsr_portal::mesh::Endpoints {
            orchestrator: p.orchestrator_endpoint.clone(),
            identity: p.identity_endpoint.clone(),
            export: p.export_endpoint.clone(),
            erasure: String::new(),
            registry: String::new(),
        },
        signer,
    )
    .map_err(|e| anyhow::anyhow!("invalid configuration: portal: {e}"))?;
    let console_mesh = |signer: Arc<dsr_auth::TokenSigner>| {
        dsr_portal::mesh::Mesh::new(
            &dsr_portal::mesh::Endpoints {
                orchestrator: p.orchestrator_endpoint.clone(),
                identity: p.identity_endpoint.clone(),
                export: p.export_endpoint.clone(),
                erasure: p.erasure_endpoint.clone(),
                registry: p.registry_endpoint.clone(),
            },
            signer,
        )
        .map(dsr_portal::mesh::Mesh::as_case_handlers)
        .map_err(|e| anyhow::anyhow!("invalid configuration: portal: {e}"))
    };
    let provider = |name: &str, o: &crate::config::OidcSection| -> anyhow::Result<_> {
        Ok(Arc::new(
            dsr_portal::oidc::Provider::new(o.settings()?)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {name}.{e}"))?,
        ))
    };
    let console = if !p.console_oidc.issuer.is_empty() {
        // Through the company's identity provider: the console's own key
        // signs each call as the handler, with the scopes of their roles.
        let signer = crate::services::service_signer(
            cfg,
            &p.console_key_file,
            "console",
            &p.console_token_issuer,
        )?;
        Some(dsr_portal::console::Console {
            mesh: console_mesh(signer)?,
            sign_in: dsr_portal::console::SignIn::Oidc {
                provider: provider("portal.console_oidc", &p.console_oidc)?,
                roles_claim: p.console_oidc.roles_claim.clone(),
                handler_claim: p.console_oidc.handler_claim.clone(),
                role_scopes: p.console_oidc.role_scopes.clone(),
            },
        })
    } else if p.console_dev_login {
        // The development sign-in signs with the development key (the
        // development identity provider): its issuer holds the people's
        // scopes, case handlers' included.
        let key = crate::dev::load_dev_key(&cfg.data_dir)
            .context("portal.console_dev_login needs the development key (dsr up makes it)")?;
        let signer = dsr_auth::TokenSigner::from_ed25519_pem(
            &key.private_pem,
            &key.kid,
            crate::dev::DEV_ISSUER,
        )?;
        Some(dsr_portal::console::Console {
            mesh: console_mesh(Arc::new(signer))?,
            sign_in: dsr_portal::console::SignIn::Development,
        })
    } else {
        None
    };
    let person_idp = if p.person_oidc.issuer.is_empty() {
        None
    } else {
        Some(provider("portal.person_oidc", &p.person_oidc)?)
    };
    Ok(dsr_portal::web::router(dsr_portal::web::Portal {
        texts: Arc::new(texts),
        mesh,
        sessions: Arc::new(dsr_portal::sessions::Sessions::new(
            chrono::Duration::minutes(i64::from(p.session_ttl_mins)),
            p.max_sessions,
            crate::services::clock(cfg),
        )),
        controllers,
        dpo_email: group.dpo_email.clone(),
        secure_cookie: p.secure_cookie,
        console,
        person_idp,
        clock: crate::services::clock(cfg),
        sms_codes: p.sms_codes,
        person_key: crate::dev::secret_key(
            &p.person_key_file,
            &cfg.data_dir.join("portal-person.key"),
        )
        .context("portal.person_key_file")?,
    }))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the privacy centre failed")
}
