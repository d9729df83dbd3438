//! Signing in to the console: through the company's identity provider
//! (OpenID Connect; the handler's roles give their scopes) or, under
//! `dsr up`, by name; and signing out. A sign-in always gets a new session
//! key.

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use dsr_domain::text::Lang;

use super::{CASE_HANDLER_SCOPES, SignIn, console_page, other};
use crate::oidc::Callback;
use crate::pages::esc;
use crate::sessions::Session;
use crate::web::{
    Portal, Returned, not_found, page, returned_from, see_other, session_key, set_cookie,
};

fn valid_handler(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'@')
        })
}

fn login_body(p: &Portal, lang: Lang, value: &str, error: bool) -> String {
    let t = &p.texts;
    let l = lang.code();
    let err = if error {
        format!(
            "<p class=\"error\" id=\"handler-error\">{}</p>",
            esc(t.get("error_handler", lang))
        )
    } else {
        String::new()
    };
    format!(
        "<p>{help}</p><form method=\"post\" action=\"/console/{l}/login\" novalidate>\
<label for=\"handler\">{label}</label>{err}<input type=\"text\" id=\"handler\" name=\"handler\" value=\"{value}\" \
autocomplete=\"username\" aria-describedby=\"handler-error\"{invalid}><button type=\"submit\">{go}</button></form>",
        help = esc(t.get("console_login_help", lang)),
        label = esc(t.get("field_handler", lang)),
        value = esc(value),
        invalid = if error { " aria-invalid=\"true\"" } else { "" },
        go = esc(t.get("console_sign_in", lang)),
    )
}

pub(super) async fn login_form(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let (Some(lang), Some(console)) = (Lang::parse(&lang), p.console.as_ref()) else {
        return not_found();
    };
    let title = p.texts.get("console_login_title", lang).to_owned();
    let body = match console.sign_in {
        SignIn::Development => login_body(&p, lang, "", false),
        SignIn::Oidc { .. } => oidc_login_body(&p, lang, None),
    };
    console_page(
        &p,
        lang,
        &title,
        &format!("/console/{}/login", other(lang)),
        &body,
    )
}

fn oidc_login_body(p: &Portal, lang: Lang, error: Option<&str>) -> String {
    let t = &p.texts;
    format!(
        "{err}<p>{help}</p><form method=\"post\" action=\"/console/{l}/login/oidc\"><button type=\"submit\">{go}</button></form>",
        err = error.map_or_else(String::new, |k| format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(t.get(k, lang))
        )),
        help = esc(t.get("console_oidc_help", lang)),
        l = lang.code(),
        go = esc(t.get("console_oidc_sign_in", lang)),
    )
}

/// `POST /console/{lang}/login/oidc`: off to the identity provider.
pub(super) async fn login_oidc(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let (Some(lang), Some(console)) = (Lang::parse(&lang), p.console.as_ref()) else {
        return not_found();
    };
    let SignIn::Oidc { provider, .. } = &console.sign_in else {
        return not_found();
    };
    match provider.begin().await {
        Ok((url, attempt)) => {
            let key = p.sessions.open(Session {
                attempt,
                lang: lang.code().to_owned(),
                ..Session::default()
            });
            let mut r = see_other(&url);
            set_cookie(&p, &mut r, &key);
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in could not start");
            let title = p.texts.get("console_login_title", lang).to_owned();
            console_page(
                &p,
                lang,
                &title,
                &format!("/console/{}/login", other(lang)),
                &oidc_login_body(&p, lang, Some("error_unavailable")),
            )
        }
    }
}

/// `GET /console/oidc/callback`: the handler back from the identity
/// provider; signed in when the token verifies and their roles give
/// scopes, under a new session key.
pub(super) async fn oidc_callback(
    State(p): State<Portal>,
    Query(cb): Query<Callback>,
    headers: HeaderMap,
) -> Response {
    let Some(console) = p.console.as_ref() else {
        return not_found();
    };
    let SignIn::Oidc {
        provider,
        roles_claim,
        handler_claim,
        role_scopes,
    } = &console.sign_in
    else {
        return not_found();
    };
    let Some((_, lang, answer)) = returned_from(&p, &headers, provider, &cb).await else {
        return page(crate::pages::notice(&p.texts, Lang::Sv, "error_session"));
    };
    let refused = |k: &str| {
        let title = p.texts.get("console_login_title", lang).to_owned();
        console_page(
            &p,
            lang,
            &title,
            &format!("/console/{}/login", other(lang)),
            &oidc_login_body(&p, lang, Some(k)),
        )
    };
    let claims = match answer {
        Ok((_, c)) => c,
        Err(Returned::Unavailable) => return refused("error_unavailable"),
        Err(Returned::Refused) => return refused("console_oidc_refused"),
    };
    let mut scopes: Vec<String> = crate::oidc::claim_strings(&claims, roles_claim)
        .iter()
        .filter_map(|r| role_scopes.get(r))
        .flatten()
        .cloned()
        .collect();
    scopes.sort();
    scopes.dedup();
    let who = crate::oidc::claim_strings(&claims, handler_claim)
        .into_iter()
        .next()
        .or_else(|| {
            crate::oidc::claim_strings(&claims, "sub")
                .into_iter()
                .next()
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    if scopes.is_empty() || !valid_handler(&who) {
        tracing::info!(
            roles = scopes.is_empty(),
            "console sign-in: no case handler role, or no usable name"
        );
        return refused("console_oidc_no_role");
    }
    tracing::info!("case handler signed in through the identity provider");
    let key = p.sessions.open(Session {
        handler: who,
        scopes,
        ..Session::default()
    });
    let mut r = see_other(&format!("/console/{}/", lang.code()));
    set_cookie(&p, &mut r, &key);
    r
}

/// `POST /console/{lang}/logout`.
pub(super) async fn logout(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(lang) = Lang::parse(&lang) else {
        return not_found();
    };
    if let Some(k) = session_key(&headers) {
        p.sessions.close(&k);
    }
    see_other(&format!("/console/{}/login", lang.code()))
}

/// The sign-in form as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    handler: String,
}

pub(super) async fn login(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Form(f): Form<LoginForm>,
) -> Response {
    let (Some(lang), Some(console)) = (Lang::parse(&lang), p.console.as_ref()) else {
        return not_found();
    };
    if !matches!(console.sign_in, SignIn::Development) {
        return not_found();
    }
    let who = f.handler.trim();
    if !valid_handler(who) {
        let title = p.texts.get("console_login_title", lang).to_owned();
        return console_page(
            &p,
            lang,
            &title,
            &format!("/console/{}/login", other(lang)),
            &login_body(&p, lang, who, true),
        );
    }
    let key = p.sessions.open(Session {
        handler: who.to_owned(),
        scopes: CASE_HANDLER_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        ..Session::default()
    });
    let mut r = see_other(&format!("/console/{}/", lang.code()));
    set_cookie(&p, &mut r, &key);
    r
}
