//! Rampart's own HTTP/1.1 upstream client (`rampart_core::h1client`) against a scripted raw
//! upstream: response framing (chunked with extensions and trailers, length, to the close,
//! HEAD, 204, 1xx before the final answer), keep-alive reuse, a pooled connection the upstream
//! closed, an early answer to a body still being sent, and malformed responses (502).

mod common;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw: method, path, body.
type Log = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    log: Log,
}

/// The response for a request, in pieces written one after another, and whether the
/// connection closes after it.
fn script(method: &str, path: &str) -> (Vec<Vec<u8>>, bool) {
    let p = |s: &str| s.as_bytes().to_vec();
    match path {
        "/chunked" => (
            vec![
                p("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel"),
                p("lo\r\n6\r\n world\r"),
                p("\n0\r\nX-Trailer: t\r\n\r\n"),
            ],
            false,
        ),
        "/both" => (
            vec![p(
                "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nboth\r\n0\r\n\r\n",
            )],
            false,
        ),
        "/continue" => (
            vec![
                p("HTTP/1.1 100 Continue\r\n\r\n"),
                p("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            ],
            false,
        ),
        "/close" => (vec![p("HTTP/1.1 200 OK\r\n\r\nuntil "), p("the close")], true),
        "/hop" => (
            vec![p(
                "HTTP/1.1 200 OK\r\nX-Conn-Only: secret\r\nConnection: keep-alive, X-Conn-Only\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
            )],
            false,
        ),
        "/nocontent" => (vec![p("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")], false),
        "/closes-after" => (
            vec![p("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
            true,
        ),
        "/bad-length" => (
            vec![p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")],
            true,
        ),
        "/bad-chunk" => (
            vec![p("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")],
            true,
        ),
        "/obs-fold" => (
            vec![p("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n")],
            true,
        ),
        "/huge-head" => (
            vec![format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
                "a".repeat(70 * 1024)
            )
            .into_bytes()],
            true,
        ),
        "/garbage" => (vec![p("HELLO\r\n\r\n")], true),
        "/short" => (vec![p("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")], true),
        _ if method == "HEAD" => (
            vec![p("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")],
            false,
        ),
        _ => (
            vec![p("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
            false,
        ),
    }
}

/// Reads one request (head and body by Content-Length or chunked); `None` at the end.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut words = head.split(' ');
    let method = words.next()?.to_string();
    let path = words.next()?.to_string();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    if path == "/early" {
        // Answer before reading the body, then read what comes (so the close is clean).
        return Some((method, path, Vec::new()));
    }
    let mut body = Vec::new();
    if let Some(n) = length {
        while buf.len() < n {
            let mut tmp = [0u8; 65536];
            let r = s.read(&mut tmp).await.ok()?;
            if r == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..r]);
        }
        body = buf.drain(..n).collect();
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let mut tmp = [0u8; 65536];
                let r = s.read(&mut tmp).await.ok()?;
                if r == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..r]);
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let mut tmp = [0u8; 65536];
                let r = s.read(&mut tmp).await.ok()?;
                if r == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..r]);
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    }
    Some((method, path, body))
}

impl Scripted {
    async fn start() -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let log: Log = Arc::default();
        let (c2, l2) = (conns.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                let log = l2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((method, path, body)) = read_request(&mut s, &mut buf).await {
                        let (pieces, close) = if path == "/early" {
                            (vec![b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope".to_vec()], true)
                        } else {
                            script(&method, &path)
                        };
                        log.lock().unwrap().push((method, path.clone(), body));
                        for piece in pieces {
                            if s.write_all(&piece).await.is_err() {
                                return;
                            }
                            let _ = s.flush().await;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        if close {
                            if path == "/early" {
                                // Drain the body the gateway is still sending, then close.
                                let mut sink = [0u8; 65536];
                                while let Ok(n) = s.read(&mut sink).await {
                                    if n == 0 {
                                        break;
                                    }
                                }
                            }
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, conns, log }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

async fn gw_for(up: &Scripted) -> (Arc<rampart_core::Gateway>, SocketAddr) {
    let gw = gateway(&config(up.addr, "", "")).await;
    let addr = gw.listen_addrs()[0];
    (gw, addr)
}

#[tokio::test]
async fn response_framings_arrive_intact() {
    let up = Scripted::start().await;
    let (_gw, addr) = gw_for(&up).await;
    let c = client();

    let (s, h, b) = send(&c, addr, "GET", "/chunked", &[], b"").await;
    assert_eq!(
        (s, &b[..]),
        (200, &b"hello world"[..]),
        "chunked, split across reads"
    );
    assert_eq!(h["content-type"], "text/plain");

    let (s, h, b) = send(&c, addr, "GET", "/both", &[], b"").await;
    assert_eq!(
        (s, &b[..]),
        (200, &b"both"[..]),
        "Transfer-Encoding wins over Content-Length"
    );
    assert!(h.get("content-length").is_none_or(|v| v == "4"), "{h:?}");

    let (s, _, b) = send(&c, addr, "GET", "/continue", &[], b"").await;
    assert_eq!((s, &b[..]), (200, &b"ok"[..]), "1xx answers are skipped");

    let (s, _, b) = send(&c, addr, "GET", "/close", &[], b"").await;
    assert_eq!(
        (s, &b[..]),
        (200, &b"until the close"[..]),
        "body delimited by the close"
    );

    let (s, h, b) = send(&c, addr, "GET", "/hop", &[], b"").await;
    assert_eq!((s, &b[..]), (200, &b"ok"[..]));
    for n in [
        "x-conn-only",
        "keep-alive",
        "upgrade",
        "trailer",
        "proxy-connection",
    ] {
        assert!(
            h.get(n).is_none(),
            "hop-by-hop `{n}` reached the client: {h:?}"
        );
    }
    assert_eq!(h["x-kept"], "yes");

    let (s, h, b) = send(&c, addr, "GET", "/nocontent", &[], b"").await;
    assert_eq!((s, b.len()), (204, 0));
    assert_eq!(h["x-a"], "1");

    let (s, h, b) = send(&c, addr, "HEAD", "/thing", &[], b"").await;
    assert_eq!(
        (s, b.len()),
        (200, 0),
        "HEAD has no body whatever its length says"
    );
    assert_eq!(h["content-length"], "100");

    // The connection that answered HEAD and 204 is still in step: plain requests work.
    let (s, _, b) = send(&c, addr, "GET", "/after", &[], b"").await;
    assert_eq!((s, &b[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn keep_alive_connections_are_reused_and_bodies_arrive_whole() {
    let up = Scripted::start().await;
    let (_gw, addr) = gw_for(&up).await;
    let c = client();
    for i in 0..10 {
        let (s, _, b) = send(&c, addr, "GET", &format!("/r{i}"), &[], b"").await;
        assert_eq!((s, &b[..]), (200, &b"ok"[..]));
    }
    let body = vec![b'x'; 100_000];
    let (s, _, _) = send(
        &c,
        addr,
        "POST",
        "/upload",
        &[("content-type", "text/plain")],
        &body,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        up.conns(),
        1,
        "one upstream connection carried every request"
    );
    {
        let log = up.log.lock().unwrap();
        assert_eq!(log.len(), 11);
        assert_eq!(log[10].2.len(), 100_000, "the streamed body arrived whole");
    }

    // A chunked request body (no length) goes upstream chunked.
    let resp = raw(
        addr,
        b"POST /chunked-in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let log = up.log.lock().unwrap();
    assert_eq!(log.last().map(|l| l.2.clone()), Some(b"abcde".to_vec()));
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    let up = Scripted::start().await;
    let (_gw, addr) = gw_for(&up).await;
    let c = client();
    for _ in 0..3 {
        let (s, _, b) = send(&c, addr, "GET", "/closes-after", &[], b"").await;
        assert_eq!((s, &b[..]), (200, &b"ok"[..]));
    }
    // Each answer closed its connection after a keep-alive response: the next request went
    // out on a new one (found closed in the pool, or retried because GET is idempotent).
    assert_eq!(up.conns(), 3);
}

#[tokio::test]
async fn an_early_answer_to_a_body_being_sent_reaches_the_client() {
    let up = Scripted::start().await;
    let (_gw, addr) = gw_for(&up).await;
    let body = vec![b'y'; 4 * 1024 * 1024];
    let (s, _, b) = send(&client(), addr, "POST", "/early", &[], &body).await;
    assert_eq!((s, &b[..]), (413, &b"nope"[..]));
    // That connection was not pooled: the next request opens another.
    let (s, _, _) = get(addr, "/next").await;
    assert_eq!(s, 200);
    assert_eq!(up.conns(), 2);
}

#[tokio::test]
async fn malformed_responses_are_502() {
    let up = Scripted::start().await;
    let (_gw, addr) = gw_for(&up).await;
    for path in ["/bad-length", "/obs-fold", "/huge-head", "/garbage"] {
        let (s, _, _) = get(addr, path).await;
        assert_eq!(s, 502, "{path}");
    }
    // A body that breaks its framing after the head arrived cannot become a 502 any more:
    // the client's response is cut off (or never starts) instead of looking complete.
    let get_raw = |path: &'static str| async move {
        raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    };
    let resp = get_raw("/bad-chunk").await;
    assert!(
        !resp.contains("hello") && !resp.ends_with("\r\n0\r\n\r\n"),
        "malformed chunk size: {resp:?}"
    );
    let resp = get_raw("/short").await;
    assert!(
        resp.is_empty() || (resp.contains("content-length: 10") && resp.ends_with("\r\n\r\nabc")),
        "a body shorter than its length stays short: {resp:?}"
    );
}
