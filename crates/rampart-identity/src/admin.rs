//! Admin endpoints for API keys (loopback callers only):
//! `GET /keys`, `POST /keys` (create), `POST /keys/revoke`, `POST /keys/rotate`.
//! Bodies are JSON; `provider` may be left out when one api_key provider is configured.

use crate::apikey::{now_secs, KeyCache, KeyRecord};
use crate::State;
use http::StatusCode;
use rampart_core::admin::{AdminExtension, AdminRequest};
use rampart_core::guard::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct KeysAdmin {
    pub state: Arc<State>,
}

fn err(status: StatusCode, msg: &str) -> (StatusCode, String) {
    (status, json!({ "error": msg }).to_string())
}

/// A key record for output (never the hash).
pub fn record_json(r: &KeyRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), Value::String(r.status(now_secs()).into()));
    }
    v
}

impl KeysAdmin {
    fn pick(&self, provider: Option<&str>) -> Result<(Arc<KeyCache>, i64), (StatusCode, String)> {
        let all = self.state.current_keys.load();
        match provider {
            Some(p) => all
                .get(p)
                .cloned()
                .ok_or_else(|| err(StatusCode::NOT_FOUND, &format!("no api_key provider `{p}`"))),
            None if all.len() == 1 => {
                Ok(all.values().next().cloned().ok_or_else(|| {
                    err(StatusCode::NOT_FOUND, "no api_key provider is configured")
                })?)
            }
            None if all.is_empty() => Err(err(
                StatusCode::NOT_FOUND,
                "no api_key provider is configured",
            )),
            None => Err(err(
                StatusCode::BAD_REQUEST,
                "several api_key providers: name one with `provider`",
            )),
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("key store task failed: {e}"))?
}

impl AdminExtension for KeysAdmin {
    fn paths(&self) -> &[&'static str] {
        &["/keys", "/keys/revoke", "/keys/rotate"]
    }

    fn handle<'a>(&'a self, req: AdminRequest<'a>) -> BoxFuture<'a, (StatusCode, String)> {
        Box::pin(async move {
            if !req.peer.ip().is_loopback() {
                return err(
                    StatusCode::FORBIDDEN,
                    "key management is accepted from loopback only",
                );
            }
            let body: Value = if req.body.is_empty() {
                Value::Null
            } else {
                match serde_json::from_slice(req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return err(StatusCode::BAD_REQUEST, &format!("body must be JSON: {e}"))
                    }
                }
            };
            let provider = body
                .get("provider")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    req.query.and_then(|q| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix("provider="))
                            .map(str::to_string)
                    })
                });
            let (cache, grace) = match self.pick(provider.as_deref()) {
                Ok(x) => x,
                Err(e) => return e,
            };
            let store = cache.store.clone();
            let id = body.get("id").and_then(Value::as_str).map(str::to_string);
            let result = match (req.method.clone(), req.path) {
                (http::Method::GET, "/keys") => blocking(move || store.list()).await.map(|l| {
                    (
                        StatusCode::OK,
                        json!({ "keys": l.iter().map(record_json).collect::<Vec<_>>() }),
                    )
                }),
                (http::Method::POST, "/keys") => {
                    let Some(owner) = body
                        .get("owner")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                    else {
                        return err(StatusCode::BAD_REQUEST, "`owner` is required");
                    };
                    let scopes = strings(&body, "scopes");
                    let roles = strings(&body, "roles");
                    let expires_at = match body.get("expires_in").and_then(Value::as_str) {
                        Some(d) => match rampart_config::units::parse_duration(d) {
                            Ok(d) if !d.is_zero() => Some(now_secs() + d.as_secs() as i64),
                            _ => {
                                return err(
                                    StatusCode::BAD_REQUEST,
                                    "`expires_in` must be a duration such as 30d",
                                )
                            }
                        },
                        None => None,
                    };
                    blocking(move || store.create(&owner, &scopes, &roles, expires_at))
                        .await
                        .map(|(key, rec)| {
                            let mut v = record_json(&rec);
                            v["key"] = Value::String(key);
                            (StatusCode::CREATED, v)
                        })
                }
                (http::Method::POST, "/keys/revoke") => {
                    let Some(id) = id else {
                        return err(StatusCode::BAD_REQUEST, "`id` is required");
                    };
                    let id2 = id.clone();
                    blocking(move || store.revoke(&id2)).await.map(|found| {
                        if found {
                            (StatusCode::OK, json!({ "revoked": id }))
                        } else {
                            (
                                StatusCode::NOT_FOUND,
                                json!({ "error": "no such active key" }),
                            )
                        }
                    })
                }
                (http::Method::POST, "/keys/rotate") => {
                    let Some(id) = id else {
                        return err(StatusCode::BAD_REQUEST, "`id` is required");
                    };
                    let grace = match body.get("grace").and_then(Value::as_str) {
                        Some(g) => match rampart_config::units::parse_duration(g) {
                            Ok(d) => d.as_secs() as i64,
                            Err(_) => {
                                return err(
                                    StatusCode::BAD_REQUEST,
                                    "`grace` must be a duration such as 1h",
                                )
                            }
                        },
                        None => grace,
                    };
                    blocking(move || store.rotate(&id, grace))
                        .await
                        .map(|(key, rec)| {
                            let mut v = record_json(&rec);
                            v["key"] = Value::String(key);
                            v["old_key_valid_for_s"] = Value::from(grace);
                            (StatusCode::CREATED, v)
                        })
                }
                _ => {
                    return err(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "GET /keys, POST /keys, POST /keys/revoke, POST /keys/rotate",
                    )
                }
            };
            match result {
                Ok((status, v)) => {
                    // The gateway sees the change at once.
                    let c = cache.clone();
                    let _ = blocking(move || c.reload()).await;
                    (status, v.to_string())
                }
                Err(e) => err(StatusCode::BAD_REQUEST, &e),
            }
        })
    }
}
