//! The built-in guards through a real gateway: limits (431/414/413/405), CORS, IP filters,
//! country filters (with a MaxMind database written by the test), monitor mode.

mod common;
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn limits_answer_with_their_status_codes() {
    let up = TestUpstream::start().await;
    let route = "    limits:\n      max_header_bytes: 2KiB\n      max_uri_length: 100\n      max_body_bytes: 1000\n      allowed_methods: [GET, POST]\n";
    let gw = gateway(&config(up.addr, route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let (s, h, _) = send(&c, addr, "DELETE", "/x", &[], b"").await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, POST");
    let (s, _, _) = send(&c, addr, "GET", &format!("/{}", "a".repeat(200)), &[], b"").await;
    assert_eq!(s, 414);
    let big = "v".repeat(3000);
    let (s, _, _) = send(&c, addr, "GET", "/x", &[("x-big", &big)], b"").await;
    assert_eq!(s, 431);
    let (s, _, _) = send(&c, addr, "POST", "/x", &[], &vec![b'a'; 2000]).await;
    assert_eq!(s, 413, "Content-Length over the limit");
    assert_eq!(up.count(), 0);
    let (s, _, _) = send(&c, addr, "POST", "/x", &[], &vec![b'a'; 900]).await;
    assert_eq!(s, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_cut_while_streaming() {
    let up = TestUpstream::start().await;
    let route = "    limits:\n      max_body_bytes: 1000\n";
    let gw = gateway(&config(up.addr, route, "")).await;
    let addr = gw.listen_addrs()[0];
    // First chunk alone exceeds the limit: refused before the upstream is contacted.
    let mut req =
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n".to_vec();
    req.extend(vec![b'a'; 2000]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = raw(addr, &req).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert_eq!(up.count(), 0);
    // Small chunks that add up over the limit: the upstream never gets a complete body.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..20 {
        if s.write_all(b"64\r\n").await.is_err() {
            break;
        }
        let _ = s.write_all(&[b'b'; 100]).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    for seen in up.seen.lock().unwrap().iter() {
        assert!(
            seen.body_len <= 1000,
            "upstream received {} bytes",
            seen.body_len
        );
    }
}

#[tokio::test]
async fn monitor_mode_logs_but_lets_through() {
    let up = TestUpstream::start().await;
    let route = "    limits:\n      mode: monitor\n      allowed_methods: [GET]\n";
    let gw = gateway(&config(up.addr, route, "")).await;
    let addr = gw.listen_addrs()[0];
    let (s, _, _) = send(&client(), addr, "DELETE", "/x", &[], b"").await;
    assert_eq!(s, 200);
    assert_eq!(up.count(), 1);
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    assert!(String::from_utf8_lossy(&m)
        .contains("rampart_guard_decisions_total{guard=\"limits\",action=\"monitored\"} 1"));
}

#[tokio::test]
async fn cors_preflight_and_response_headers() {
    let up = TestUpstream::start().await;
    let route = "    cors:\n      allow_origins: [\"https://app.example.com\"]\n      allow_methods: [GET, POST]\n      allow_headers: [content-type]\n      expose_headers: [x-request-id]\n      allow_credentials: true\n      max_age: 120\n";
    let gw = gateway(&config(up.addr, route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let (s, h, _) = send(
        &c,
        addr,
        "OPTIONS",
        "/x",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "Content-Type"),
        ],
        b"",
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "120");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(up.count(), 0, "preflight answered by Rampart");
    let (s, _, _) = send(
        &c,
        addr,
        "OPTIONS",
        "/x",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = send(
        &c,
        addr,
        "OPTIONS",
        "/x",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "DELETE"),
        ],
        b"",
    )
    .await;
    assert_eq!(s, 403);
    let (s, h, _) = send(
        &c,
        addr,
        "GET",
        "/x",
        &[("origin", "https://app.example.com")],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    let (s, h, _) = send(
        &c,
        addr,
        "GET",
        "/x",
        &[("origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn global_ip_deny_refuses_connections_and_route_allow_list_applies() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(
        up.addr,
        "",
        "guards:\n  ip_filter:\n    deny: [\"127.0.0.0/8\"]\n",
    ))
    .await;
    let resp = raw(gw.listen_addrs()[0], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(resp, "", "connection closed without an answer");
    assert_eq!(up.count(), 0);
    let gw2 = gateway(&config(
        up.addr,
        "    ip_filter:\n      allow: [\"10.0.0.0/8\"]\n",
        "",
    ))
    .await;
    let (s, _, _) = get(gw2.listen_addrs()[0], "/").await;
    assert_eq!(s, 403);
    let gw3 = gateway(&config(
        up.addr,
        "    ip_filter:\n      allow: [\"127.0.0.1\"]\n",
        "",
    ))
    .await;
    let (s, _, _) = get(gw3.listen_addrs()[0], "/").await;
    assert_eq!(s, 200);
}

/// A country database written by the test: 203.0.113.0/24 is FR, 198.51.100.0/24 is US.
fn geo_db(tag: &str) -> std::path::PathBuf {
    let db = common::mmdb::country_db(&[
        ("203.0.113.0".parse().unwrap(), 24, "FR"),
        ("198.51.100.0".parse().unwrap(), 24, "US"),
    ]);
    let p = std::env::temp_dir().join(format!("rampart-geo-{tag}-{}.mmdb", std::process::id()));
    std::fs::write(&p, db).unwrap();
    p
}

async fn from(addr: std::net::SocketAddr, ip: &str) -> u16 {
    send(&client(), addr, "GET", "/", &[("x-forwarded-for", ip)], b"")
        .await
        .0
}

#[tokio::test]
async fn geo_denies_and_allows_countries_by_client_address() {
    let up = TestUpstream::start().await;
    let db = geo_db("lists");
    let top = format!(
        "server:\n  trusted_proxies: [\"127.0.0.1\"]\ngeoip:\n  database: \"{}\"\nguards:\n  geo:\n    deny_countries: [FR]\n",
        db.display()
    );
    // Global deny list: FR refused, US and unknown addresses pass.
    let gw = gateway(&config(up.addr, "", &top)).await;
    let addr = gw.listen_addrs()[0];
    assert_eq!(from(addr, "203.0.113.7").await, 403);
    assert_eq!(from(addr, "198.51.100.7").await, 200);
    assert_eq!(from(addr, "192.0.2.1").await, 200);
    assert_eq!(from(addr, "::ffff:203.0.113.9").await, 403);
    let before = up.count();
    let (s, _, body) = send(
        &client(),
        addr,
        "GET",
        "/",
        &[("x-forwarded-for", "203.0.113.8")],
        b"",
    )
    .await;
    assert_eq!(s, 403);
    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem+json body");
    assert_eq!(p["status"], 403);
    assert_eq!(
        up.count(),
        before,
        "refused requests never reach the upstream"
    );
    // A route's allow list replaces the global block: only US; unknown refused with it.
    let route = "    geo:\n      allow_countries: [us]\n";
    let gw = gateway(&config(up.addr, route, &top)).await;
    let addr = gw.listen_addrs()[0];
    assert_eq!(from(addr, "198.51.100.7").await, 200);
    assert_eq!(from(addr, "203.0.113.7").await, 403);
    assert_eq!(from(addr, "192.0.2.1").await, 403);
    // ... unless unknown addresses are let through explicitly.
    let route = "    geo:\n      allow_countries: [US]\n      unknown: allow\n";
    let gw = gateway(&config(up.addr, route, &top)).await;
    assert_eq!(from(gw.listen_addrs()[0], "192.0.2.1").await, 200);
    // Monitor mode lets everyone through.
    let route = "    geo:\n      mode: monitor\n      deny_countries: [FR]\n";
    let gw = gateway(&config(up.addr, route, &top)).await;
    assert_eq!(from(gw.listen_addrs()[0], "203.0.113.7").await, 200);
    let _ = std::fs::remove_file(db);
}

#[test]
fn geo_config_errors_say_what_and_where() {
    let dir = std::env::temp_dir();
    let bad_db = dir.join(format!("rampart-geo-bad-{}.mmdb", std::process::id()));
    std::fs::write(&bad_db, b"not a database").unwrap();
    let base = |top: &str, route: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:0\n{top}upstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9\"]\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n{route}"
        )
    };
    // `geo` without a database; a code that is not two letters.
    let text = base("", "    geo:\n      deny_countries: [FRA]\n");
    let Err(err) = rampart::load_text(&text, "geo.yaml", &dir) else {
        panic!("config accepted");
    };
    let err = err.to_string();
    assert!(err.contains("geo.yaml:11:7: `geo` needs"), "{err}");
    assert!(err.contains("needs a country database"), "{err}");
    assert!(
        err.contains("geo.yaml:11:24: `FRA` is not a two-letter"),
        "{err}"
    );
    // A database file that is not one: refused when the guards are built, with its location.
    let text = base(
        &format!("geoip:\n  database: \"{}\"\n", bad_db.display()),
        "    geo:\n      deny_countries: [FR]\n",
    );
    let lc = rampart::load_text(&text, "geo.yaml", &dir).expect("valid config");
    let built = (rampart::guards(rampart_telemetry::Metrics::new()))(&lc);
    let Err(err) = built else {
        panic!("bad database accepted");
    };
    let msg = err
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(msg.contains("geo.yaml:4:13:"), "{msg}");
    assert!(msg.contains("is not a MaxMind DB"), "{msg}");
    let _ = std::fs::remove_file(bad_db);
}

#[tokio::test]
async fn client_address_from_forwarded_header_of_trusted_proxies() {
    let up = TestUpstream::start().await;
    let route = "    ip_filter:\n      deny: [\"203.0.113.0/24\", \"2001:db8::/32\"]\n";
    let top = "server:\n  trusted_proxies: [\"127.0.0.1\", \"10.0.0.0/8\"]\n";
    let gw = gateway(&config(up.addr, route, top)).await;
    let addr = gw.listen_addrs()[0];
    let status = |h: Vec<(&'static str, &'static str)>| {
        let c = client();
        async move { send(&c, addr, "GET", "/", &h, b"").await.0 }
    };
    // The right-most address that is not a trusted proxy is the client.
    assert_eq!(status(vec![("forwarded", "for=203.0.113.7")]).await, 403);
    assert_eq!(
        status(vec![(
            "forwarded",
            "for=198.51.100.1, for=\"203.0.113.7:4711\";proto=https, for=10.1.2.3"
        )])
        .await,
        403
    );
    assert_eq!(
        status(vec![
            ("forwarded", "for=\"[2001:db8::5]:443\""),
            ("forwarded", "for=10.9.9.9")
        ])
        .await,
        403,
        "several Forwarded lines are one list"
    );
    assert_eq!(
        status(vec![("forwarded", "for=203.0.113.7, for=198.51.100.1")]).await,
        200
    );
    // A hop that is not an address ends the walk at the last address seen (here the proxy).
    assert_eq!(
        status(vec![("forwarded", "for=203.0.113.7, for=unknown")]).await,
        200
    );
    // X-Forwarded-For, when present, is what counts.
    assert_eq!(
        status(vec![
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=203.0.113.7")
        ])
        .await,
        200
    );
    // From a peer that is not trusted, Forwarded means nothing.
    let gw = gateway(&config(up.addr, route, "")).await;
    let c = client();
    let (s, _, _) = send(
        &c,
        gw.listen_addrs()[0],
        "GET",
        "/",
        &[("forwarded", "for=203.0.113.7")],
        b"",
    )
    .await;
    assert_eq!(s, 200);
}
