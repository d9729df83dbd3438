//! Verification tokens as the services that accept them read them: the
//! identity service issues short-lived EdDSA JWTs listing the identities it
//! verified and how strongly; the orchestrator (and any service) decodes them
//! with [`crate::Validator::decode`] over the identity service's JWKS,
//! issuer [`ISSUER`] and audience [`AUDIENCE`].

use dsr_domain::identity::{Identity, IdentityType};
use serde::{Deserialize, Serialize};

/// The issuer of verification tokens.
pub const ISSUER: &str = "dsr-identity";
/// Their audience: every service of the mesh.
pub const AUDIENCE: &str = "dsr-mesh";

/// How strongly the identities were verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assurance {
    /// Control of an email address or phone number.
    Low,
    /// eIDAS substantial (e.g. BankID).
    Substantial,
    /// eIDAS high.
    High,
    /// A case handler identified the person.
    Attested,
}

/// How the identities were verified: a closed set, written in the token
/// as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A code sent to an email address and typed back.
    EmailCode,
    /// A code sent by SMS and typed back.
    SmsCode,
    /// An assertion of the identity provider (e.g. BankID through it).
    IdpAssertion,
    /// A case handler's attestation (in person or from a document).
    CaseHandlerAttestation,
}

impl Method {
    /// Every method.
    pub const ALL: [Self; 4] = [
        Self::EmailCode,
        Self::SmsCode,
        Self::IdpAssertion,
        Self::CaseHandlerAttestation,
    ];

    /// The name in tokens, storage and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailCode => "email_code",
            Self::SmsCode => "sms_code",
            Self::IdpAssertion => "idp_assertion",
            Self::CaseHandlerAttestation => "case_handler_attestation",
        }
    }

    /// Parses [`Method::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// An identity in a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    /// Its type, written as [`IdentityType::as_str`] ("email", "phone",
    /// "personnummer", "organisationsnummer", "customer_id").
    #[serde(rename = "type", with = "identity_type")]
    pub kind: IdentityType,
    /// The normalised value.
    pub value: String,
}

impl TokenIdentity {
    /// From a domain identity.
    pub fn from_identity(i: &Identity) -> Self {
        Self {
            kind: i.kind(),
            value: i.value().to_owned(),
        }
    }

    /// Back to a domain identity (its value validated again).
    pub fn to_identity(&self) -> Option<Identity> {
        Identity::parse(self.kind, &self.value).ok()
    }
}

/// An identity type as its stable name; an unknown name is an error.
mod identity_type {
    use dsr_domain::identity::IdentityType;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(t: &IdentityType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IdentityType, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IdentityType::parse(&name).ok_or_else(|| D::Error::custom("unknown identity type"))
    }
}

/// The claims of a verification token. Other services decode them with
/// `dsr_auth::Validator::decode` over the identity service's JWKS, issuer
/// [`ISSUER`] and audience [`AUDIENCE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The verification's id.
    pub sub: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Token id.
    pub jti: String,
    /// Assurance level.
    pub acr: Assurance,
    /// How the identities were verified.
    pub method: Method,
    /// The verified identities.
    pub identities: Vec<TokenIdentity>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(method: &str, kind: &str) -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "v1", "exp": 2, "iat": 1, "nbf": 1,
            "jti": "j1", "acr": "low", "method": method,
            "identities": [{"type": kind, "value": "anna@example.se"}],
        })
    }

    /// The token's JSON keeps the names it always had; a method or an
    /// identity type outside the closed sets is not a token the mesh
    /// issued, and does not decode.
    #[test]
    fn claims_are_typed_with_the_names_on_the_wire() {
        for m in Method::ALL {
            let c: VerificationClaims =
                serde_json::from_value(claims(m.as_str(), "email")).unwrap();
            assert_eq!(c.method, m);
            assert_eq!(Method::parse(m.as_str()), Some(m));
            assert_eq!(
                serde_json::to_value(&c).unwrap(),
                claims(m.as_str(), "email")
            );
        }
        let c: VerificationClaims = serde_json::from_value(claims("email_code", "email")).unwrap();
        assert_eq!(c.identities[0].kind, IdentityType::Email);
        assert_eq!(
            c.identities[0].to_identity(),
            Identity::parse(IdentityType::Email, "anna@example.se").ok()
        );
        assert!(serde_json::from_value::<VerificationClaims>(claims("postcard", "email")).is_err());
        assert!(
            serde_json::from_value::<VerificationClaims>(claims("email_code", "shoe_size"))
                .is_err()
        );
        assert_eq!(Method::parse("postcard"), None);
    }
}
