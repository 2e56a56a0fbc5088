//! Proxying through a real gateway to a real upstream: methods, forwarding headers, hop-by-hop
//! removal, request ids, security headers, routing, access-log and metrics.

mod common;
use common::*;

#[tokio::test]
async fn proxies_crud_methods_and_sets_forwarding_headers() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let body: &[u8] = if m == "GET" || m == "DELETE" {
            b""
        } else {
            b"{\"a\":1}"
        };
        let (status, headers, _) = send(
            &c,
            addr,
            m,
            "/api/users/7?x=1",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("connection", "x-secret"),
                ("x-secret", "drop-me"),
                ("te", "trailers"),
            ],
            body,
        )
        .await;
        assert_eq!(status, 200, "{m}");
        let seen = up.last();
        assert_eq!(seen.method, m);
        assert_eq!(seen.uri, "/api/users/7?x=1");
        assert_eq!(seen.body_len, body.len() as u64);
        // The client is not a trusted proxy: its X-Forwarded-For is replaced, not appended.
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "http");
        assert!(seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http;host="));
        assert!(
            seen.headers.get("x-secret").is_none(),
            "header named in Connection must be dropped"
        );
        assert!(seen.headers.get("te").is_none());
        let rid = headers["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(seen.headers["x-request-id"].to_str().unwrap(), rid);
        assert_eq!(rid.len(), 16);
        // Response hardening.
        assert!(headers.get("server").is_none());
        assert!(headers.get("x-powered-by").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            headers.get("strict-transport-security").is_none(),
            "no HSTS on plain HTTP"
        );
    }
}

#[tokio::test]
async fn trusted_proxy_headers_are_kept_and_client_ip_derived() {
    let up = TestUpstream::start().await;
    let top = "server:\n  trusted_proxies: [\"127.0.0.1/32\"]\n";
    let route = "    ip_filter:\n      deny: [\"9.9.9.9\"]\n";
    let gw = gateway(&config(up.addr, route, top)).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let (s, h, _) = send(
        &c,
        addr,
        "GET",
        "/x",
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-request-id", "abc-123"),
            ("x-forwarded-proto", "https"),
        ],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-request-id"], "abc-123");
    assert_eq!(h["x-request-id"], "abc-123");
    // The derived client address is what per-route IP rules see.
    let before = up.count();
    let (s, _, body) = send(
        &c,
        addr,
        "GET",
        "/x",
        &[("x-forwarded-for", "9.9.9.9")],
        b"",
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(up.count(), before);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 403);
    assert!(v["request_id"].is_string());
}

#[tokio::test]
async fn routing_by_host_prefix_and_method() {
    let up = TestUpstream::start().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nlog:\n  access: off\nupstreams:\n  - name: api\n    targets: [\"http://{a}\"]\nroutes:\n  - name: admin\n    host: admin.example.com\n    path_prefix: /\n    upstream: api\n  - name: users\n    path_prefix: /users\n    methods: [GET]\n    upstream: api\n    strip_prefix: true\n",
        a = up.addr
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let (s, _, _) = send(&c, addr, "GET", "/users/5", &[], b"").await;
    assert_eq!(s, 200);
    assert_eq!(up.last().uri, "/5", "prefix stripped");
    let (s, h, _) = send(&c, addr, "POST", "/users/5", &[], b"x").await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET");
    let (s, _, _) = send(&c, addr, "GET", "/usersx", &[], b"").await;
    assert_eq!(s, 404, "prefix matches whole segments");
    let (s, _, _) = send(
        &c,
        addr,
        "GET",
        "/other",
        &[("host", "admin.example.com:8080")],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(up.last().uri, "/other");
}

#[tokio::test]
async fn metrics_and_health_on_admin_listener() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let addr = gw.listen_addrs()[0];
    let admin = gw.admin_addr().unwrap();
    // Statuses with a cached counter handle (200, 404) and one without (418): each counted
    // once per request, the first time and after.
    for (path, status) in [
        ("/hello", 200),
        ("/hello", 200),
        ("/hello", 200),
        ("/status/404", 404),
        ("/status/418", 418),
        ("/status/418", 418),
    ] {
        assert_eq!(get(addr, path).await.0, status, "{path}");
    }
    let (s, _, _) = get(addr, "/a%2Fb").await;
    assert_eq!(s, 400);
    let (s, _, body) = get(admin, "/metrics").await;
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&body);
    for needle in [
        "rampart_requests_total{route=\"api\",status=\"200\"} 3",
        "rampart_requests_total{route=\"api\",status=\"404\"} 1",
        "rampart_requests_total{route=\"api\",status=\"418\"} 2",
        "rampart_requests_total{route=\"-\",status=\"400\"} 1",
        "rampart_request_duration_seconds_bucket",
        "rampart_upstream_duration_seconds_bucket",
        "rampart_open_connections",
        "rampart_protocol_rejects_total{reason=\"path_encoded_slash\"} 1",
        "rampart_config_reloads_total{result=\"failed\"} 0",
        "# TYPE rampart_guard_decisions counter",
        "# TYPE rampart_upstream_errors counter",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
}

#[tokio::test]
async fn access_log_and_security_events_are_json_lines() {
    let up = TestUpstream::start().await;
    let log = std::env::temp_dir().join(format!("rampart-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let top = "guards:\n  limits:\n    mode: monitor\n    max_uri_length: 10\n";
    let yaml =
        config(up.addr, "", top).replace("access: off", &format!("access: \"{}\"", log.display()));
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let (s, h, _) = get(addr, "/a-long-path-over-ten").await;
    assert_eq!(s, 200, "monitor mode lets the request through");
    let rid = h["x-request-id"].to_str().unwrap().to_string();
    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let event = lines
        .iter()
        .find(|l| l["type"] == "security_event")
        .expect("event logged");
    assert_eq!(event["guard"], "limits");
    assert_eq!(event["rule"], "uri_too_long");
    assert_eq!(event["action"], "monitored");
    assert_eq!(event["request_id"], rid.as_str());
    let access = lines
        .iter()
        .find(|l| l["type"] == "access")
        .expect("access logged");
    for k in [
        "ts",
        "request_id",
        "client_ip",
        "method",
        "path",
        "route",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "upstream",
        "verdict",
    ] {
        assert!(access.get(k).is_some(), "access log lacks {k}: {access}");
    }
    assert_eq!(access["status"], 200);
    assert_eq!(access["verdict"], "monitored");
    assert_eq!(access["request_id"], rid.as_str());
    let _ = std::fs::remove_file(&log);
}
