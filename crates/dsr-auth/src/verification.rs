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

/// An identity in a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    /// "email", "phone", "personnummer", "organisationsnummer", "customer_id".
    #[serde(rename = "type")]
    pub kind: String,
    /// The normalised value.
    pub value: String,
}

impl TokenIdentity {
    /// From a domain identity.
    pub fn from_identity(i: &Identity) -> Self {
        Self {
            kind: i.kind().as_str().to_owned(),
            value: i.value().to_owned(),
        }
    }

    /// Back to a domain identity (validated again).
    pub fn to_identity(&self) -> Option<Identity> {
        Identity::parse(IdentityType::parse(&self.kind)?, &self.value).ok()
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
    /// "email_code", "sms_code", "idp_assertion", "case_handler_attestation".
    pub method: String,
    /// The verified identities.
    pub identities: Vec<TokenIdentity>,
}
