//! `auth`: identity and access control as one guard per route.
//!
//! Per request, in order: inbound copies of the identity headers are removed; a client IP under
//! brute-force lockout gets 429; the route's providers are tried in order (JWT, OAuth 2.0
//! introspection, API key, mTLS certificate) and the first that finds credentials decides (401
//! with `WWW-Authenticate` when they are missing or bad); the first matching authorization rule
//! checks scopes/roles/subjects (function level, 403) and object ownership (BOLA, 403) from the
//! path, query, a header or the JSON body; the identity goes into the request context and, as
//! configured, upstream as headers. Login endpoints count failed answers per username and IP.
//!
//! Modules: [`jwt`] (keys and token checks), [`introspect`], [`apikey`] (store, cache, CLI and
//! admin operations), [`rules`] (templates, authorization), [`bruteforce`], [`credentials`]
//! (where tokens and keys are found), [`fetch`] (outbound HTTP for JWKS and introspection).

pub mod admin;
pub mod apikey;
pub mod bruteforce;
pub mod build;
pub mod credentials;
pub mod fetch;
pub mod guard;
pub mod introspect;
pub mod jwt;
pub mod rules;

pub use build::build;
pub use guard::AuthGuard;

use rampart_core::guard::Identity;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type KeyCacheId = (std::path::PathBuf, Vec<u8>);

/// State that outlives config reloads: lockout counters, JWKS caches, API key caches.
#[derive(Default)]
pub struct State {
    pub lockouts: bruteforce::Lockouts,
    jwks: Mutex<HashMap<String, Arc<jwt::JwksCache>>>,
    /// By (store path, SHA-256 of the hash secret).
    key_caches: Mutex<HashMap<KeyCacheId, Arc<apikey::KeyCache>>>,
    /// API key providers of the current config, by name (for the admin API).
    pub current_keys: arc_swap::ArcSwap<HashMap<String, (Arc<apikey::KeyCache>, i64)>>,
}

impl State {
    pub fn new() -> Arc<State> {
        Arc::new(State::default())
    }

    /// The `/keys` admin endpoints.
    pub fn admin(self: &Arc<Self>) -> Arc<dyn rampart_core::admin::AdminExtension> {
        Arc::new(admin::KeysAdmin {
            state: self.clone(),
        })
    }
}

/// Why authentication failed. `Unavailable` means the provider could not decide (e.g. the
/// introspection server is down): the request is refused with 503, never let through.
#[derive(Debug)]
pub struct AuthFailure {
    pub code: &'static str,
    pub message: String,
    pub unavailable: bool,
}

impl AuthFailure {
    pub fn invalid(code: &'static str, message: String) -> Self {
        AuthFailure {
            code,
            message,
            unavailable: false,
        }
    }
    pub fn unavailable(message: String) -> Self {
        AuthFailure {
            code: "provider_unavailable",
            message,
            unavailable: true,
        }
    }
}

/// Claim names for subject, scopes and roles (dotted names walk nested objects).
#[derive(Clone, Debug)]
pub struct ClaimPaths {
    pub subject: String,
    pub scopes: String,
    pub roles: String,
}

fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl ClaimPaths {
    /// Build an identity from verified claims.
    pub fn identity(
        &self,
        claims: Arc<Map<String, Value>>,
        method: &'static str,
        provider: &str,
        subject_fallbacks: &[&str],
    ) -> Result<Identity, AuthFailure> {
        let subject = std::iter::once(self.subject.as_str())
            .chain(subject_fallbacks.iter().copied())
            .find_map(|n| match lookup(&claims, n) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                AuthFailure::invalid(
                    "missing_claim",
                    format!("no subject claim `{}`", self.subject),
                )
            })?;
        let mut scopes = words(lookup(&claims, &self.scopes));
        if scopes.is_empty() && self.scopes == "scope" {
            scopes = words(claims.get("scp"));
        }
        let roles = words(lookup(&claims, &self.roles));
        Ok(Identity {
            subject,
            scopes,
            roles,
            method,
            provider: provider.to_string(),
            claims,
        })
    }
}
