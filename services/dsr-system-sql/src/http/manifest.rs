//! The HTTP manifest: how a REST API maps onto the contract.
//!
//! ```yaml
//! system: { id: survey, display_name: { sv: Enkätplattform, en: Survey platform }, role: processor,
//!           operator_recipient_id: survey-platform, controllers: ["556134-1248"] }
//! categories: [ ... as in the SQL manifest ... ]
//! api:
//!   base_url: https://api.vendor.example/v1
//!   timeout_secs: 10
//!   retries: 3                  # 429, 502-504, timeouts: backoff, Retry-After honoured
//!   requests_per_second: 20
//!   auth: { api_key: { header: X-Api-Key, env: SURVEY_API_KEY } }
//!   # or  { oauth2: { token_url: …, client_id: …, client_secret_env: …, scope: … } }
//! resources:
//!   - name: respondents
//!     key: id                    # the record's key in each item
//!     controller: controller     # the item's controller (organisation number)
//!     restrictions: restrictions # a list of "request", "hold", "retention"
//!     fields:
//!       - { name: email, path: email, category: contact.email, identity: email }
//!     find:
//!       - { identity: email, path: /respondents, query: { email: "{value}", controller: "{controller}" } }
//!     list: { path: /respondents, query: { controller: "{controller}" } }
//!     page: { items: items, next: next_cursor, cursor_param: cursor }
//!     get: { path: "/respondents/{key}" }
//!     erase: { method: DELETE, path: "/respondents/{key}" }
//!     restrict: { method: PUT, path: "/respondents/{key}/restrictions/{basis}" }
//!     lift: { method: DELETE, path: "/respondents/{key}/restrictions/{basis}" }
//!     rectify: { method: PATCH, path: "/respondents/{key}" }
//!   - name: responses
//!     parent: { resource: respondents, path: "/respondents/{parent}/responses" }
//!     ...
//! ```
//!
//! Paths, query values and bodies are templates: `{value}` (the identity),
//! `{controller}`, `{key}`, `{parent}`, `{basis}` (request or hold),
//! `{reason}`; values are percent-encoded where they go into a URL. JSON
//! paths are dotted field names (`data.items`); an empty path is the whole
//! answer. [`HttpManifest::load`] checks everything it can before the
//! connector starts and names the file, the field and the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dsr_domain::identity::{IdentityType, Organisationsnummer};
use serde::Deserialize;

use crate::manifest::{CategorySpec, IdentityKind, ManifestError, SystemSpec, check_system};

/// A whole HTTP manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpManifest {
    /// The system.
    pub system: SystemSpec,
    /// The categories of data it holds.
    pub categories: Vec<CategorySpec>,
    /// How to reach the API.
    pub api: ApiSpec,
    /// Its resources (the contract's stores).
    pub resources: Vec<ResourceSpec>,
}

/// How to reach the API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// The base URL every path is appended to.
    pub base_url: String,
    /// Seconds one call may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Retries of a call answered 429, 502, 503, 504, or timed out.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Most calls per second (0: no limit).
    #[serde(default)]
    pub requests_per_second: u32,
    /// Authentication.
    #[serde(default)]
    pub auth: AuthSpec,
}

fn default_timeout() -> u64 {
    10
}

fn default_retries() -> u32 {
    3
}

/// Authentication to the API.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// An API key sent in a header.
    #[serde(default)]
    pub api_key: Option<ApiKeySpec>,
    /// OAuth 2 client credentials.
    #[serde(default)]
    pub oauth2: Option<OAuth2Spec>,
}

/// An API key in a header, read from the environment or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// The header, e.g. `X-Api-Key` (or `Authorization` with `prefix`).
    pub header: String,
    /// Written before the key, e.g. "Bearer ".
    #[serde(default)]
    pub prefix: String,
    /// The environment variable holding the key.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the key (a mounted Secret).
    #[serde(default)]
    pub file: Option<String>,
}

/// OAuth 2 client credentials (RFC 6749 §4.4).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A file holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// The scope asked for, space-separated.
    #[serde(default)]
    pub scope: String,
}

/// One resource: a store of the contract.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The store's name, e.g. "respondents".
    pub name: String,
    /// The JSON path of a record's key in an item.
    pub key: String,
    /// The JSON path of the item's controller (organisation number):
    /// required, so that every record is checked to be the instruction's
    /// controller's.
    #[serde(default)]
    pub controller: Option<String>,
    /// The JSON path of the item's restrictions: a list of "request",
    /// "hold" and "retention".
    #[serde(default)]
    pub restrictions: Option<String>,
    /// The fields holding personal data.
    pub fields: Vec<FieldSpec>,
    /// Searches by identity (a resource without a parent).
    #[serde(default)]
    pub find: Vec<FindSpec>,
    /// A child resource: listed under each parent record.
    #[serde(default)]
    pub parent: Option<ParentSpec>,
    /// Every record of a controller (a breach's FindAffected).
    #[serde(default)]
    pub list: Option<CallSpec>,
    /// How lists are paged.
    #[serde(default)]
    pub page: PageSpec,
    /// One record.
    pub get: CallSpec,
    /// Erasing one record (absent: the resource's records are kept and
    /// reported REFUSED).
    #[serde(default)]
    pub erase: Option<CallSpec>,
    /// Restricting one record (`{basis}`: request or hold).
    #[serde(default)]
    pub restrict: Option<CallSpec>,
    /// Lifting a restriction.
    #[serde(default)]
    pub lift: Option<CallSpec>,
    /// Correcting fields: the body is a JSON object of the fields' paths
    /// and their corrected values.
    #[serde(default)]
    pub rectify: Option<CallSpec>,
}

/// A field of personal data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The name Access shows.
    pub name: String,
    /// Its JSON path in an item.
    pub path: String,
    /// Its category.
    pub category: String,
    /// The identity it holds, when it is one (linked identities).
    #[serde(default)]
    pub identity: Option<IdentityKind>,
}

/// A search by one kind of identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindSpec {
    /// The identity searched by.
    pub identity: IdentityKind,
    /// The call (a list, paged).
    #[serde(flatten)]
    pub call: CallSpec,
}

/// A child resource's place under its parent.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    /// The parent resource.
    pub resource: String,
    /// The list of a parent's children (`{parent}`: the parent's key).
    #[serde(flatten)]
    pub call: CallSpec,
}

/// How a list is paged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSpec {
    /// The JSON path of the items in an answer.
    #[serde(default = "default_items")]
    pub items: String,
    /// The JSON path of the next page's cursor (absent or null: the last
    /// page).
    #[serde(default)]
    pub next: Option<String>,
    /// The query parameter the cursor is sent in.
    #[serde(default = "default_cursor")]
    pub cursor_param: String,
}

impl Default for PageSpec {
    fn default() -> Self {
        Self {
            items: default_items(),
            next: None,
            cursor_param: default_cursor(),
        }
    }
}

fn default_items() -> String {
    "items".into()
}

fn default_cursor() -> String {
    "cursor".into()
}

/// One HTTP call, as templates.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// GET, POST, PUT, PATCH or DELETE.
    #[serde(default = "default_method")]
    pub method: String,
    /// The path after the base URL.
    pub path: String,
    /// Query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A JSON body (string values are templates).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

fn default_method() -> String {
    "GET".into()
}

const PLACEHOLDERS: [&str; 6] = ["value", "controller", "key", "parent", "basis", "reason"];

/// The placeholders in a template, or the first malformed one.
fn placeholders(t: &str) -> Result<BTreeSet<&str>, String> {
    let mut out = BTreeSet::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("unclosed {{ in {t:?}"));
        };
        let name = &after[..j];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        out.insert(name);
        rest = &after[j + 1..];
    }
    Ok(out)
}

impl CallSpec {
    /// Every template of the call: path, query values, body strings.
    fn templates(&self) -> Vec<String> {
        fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
                serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_) => {}
            }
        }
        let mut v = vec![self.path.clone()];
        v.extend(self.query.values().cloned());
        if let Some(b) = &self.body {
            strings(b, &mut v);
        }
        v
    }

    fn check(&self, allowed: &[&str], need: &[&str]) -> Result<(), (String, String)> {
        if !matches!(
            self.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
        ) {
            return Err(("method".into(), "GET, POST, PUT, PATCH or DELETE".into()));
        }
        if !self.path.starts_with('/') {
            return Err(("path".into(), "starts with /".into()));
        }
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for t in self.templates() {
            let p = placeholders(&t).map_err(|e| ("path".to_owned(), e))?;
            for name in p {
                if !allowed.contains(&name) {
                    return Err((
                        "path".into(),
                        format!("{{{name}}} has no value in this call"),
                    ));
                }
                seen.insert(name.to_owned());
            }
        }
        for n in need {
            if !seen.contains(*n) {
                return Err(("path".into(), format!("must use {{{n}}}")));
            }
        }
        Ok(())
    }
}

impl HttpManifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let (text, file) = crate::manifest::read(path)?;
        Self::parse(&text, &file)
    }

    /// Parses and checks manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ManifestError> {
        let m: Self = crate::manifest::from_yaml(text, file)?;
        m.check(file)?;
        Ok(m)
    }

    /// The controllers, parsed.
    pub fn controllers(&self) -> BTreeSet<Organisationsnummer> {
        self.system
            .controllers
            .iter()
            .filter_map(|c| Organisationsnummer::parse(c).ok())
            .collect()
    }

    /// A resource by name.
    pub fn resource(&self, name: &str) -> Option<&ResourceSpec> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The resources whose parent is `name`.
    pub fn children(&self, name: &str) -> impl Iterator<Item = &ResourceSpec> {
        self.resources
            .iter()
            .filter(move |r| r.parent.as_ref().is_some_and(|p| p.resource == name))
    }

    /// The identity types the API can be searched by.
    pub fn accepted_identity_types(&self) -> BTreeSet<IdentityType> {
        self.resources
            .iter()
            .flat_map(|r| r.find.iter().map(|f| f.identity.domain()))
            .collect()
    }

    /// Whether every resource has a call for `f`.
    pub fn all_have(&self, f: impl Fn(&ResourceSpec) -> bool) -> bool {
        self.resources.iter().all(f)
    }

    /// Resources with children before their parents (the order of an
    /// erasure, so that no parent is erased under its children).
    pub fn children_first(&self) -> Vec<&ResourceSpec> {
        let depth = |r: &ResourceSpec| {
            let mut d = 0;
            let mut cur = r;
            while let Some(p) = cur.parent.as_ref().and_then(|p| self.resource(&p.resource)) {
                d += 1;
                cur = p;
                if d > self.resources.len() {
                    break;
                }
            }
            d
        };
        let mut v: Vec<&ResourceSpec> = self.resources.iter().collect();
        v.sort_by_key(|r| std::cmp::Reverse(depth(r)));
        v
    }

    fn check(&self, file: &str) -> Result<(), ManifestError> {
        let err = |field: String, problem: String| ManifestError {
            file: file.to_owned(),
            field,
            problem,
        };
        let cats = check_system(&self.system, &self.categories, file)?;
        let a = &self.api;
        if !(a.base_url.starts_with("http://") || a.base_url.starts_with("https://")) {
            return Err(err("api.base_url".into(), "an http(s):// URL".into()));
        }
        if a.timeout_secs == 0 || a.timeout_secs > 300 {
            return Err(err("api.timeout_secs".into(), "1 to 300".into()));
        }
        if a.retries > 10 {
            return Err(err("api.retries".into(), "at most 10".into()));
        }
        match (&a.auth.api_key, &a.auth.oauth2) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "api.auth".into(),
                    "one of api_key or oauth2, not both".into(),
                ));
            }
            (Some(k), None) => {
                if k.header.trim().is_empty() {
                    return Err(err("api.auth.api_key.header".into(), "required".into()));
                }
                if k.env.is_some() == k.file.is_some() {
                    return Err(err(
                        "api.auth.api_key".into(),
                        "give exactly one of env or file".into(),
                    ));
                }
            }
            (None, Some(o)) => {
                if !(o.token_url.starts_with("http://") || o.token_url.starts_with("https://")) {
                    return Err(err(
                        "api.auth.oauth2.token_url".into(),
                        "an http(s):// URL".into(),
                    ));
                }
                if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
                    return Err(err(
                        "api.auth.oauth2".into(),
                        "give exactly one of client_secret_env or client_secret_file".into(),
                    ));
                }
            }
            (None, None) => {}
        }
        let names: BTreeSet<&str> = self.resources.iter().map(|r| r.name.as_str()).collect();
        if names.len() != self.resources.len() {
            return Err(err("resources".into(), "a resource is listed twice".into()));
        }
        if self.resources.is_empty() {
            return Err(err("resources".into(), "at least one".into()));
        }
        for (i, r) in self.resources.iter().enumerate() {
            let f = |x: &str| format!("resources[{i}].{x}");
            if !crate::manifest::valid_store_name(&r.name) {
                return Err(err(f("name"), "lower-case letters, digits and _".into()));
            }
            if r.controller.is_none() {
                return Err(err(
                    f("controller"),
                    "required: the JSON path of the item's controller (organisation number), \
                     so that the connector acts only on the instruction's controller's records"
                        .into(),
                ));
            }
            if r.fields.is_empty() {
                return Err(err(f("fields"), "at least one personal-data field".into()));
            }
            for (j, fl) in r.fields.iter().enumerate() {
                if !cats.contains_key(fl.category.as_str()) {
                    return Err(err(
                        f(&format!("fields[{j}].category")),
                        "not declared in categories".into(),
                    ));
                }
            }
            let call = |name: &str, c: &CallSpec, allowed: &[&str], need: &[&str]| {
                c.check(allowed, need)
                    .map_err(|(field, why)| err(f(&format!("{name}.{field}")), why))
            };
            match &r.parent {
                Some(p) => {
                    if !names.contains(p.resource.as_str()) || p.resource == r.name {
                        return Err(err(
                            f("parent.resource"),
                            "no such other resource in the manifest".into(),
                        ));
                    }
                    if !r.find.is_empty() {
                        return Err(err(f("find"), "a child is found through its parent".into()));
                    }
                    call("parent", &p.call, &["parent"], &["parent"])?;
                }
                None => {
                    if r.find.is_empty() {
                        return Err(err(
                            f("find"),
                            "a resource needs a search by identity, or a parent".into(),
                        ));
                    }
                    for (j, fd) in r.find.iter().enumerate() {
                        call(
                            &format!("find[{j}]"),
                            &fd.call,
                            &["value", "controller"],
                            &["value"],
                        )?;
                    }
                    if let Some(l) = &r.list {
                        call("list", l, &["controller"], &[])?;
                    }
                }
            }
            call("get", &r.get, &["key"], &["key"])?;
            for (name, c, allowed) in [
                ("erase", &r.erase, &["key", "reason"][..]),
                ("restrict", &r.restrict, &["key", "basis", "reason"][..]),
                ("lift", &r.lift, &["key", "basis", "reason"][..]),
                ("rectify", &r.rectify, &["key"][..]),
            ] {
                if let Some(c) = c {
                    call(name, c, allowed, &["key"])?;
                }
            }
            if r.restrict.is_some() != r.lift.is_some() {
                return Err(err(f("lift"), "restrict and lift come together".into()));
            }
            if r.restrict.is_some() && r.restrictions.is_none() {
                return Err(err(
                    f("restrictions"),
                    "required with restrict: where an item shows its restrictions".into(),
                ));
            }
        }
        // Parents form trees.
        for (i, r) in self.resources.iter().enumerate() {
            let mut seen = BTreeSet::new();
            let mut cur = r;
            while let Some(p) = cur.parent.as_ref().and_then(|p| self.resource(&p.resource)) {
                if !seen.insert(p.name.as_str()) {
                    return Err(err(
                        format!("resources[{i}].parent"),
                        "parents form a cycle".into(),
                    ));
                }
                cur = p;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/reference/survey-http.yaml"
        ))
        .unwrap()
    }

    #[test]
    fn the_reference_manifest_loads() {
        let m = HttpManifest::parse(&reference(), "survey-http.yaml").unwrap();
        assert_eq!(
            m.children_first().first().map(|r| r.name.as_str()),
            Some("answers")
        );
        assert!(m.accepted_identity_types().contains(&IdentityType::Email));
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let base = reference();
        let cases = [
            (
                base.replacen("base_url: http://", "base_url: ftp://", 1),
                "api.base_url",
                "http(s)",
            ),
            (
                base.replacen("\"/respondents/{key}\"", "\"/respondents/{id}\"", 1),
                "resources[0].get.path",
                "unknown placeholder {id}",
            ),
            (
                base.replacen("category: survey.answers }", "category: survey.answer }", 1),
                "resources[1].fields[0].category",
                "not declared",
            ),
            (
                base.replacen("resource: respondents", "resource: people", 1),
                "resources[1].parent.resource",
                "no such",
            ),
            (
                base.replacen("env: SURVEY_API_KEY", "header2: x", 1),
                "(syntax)",
                "",
            ),
        ];
        for (text, field, why) in cases {
            assert_ne!(text, base, "{field}");
            let e = HttpManifest::parse(&text, "survey-http.yaml").unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(why), "{e}");
            assert!(
                e.to_string().starts_with("manifest survey-http.yaml: "),
                "{e}"
            );
        }
    }
}
