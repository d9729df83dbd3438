//! Token validation against every key type and every way a token can be bad.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dsr_auth::{
    Audience, Claims, Error, KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig,
    now_secs,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const JWKS: &str = include_str!("fixtures/jwks.json");

fn validator() -> Validator {
    Validator::new(
        Arc::new(KeySet::from_jwks_json(JWKS).unwrap()),
        validator_config(),
    )
}

fn claims() -> Claims {
    let now = now_secs();
    Claims {
        sub: "portal-user-1".into(),
        iss: "https://idp.test".into(),
        aud: Audience::One("dsr-transfer-registry".into()),
        exp: now + 300,
        nbf: Some(now),
        iat: Some(now),
        scope: "transfers:read transfers:write".into(),
        scp: None,
        roles: None,
        jti: None,
    }
}

fn sign(alg: Algorithm, kid: &str, claims: &Claims) -> String {
    let key = if alg == Algorithm::RS256 {
        EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-1.pem")).unwrap()
    } else if alg == Algorithm::ES256 {
        EncodingKey::from_ec_pem(include_bytes!("fixtures/ec-1.pem")).unwrap()
    } else {
        assert_eq!(alg, Algorithm::EdDSA, "no fixture for {alg:?}");
        EncodingKey::from_ed_pem(include_bytes!("fixtures/ed-1.pem")).unwrap()
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[test]
fn every_key_type_verifies() {
    let v = validator();
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let p = v
            .validate(&sign(alg, kid, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(p.subject, "portal-user-1");
        assert!(p.has_scope("transfers:write"));
        assert!(!p.has_scope("admin"));
    }
}

#[test]
fn bad_tokens_are_refused_for_the_right_reason() {
    let v = validator();
    let now = now_secs();
    let cases: Vec<(&str, String, Error)> = vec![
        (
            "wrong audience",
            sign(
                Algorithm::EdDSA,
                "ed-1",
                &Claims {
                    aud: Audience::One("other".into()),
                    ..claims()
                },
            ),
            Error::Audience,
        ),
        (
            "expired beyond leeway",
            sign(
                Algorithm::EdDSA,
                "ed-1",
                &Claims {
                    exp: now - 60,
                    ..claims()
                },
            ),
            Error::Expired,
        ),
        (
            "not yet valid",
            sign(
                Algorithm::EdDSA,
                "ed-1",
                &Claims {
                    nbf: Some(now + 120),
                    ..claims()
                },
            ),
            Error::NotYetValid,
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::EdDSA,
                "ed-1",
                &Claims {
                    iss: "https://evil.test".into(),
                    ..claims()
                },
            ),
            Error::Issuer,
        ),
        (
            "unknown kid",
            sign(Algorithm::EdDSA, "ed-9", &claims()),
            Error::UnknownKey,
        ),
        (
            "kid of another algorithm",
            sign(Algorithm::EdDSA, "rsa-1", &claims()),
            Error::AlgorithmMismatch,
        ),
        ("not a jwt", "abc.def".into(), Error::Malformed),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.validate(&token).unwrap_err(), want, "{name}");
    }
}

#[test]
fn expiry_within_leeway_is_accepted() {
    let v = validator();
    let t = sign(
        Algorithm::EdDSA,
        "ed-1",
        &Claims {
            exp: now_secs() - 10,
            ..claims()
        },
    );
    assert!(v.validate(&t).is_ok());
}

/// A token verified once is remembered (its signature is not checked on
/// every call), but only until it expires: the same token is then refused
/// as expired, as a first check would refuse it.
#[test]
fn a_remembered_token_is_refused_once_it_expires() {
    let v = Validator::new(
        Arc::new(KeySet::from_jwks_json(JWKS).unwrap()),
        ValidatorConfig {
            leeway_secs: 0,
            ..validator_config()
        },
    );
    let t = sign(
        Algorithm::EdDSA,
        "ed-1",
        &Claims {
            exp: now_secs() + 1,
            ..claims()
        },
    );
    assert!(v.validate(&t).is_ok());
    assert!(v.validate(&t).is_ok(), "remembered");
    // The validator reads the wall clock (as the signature check does).
    while now_secs() <= t_exp(&t) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(v.validate(&t).unwrap_err(), Error::Expired);
}

/// A remembered token whose key is rotated out of the key set is refused
/// at once, not when the memory of it lapses.
#[test]
fn a_remembered_token_is_refused_once_its_key_is_rotated_out() {
    let keys = dsr_auth::SharedKeys::new(Arc::new(KeySet::from_jwks_json(JWKS).unwrap()));
    let v = Validator::with_shared_keys(keys.clone(), validator_config());
    let t = sign(Algorithm::EdDSA, "ed-1", &claims());
    assert!(v.validate(&t).is_ok());
    let mut doc: serde_json::Value = serde_json::from_str(JWKS).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "ed-1");
    keys.replace(KeySet::from_jwks_json(&doc.to_string()).unwrap());
    assert_eq!(v.validate(&t).unwrap_err(), Error::UnknownKey);
    // A token of a key still there keeps verifying.
    assert!(
        v.validate(&sign(Algorithm::ES256, "ec-1", &claims()))
            .is_ok()
    );
}

fn validator_config() -> ValidatorConfig {
    ValidatorConfig {
        issuers: vec!["https://idp.test".into()],
        audience: "dsr-transfer-registry".into(),
        leeway_secs: 30,
        grants: None,
    }
}

/// The `exp` of a token this file signed.
fn t_exp(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap();
    let c: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    c.exp
}

#[test]
fn alg_none_is_refused() {
    let v = validator();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ed-1","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
    let token = format!("{header}.{body}.");
    assert_eq!(v.validate(&token).unwrap_err(), Error::Malformed);
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // The classic confusion attack: HS256 keyed with the RSA public key.
    let v = validator();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(include_bytes!("fixtures/rsa-1.pub.pem")),
    )
    .unwrap();
    assert_eq!(v.validate(&token).unwrap_err(), Error::AlgorithmMismatch);
}

#[test]
fn symmetric_and_kidless_keys_are_not_accepted() {
    let oct = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;
    assert!(
        matches!(KeySet::from_jwks_json(oct), Err(Error::KeySet(m)) if m.contains("symmetric"))
    );
    let no_kid = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    assert!(
        matches!(KeySet::from_jwks_json(no_kid), Err(Error::KeySet(m)) if m.contains("no kid"))
    );
    assert!(KeySet::from_jwks_json("{}").is_err());
}

#[test]
fn generated_dev_keys_sign_and_verify() {
    let pair = dsr_auth::generate_ed25519("dev-1").unwrap();
    let signer = TokenSigner::from_ed25519_pem(&pair.private_pem, &pair.kid, "dsr-dev").unwrap();
    let token = signer
        .mint(&TokenRequest {
            subject: "service:orchestrator".into(),
            audiences: vec!["dsr-transfer-registry".into(), "dsr-erasure".into()],
            scopes: vec!["transfers:read".into()],
            ttl: Duration::from_secs(60),
        })
        .unwrap();
    let v = Validator::new(
        Arc::new(KeySet::from_jwks_json(&pair.jwks_json).unwrap()),
        ValidatorConfig {
            issuers: vec!["dsr-dev".into()],
            audience: "dsr-transfer-registry".into(),
            leeway_secs: 30,
            grants: None,
        },
    );
    let p = v.validate(&token).unwrap();
    assert_eq!(p.subject, "service:orchestrator");
    assert!(p.has_scope("transfers:read"));
    // a key set without this key refuses it
    assert_eq!(validator().validate(&token).unwrap_err(), Error::UnknownKey);
}

/// Keys bound to their issuer, and the grants of each issuer.
fn policed(grants: dsr_auth::Grants) -> Validator {
    let keys = KeySet::from_jwks_json(JWKS)
        .unwrap()
        .bound_to("dsr-erasure");
    Validator::new(
        Arc::new(keys),
        ValidatorConfig {
            issuers: vec!["dsr-erasure".into(), "dsr-discovery".into()],
            audience: "crm".into(),
            leeway_secs: 30,
            grants: Some(Arc::new(grants)),
        },
    )
}

fn token(iss: &str, scope: &str) -> String {
    let mut c = claims();
    c.iss = iss.into();
    c.aud = Audience::One("crm".into());
    c.scope = scope.into();
    sign(Algorithm::EdDSA, "ed-1", &c)
}

#[test]
fn a_key_bound_to_an_issuer_speaks_only_for_it() {
    let v = policed(
        dsr_auth::Grants::default()
            .grant("dsr-erasure", ["system:write", "system:read"])
            .grant("dsr-discovery", ["system:read"]),
    );
    assert!(v.validate(&token("dsr-erasure", "system:write")).is_ok());
    // The erasure service's key signing a token that claims discovery.
    assert_eq!(
        v.validate(&token("dsr-discovery", "system:read")),
        Err(Error::Issuer)
    );
}

#[test]
fn a_scope_outside_the_issuers_grant_is_refused() {
    let v = policed(
        dsr_auth::Grants::default()
            .grant("dsr-erasure", ["system:read"])
            .grant("dsr-discovery", ["system:read"]),
    );
    assert!(v.validate(&token("dsr-erasure", "system:read")).is_ok());
    assert_eq!(
        v.validate(&token("dsr-erasure", "system:read system:write")),
        Err(Error::NotGranted)
    );
    // An issuer with no grant at all is refused whatever it asks.
    let v = policed(dsr_auth::Grants::default().grant("dsr-discovery", ["system:read"]));
    assert_eq!(
        v.validate(&token("dsr-erasure", "system:read")),
        Err(Error::NotGranted)
    );
}

/// Tokens shaped like Entra ID's (`scp` a space-separated string, `roles` a
/// list) and Okta's (`scp` a list) give their scopes when their issuer is
/// configured to be read so; the same claims are ignored for an issuer read
/// from `scope` only, and the grants still bound what any of them carry.
#[test]
fn scopes_come_from_the_claims_configured_for_the_issuer() {
    use dsr_auth::{Grants, ScopeClaim, ScopeList};
    let entra = "https://login.microsoftonline.com/tenant/v2.0";
    let okta = "https://bolaget.okta.com/oauth2/default";
    let v = |grants: Grants| {
        Validator::new(
            Arc::new(KeySet::from_jwks_json(JWKS).unwrap()),
            ValidatorConfig {
                issuers: vec![entra.into(), okta.into()],
                audience: "dsr-orchestrator".into(),
                leeway_secs: 30,
                grants: Some(Arc::new(grants)),
            },
        )
    };
    let granted = |g: Grants| {
        g.grant(entra, ["requests:read", "requests:manage"])
            .grant(okta, ["requests:read", "requests:submit"])
    };
    let shaped = |iss: &str, scp: Option<ScopeList>, roles: Option<Vec<String>>| {
        let mut c = claims();
        c.iss = iss.into();
        c.aud = Audience::One("dsr-orchestrator".into());
        c.scope = String::new();
        c.scp = scp;
        c.roles = roles;
        sign(Algorithm::EdDSA, "ed-1", &c)
    };
    let entra_token = shaped(
        entra,
        Some(ScopeList::Spaced("requests:read".into())),
        Some(vec!["requests:manage".into()]),
    );
    let okta_token = shaped(
        okta,
        Some(ScopeList::List(vec![
            "requests:read".into(),
            "requests:submit".into(),
        ])),
        None,
    );
    let configured = v(granted(Grants::default())
        .scopes_in(entra, [ScopeClaim::Scp, ScopeClaim::Roles])
        .scopes_in(okta, [ScopeClaim::Scp]));
    let p = configured.validate(&entra_token).unwrap();
    assert!(
        p.has_scope("requests:read") && p.has_scope("requests:manage"),
        "{p:?}"
    );
    let p = configured.validate(&okta_token).unwrap();
    assert!(
        p.has_scope("requests:read") && p.has_scope("requests:submit"),
        "{p:?}"
    );
    // Read from `scope` only (the default), the same tokens carry nothing.
    let default = v(granted(Grants::default()));
    assert!(default.validate(&entra_token).unwrap().scopes.is_empty());
    assert!(default.validate(&okta_token).unwrap().scopes.is_empty());
    // A role the issuer is not granted is refused, whichever claim holds it.
    let too_much = shaped(entra, None, Some(vec!["transfers:write".into()]));
    assert_eq!(
        configured.validate(&too_much).unwrap_err(),
        Error::NotGranted
    );
}
