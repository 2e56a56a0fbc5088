//! Request smuggling and parsing hardening: every ambiguous request is answered 400 (or 414/431)
//! and the upstream never sees it. Slow clients are cut.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: &[(&str, &[u8], u16)] = &[
    ("cl+te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te+cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("duplicate differing CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 5\r\n\r\nabcde", 400),
    ("te not final chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nabc", 400),
    ("te obfuscated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("malformed chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
    ("control char in name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: b\r\n\r\n", 400),
    ("invalid method", b"G<T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form other host", b"GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("missing host", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("encoded slash", b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 400),
    ("encoded nul", b"GET /a%00b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 400),
    ("backslash", b"GET /a\\b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 400),
];

#[tokio::test]
async fn smuggling_and_malformed_requests_never_reach_upstream() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let addr = gw.listen_addrs()[0];
    for (name, req, want) in CASES {
        let resp = raw(addr, req).await;
        let status = status_of(&resp);
        // hyper rejects a few shapes itself before our handler runs; those are 400 too.
        assert_eq!(status, *want, "{name}: got {resp:?}");
        assert_eq!(up.count(), 0, "{name}: upstream saw the request");
    }
    // A well-formed chunked request and a pipelined pair still pass.
    let ok = raw(addr, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(ok.matches("HTTP/1.1 200").count(), 2, "{ok}");
    assert_eq!(up.count(), 2);
    assert_eq!(up.seen.lock().unwrap()[0].body_len, 3);
}

#[tokio::test]
async fn smuggled_second_request_is_not_forwarded() {
    // The classic CL.TE attack: the front end honours CL, the back end TE (or vice versa).
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let addr = gw.listen_addrs()[0];
    let attack = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let resp = raw(addr, attack).await;
    assert_eq!(status_of(&resp), 400);
    assert_eq!(
        resp.matches("HTTP/1.1").count(),
        1,
        "connection closed after the 400: {resp}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let up = TestUpstream::start().await;
    let yaml = config(up.addr, "", "").replace("path_prefix: /", "path_prefix: /public");
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let resp = raw(
        addr,
        b"GET /public/../admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 404, "{resp}");
    let resp = raw(
        addr,
        b"GET /public/x/%2e%2e/y?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/public/y?q=1");
    let resp = raw(
        addr,
        b"GET /p%75blic/%7Euser HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/public/~user");
}

#[tokio::test]
async fn oversized_request_line_and_head() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(
        up.addr,
        "",
        "server:\n  max_request_head_bytes: 16KiB\n",
    ))
    .await;
    let addr = gw.listen_addrs()[0];
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 20_000));
    long.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    let resp = raw(addr, &long).await;
    assert!([414, 431].contains(&status_of(&resp)), "{resp}");
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(60)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let resp = raw(addr, &big).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn slowloris_is_cut_after_header_timeout() {
    let up = TestUpstream::start().await;
    let top = "server:\n  timeouts:\n    header_read: 1s\n    idle: 30s\n";
    let gw = gateway(&config(up.addr, "", top)).await;
    let addr = gw.listen_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    // Keep trickling header bytes; the gateway must close anyway.
    let mut closed = false;
    for _ in 0..40 {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a client trickling headers must be disconnected");
    assert_eq!(up.count(), 0);
    // A connection that never sends anything is closed too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(15), idle.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "silent connection must be closed"
    );
}

#[tokio::test]
async fn keep_alive_connection_survives_between_requests() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(
        up.addr,
        "",
        "server:\n  timeouts:\n    header_read: 1s\n    idle: 30s\n",
    ))
    .await;
    let addr = gw.listen_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for i in 0..3 {
        s.write_all(b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "request {i}"
        );
        // Idle longer than the header timeout but well within the idle timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}
