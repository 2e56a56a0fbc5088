//! The sample API behind `rampart demo`: users and orders, JSON CRUD, in memory.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Default)]
struct Store {
    collections: BTreeMap<&'static str, BTreeMap<u64, Value>>,
    next_id: u64,
}

fn json_reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // What a careless upstream leaks; Rampart's security_headers guard strips it.
    r.headers_mut().insert(
        "x-powered-by",
        http::HeaderValue::from_static("sample-api/0.1"),
    );
    r
}

fn seed() -> Store {
    let mut s = Store {
        next_id: 100,
        ..Default::default()
    };
    let mut users = BTreeMap::new();
    users.insert(
        1,
        json!({"id": 1, "name": "Alice", "email": "alice@example.com", "role": "admin",
               "api_token": "tok_live_4f9a0c"}),
    );
    users.insert(
        2,
        json!({"id": 2, "name": "Bob", "email": "bob@example.com", "role": "user",
               "api_token": "tok_live_77b1e2"}),
    );
    let mut orders = BTreeMap::new();
    orders.insert(
        10,
        json!({"id": 10, "user_id": 1, "item": "keyboard", "quantity": 1}),
    );
    orders.insert(
        11,
        json!({"id": 11, "user_id": 2, "item": "monitor", "quantity": 2}),
    );
    s.collections.insert("users", users);
    s.collections.insert("orders", orders);
    s
}

async fn handle(
    store: Arc<Mutex<Store>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        return Ok(json_reply(StatusCode::OK, json!({"status": "ok"})));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (coll, id) = match parts.as_slice() {
        ["api", c] => (*c, None),
        ["api", c, id] => match id.parse::<u64>() {
            Ok(n) => (*c, Some(n)),
            Err(_) => {
                return Ok(json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "id must be a number"}),
                ))
            }
        },
        _ => {
            return Ok(json_reply(
                StatusCode::NOT_FOUND,
                json!({"error": "not found"}),
            ))
        }
    };
    let coll: &'static str = match coll {
        "users" => "users",
        "orders" => "orders",
        _ => {
            return Ok(json_reply(
                StatusCode::NOT_FOUND,
                json!({"error": "not found"}),
            ))
        }
    };
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body too large"}),
            ))
        }
    };
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let mut st = match store.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let next = st.next_id;
    let items = st.collections.entry(coll).or_default();
    let reply = match (method, id) {
        (Method::GET, None) => json_reply(
            StatusCode::OK,
            Value::Array(items.values().cloned().collect()),
        ),
        (Method::GET, Some(id)) => match items.get(&id) {
            Some(v) => json_reply(StatusCode::OK, v.clone()),
            None => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        },
        (Method::POST, None) => match parsed {
            Some(Value::Object(mut o)) => {
                o.insert("id".into(), json!(next));
                let v = Value::Object(o);
                items.insert(next, v.clone());
                st.next_id += 1;
                json_reply(StatusCode::CREATED, v)
            }
            _ => json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "expected a JSON object"}),
            ),
        },
        (Method::PUT, Some(id)) => match parsed {
            Some(Value::Object(mut o)) => {
                o.insert("id".into(), json!(id));
                let v = Value::Object(o);
                items.insert(id, v.clone());
                json_reply(StatusCode::OK, v)
            }
            _ => json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "expected a JSON object"}),
            ),
        },
        (Method::DELETE, Some(id)) => match items.remove(&id) {
            Some(_) => json_reply(StatusCode::NO_CONTENT, json!(null)),
            None => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        },
        _ => json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"}),
        ),
    };
    Ok(reply)
}

/// Start the sample API on `addr`; returns the bound address.
pub async fn start_sample_api(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let store = Arc::new(Mutex::new(seed()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(store.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

/// The demo policy, embedded so `rampart demo` needs no files.
pub const DEMO_POLICY: &str = include_str!("../../../examples/demo.yaml");
/// The sample API's OpenAPI spec, written next to the generated keys so the policy's relative
/// `spec: demo-openapi.yaml` finds it.
pub const DEMO_SPEC: &str = include_str!("../../../examples/demo-openapi.yaml");

/// What `rampart demo` generates for the identity part of its policy: an ES256 signing key
/// (published as a JWKS file), tokens for a user and an admin, and an API key.
pub struct DemoIdentity {
    pub dir: std::path::PathBuf,
    pub key_secret: String,
    /// Sample user 1 (Alice): scopes orders:read orders:write.
    pub alice: String,
    /// Role admin.
    pub admin: String,
    /// API key of partner `acme`: scope orders:read only.
    pub api_key: String,
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Generate the demo's keys and tokens into a fresh temporary directory.
pub fn prepare_identity() -> Result<DemoIdentity, String> {
    use ring::rand::SecureRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as ALG};
    let rng = ring::rand::SystemRandom::new();
    let dir = std::env::temp_dir().join(format!("rampart-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("demo-openapi.yaml"), DEMO_SPEC)
        .map_err(|e| format!("cannot write the demo spec: {e}"))?;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ALG, &rng).map_err(|_| "key generation failed")?;
    let kp = EcdsaKeyPair::from_pkcs8(&ALG, pkcs8.as_ref(), &rng)
        .map_err(|_| "key generation failed")?;
    let pk = kp.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "demo-1", "use": "sig",
        "alg": "ES256", "x": b64(&pk[1..33]), "y": b64(&pk[33..65])}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string())
        .map_err(|e| format!("cannot write the demo JWKS: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let enc = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let mint = |sub: &str, extra: Value| -> Result<String, String> {
        let mut c = json!({"sub": sub, "iss": "https://demo.rampart.local", "aud": "sample-api",
            "iat": now, "exp": now + 86_400});
        if let (Value::Object(m), Value::Object(e)) = (&mut c, extra) {
            m.extend(e);
        }
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("demo-1".into());
        jsonwebtoken::encode(&h, &c, &enc).map_err(|e| format!("cannot sign a demo token: {e}"))
    };
    let alice = mint(
        "1",
        json!({"scope": "orders:read orders:write", "roles": ["user"]}),
    )?;
    let admin = mint("admin", json!({"roles": ["admin"], "scope": "orders:read"}))?;
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).map_err(|_| "no randomness")?;
    let key_secret = b64(&secret);
    let store = rampart_identity::apikey::KeyStore::open(&dir.join("keys.db"), &key_secret)?;
    let (api_key, _) = store.create("acme", &["orders:read".into()], &[], None)?;
    Ok(DemoIdentity {
        dir,
        key_secret,
        alice,
        admin,
        api_key,
    })
}
