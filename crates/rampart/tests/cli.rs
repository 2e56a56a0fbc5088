//! The `rampart` binary: `check` error format, `run` with SIGHUP and file-change reloads, and
//! SIGTERM draining in-flight requests before exiting 0; `proxy` in one line.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rampart-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

async fn wait_up(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("rampart did not start listening on {port}");
}

/// `rampart check -c FILE`.
fn check(f: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "-c"])
        .arg(f)
        .output()
        .unwrap()
}

#[test]
fn check_reports_every_error_with_file_line_col() {
    let d = tmpdir("check");
    let f = d.join("bad.yaml");
    std::fs::write(
        &f,
        "listeners:\n  - address: 127.0.0.1:8080\n    tls:\n      certificates:\n        - cert: missing.pem\n          key: missing.key\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9000\"]\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: api\n    cors:\n      allow_origins: [\"*\"]\n      allow_credentials: true\n  - name: a\n    path_prefix: /x\n    upstream: nope\n    ip_filter:\n      allow: [\"10.0.0.0/99\"]\n",
    )
    .unwrap();
    let out = check(&f);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = f.display().to_string();
    for needle in [
        format!("{p}:5:17: certificate file"),
        format!("{p}:6:16: private key file"),
        format!("{p}:15:7: cors: allow_origins `*` with allow_credentials"),
        format!("{p}:17:11: duplicate route name `a`"),
        format!("{p}:19:15: route `a` names upstream `nope`"),
        format!("{p}:21:15: invalid CIDR `10.0.0.0/99`"),
    ] {
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
    // Unknown keys and type errors are located too.
    std::fs::write(
        &f,
        "listeners:\n  - address: 127.0.0.1:8080\n    colour: blue\n",
    )
    .unwrap();
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{p}:3:5: ")) && err.contains("colour"),
        "{err}"
    );
    std::fs::write(&f, "server:\n  max_connections: lots\nlisteners: []\n").unwrap();
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{p}:2:20: ")), "{err}");
    // A valid file passes.
    std::fs::write(&f, "listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9000\"]\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: api\n").unwrap();
    let out = check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_reloads_on_sighup_and_file_change_and_drains_on_sigterm() {
    let up = TestUpstream::start().await;
    let d = tmpdir("run");
    let f = d.join("rampart.yaml");
    let port = free_port();
    let cfg = |prefix: &str| {
        format!(
            "server:\n  worker_threads: 1\n  watch_config: true\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: \"off\"\nlog:\n  access: off\nupstreams:\n  - name: api\n    targets: [\"http://{}\"]\n    response_timeout: 20s\nroutes:\n  - name: r\n    path_prefix: {prefix}\n    upstream: api\n",
            up.addr
        )
    };
    std::fs::write(&f, cfg("/a")).unwrap();
    let child = Proc(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&f)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/a").await.0, 200);
    assert_eq!(get(addr, "/b").await.0, 404);

    // SIGHUP after an edit (the watcher may also catch it; either way it applies).
    std::fs::write(&f, cfg("/b")).unwrap();
    signal(&child.0, "HUP");
    let mut applied = false;
    for _ in 0..100 {
        if get(addr, "/b").await.0 == 200 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "reload did not apply");

    // File change alone.
    std::fs::write(&f, cfg("/c") + "\n# changed\n").unwrap();
    let mut applied = false;
    for _ in 0..100 {
        if get(addr, "/c").await.0 == 200 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "file-change reload did not apply");

    // SIGTERM while a slow request is in flight: it completes, then the process exits 0.
    let yaml = cfg("/");
    std::fs::write(&f, yaml).unwrap();
    for _ in 0..100 {
        if get(addr, "/zzz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slow = tokio::spawn(async move { get(addr, "/slow").await.0 });
    for _ in 0..200 {
        if up.seen.lock().unwrap().iter().any(|s| s.uri == "/slow") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut child = child;
    signal(&child.0, "TERM");
    assert_eq!(slow.await.unwrap(), 200, "in-flight request drained");
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("rampart exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let _ = &mut child;
}

#[tokio::test]
async fn proxy_command_in_one_line() {
    let up = TestUpstream::start().await;
    let port = free_port();
    let _p = Proc(
        Command::new(BIN)
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &format!("http://{}", up.addr),
                "--admin",
                "off",
                "--workers",
                "1",
                "--access-log",
                "off",
                "--websocket",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port).await;
    let (s, h, _) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/hello").await;
    assert_eq!(s, 200);
    assert_eq!(h["x-content-type-options"], "nosniff");
    // `--websocket`: a handshake reaches the upstream with its upgrade headers (this upstream
    // answers it as a plain request).
    let resp = raw(
        format!("127.0.0.1:{port}").parse().unwrap(),
        b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: close, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = up.last();
    assert_eq!(seen.uri, "/ws");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    let out = Command::new(BIN)
        .args(["proxy", "--listen", "127.0.0.1:1", "--upstream", "ftp://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("--upstream: "));
}

#[tokio::test]
async fn demo_serves_the_sample_api_with_its_policy() {
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The banner (on stderr) carries the credentials made for this run.
    let stderr = child.stderr.take().unwrap();
    let _p = Proc(child);
    // Read it, hand the credentials over, and keep draining stderr so the demo never writes
    // into a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut vars = std::collections::HashMap::new();
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("export ") {
                if let Some((k, v)) = rest.split_once("='") {
                    vars.insert(
                        k.to_string(),
                        v.split('\'').next().unwrap_or("").to_string(),
                    );
                }
            }
            if line.contains("Ctrl-C stops") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(std::mem::take(&mut vars));
                }
            }
        }
    });
    let creds = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo printed its banner");
    wait_up(port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let alice = format!("Bearer {}", creds["ALICE"]);
    let admin_t = format!("Bearer {}", creds["ADMIN"]);
    let key = creds["KEY"].clone();
    let c = client();
    let auth = |v: &str| vec![("authorization", v.to_string())];
    let call =
        |m: &'static str, p: &'static str, h: Vec<(&'static str, String)>, body: &'static [u8]| {
            let c = c.clone();
            async move {
                let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                send(&c, addr, m, p, &hs, body).await
            }
        };
    let (s, h, body) = call("GET", "/api/users/1", auth(&alice), b"").await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("alice@example.com"));
    assert!(
        h.get("x-powered-by").is_none(),
        "the sample API's X-Powered-By is stripped"
    );
    assert_eq!(
        call("GET", "/api/users/2", auth(&alice), b"").await.0,
        403,
        "BOLA"
    );
    assert_eq!(
        call("GET", "/api/users", auth(&alice), b"").await.0,
        403,
        "BFLA"
    );
    assert_eq!(call("GET", "/api/users", auth(&admin_t), b"").await.0, 200);
    assert_eq!(call("GET", "/api/users/1", vec![], b"").await.0, 401);
    assert_eq!(
        call("GET", "/api/orders", vec![("x-api-key", key.clone())], b"")
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            "POST",
            "/api/orders",
            vec![
                ("x-api-key", key.clone()),
                ("content-type", "application/json".into())
            ],
            b"{}"
        )
        .await
        .0,
        403,
        "the key has no orders:write"
    );
    // The sample API's OpenAPI spec: invalid bodies, mass assignment, undeclared endpoints,
    // and the leaked api_token stripped from responses.
    let (_, _, body) = call("GET", "/api/users/1", auth(&alice), b"").await;
    assert!(!String::from_utf8_lossy(&body).contains("api_token"));
    let json_alice = || {
        let mut h = auth(&alice);
        h.push(("content-type", "application/json".into()));
        h
    };
    let (s, _, body) = call(
        "POST",
        "/api/orders",
        json_alice(),
        br#"{"item":"pen","quantity":"3"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("/quantity"));
    let ro = br#"{"id":1,"item":"pen","quantity":3}"#;
    assert_eq!(call("POST", "/api/orders", json_alice(), ro).await.0, 400);
    assert_eq!(
        call("GET", "/api/orders/10/export", auth(&alice), b"")
            .await
            .0,
        404
    );
    assert_eq!(call("TRACE", "/api/users", vec![], b"").await.0, 405);
    assert_eq!(call("GET", "/api/users/a%2Fb", vec![], b"").await.0, 400);
    assert_eq!(call("GET", "/admin", vec![], b"").await.0, 404);
    let mut codes = Vec::new();
    for _ in 0..6 {
        let h = vec![
            ("authorization", alice.clone()),
            ("content-type", "application/json".into()),
        ];
        codes.push(
            call(
                "POST",
                "/api/orders",
                h,
                b"{\"item\":\"pen\",\"quantity\":1}",
            )
            .await
            .0,
        );
    }
    // Five POSTs a minute per client: the two refused for their bodies above count too
    // (the limit runs on the request head, before the body is read).
    assert_eq!(codes, vec![201, 201, 201, 429, 429, 429]);
    let (s, _, m) = get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics").await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&m).contains("rampart_requests_total"));
}

#[tokio::test]
async fn quotas_survive_a_restart() {
    let up = TestUpstream::start().await;
    let d = tmpdir("quota");
    let f = d.join("rampart.yaml");
    let qf = d.join("quotas.json");
    let _ = std::fs::remove_file(&qf);
    let port = free_port();
    std::fs::write(
        &f,
        format!(
            "server:\n  worker_threads: 1\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: \"off\"\nlog:\n  access: off\nratelimit:\n  quota_file: {}\nupstreams:\n  - name: api\n    targets: [\"http://{}\"]\nroutes:\n  - name: r\n    path_prefix: /\n    upstream: api\n    quotas:\n      - name: daily\n        key: [client_ip]\n        limit: 3\n        per: day\n",
            qf.display(),
            up.addr
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Proc(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&f)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port).await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(get(addr, "/q").await.0);
    }
    assert_eq!(codes, vec![200, 200, 200, 429]);
    // Wait for the counters to reach the file, then restart.
    for _ in 0..100 {
        if std::fs::read_to_string(&qf)
            .map(|t| t.contains(",3]"))
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    let _child = Proc(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&f)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port).await;
    let (s, h, _) = get(addr, "/q").await;
    assert_eq!(s, 429, "the restart did not reset the daily quota");
    assert!(h["ratelimit-policy"]
        .to_str()
        .unwrap()
        .contains("q=3;w=86400"));
    // Without a quota file the memory store refuses quotas at load.
    let bad = std::fs::read_to_string(&f)
        .unwrap()
        .replace(&format!("ratelimit:\n  quota_file: {}\n", qf.display()), "");
    std::fs::write(&f, bad).unwrap();
    let out = check(&f);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quota_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_identity_errors_with_locations() {
    let d = tmpdir("check-identity");
    let f = d.join("auth.yaml");
    std::fs::write(
        &f,
        "listeners:\n  - address: 127.0.0.1:8080\nidentity:\n  providers:\n    - name: corp\n      jwt:\n        algorithms: [HS256, none]\n        jwks_url: http://127.0.0.1:1/jwks\n    - name: keys\n      api_key:\n        store: keys.db\n        hash_secret: short\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9000\"]\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: api\n    auth:\n      providers: [corp, nobody]\n      rules:\n        - path: /users/x{id}\n        - path: /users/{id}\n          owner:\n            - from: path:uid\n            - from: body:/x\n",
    )
    .unwrap();
    let out = check(&f);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = f.display().to_string();
    for needle in [
        format!("{p}:7:29: unknown JWT algorithm `none`"),
        format!("{p}:7:9: HS256/384/512 need `hmac_secret`"),
        format!("{p}:12:22: hash_secret must be at least 32 characters"),
        format!("{p}:21:25: unknown provider `nobody`"),
        format!("{p}:23:17: in `/users/x{{id}}`"),
        format!("{p}:26:21: `path:uid` names no `{{uid}}` segment"),
        format!("{p}:27:21: unknown id source `body:/x`"),
    ] {
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn keys_command_creates_lists_rotates_and_revokes() {
    let d = tmpdir("keys-cli");
    let f = d.join("rampart.yaml");
    std::fs::write(
        &f,
        "listeners:\n  - address: 127.0.0.1:8080\nidentity:\n  providers:\n    - name: keys\n      api_key:\n        store: keys.db\n        hash_secret: ${RAMPART_TEST_KEY_SECRET}\n",
    )
    .unwrap();
    let keys = |args: &[&str]| {
        Command::new(BIN)
            .arg("keys")
            .args(args)
            .arg("-c")
            .arg(&f)
            .env(
                "RAMPART_TEST_KEY_SECRET",
                "cli-test-secret-0123456789abcdef0123",
            )
            .output()
            .unwrap()
    };
    let out = keys(&[
        "create",
        "--owner",
        "acme",
        "--scopes",
        "orders:read,orders:write",
        "--expires-in",
        "30d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("rk_") && key.len() == 57, "{key}");
    let id = &key[..13];
    let out = keys(&["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(id) && list.contains("acme") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&key[14..]), "the key itself is never listed");
    let out = keys(&["rotate", id, "--grace", "1h"]);
    assert!(out.status.success());
    let new_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(new_key, key);
    let out = keys(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let old = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(old["status"], "rotating");
    assert_eq!(old["rotated_to"], &new_key[..13]);
    assert!(keys(&["revoke", id]).status.success());
    assert!(!keys(&["revoke", id]).status.success(), "already revoked");
    let db = std::fs::read(d.join("keys.db")).unwrap();
    for k in [&key, &new_key] {
        let secret = &k.as_bytes()[14..];
        assert!(
            !db.windows(secret.len()).any(|w| w == secret),
            "only hashes are stored"
        );
    }
}

#[tokio::test]
async fn proxy_enforces_an_openapi_spec_in_one_flag() {
    let up = TestUpstream::start().await;
    let port = free_port();
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo-openapi.yaml"
    );
    let _p = Proc(
        Command::new(BIN)
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &format!("http://{}", up.addr),
                "--admin",
                "off",
                "--access-log",
                "off",
                "--openapi",
                spec,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/api/users/abc").await.0, 400);
    assert_eq!(get(addr, "/wp-admin").await.0, 404);
    assert_eq!(
        up.count(),
        1,
        "only the declared, valid request went through"
    );
    // A missing spec is an error naming the flag's file.
    let out = Command::new(BIN)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:1",
            "--upstream",
            "http://127.0.0.1:9",
            "--openapi",
            "/nonexistent/spec.yaml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/spec.yaml: cannot read"), "{err}");
}

#[test]
fn audit_scores_a_spec_in_text_json_and_sarif() {
    let d = tmpdir("audit");
    let weak = d.join("weak.yaml");
    std::fs::write(
        &weak,
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\nservers:\n  - url: http://api.example.com\npaths:\n  /users/{userId}:\n    get:\n      parameters:\n        - {name: userId, in: path, required: true, schema: {type: string}}\n        - {name: q, in: query, schema: {type: string}}\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema:\n                type: object\n                properties:\n                  password: {type: string}\n                  card_number: {type: string}\n    post:\n      security: []\n      requestBody:\n        content:\n          application/json:\n            schema: {type: object, properties: {tags: {type: array, items: {type: string}}, n: {type: integer}}}\n      responses:\n        '200': {description: ok}\ncomponents:\n  securitySchemes:\n    key: {type: apiKey, in: query, name: api_key}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN).arg("audit").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let w = weak.to_str().unwrap();
    let (code, text, _) = run(&[w]);
    assert_eq!(code, Some(0), "{text}");
    for rule in [
        "operation-without-security",
        "http-server",
        "api-key-in-query",
        "sensitive-property-in-response",
        "request-allows-additional-properties",
        "array-without-max-items",
        "id-parameter-unconstrained",
        "missing-4xx-response",
        "string-unbounded",
        "number-unbounded",
        "missing-429-response",
        "no-rate-limit-headers",
    ] {
        assert!(text.contains(rule), "{rule} missing from:\n{text}");
    }
    assert!(
        text.contains("weak.yaml#/paths/~1users~1{userId}/get/parameters/0"),
        "{text}"
    );
    let (code, json, _) = run(&[w, "--format", "json", "--fail-under", "90"]);
    assert_eq!(code, Some(1), "a weak spec fails the CI gate");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let score = v["score"].as_u64().unwrap();
    assert!(score < 50, "{score}");
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "api-key-in-query"
            && f["severity"] == "high"
            && f["pointer"] == "#/components/securitySchemes/key"));
    let (_, sarif, _) = run(&[w, "--format", "sarif"]);
    let s: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    assert_eq!(s["version"], "2.1.0");
    assert!(!s["runs"][0]["results"].as_array().unwrap().is_empty());
    // The demo's spec is in good shape.
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo-openapi.yaml"
    );
    let (code, json, _) = run(&[demo, "--format", "json", "--fail-under", "80"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(code, Some(0), "{json}");
    assert!(v["score"].as_u64().unwrap() >= 80);
    // Unreadable specs: exit 2 with the reason.
    let (code, _, err) = run(&["/nonexistent.yaml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read"), "{err}");
}

/// `rampart waf explain --crs CRS FILE`.
fn explain(req: &std::path::Path) -> std::process::Output {
    let crs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    Command::new(BIN)
        .args(["waf", "explain", "--crs"])
        .arg(&crs)
        .arg(req)
        .output()
        .unwrap()
}

#[test]
fn waf_explain_names_the_rule_the_variable_and_the_narrowest_exclusion() {
    let req = tmpdir("explain").join("req.txt");
    std::fs::write(
        &req,
        "GET /search?q=1%27%20OR%20%271%27=%271 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    )
    .unwrap();
    let out = explain(&req);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("942100 (phase 2)"), "{text}");
    assert!(text.contains("ARGS:q"), "{text}");
    assert!(text.contains("blocked by rule 949110"), "{text}");
    assert!(
        text.contains("- { rule: \"942100\", target: \"ARGS:q\" }"),
        "{text}"
    );

    // A request that is not HTTP is refused with its file name, exit 2.
    std::fs::write(&req, "GET / HTTP/1.1\r\nno colon here\r\n\r\n").unwrap();
    let out = explain(&req);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("req.txt: header line 2"));
}
