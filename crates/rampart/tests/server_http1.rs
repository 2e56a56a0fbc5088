//! Rampart's own HTTP/1.1 server (`rampart_core::h1server`, plain-TCP listeners) on the wire:
//! `Expect: 100-continue`, HTTP/1.0 keep-alive and close, a request body nobody read (a guard
//! answered first: a short one is dropped and the connection goes on, a long one closes it
//! after the answer), and the framing of a response whose upstream sent no length (chunked
//! for HTTP/1.1, to the close for HTTP/1.0).

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one response head (up to its empty line) byte by byte, so nothing after it is taken.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("a response head within 5 s")
            .unwrap();
        assert!(n == 1, "connection closed inside a head: {head:?}");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// One whole response: its head (lower case) and body, framed by its length, chunked, or the
/// close (then `closed` is true).
async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(s).await;
    let mut body = Vec::new();
    if let Some(n) = header(&head, "content-length") {
        body.resize(n.parse().unwrap(), 0);
        s.read_exact(&mut body).await.unwrap();
    } else if header(&head, "transfer-encoding") == Some("chunked") {
        loop {
            let line = read_line(s).await;
            let n = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            if n == 0 {
                assert_eq!(read_line(s).await, "", "no trailers expected");
                break;
            }
            let mut chunk = vec![0u8; n];
            s.read_exact(&mut chunk).await.unwrap();
            body.extend_from_slice(&chunk);
            assert_eq!(read_line(s).await, "");
        }
    } else {
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body))
            .await
            .expect("the close within 5 s")
            .unwrap();
    }
    (head, body)
}

async fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed inside a line");
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).unwrap()
}

/// True when the server closes the connection within 5 s (reads until the end of stream).
async fn closes(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

async fn start(
    route: &str,
) -> (
    TestUpstream,
    std::sync::Arc<rampart_core::Gateway>,
    SocketAddr,
) {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, route, "")).await;
    let addr = gw.listen_addrs()[0];
    (up, gw, addr)
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (up, _gw, addr) = start("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // The client waits: nothing of the body is sent until the interim answer.
    let interim = read_head(&mut s).await;
    assert!(
        interim.starts_with("http/1.1 100 continue\r\n"),
        "{interim}"
    );
    s.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"body_len\":5"));
    assert_eq!(up.last().body_len, 5);
    // The connection carries the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_short_body_nobody_read_is_dropped_and_the_connection_goes_on() {
    let route = "    limits:\n      allowed_methods: [GET, POST]\n";
    let (up, _gw, addr) = start(route).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A PUT is refused on its headers; its body follows, then the next request.
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(
        header(&head, "date").is_some(),
        "gateway answers carry Date: {head}"
    );
    assert_eq!(header(&head, "connection"), None, "{head}");
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"/y\""));
    assert_eq!(up.count(), 1, "the refused PUT never reached the upstream");
    // A chunked body is dropped the same way.
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /z HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_long_body_nobody_read_closes_the_connection_after_the_answer() {
    let route = "    limits:\n      max_body_bytes: 1000\n";
    let (up, _gw, addr) = start(route).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n")
        .await
        .unwrap();
    // The client keeps sending while the answer is on its way; it still gets the answer.
    s.write_all(&vec![b'a'; 200_000]).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(closes(&mut s).await, "the connection closes");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn http10_keeps_alive_only_when_asked() {
    let (up, _gw, addr) = start("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "connection"), Some("keep-alive"), "{head}");
    s.write_all(b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"/b\""));
    assert!(closes(&mut s).await);
    assert_eq!(up.count(), 2);
}

/// An upstream that answers every request with a body that runs to the close (no length).
async fn close_delimited_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
                    .await;
                let _ = c.write_all(b"the close").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_without_length_is_chunked_for_http11_and_closes_for_http10() {
    let up = close_delimited_upstream().await;
    let gw = gateway(&config(up, "", "")).await;
    let addr = gw.listen_addrs()[0];
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(
            header(&head, "transfer-encoding"),
            Some("chunked"),
            "{head}"
        );
        assert_eq!(body, b"until the close");
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body, b"until the close");
}

#[tokio::test]
async fn too_many_header_fields_get_431_and_the_upstream_sees_nothing() {
    let (up, _gw, addr) = start("").await;
    let mut req = String::from("GET /a HTTP/1.1\r\nHost: a\r\n");
    for i in 0..128 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 431"), "{head}");
    assert!(closes(&mut s).await);
    // Fewer pass (the test upstream, hyper, takes at most 100 fields, forwarding ones included).
    let mut req = String::from("GET /a HTTP/1.1\r\nHost: a\r\n");
    for i in 0..90 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_head_split_anywhere_or_pipelined_ends_where_its_empty_line_is() {
    let (up, _gw, addr) = start("").await;
    let req: &[u8] = b"GET /split HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    // Written in two pieces, cut at every byte near the end and a few before: the server may
    // read the first piece alone, and the head's end can straddle the reads.
    let cuts = (1..12).chain([req.len() - 30, req.len() / 2]);
    let mut sent = 0;
    for back in cuts {
        let cut = req.len() - back;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&req[..cut]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.write_all(&req[cut..]).await.unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "cut at {cut}: {head}");
        sent += 1;
        assert_eq!(up.count(), sent);
        assert_eq!(up.last().uri, "/split");
    }
    // Two requests in one write: each head ends at its own empty line.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    for path in ["/one", "/two"] {
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        // The test upstream echoes the target it got.
        let echo = String::from_utf8_lossy(&body);
        assert!(
            echo.contains(&format!("\"uri\":\"{path}\"")),
            "{path}: {echo}"
        );
    }
    // (The second may reach the upstream before the first answer is read.)
    sent += 2;
    assert_eq!(up.count(), sent);
    // A head ended by a bare LF, with a well-formed request after it in the same write: 400,
    // and neither reaches the upstream.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /bad HTTP/1.1\r\nHost: a\n\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(closes(&mut s).await);
    assert_eq!(up.count(), sent);
}
