//! Calls to the REST API: templates filled in, authentication (an API key,
//! or an OAuth 2 client-credentials token kept until shortly before it
//! expires), a per-call timeout, retries with backoff for 429, 502-504 and
//! timeouts (honouring `Retry-After`), a rate limit, and JSON paths. No
//! identity value is ever logged: errors name the call and the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::manifest::{ApiSpec, CallSpec, PageSpec};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API could not be reached or did not answer in time, after the
    /// retries.
    #[error("{call}: the API is unavailable: {why}")]
    Unavailable {
        /// Which call (method and path template).
        call: String,
        /// Why.
        why: String,
    },
    /// The API answered an error status.
    #[error("{call}: the API answered {status}")]
    Status {
        /// Which call.
        call: String,
        /// The status.
        status: u16,
    },
    /// The answer is not what the manifest says.
    #[error("{call}: {why}")]
    Shape {
        /// Which call.
        call: String,
        /// What is wrong.
        why: String,
    },
    /// Credentials are missing or refused.
    #[error("credentials: {0}")]
    Credentials(String),
}

/// Values of a call's placeholders.
pub type Vars<'a> = BTreeMap<&'static str, &'a str>;

/// The API client.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    retries: u32,
    auth: Auth,
    pacing: Option<Arc<Mutex<Instant>>>,
    interval: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Auth {
    None,
    Header { name: String, value: String },
    OAuth2(Arc<OAuth2>),
}

struct OAuth2 {
    token_url: String,
    client_id: String,
    secret: String,
    scope: String,
    cached: Mutex<Option<(String, Instant)>>,
}

fn secret(env: Option<&String>, file: Option<&String>, what: &str) -> Result<String, ApiError> {
    match (env, file) {
        (Some(var), _) => std::env::var(var)
            .map(|v| v.trim().to_owned())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::Credentials(format!("{what}: environment variable {var} is not set"))
            }),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| v.trim().to_owned())
            .map_err(|e| ApiError::Credentials(format!("{what}: cannot read {path}: {e}"))),
        (None, None) => Err(ApiError::Credentials(format!("{what}: no source"))),
    }
}

/// Percent-encodes a value for a URL path segment.
fn encode_segment(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills `{name}` placeholders from `vars`, each value passed through `enc`.
fn fill(t: &str, vars: &Vars<'_>, enc: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}') {
            Some(j) => {
                out.push_str(&enc(vars.get(&after[..j]).copied().unwrap_or("")));
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn fill_json(v: &Value, vars: &Vars<'_>) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, vars, str::to_owned)),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_json(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (fill(k, vars, str::to_owned), fill_json(x, vars)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    }
}

/// The value at a dotted JSON path (an empty path: the value itself).
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, part| match cur {
        Value::Object(o) => o.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    })
}

/// A JSON value as the contract's text (numbers in decimal; null: None).
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
    }
}

/// Sets `value` at a dotted path in `obj`, creating objects on the way.
pub fn set_at(obj: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = obj;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_owned(), value);
            return;
        }
        let next = cur
            .entry(p.to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !next.is_object() {
            *next = Value::Object(serde_json::Map::new());
        }
        let Value::Object(m) = next else { return };
        cur = m;
    }
}

impl Api {
    /// A client for `spec`; fails when a credential cannot be read.
    pub fn new(spec: &ApiSpec) -> Result<Self, ApiError> {
        let auth = match (&spec.auth.api_key, &spec.auth.oauth2) {
            (Some(k), _) => Auth::Header {
                name: k.header.clone(),
                value: format!(
                    "{}{}",
                    k.prefix,
                    secret(k.env.as_ref(), k.file.as_ref(), "api.auth.api_key")?
                ),
            },
            (None, Some(o)) => Auth::OAuth2(Arc::new(OAuth2 {
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                secret: secret(
                    o.client_secret_env.as_ref(),
                    o.client_secret_file.as_ref(),
                    "api.auth.oauth2",
                )?,
                scope: o.scope.clone(),
                cached: Mutex::new(None),
            })),
            (None, None) => Auth::None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(spec.timeout_secs))
            .build()
            .map_err(|e| ApiError::Credentials(format!("cannot build the HTTP client: {e}")))?;
        let interval = if spec.requests_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / spec.requests_per_second
        };
        Ok(Self {
            http,
            base: spec.base_url.trim_end_matches('/').to_owned(),
            retries: spec.retries,
            auth,
            pacing: (spec.requests_per_second > 0).then(|| Arc::new(Mutex::new(Instant::now()))),
            interval,
        })
    }

    /// Waits for the next slot of the rate limit.
    async fn pace(&self) {
        if let Some(p) = &self.pacing {
            let at = {
                let mut next = p.lock().await;
                let now = Instant::now();
                let at = (*next).max(now);
                *next = at + self.interval;
                at
            };
            tokio::time::sleep_until(at).await;
        }
    }

    async fn authorization(&self) -> Result<Option<(String, String)>, ApiError> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Header { name, value } => Ok(Some((name.clone(), value.clone()))),
            Auth::OAuth2(o) => {
                let mut cached = o.cached.lock().await;
                if let Some((t, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(Some(("authorization".into(), format!("Bearer {t}"))));
                }
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", o.client_id.as_str()),
                    ("client_secret", o.secret.as_str()),
                ];
                if !o.scope.is_empty() {
                    form.push(("scope", o.scope.as_str()));
                }
                let resp = self
                    .http
                    .post(&o.token_url)
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| ApiError::Credentials(format!("token endpoint: {}", kind(&e))))?;
                if !resp.status().is_success() {
                    return Err(ApiError::Credentials(format!(
                        "token endpoint answered {}",
                        resp.status().as_u16()
                    )));
                }
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|_| ApiError::Credentials("token endpoint: not JSON".into()))?;
                let token = body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::Credentials("token endpoint: no access_token".into()))?
                    .to_owned();
                let ttl = body
                    .get("expires_in")
                    .and_then(Value::as_u64)
                    .unwrap_or(300);
                // Renewed a little before it expires.
                let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1));
                *cached = Some((token.clone(), until));
                Ok(Some(("authorization".into(), format!("Bearer {token}"))))
            }
        }
    }

    /// Makes `call` with `vars` (and a cursor, for lists): the answer's
    /// JSON, or `None` for 404 (no such record). Retries what may pass.
    pub async fn call(
        &self,
        call: &CallSpec,
        vars: &Vars<'_>,
        extra_query: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Result<Option<Value>, ApiError> {
        let name = format!("{} {}", call.method, call.path);
        let url = format!("{}{}", self.base, fill(&call.path, vars, encode_segment));
        let method =
            reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|_| ApiError::Shape {
                call: name.clone(),
                why: "unknown method".into(),
            })?;
        let mut query: Vec<(String, String)> = call
            .query
            .iter()
            .map(|(k, v)| (k.clone(), fill(v, vars, str::to_owned)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if let Some((k, v)) = extra_query {
            query.push((k.to_owned(), v.to_owned()));
        }
        let body = body.or_else(|| call.body.as_ref().map(|b| fill_json(b, vars)));
        let mut attempt = 0;
        loop {
            self.pace().await;
            let mut req = self.http.request(method.clone(), &url).query(&query);
            if let Some((k, v)) = self.authorization().await? {
                req = req.header(k, v);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let (retry_after, why) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() {
                        let bytes = resp.bytes().await.map_err(|e| ApiError::Unavailable {
                            call: name.clone(),
                            why: kind(&e),
                        })?;
                        if bytes.is_empty() {
                            return Ok(Some(Value::Null));
                        }
                        return serde_json::from_slice(&bytes).map(Some).map_err(|_| {
                            ApiError::Shape {
                                call: name.clone(),
                                why: "the answer is not JSON".into(),
                            }
                        });
                    }
                    if status == 404 {
                        return Ok(None);
                    }
                    if status == 401 || status == 403 {
                        if let Auth::OAuth2(o) = &self.auth {
                            // A token revoked early: ask for a new one once.
                            *o.cached.lock().await = None;
                        }
                        if attempt > 0 || !matches!(self.auth, Auth::OAuth2(_)) {
                            return Err(ApiError::Status { call: name, status });
                        }
                        (None, format!("answered {status}"))
                    } else if matches!(status, 429 | 502 | 503 | 504) {
                        let after = resp
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        (after, format!("answered {status}"))
                    } else {
                        return Err(ApiError::Status { call: name, status });
                    }
                }
                Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => (None, kind(&e)),
                Err(e) => {
                    return Err(ApiError::Unavailable {
                        call: name,
                        why: kind(&e),
                    });
                }
            };
            if attempt >= self.retries {
                return Err(ApiError::Unavailable { call: name, why });
            }
            let backoff = Duration::from_millis(200) * 2u32.saturating_pow(attempt);
            let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(30));
            tracing::warn!(call = %name, attempt, reason = %why, "API call retried");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Every item of a paged list.
    pub async fn list(
        &self,
        call: &CallSpec,
        page: &PageSpec,
        vars: &Vars<'_>,
    ) -> Result<Vec<Value>, ApiError> {
        let name = format!("{} {}", call.method, call.path);
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100_000 {
            let answer = self
                .call(
                    call,
                    vars,
                    cursor.as_deref().map(|c| (page.cursor_param.as_str(), c)),
                    None,
                )
                .await?;
            let Some(answer) = answer else {
                return Ok(items);
            };
            match at(&answer, &page.items) {
                Some(Value::Array(a)) => items.extend(a.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => {
                    return Err(ApiError::Shape {
                        call: name,
                        why: format!("{:?} is not a list", page.items),
                    });
                }
            }
            cursor = page
                .next
                .as_deref()
                .and_then(|p| at(&answer, p))
                .and_then(as_text)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                return Ok(items);
            }
        }
        Err(ApiError::Shape {
            call: name,
            why: "the pages never end".into(),
        })
    }
}

/// What went wrong with a request, without its URL (which may hold an
/// identity in its query).
fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() {
        "cannot read the answer".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_and_encoded() {
        let vars: Vars<'_> = [("key", "a b/c"), ("controller", "556134-1248")].into();
        assert_eq!(fill("/r/{key}/x", &vars, encode_segment), "/r/a%20b%2Fc/x");
        assert_eq!(fill("{controller}", &vars, str::to_owned), "556134-1248");
        let v: Value = serde_json::json!({"a": {"b": [1, {"c": "x"}]}});
        assert_eq!(at(&v, "a.b.1.c"), Some(&Value::String("x".into())));
        assert_eq!(at(&v, "a.x"), None);
        let mut m = serde_json::Map::new();
        set_at(&mut m, "p.q", Value::from(3));
        assert_eq!(Value::Object(m), serde_json::json!({"p": {"q": 3}}));
    }
}
