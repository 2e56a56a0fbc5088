//! HTTP/2 cleartext with prior knowledge, HTTP/2 to upstreams, the connection cap, and
//! certificates reloaded with the config.

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

#[tokio::test]
async fn h2c_prior_knowledge_when_enabled() {
    let up = TestUpstream::start().await;
    let yaml = config(up.addr, "", "").replace(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n    h2c: true\n",
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(c);
    for i in 0..3 {
        let req = http::Request::post(format!("http://a.test/h2/{i}"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let _ = resp.into_body().collect().await.unwrap();
        let seen = up.last();
        assert_eq!(seen.uri, format!("/h2/{i}"));
        assert_eq!(seen.body_len, 5);
        assert_eq!(
            seen.headers["host"], "a.test",
            "authority becomes Host for the HTTP/1.1 upstream"
        );
    }
    // HTTP/1.1 still works on the same listener.
    assert_eq!(get(addr, "/h1").await.0, 200);
}

#[tokio::test]
async fn h2c_refused_when_not_enabled() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let resp = raw(gw.listen_addrs()[0], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(!resp.contains(" 200 "), "{resp:?}");
    assert_eq!(up.count(), 0);
}

/// An HTTP/2 (prior knowledge) upstream.
async fn h2_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let v = format!("{:?} {}", req.version(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(v),
                        )))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http2_to_upstream() {
    let up = h2_upstream().await;
    let yaml = config(up, "", "").replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    http2: true\n",
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let c = client();
    for i in 0..5 {
        let (s, _, body) = send(&c, addr, "GET", &format!("/x/{i}"), &[], b"").await;
        assert_eq!(s, 200);
        assert_eq!(body, format!("HTTP/2.0 /x/{i}"));
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "server:\n  max_connections: 2\n")).await;
    let addr = gw.listen_addrs()[0];
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Give the accept loop a moment to count both.
    for _ in 0..100 {
        if gw.open_connections() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(gw.open_connections(), 2);
    let resp = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(resp, "", "third connection refused");
    drop(_a);
    drop(_b);
    for _ in 0..100 {
        if gw.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(addr, "/").await.0,
        200,
        "capacity is back once connections close"
    );
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    assert!(String::from_utf8_lossy(&m).contains("rampart_refused_connections_total 1"));
}

/// One HTTP/2 frame.
fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let l = payload.len();
    let mut f = vec![(l >> 16) as u8, (l >> 8) as u8, l as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn h2_header_block_left_open_is_cut_after_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start().await;
    let yaml = config(
        up.addr,
        "",
        "server:\n  timeouts:\n    header_read: 1s\n    idle: 60s\n",
    )
    .replace(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n    h2c: true\n",
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
                                            // HEADERS for stream 1 (:method GET, :scheme http, :path /) without END_HEADERS: the
                                            // block stays open; the CONTINUATION that would end it never comes.
    hello.extend(h2_frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84]));
    s.write_all(&hello).await.unwrap();
    // Trickle a few one-byte CONTINUATION frames (the only frames HTTP/2 allows while a block is
    // open; the h2 codec refuses more than a handful), never ending the block, then wait. The
    // idle timeout is 60 s: only the header timeout can close the connection within this loop.
    let mut closed = false;
    for i in 0..40 {
        if i < 3 && s.write_all(&h2_frame(0x9, 0, 1, &[0x40])).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(std::time::Duration::from_millis(250), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        closed,
        "an HTTP/2 header block left open must get the connection closed"
    );
    assert_eq!(up.count(), 0);

    // A complete request on a fresh connection is served (the watch does not misfire).
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, c) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(c);
    let req = http::Request::get("http://a.test/ok")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// One HTTP/1.1 response with a Content-Length body, read off a raw stream without reading
/// past it (a pipelined second response stays in the stream).
async fn read_response(s: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let head = read_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("the whole body");
    (
        status_of(&head),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The `rampart_released_connections` gauge, polled until it shows `want` (at most 10 s).
async fn wait_released(admin: std::net::SocketAddr, want: i64) {
    let mut last = String::new();
    for _ in 0..400 {
        let (_, _, body) = get(admin, "/metrics").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("rampart_released_connections "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        if v == Some(want) {
            return;
        }
        last = format!("{v:?}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("rampart_released_connections never became {want} (last {last})");
}

#[tokio::test]
async fn idle_keepalive_connection_gives_back_http_state_and_keeps_serving() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start().await;
    let gw = gateway(&config(
        up.addr,
        "",
        "server:\n  timeouts:\n    idle_release: 0s\n",
    ))
    .await;
    let addr = gw.listen_addrs()[0];
    let admin = gw.admin_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A connection that has sent nothing holds no HTTP state.
    wait_released(admin, 1).await;
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (st, body) = read_response(&mut s).await;
    assert_eq!(st, 200);
    assert!(body.contains("\"/one\""), "{body}");
    // Idle again: released, and the same connection serves the next requests, including two
    // pipelined in one write (what was read past the first stays with the connection).
    wait_released(admin, 1).await;
    s.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\nPOST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let (st, body) = read_response(&mut s).await;
    assert_eq!(st, 200);
    assert!(body.contains("\"/two\""), "{body}");
    let (st, body) = read_response(&mut s).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("\"/three\"") && body.contains("\"body_len\":3"),
        "{body}"
    );
    wait_released(admin, 1).await;
    // A smuggling attempt on a released connection is still refused by the head scanner.
    s.write_all(b"POST /four HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (st, _) = read_response(&mut s).await;
    assert_eq!(st, 400);
    assert_eq!(
        up.count(),
        3,
        "the refused request never reached the upstream"
    );
    drop(s);
    wait_released(admin, 0).await;
}

/// A WebSocket-style upstream: a handshake with `Upgrade: websocket` gets a 101 and the
/// connection then answers every chunk it reads with the chunk in upper case; any other
/// request gets 426. Returns the address and the handshake headers it saw.
async fn upgrade_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>> = Default::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    seen.lock().unwrap().push(req.headers().clone());
                    let wants = req
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                    let mut resp = http::Response::new(Full::new(Bytes::new()));
                    if wants {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let Ok(up) = on.await else { return };
                            let mut io = hyper_util::rt::TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                let out = buf[..n].to_ascii_uppercase();
                                if io.write_all(&out).await.is_err() {
                                    break;
                                }
                            }
                        });
                        *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                        let h = resp.headers_mut();
                        h.insert("upgrade", "websocket".parse().unwrap());
                        h.insert("connection", "Upgrade".parse().unwrap());
                        h.insert("sec-websocket-accept", "test-accept".parse().unwrap());
                    } else {
                        *resp.status_mut() = http::StatusCode::UPGRADE_REQUIRED;
                    }
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, seen)
}

const WS_HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Read a response head off a raw stream (nothing past it).
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "no end of head");
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_u8())
            .await
            .expect("response within 5 s")
            .expect("connection open until a response head");
        head.push(b);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Send the WebSocket handshake on a new connection; the stream and the response head.
async fn handshake(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(WS_HANDSHAKE).await.unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

#[tokio::test]
async fn websocket_upgrade_becomes_a_tunnel_when_the_route_allows_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, seen) = upgrade_upstream().await;
    let gw = gateway(&config(up, "    websocket: true\n", "")).await;
    let (mut s, head) = handshake(gw.listen_addrs()[0]).await;
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("sec-websocket-accept: test-accept"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    {
        let h = &seen.lock().unwrap()[0];
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h["sec-websocket-version"], "13");
    }
    // Bytes both ways, several times, including ones that look like an HTTP request (the
    // tunnel is not scanned as HTTP any more).
    for msg in [
        &b"hello"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x81\x05bytes\x00\x0d",
    ] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(got, msg.to_ascii_uppercase());
    }
    let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
    let m = String::from_utf8_lossy(&m).into_owned();
    assert!(m.contains("rampart_open_tunnels 1"), "{m}");
    // The client closes: the tunnel ends and the gauge goes back to 0.
    drop(s);
    for i in 0.. {
        let (_, _, m) = get(gw.admin_addr().unwrap(), "/metrics").await;
        if String::from_utf8_lossy(&m).contains("rampart_open_tunnels 0") {
            break;
        }
        assert!(i < 200, "tunnel still counted as open");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn websocket_upgrade_is_an_ordinary_request_when_the_route_does_not_allow_it() {
    let (up, seen) = upgrade_upstream().await;
    let gw = gateway(&config(up, "", "")).await;
    let resp = handshake(gw.listen_addrs()[0]).await.1;
    assert_eq!(status_of(&resp), 426, "{resp}");
    let h = &seen.lock().unwrap()[0];
    assert!(h.get("upgrade").is_none(), "upgrade headers are hop-by-hop");
    assert!(h.get("connection").is_none());
}

#[tokio::test]
async fn websocket_handshake_passes_the_route_guards_first() {
    let (up, seen) = upgrade_upstream().await;
    let route = "    websocket: true\n    ip_filter:\n      deny: [\"127.0.0.0/8\"]\n";
    let gw = gateway(&config(up, route, "")).await;
    let resp = handshake(gw.listen_addrs()[0]).await.1;
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(seen.lock().unwrap().is_empty(), "the upstream never saw it");
}

#[tokio::test]
async fn idle_websocket_tunnel_is_closed_after_tunnel_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, _) = upgrade_upstream().await;
    let top = "server:\n  timeouts:\n    tunnel_idle: 1s\n";
    let gw = gateway(&config(up, "    websocket: true\n", top)).await;
    let (mut s, head) = handshake(gw.listen_addrs()[0]).await;
    assert_eq!(status_of(&head), 101, "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"PING");
    // Nothing in either direction: the gateway closes the tunnel (bounded wait, no timing
    // assertion beyond "it happens").
    let mut rest = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel is closed");
    assert!(r.is_ok() && rest.is_empty(), "{r:?} {rest:?}");
}
