//! The OpenAPI positive security model through real gateways, against the shop API specs in
//! `tests/fixtures/openapi` (3.1 and its 3.0 twin) and a shop upstream on loopback that answers
//! by the spec, except where a test needs it to misbehave.

mod common;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openapi")
        .join(name)
}

const SPECS: [&str; 2] = ["shop-3.1.yaml", "shop-3.0.yaml"];

/// What the shop upstream saw: method, URI, body.
type Log = Arc<Mutex<Vec<(String, String, Bytes)>>>;

struct Shop {
    addr: SocketAddr,
    log: Log,
}

impl Shop {
    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
    fn last_body(&self) -> Value {
        let l = self.log.lock().unwrap();
        serde_json::from_slice(&l.last().expect("upstream saw a request").2).unwrap()
    }
}

fn reply(status: u16, ct: Option<&str>, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(ct) = ct {
        r.headers_mut().insert("content-type", ct.parse().unwrap());
    }
    r
}

fn user(id: u64) -> Value {
    json!({"id": id, "name": "Alice", "email": "alice@example.com", "role": "user"})
}

async fn shop_handler(log: Log, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    log.lock().unwrap().push((
        parts.method.to_string(),
        parts.uri.to_string(),
        body.clone(),
    ));
    let j = |status: u16, v: Value| reply(status, Some("application/json"), v.to_string());
    match (parts.method.as_str(), path.as_str()) {
        ("GET", "/v1/users") => j(200, json!([user(1), user(2)])),
        ("POST", "/v1/users") | ("POST", "/v1/orders") => {
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            v["id"] = json!(100);
            j(201, v)
        }
        // A leaky handler: returns a secret and an internal field.
        ("GET", "/v1/users/7") => {
            let mut u = user(7);
            u["password"] = json!("hunter22");
            u["internal_note"] = json!("vip, card on file");
            j(200, u)
        }
        ("GET", "/v1/orders/999") => j(200, json!({"id": 999, "item": "x", "quantity": "two"})),
        ("GET", "/v1/orders/998") => reply(418, None, ""),
        ("GET", "/v1/orders/997") => reply(200, Some("text/plain"), "hello"),
        ("GET", p) if p.starts_with("/v1/users/") => j(200, user(5)),
        ("GET", p) if p.starts_with("/v1/orders/") && p.ends_with(".csv") => {
            reply(200, Some("text/csv"), "id,quantity\n5,1\n")
        }
        ("GET", p) if p.starts_with("/v1/orders/") => j(
            200,
            json!({"id": 5, "item": "keyboard", "quantity": 1, "status": "paid"}),
        ),
        ("PUT", p) if p.ends_with("/avatar") => reply(204, None, ""),
        _ => reply(200, None, ""),
    }
}

async fn shop() -> Shop {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let l2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = l2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let log = log.clone();
                    async move { Ok::<_, std::convert::Infallible>(shop_handler(log, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Shop { addr, log }
}

/// A gateway enforcing `spec` with these extra `openapi:` settings (YAML lines, 6 spaces in).
async fn gw(
    shop: &Shop,
    spec: &str,
    settings: &str,
    log: Option<&PathBuf>,
) -> (SocketAddr, Arc<rampart_core::Gateway>) {
    let route = format!(
        "    openapi:\n      spec: {}\n{settings}",
        fixture(spec).display()
    );
    let mut yaml = config(shop.addr, &route, "");
    if let Some(l) = log {
        yaml = yaml.replace("access: off", &format!("access: {}", l.display()));
    }
    let g = gateway(&yaml).await;
    (g.listen_addrs()[0], g)
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, http::HeaderMap, Value, String) {
    let (s, h, b) = send(&client(), addr, method, path, headers, body).await;
    let text = String::from_utf8_lossy(&b).into_owned();
    (
        s,
        h,
        serde_json::from_slice(&b).unwrap_or(Value::Null),
        text,
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn temp_log(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-openapi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("access.log")
}

/// Security events in the log (waits for `n` of them, at most 2 s).
async fn events(log: &PathBuf, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..100 {
        out = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "security_event")
            .collect();
        if out.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

#[tokio::test]
async fn unknown_paths_and_methods_never_reach_the_upstream() {
    for spec in SPECS {
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let (s, h, body, _) = call(addr, "GET", "/v1/nothing-here", &[], b"").await;
        assert_eq!(s, 404, "{spec}");
        assert_eq!(h["content-type"], "application/problem+json");
        assert!(body["request_id"].is_string());
        // Outside the servers' base path /v1.
        assert_eq!(call(addr, "GET", "/users", &[], b"").await.0, 404);
        let (s, h, _, _) = call(addr, "DELETE", "/v1/users", &[], b"").await;
        assert_eq!(s, 405);
        assert_eq!(h["allow"], "GET, POST");
        assert_eq!(shop.count(), 0, "{spec}: nothing reached the upstream");
        // HEAD falls back to GET; the literal /users/me wins over /users/{id}.
        assert_eq!(call(addr, "HEAD", "/v1/users", &[], b"").await.0, 200);
        assert_eq!(call(addr, "GET", "/v1/users/me", &[], b"").await.0, 200);
    }
}

#[tokio::test]
async fn query_parameters_are_parsed_by_style_and_validated() {
    for spec in SPECS {
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let ok = "/v1/users?limit=10&sort=name&ids=1,2,3&tags=a|b&filter[role]=admin&filter[active]=true";
        assert_eq!(call(addr, "GET", ok, &[], b"").await.0, 200, "{spec}");
        let cases: &[(&str, &str, &str)] = &[
            ("/v1/users?limit=0", "limit", "must be >= 1"),
            ("/v1/users?limit=abc", "limit", "must be of type integer"),
            ("/v1/users?limit=101", "limit", "must be <= 100"),
            (
                "/v1/users?sort=drop_table",
                "sort",
                "must be one of the values the schema lists",
            ),
            ("/v1/users?ids=1,x", "ids", "must be of type integer"),
            (
                "/v1/users?ids=1,2,3,4,5,6,7,8,9,10,11",
                "ids",
                "must have at most 10 items",
            ),
            (
                "/v1/users?filter[role]=root",
                "filter",
                "must be one of the values the schema lists",
            ),
            (
                "/v1/users?filter[active]=maybe",
                "filter",
                "must be of type boolean",
            ),
            ("/v1/users?limit=1&limit=2", "limit", "is repeated"),
        ];
        for (path, name, reason) in cases {
            let (s, h, body, text) = call(addr, "GET", path, &[], b"").await;
            assert_eq!(s, 400, "{spec} {path}: {text}");
            assert_eq!(h["content-type"], "application/problem+json");
            let e = &body["errors"][0];
            assert_eq!(e["in"], "query", "{path}: {text}");
            assert_eq!(e["name"], *name, "{path}: {text}");
            assert_eq!(e["reason"], *reason, "{path}: {text}");
            // (The random hex request id may spell `abc`; it is not input.)
            let shown = text.replace(body["request_id"].as_str().unwrap_or("-"), "");
            for raw in ["drop_table", "root", "maybe", "abc"] {
                assert!(
                    !shown.contains(raw),
                    "the raw input is never echoed: {text}"
                );
            }
        }
        assert_eq!(
            shop.count(),
            1,
            "{spec}: only the valid request went through"
        );
    }
}

#[tokio::test]
async fn undeclared_query_parameters_can_be_refused() {
    let shop = shop().await;
    let (addr, _g) = gw(&shop, SPECS[0], "      unknown_query: reject\n", None).await;
    assert_eq!(
        call(addr, "GET", "/v1/users?limit=5", &[], b"").await.0,
        200
    );
    let (s, _, body, text) = call(addr, "GET", "/v1/users?debug=1", &[], b"").await;
    assert_eq!(s, 400);
    assert_eq!(body["errors"][0]["in"], "query");
    assert!(!text.contains("debug"), "{text}");
    // Default: allowed.
    let shop = self::shop().await;
    let (addr, _g) = gw(&shop, SPECS[0], "", None).await;
    assert_eq!(
        call(addr, "GET", "/v1/users?debug=1", &[], b"").await.0,
        200
    );
}

#[tokio::test]
async fn path_header_and_cookie_parameters() {
    for spec in SPECS {
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let expect = |path: &'static str, status: u16, loc: &'static str| (path, status, loc);
        for (path, status, loc) in [
            expect("/v1/users/42", 200, ""),
            expect("/v1/users/abc", 400, "path"),
            expect("/v1/users/0", 400, "path"),
            expect("/v1/orders/5", 200, ""),
            expect("/v1/orders/3000000000", 400, "path"), // beyond int32
            expect("/v1/orders/5.csv", 200, ""),
            expect("/v1/orders/5.xml", 400, "path"),
            expect("/v1/matrix/;coords=1;coords=2", 200, ""),
            expect("/v1/matrix/;coords=1;coords=x", 400, "path"),
            expect("/v1/matrix/1,2", 400, "path"),
        ] {
            let (s, _, body, text) = call(addr, "GET", path, &[], b"").await;
            assert_eq!(s, status, "{spec} {path}: {text}");
            if status == 400 {
                assert_eq!(body["errors"][0]["in"], loc, "{path}: {text}");
            }
        }
        let tenant = "x-request-tenant";
        let (s, _, body, _) = call(addr, "GET", "/v1/users/42", &[(tenant, "nope")], b"").await;
        assert_eq!(s, 400);
        assert_eq!(body["errors"][0]["in"], "header");
        assert_eq!(body["errors"][0]["reason"], "must be a valid `uuid`");
        let good = "0b7e6a55-3c1b-4e5f-9a7b-2f4d3c2b1a00";
        assert_eq!(
            call(addr, "GET", "/v1/users/42", &[(tenant, good)], b"")
                .await
                .0,
            200
        );
        let (s, _, body, _) = call(
            addr,
            "GET",
            "/v1/users/42",
            &[("cookie", "a=1; session=zzz")],
            b"",
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(body["errors"][0]["in"], "cookie");
        let cookie = ("cookie", "a=1; session=deadbeef");
        assert_eq!(
            call(addr, "GET", "/v1/users/42", &[cookie], b"").await.0,
            200
        );
    }
}

#[tokio::test]
async fn json_bodies_are_validated_against_the_schema() {
    for spec in SPECS {
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let good = br#"{"item":"keyboard","quantity":1,"note":null,"lines":[{"sku":"KEY-0001","children":[{"sku":"CAP-0002"}]}]}"#;
        let (s, _, body, text) = call(addr, "POST", "/v1/orders", &[JSON], good).await;
        assert_eq!(s, 201, "{spec}: {text}");
        assert_eq!(body["item"], "keyboard");
        let cases: &[(&[u8], &str, &str)] = &[
            (br#"{"item":"kb"}"#, "", "required property `quantity` is missing"),
            (br#"{"item":"kb","quantity":0}"#, "/quantity", ""),
            (br#"{"item":"kb","quantity":1,"discount":99}"#, "", "has a property the schema does not allow"),
            (br#"{"item":"","quantity":1}"#, "/item", "must be at least 1 characters"),
            (br#"{"item":"kb","quantity":"1"}"#, "/quantity", "must be of type integer"),
            (
                br#"{"item":"kb","quantity":1,"lines":[{"sku":"KEY-0001","children":[{"sku":"bad"}]}]}"#,
                "/lines/0/children/0/sku",
                "does not match the required pattern",
            ),
        ];
        for (b, pointer, reason) in cases {
            let (s, _, body, text) = call(addr, "POST", "/v1/orders", &[JSON], b).await;
            assert_eq!(s, 400, "{spec} {}: {text}", String::from_utf8_lossy(b));
            let e = &body["errors"][0];
            assert_eq!(e["in"], "body");
            assert_eq!(e["pointer"], *pointer, "{text}");
            if !reason.is_empty() {
                assert_eq!(e["reason"], *reason, "{text}");
            }
        }
        // Not JSON, duplicate keys, no body, wrong content type, a body where none is declared.
        let (s, _, _, text) = call(addr, "POST", "/v1/orders", &[JSON], b"{\"item\": 'x'}").await;
        assert_eq!(s, 400);
        assert!(!text.contains("'x'"), "{text}");
        let dup = br#"{"item":"a","quantity":1,"quantity":50}"#;
        assert_eq!(call(addr, "POST", "/v1/orders", &[JSON], dup).await.0, 400);
        let (s, _, body, _) = call(addr, "POST", "/v1/orders", &[JSON], b"").await;
        assert_eq!(s, 400);
        assert_eq!(body["errors"][0]["reason"], "a request body is required");
        let (s, _, body, _) = call(
            addr,
            "POST",
            "/v1/orders",
            &[("content-type", "text/plain")],
            good,
        )
        .await;
        assert_eq!(s, 415);
        assert_eq!(body["accepted"], json!(["application/json"]));
        let (s, _, _, _) = call(addr, "GET", "/v1/users", &[JSON], b"{}").await;
        assert_eq!(s, 400, "GET /users takes no body");
        assert_eq!(shop.count(), 1, "{spec}");
    }
}

#[tokio::test]
async fn read_only_properties_are_refused_or_stripped() {
    for spec in SPECS {
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let b = br#"{"id":5,"item":"kb","quantity":1,"status":"paid"}"#;
        let (s, _, body, text) = call(addr, "POST", "/v1/orders", &[JSON], b).await;
        assert_eq!(s, 400, "{spec}: {text}");
        let pointers: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(pointers, ["/id", "/status"], "{text}");
        assert_eq!(
            body["errors"][0]["reason"],
            "is readOnly and may not be sent"
        );
        // Role escalation through mass assignment on createUser.
        let u = br#"{"name":"Mallory","email":"m@example.com","role":"admin"}"#;
        assert_eq!(call(addr, "POST", "/v1/users", &[JSON], u).await.0, 400);
        assert_eq!(shop.count(), 0);

        let shop = self::shop().await;
        let (addr, _g) = gw(&shop, spec, "      read_only: strip\n", None).await;
        let (s, _, _, text) = call(addr, "POST", "/v1/orders", &[JSON], b).await;
        assert_eq!(s, 201, "{text}");
        assert_eq!(shop.last_body(), json!({"item": "kb", "quantity": 1}));
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let (s, _, _, text) = call(
            addr,
            "POST",
            "/v1/users",
            &form,
            b"name=Mallory&email=m%40example.com&role=admin",
        )
        .await;
        assert_eq!(s, 201, "{text}");
        let seen = shop.log.lock().unwrap().last().unwrap().2.clone();
        assert_eq!(&seen[..], b"name=Mallory&email=m%40example.com");
    }
}

#[tokio::test]
async fn form_and_multipart_bodies() {
    let shop = shop().await;
    let (addr, _g) = gw(&shop, SPECS[0], "", None).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let ok = b"name=Al&email=al%40example.com&age=30";
    assert_eq!(call(addr, "POST", "/v1/users", &form, ok).await.0, 201);
    let (s, _, body, _) = call(
        addr,
        "POST",
        "/v1/users",
        &form,
        b"name=Al&email=al%40example.com&age=old",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(body["errors"][0]["pointer"], "/age");
    let (s, _, body, _) = call(addr, "POST", "/v1/users", &form, b"name=Al&age=3").await;
    assert_eq!(s, 400);
    assert_eq!(
        body["errors"][0]["reason"],
        "required property `email` is missing"
    );
    let dup = b"name=Al&email=al%40example.com&name=Bob";
    assert_eq!(call(addr, "POST", "/v1/users", &form, dup).await.0, 400);

    let mp = [("content-type", "multipart/form-data; boundary=BOUND")];
    let part = |name: &str, file: bool, v: &str| {
        let fname = if file { "; filename=\"a.png\"" } else { "" };
        format!("--BOUND\r\nContent-Disposition: form-data; name=\"{name}\"{fname}\r\n\r\n{v}\r\n")
    };
    let ok = format!(
        "{}{}--BOUND--\r\n",
        part("file", true, "PNGDATA"),
        part("caption", false, "me")
    );
    assert_eq!(
        call(addr, "PUT", "/v1/users/7/avatar", &mp, ok.as_bytes())
            .await
            .0,
        204
    );
    let no_file = format!("{}--BOUND--\r\n", part("caption", false, "me"));
    let (s, _, body, _) = call(addr, "PUT", "/v1/users/7/avatar", &mp, no_file.as_bytes()).await;
    assert_eq!(s, 400);
    assert_eq!(
        body["errors"][0]["reason"],
        "required property `file` is missing"
    );
    let long = format!(
        "{}{}--BOUND--\r\n",
        part("file", true, "x"),
        part("caption", false, &"c".repeat(41))
    );
    let (s, _, body, _) = call(addr, "PUT", "/v1/users/7/avatar", &mp, long.as_bytes()).await;
    assert_eq!(s, 400);
    assert_eq!(body["errors"][0]["pointer"], "/caption");
    let broken = b"--BOUND\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated";
    assert_eq!(
        call(addr, "PUT", "/v1/users/7/avatar", &mp, broken).await.0,
        400
    );
    assert_eq!(shop.count(), 2);
}

#[tokio::test]
async fn deprecated_operations_are_reported_or_refused() {
    let log = temp_log("deprecated");
    let shop = shop().await;
    let (addr, _g) = gw(&shop, SPECS[0], "", Some(&log)).await;
    assert_eq!(
        call(addr, "GET", "/v1/admin/reports", &[], b"").await.0,
        200
    );
    let ev = events(&log, 1).await;
    assert_eq!(ev[0]["rule"], "deprecated_operation", "{ev:?}");
    assert_eq!(ev[0]["action"], "logged");
    let (addr, _g) = gw(&shop, SPECS[0], "      deprecated: block\n", None).await;
    assert_eq!(
        call(addr, "GET", "/v1/admin/reports", &[], b"").await.0,
        410
    );
    assert_eq!(shop.count(), 1);
}

#[tokio::test]
async fn monitor_modes_log_and_let_requests_through() {
    let log = temp_log("monitor");
    let shop = shop().await;
    let (addr, _g) = gw(&shop, SPECS[0], "      mode: monitor\n", Some(&log)).await;
    assert_eq!(
        call(addr, "GET", "/v1/users?limit=0", &[], b"").await.0,
        200
    );
    let ev = events(&log, 1).await;
    assert_eq!(ev[0]["rule"], "invalid_request");
    assert_eq!(ev[0]["action"], "monitored");
    assert_eq!(ev[0]["detail"]["errors"][0]["name"], "limit");

    let log = temp_log("unknown-monitor");
    let (addr, _g) = gw(&shop, SPECS[0], "      unknown: monitor\n", Some(&log)).await;
    assert_eq!(
        call(addr, "GET", "/v1/shadow/endpoint", &[], b"").await.0,
        200
    );
    let ev = events(&log, 1).await;
    assert_eq!(ev[0]["rule"], "unknown_path");
    assert_eq!(shop.count(), 2, "both went through");
}

#[tokio::test]
async fn responses_are_checked_and_stripped() {
    for spec in SPECS {
        // strip: undeclared and writeOnly properties never reach the client.
        let log = temp_log("strip");
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "      responses: strip\n", Some(&log)).await;
        let (s, h, body, text) = call(addr, "GET", "/v1/users/7", &[], b"").await;
        assert_eq!(s, 200);
        assert_eq!(body, user(7), "{text}");
        assert_eq!(h["content-length"], text.len().to_string().as_str());
        let ev = events(&log, 1).await;
        assert_eq!(ev[0]["rule"], "response_stripped");
        assert_eq!(
            ev[0]["detail"]["pointers"],
            json!(["/internal_note", "/password"])
        );
        // Arrays of objects are stripped item by item; clean answers are untouched.
        let (_, _, body, _) = call(addr, "GET", "/v1/users", &[], b"").await;
        assert_eq!(body, json!([user(1), user(2)]));

        // monitor (default): the answer goes out unchanged, the violation is logged.
        let log = temp_log("resp-monitor");
        let (addr, _g) = gw(&shop, spec, "", Some(&log)).await;
        let (s, _, body, _) = call(addr, "GET", "/v1/orders/999", &[], b"").await;
        assert_eq!((s, &body["quantity"]), (200, &json!("two")));
        let ev = events(&log, 1).await;
        assert_eq!(ev[0]["rule"], "invalid_response");
        assert_eq!(ev[0]["detail"]["errors"][0]["pointer"], "/quantity");

        // block: violations become 502.
        let (addr, _g) = gw(&shop, spec, "      responses: block\n", None).await;
        assert_eq!(call(addr, "GET", "/v1/orders/5", &[], b"").await.0, 200);
        for path in ["/v1/orders/999", "/v1/orders/998", "/v1/orders/997"] {
            let (s, _, _, text) = call(addr, "GET", path, &[], b"").await;
            assert_eq!(s, 502, "{spec} {path}: {text}");
            assert!(!text.contains("two") && !text.contains("hello"), "{text}");
        }
        // Responses the gateway makes itself (a 404 for an unknown path) are not checked.
        assert_eq!(call(addr, "GET", "/v1/nope", &[], b"").await.0, 404);
        assert_eq!(call(addr, "GET", "/v1/orders/5.csv", &[], b"").await.0, 200);
    }
}

#[tokio::test]
async fn upstream_level_spec_and_proxy_flag_config() {
    // A spec on the upstream applies to every route to it.
    let shop = shop().await;
    let yaml = config(shop.addr, "", "").replace(
        "    connect_timeout: 1s\n",
        &format!(
            "    connect_timeout: 1s\n    openapi:\n      spec: {}\n",
            fixture(SPECS[0]).display()
        ),
    );
    let g = gateway(&yaml).await;
    let addr = g.listen_addrs()[0];
    assert_eq!(call(addr, "GET", "/v1/nothing", &[], b"").await.0, 404);
    assert_eq!(call(addr, "GET", "/v1/users", &[], b"").await.0, 200);
}

#[tokio::test]
async fn bad_specs_are_config_errors_with_locations() {
    let dir = std::env::temp_dir().join(format!("rampart-badspec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("swagger: '2.0'\n", "Swagger 2.0 is not supported"),
        ("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: '#/components/schemas/Nope' }\n", "at #/paths/~1a/get/requestBody/content/application~1json/schema: $ref `#/components/schemas/Nope` points at nothing"),
        ("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters:\n        - { name: x, in: path, schema: { type: string } }\n", "path parameter `x` must be `required: true`"),
        ("openapi: 3.1.0\npaths:\n  /a/{x}:\n    get: {}\n  /a/{y}:\n    get: {}\n", "ambiguous"),
        ("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters:\n        - { name: q, in: query, style: matrix }\n", "style `matrix` is not allowed in query"),
        ("openapi: 3.1.0\npaths:\n  /a:\n    $ref: 'other.yaml#/x'\n", "other.yaml"),
        ("openapi: 3.1.0\npaths:\n  /a:\n    $ref: 'https://example.com/x.yaml'\n", "never fetches"),
        ("openapi: 3.1.0\npaths: [\n", "invalid YAML"),
    ];
    for (i, (spec, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("spec{i}.yaml"));
        std::fs::write(&p, spec).unwrap();
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: off\nlog:\n  access: off\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9\"]\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n    openapi:\n      spec: {}\n",
            p.display()
        );
        let lc = rampart::load_text(&yaml, "test.yaml", &dir).unwrap();
        let err = match rampart::start(lc).await {
            Ok(_) => panic!("spec {i} should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("test.yaml:15:"), "{err}");
        assert!(err.contains(want), "case {i}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Property test: requests generated from the spec's own schemas pass validation.

/// A value valid under `s` (a schema from the spec; `$ref`s resolved through `resolve`).
fn generate(g: &mut Rng, s: &Value, resolve: &dyn Fn(&str) -> Value, depth: usize) -> Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return generate(g, &resolve(r), resolve, depth);
    }
    if let Some(Value::Array(e)) = s.get("enum") {
        return e[g.range(0, e.len() as i64 - 1) as usize].clone();
    }
    if let Some(ex) = s.get("example") {
        return ex.clone();
    }
    let t = match s.get("type") {
        Some(Value::Array(ts)) => ts[g.range(0, ts.len() as i64 - 1) as usize].clone(),
        Some(t) => t.clone(),
        None => json!("string"),
    };
    match t.as_str().unwrap_or("string") {
        "null" => Value::Null,
        "boolean" => json!(g.coin()),
        "integer" | "number" => {
            let mut lo = s.get("minimum").and_then(Value::as_i64).unwrap_or(-1000);
            let hi = s.get("maximum").and_then(Value::as_i64).unwrap_or(1000);
            if s.get("exclusiveMinimum") == Some(&json!(true)) {
                lo += 1;
            }
            json!(g.range(lo, hi))
        }
        "array" => {
            let max = s
                .get("maxItems")
                .and_then(Value::as_i64)
                .unwrap_or(3)
                .min(3);
            let n = if depth > 2 { 0 } else { g.range(0, max) };
            let items = s.get("items").cloned().unwrap_or(json!({}));
            json!((0..n)
                .map(|_| generate(g, &items, resolve, depth + 1))
                .collect::<Vec<_>>())
        }
        "object" => {
            let mut m = serde_json::Map::new();
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, p) in props {
                    let p = match p.get("$ref").and_then(Value::as_str) {
                        Some(r) => resolve(r),
                        None => p.clone(),
                    };
                    if p.get("readOnly") == Some(&json!(true)) {
                        continue;
                    }
                    if required.contains(&k.as_str()) || g.coin() {
                        m.insert(k.clone(), generate(g, &p, resolve, depth + 1));
                    }
                }
            }
            Value::Object(m)
        }
        _ => match s.get("format").and_then(Value::as_str) {
            Some("email") => json!(format!("user{}@example.com", g.range(0, 999))),
            Some("uuid") => json!("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"),
            _ => {
                let lo = s.get("minLength").and_then(Value::as_i64).unwrap_or(0);
                let hi = s
                    .get("maxLength")
                    .and_then(Value::as_i64)
                    .unwrap_or(20)
                    .min(20);
                let n = g.range(lo, hi.max(lo));
                json!((0..n)
                    .map(|_| (b'a' + g.range(0, 25) as u8) as char)
                    .collect::<String>())
            }
        },
    }
}

#[tokio::test]
async fn requests_generated_from_the_spec_pass_validation() {
    for spec in SPECS {
        let path = fixture(spec);
        let load = |p: &PathBuf| {
            rampart_openapi::spec::parse_text(&std::fs::read_to_string(p).unwrap(), p).unwrap()
        };
        let root = load(&path);
        let common = load(&fixture("schemas/common.yaml"));
        let resolve = |r: &str| -> Value {
            let (file, ptr) = r.split_once('#').unwrap();
            let doc = if file.is_empty() { &root } else { &common };
            doc.pointer(ptr).cloned().unwrap()
        };
        let shop = shop().await;
        let (addr, _g) = gw(&shop, spec, "", None).await;
        let mut g = Rng(0x9E37_79B9_7F4A_7C15);
        let mut sent = 0;
        for (template, method) in [
            ("/v1/orders", "POST"),
            ("/v1/users", "POST"),
            ("/v1/users/{id}", "PUT"),
        ] {
            let key = template.trim_start_matches("/v1");
            let schema = root["paths"][key][method.to_lowercase()]["requestBody"]["content"]
                ["application/json"]["schema"]
                .clone();
            let id_schema = resolve("#/components/parameters/UserId/schema");
            for _ in 0..40 {
                let body = generate(&mut g, &schema, &resolve, 0);
                let id = generate(&mut g, &id_schema, &resolve, 0);
                let url = template.replace("{id}", &id.to_string());
                let (s, _, _, text) =
                    call(addr, method, &url, &[JSON], body.to_string().as_bytes()).await;
                assert!(s < 400, "{spec} {method} {url} {body}: {s} {text}");
                sent += 1;
            }
        }
        // Query parameters of listUsers, serialized by their styles.
        for _ in 0..40 {
            let limit = g.range(1, 100);
            let n = g.range(0, 10);
            let ids: Vec<String> = (0..n).map(|_| g.range(-5, 5000).to_string()).collect();
            let sort = if g.coin() { "name" } else { "created" };
            let url = format!(
                "/v1/users?limit={limit}&sort={sort}&ids={}&filter[active]={}",
                ids.join(","),
                g.coin()
            );
            let (s, _, _, text) = call(addr, "GET", &url, &[], b"").await;
            assert_eq!(s, 200, "{url}: {text}");
            sent += 1;
        }
        assert_eq!(shop.count(), sent, "{spec}");
    }
}

#[tokio::test]
async fn rate_limits_can_key_on_the_operation() {
    let shop = shop().await;
    let route = format!(
        "    openapi:\n      spec: {}\n    rate_limits:\n      - {{ name: per-op, key: [operation], rate: 2, period: 1m }}\n",
        fixture(SPECS[0]).display()
    );
    let g = gateway(&config(shop.addr, &route, "")).await;
    let addr = g.listen_addrs()[0];
    // getUser and getOrder have separate budgets; /v1/users/1 and /v1/users/2 share one.
    let mut codes = Vec::new();
    for path in [
        "/v1/users/1",
        "/v1/users/2",
        "/v1/orders/5",
        "/v1/users/3",
        "/v1/orders/6",
    ] {
        codes.push(call(addr, "GET", path, &[], b"").await.0);
    }
    assert_eq!(codes, [200, 200, 200, 429, 200]);
}
