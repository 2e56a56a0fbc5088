//! OAuth 2.0 token introspection (RFC 7662): the token is posted to the authorization server
//! with client credentials; answers are cached by token hash, never beyond the token's `exp`.

use crate::fetch::Endpoint;
use crate::AuthFailure;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_CACHE: usize = 50_000;

type Claims = std::sync::Arc<Map<String, Value>>;
/// Expiry, and the claims of an active token (None: inactive).
type CacheEntry = (Instant, Option<Claims>);

pub struct Introspector {
    endpoint: Endpoint,
    authorization: String,
    cache_ttl: Duration,
    issuer: Option<String>,
    audiences: Vec<String>,
    pub max_token_bytes: usize,
    /// Token SHA-256 → (expiry, active claims or None for inactive).
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Introspector {
    pub fn new(
        endpoint: Endpoint,
        client_id: &str,
        client_secret: &str,
        cache_ttl: Duration,
        issuer: Option<String>,
        audiences: Vec<String>,
        max_token_bytes: usize,
    ) -> Self {
        // RFC 6749 2.3.1: the id and secret are form-encoded before Basic encoding.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(client_secret)
        ));
        Introspector {
            endpoint,
            authorization: format!("Basic {basic}"),
            cache_ttl,
            issuer,
            audiences,
            max_token_bytes,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn introspect(&self, token: &str) -> Result<Claims, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::invalid(
                "token_too_large",
                format!("token of {} bytes is over the limit", token.len()),
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut h = [0u8; 32];
        h.copy_from_slice(digest.as_ref());
        let now = Instant::now();
        if let Some((exp, v)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&h) {
            if *exp > now {
                return v.clone().ok_or_else(inactive);
            }
        }
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let r = self
            .endpoint
            .call(
                http::Method::POST,
                &[
                    (http::header::AUTHORIZATION, self.authorization.clone()),
                    (
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded".into(),
                    ),
                    (http::header::ACCEPT, "application/json".into()),
                ],
                Bytes::from(body),
            )
            .await
            .map_err(|e| AuthFailure::unavailable(format!("introspection failed: {e}")))?;
        if !r.status.is_success() {
            return Err(AuthFailure::unavailable(format!(
                "introspection endpoint answered {}",
                r.status.as_u16()
            )));
        }
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
            AuthFailure::unavailable(format!("introspection answer is not JSON: {e}"))
        })?;
        let Value::Object(claims) = v else {
            return Err(AuthFailure::unavailable(
                "introspection answer is not a JSON object".into(),
            ));
        };
        let verdict = self.judge(&claims);
        let ttl = match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) => Duration::from_secs(exp.saturating_sub(unix_now())).min(self.cache_ttl),
            None => self.cache_ttl,
        };
        let entry = match &verdict {
            Ok(()) => Some(std::sync::Arc::new(claims)),
            Err(_) => None,
        };
        {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.len() >= MAX_CACHE {
                c.retain(|_, (exp, _)| *exp > now);
                if c.len() >= MAX_CACHE {
                    c.clear();
                }
            }
            if !ttl.is_zero() {
                c.insert(h, (now + ttl, entry.clone()));
            }
        }
        verdict?;
        entry.ok_or_else(inactive)
    }

    fn judge(&self, c: &Map<String, Value>) -> Result<(), AuthFailure> {
        if c.get("active") != Some(&Value::Bool(true)) {
            return Err(inactive());
        }
        if let Some(exp) = c.get("exp").and_then(Value::as_u64) {
            if exp <= unix_now() {
                return Err(AuthFailure::invalid("expired", "token has expired".into()));
            }
        }
        if let Some(iss) = &self.issuer {
            if c.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(AuthFailure::invalid(
                    "wrong_issuer",
                    "token issuer does not match".into(),
                ));
            }
        }
        if !self.audiences.is_empty() {
            let ok = match c.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|x| self.audiences.iter().any(|y| y == x)),
                _ => false,
            };
            if !ok {
                return Err(AuthFailure::invalid(
                    "wrong_audience",
                    "token audience does not match".into(),
                ));
            }
        }
        Ok(())
    }
}

fn inactive() -> AuthFailure {
    AuthFailure::invalid("inactive_token", "token is not active".into())
}
