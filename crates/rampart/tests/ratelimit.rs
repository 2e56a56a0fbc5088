//! Rate limits through real gateways: GCRA bursts, 429 with Retry-After and RateLimit headers,
//! keys, monitor mode, a limit shared by three instances through a real redis-server, and
//! Redis failing mid-run (fail open, fail closed, recovery).

mod common;
use common::*;
use std::time::Duration;

fn limits(list: &str) -> String {
    format!("    rate_limits:\n{list}")
}

#[tokio::test]
async fn per_ip_burst_then_429_with_headers() {
    let up = TestUpstream::start().await;
    let route = limits(
        "      - name: per-ip\n        key: [client_ip]\n        rate: 5\n        period: 1m\n",
    );
    let gw = gateway(&config(up.addr, &route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    for i in 0..5 {
        let (s, h, _) = send(&c, addr, "GET", "/r", &[], b"").await;
        assert_eq!(s, 200, "request {i}");
        assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=5;w=60");
        assert!(
            h["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"per-ip\";r={};t=", 4 - i)),
            "{:?}",
            h["ratelimit"]
        );
    }
    let (s, h, body) = send(&c, addr, "GET", "/r", &[], b"").await;
    assert_eq!(s, 429);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=5;w=60");
    assert!(h["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per-ip\";r=0;t="));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 429);
    assert_eq!(up.count(), 5);
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("rampart_ratelimit_decisions_total{limit=\"per-ip\",result=\"limited\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rampart_guard_decisions_total{guard=\"rate_limit\",action=\"blocked\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn header_keys_are_independent_and_absent_keys_do_not_limit() {
    let up = TestUpstream::start().await;
    let route = limits("      - name: per-user\n        key: [header:x-user, route]\n        rate: 2\n        period: 1m\n");
    let gw = gateway(&config(up.addr, &route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    for user in ["alice", "bob"] {
        for _ in 0..2 {
            assert_eq!(
                send(&c, addr, "POST", "/login", &[("x-user", user)], b"{}")
                    .await
                    .0,
                200
            );
        }
        assert_eq!(
            send(&c, addr, "POST", "/login", &[("x-user", user)], b"{}")
                .await
                .0,
            429,
            "{user}"
        );
    }
    for _ in 0..5 {
        assert_eq!(
            send(&c, addr, "POST", "/login", &[], b"{}").await.0,
            200,
            "no key, no limit"
        );
    }
}

#[tokio::test]
async fn global_and_route_limits_all_apply_and_monitor_lets_through() {
    let up = TestUpstream::start().await;
    let top = "guards:\n  rate_limits:\n    - name: global\n      key: [client_ip]\n      rate: 3\n      period: 1m\n      mode: monitor\n";
    let route = limits(
        "      - name: route\n        key: [client_ip]\n        rate: 5\n        period: 1m\n",
    );
    let gw = gateway(&config(up.addr, &route, top)).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(&c, addr, "GET", "/g", &[], b"").await.0);
    }
    // The global limit (3) only monitors; the route limit (5) blocks the 6th.
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    assert!(String::from_utf8_lossy(&m)
        .contains("rampart_guard_decisions_total{guard=\"rate_limit\",action=\"monitored\"} 3"));
}

fn redis_config(up: std::net::SocketAddr, redis: &str, on_failure: &str, rate: u64) -> String {
    let top = format!("ratelimit:\n  store: redis\n  redis_url: \"{redis}\"\n  redis_timeout: 200ms\n  on_failure: {on_failure}\n");
    let route = limits(&format!(
        "      - name: shared\n        key: [route]\n        rate: {rate}\n        period: 10m\n"
    ));
    config(up, &route, &top)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_limit_through_redis() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start().await;
    let yaml = redis_config(up.addr, &redis.url(), "fail_closed", 100);
    let mut addrs = Vec::new();
    let mut gws = Vec::new();
    for _ in 0..3 {
        let gw = gateway(&yaml).await;
        addrs.push(gw.listen_addrs()[0]);
        gws.push(gw);
    }
    // 3 x 4 concurrent clients, 25 requests each: 300 requests against a limit of 100.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let addr = addrs[i % 3];
        tasks.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut limited, mut other) = (0, 0, 0);
            for _ in 0..25 {
                match send(&c, addr, "GET", "/shared", &[], b"").await.0 {
                    200 => ok += 1,
                    429 => limited += 1,
                    _ => other += 1,
                }
            }
            (ok, limited, other)
        }));
    }
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await.unwrap();
        ok += a;
        limited += b;
        other += c;
    }
    assert_eq!(other, 0);
    assert_eq!(ok + limited, 300);
    assert!(
        (95..=105).contains(&ok),
        "admitted {ok} of a shared limit of 100"
    );
    assert_eq!(up.count(), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_and_recovers() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let up = TestUpstream::start().await;
    let open = gateway(&redis_config(up.addr, &redis.url(), "fail_open", 1000)).await;
    let closed = gateway(&redis_config(up.addr, &redis.url(), "fail_closed", 1000)).await;
    let c = client();
    assert_eq!(
        send(&c, open.listen_addrs()[0], "GET", "/a", &[], b"")
            .await
            .0,
        200
    );
    assert_eq!(
        send(&c, closed.listen_addrs()[0], "GET", "/a", &[], b"")
            .await
            .0,
        200
    );

    redis.kill();
    for _ in 0..5 {
        let (s, _, _) = send(&c, open.listen_addrs()[0], "GET", "/a", &[], b"").await;
        assert_eq!(s, 200, "fail_open: the local limiter answers");
        let (s, h, _) = send(&c, closed.listen_addrs()[0], "GET", "/a", &[], b"").await;
        assert_eq!(s, 503, "fail_closed");
        assert_eq!(h["retry-after"], "1");
    }
    let (_, _, m) = get(open.admin_addr().unwrap(), "/metrics").await;
    let m = String::from_utf8_lossy(&m);
    assert!(!m.contains("rampart_ratelimit_store_errors_total 0"), "{m}");

    // Redis comes back on the same port: enforcement through it resumes without a restart.
    let redis2 = RedisServer::start_on(port).await;
    let mut recovered = false;
    for _ in 0..100 {
        if send(&c, closed.listen_addrs()[0], "GET", "/a", &[], b"")
            .await
            .0
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "fail_closed instance uses Redis again once it is back"
    );
    // And the counter is in Redis: the key exists.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", redis2.port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("rampart:rl:shared|api"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn credential_stuffing_per_username_and_per_ip() {
    let up = TestUpstream::start().await;
    // Requests arrive through a trusted proxy, so X-Forwarded-For gives the client address.
    let top = "server:\n  trusted_proxies: [\"127.0.0.1\"]\n";
    let route = limits("      - name: login-user\n        key: [json:username]\n        rate: 3\n        period: 10m\n      - name: login-ip\n        key: [client_ip]\n        rate: 5\n        period: 10m\n");
    let gw = gateway(&config(up.addr, &route, top)).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let login = |user: &str| format!("{{\"username\":\"{user}\",\"password\":\"x\"}}");
    // One username from many IPs: the per-username limit stops the 4th attempt.
    let mut codes = Vec::new();
    for i in 0..5 {
        let ip = format!("198.51.100.{i}");
        codes.push(
            send(
                &c,
                addr,
                "POST",
                "/login",
                &[("x-forwarded-for", &ip)],
                login("Victim").as_bytes(),
            )
            .await
            .0,
        );
    }
    assert_eq!(codes, vec![200, 200, 200, 429, 429]);
    // Usernames are compared case-insensitively.
    assert_eq!(
        send(
            &c,
            addr,
            "POST",
            "/login",
            &[("x-forwarded-for", "198.51.100.99")],
            login("victim").as_bytes()
        )
        .await
        .0,
        429
    );
    // Many usernames from one IP: the per-IP limit stops the 6th.
    let mut codes = Vec::new();
    for i in 0..7 {
        codes.push(
            send(
                &c,
                addr,
                "POST",
                "/login",
                &[("x-forwarded-for", "203.0.113.7")],
                login(&format!("user{i}")).as_bytes(),
            )
            .await
            .0,
        );
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429, 429]);
    // Bodies without the field are not counted by the username limit.
    assert_eq!(
        send(
            &c,
            addr,
            "POST",
            "/login",
            &[("x-forwarded-for", "192.0.2.1")],
            b"{}"
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn repeated_refusals_ban_the_client_everywhere() {
    let up = TestUpstream::start().await;
    let route = limits("      - name: strict\n        key: [client_ip]\n        rate: 2\n        period: 1m\n        ban_after: 3\n        ban_for: 1m\n");
    let gw = gateway(&config(up.addr, &route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(send(&c, addr, "GET", "/b", &[], b"").await.0);
    }
    // 2 allowed, 3 refused by the limit, then banned.
    assert_eq!(codes, vec![200, 200, 429, 429, 429, 403, 403]);
    let (s, h, _) = send(&c, addr, "GET", "/b", &[], b"").await;
    assert_eq!(s, 403);
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
}

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn cli(admin: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .arg("bans")
        .args(args)
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_ban_through_the_cli_and_bans_are_shared_through_redis() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start().await;
    let top = format!(
        "ratelimit:\n  store: redis\n  redis_url: \"{}\"\n  redis_timeout: 500ms\n  bans: true\n",
        redis.url()
    );
    let a = gateway(&config(up.addr, "", &top)).await;
    let b = gateway(&config(up.addr, "", &top)).await;
    let c = client();
    assert_eq!(
        send(&c, b.listen_addrs()[0], "GET", "/", &[], b"").await.0,
        200
    );

    let admin = a.admin_addr().unwrap();
    let (ok, out) = cli(admin, &["add", "127.0.0.1", "--ttl", "5m"]);
    assert!(ok, "{out}");
    // Instance b has never seen this ban locally: it reads it from Redis.
    let (s, h, _) = send(&c, b.listen_addrs()[0], "GET", "/", &[], b"").await;
    assert_eq!(s, 403);
    assert!(h.contains_key("retry-after"));
    let (ok, out) = cli(b.admin_addr().unwrap(), &["list"]);
    assert!(ok && out.contains("\"ip\":\"127.0.0.1\""), "{out}");
    let (ok, out) = cli(admin, &["remove", "127.0.0.1"]);
    assert!(ok, "{out}");
    assert_eq!(
        send(&c, b.listen_addrs()[0], "GET", "/", &[], b"").await.0,
        200
    );
    // Bad input is refused with a message.
    let (ok, out) = cli(admin, &["add", "127.0.0.1", "--ttl", "soon"]);
    assert!(!ok && out.contains("ttl"), "{out}");
}

#[tokio::test]
async fn concurrency_limit_holds_slots_until_the_response_ends() {
    let up = TestUpstream::start().await;
    let route = "    concurrency_limits:\n      - name: one-at-a-time\n        key: [client_ip]\n        max: 1\n";
    let yaml = config(up.addr, route, "").replace("response_timeout: 1s", "response_timeout: 10s");
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let slow = tokio::spawn(async move { get(addr, "/slow").await.0 });
    up.wait_for(1).await;
    let (s, h, _) = get(addr, "/fast").await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(slow.await.unwrap(), 200);
    // The slot is free again once the slow response has ended.
    assert_eq!(get(addr, "/fast").await.0, 200);
    assert_eq!(get(addr, "/fast").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_shared_through_redis() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start().await;
    let top = format!(
        "ratelimit:\n  store: redis\n  redis_url: \"{}\"\n  redis_timeout: 500ms\n",
        redis.url()
    );
    let route = "    quotas:\n      - name: monthly\n        key: [route]\n        limit: 4\n        per: month\n";
    let a = gateway(&config(up.addr, route, &top)).await;
    let b = gateway(&config(up.addr, route, &top)).await;
    let c = client();
    let mut codes = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        codes.push(
            send(&c, gw.listen_addrs()[0], "GET", "/m", &[], b"")
                .await
                .0,
        );
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429]);
}

#[test]
fn auto_bans_config_errors_say_what_and_where() {
    let text = "listeners:\n  - address: 127.0.0.1:0\nratelimit:\n  auto_bans:\n    - name: x\n      guards: [wafx]\n      after: 0\n      within: 1m\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9\"]\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n";
    let Err(err) = rampart::load_text(text, "ab.yaml", &std::env::temp_dir()) else {
        panic!("config accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("ab.yaml:6:16: unknown guard `wafx` in auto_bans"),
        "{err}"
    );
    assert!(
        err.contains("ab.yaml:7:14: `after` must be at least 1"),
        "{err}"
    );
}

#[tokio::test]
async fn headers_on_refusal_only_mark_the_429() {
    let up = TestUpstream::start().await;
    let route = limits(
        "      - name: quiet\n        key: [client_ip]\n        rate: 2\n        period: 1m\n        headers: on_refusal\n",
    );
    let gw = gateway(&config(up.addr, &route, "")).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    for _ in 0..2 {
        let (s, h, _) = send(&c, addr, "GET", "/r", &[], b"").await;
        assert_eq!(s, 200);
        assert!(!h.contains_key("ratelimit") && !h.contains_key("ratelimit-policy"));
    }
    let (s, h, _) = send(&c, addr, "GET", "/r", &[], b"").await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    assert_eq!(h["ratelimit-policy"], "\"quiet\";q=2;w=60");
}
