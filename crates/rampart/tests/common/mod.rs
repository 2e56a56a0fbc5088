//! Shared test fixtures: a recording upstream, a gateway started from YAML, raw TCP and HTTP
//! clients. Everything listens on 127.0.0.1 with ephemeral ports.
#![allow(dead_code)]

pub mod mmdb;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rampart_core::Gateway;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
}

/// A real HTTP/1.1 upstream on loopback that records requests. Paths:
/// `/slow` waits 5 s; `/big/N` streams N bytes; anything else echoes the request as JSON.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = s2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| upstream_handler(seen.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestUpstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Wait (at most 2 s) until the upstream has seen `n` requests.
    pub async fn wait_for(&self, n: usize) {
        for _ in 0..200 {
            if self.count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the upstream saw {} requests, expected {n}", self.count());
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_handler(
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
            Err(_) => break,
        }
    }
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: n,
    });
    let path = parts.uri.path().to_string();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if let Some(size) = path
        .strip_prefix("/big/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = size / chunk.len() as u64;
        let stream = futures_stream(chunk, chunks);
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut()
            .insert("content-length", (chunks * 64 * 1024).into());
        return Ok(r);
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "body_len": n,
        "headers": parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(echo.to_string()))));
    // `/status/NNN` answers with that status.
    *r.status_mut() = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("server", "upstream/1.0".parse().unwrap());
    r.headers_mut()
        .insert("x-powered-by", "php/5".parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(r)
}

fn futures_stream(
    chunk: Bytes,
    n: u64,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    struct S {
        chunk: Bytes,
        left: u64,
    }
    impl futures_core::Stream for S {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }
    S { chunk, left: n }
}

/// A minimal config around one upstream; `extra_route` is YAML spliced into the route.
pub fn config(upstream: SocketAddr, extra_route: &str, extra_top: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access: off\n{extra_top}upstreams:\n  - name: api\n    targets: [\"http://{upstream}\"]\n    response_timeout: 1s\n    connect_timeout: 1s\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n{extra_route}"
    )
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    let admin = gw
        .admin_addr()
        .expect("the test config has an admin listener");
    let (_, _, m) = get(admin, "/metrics").await;
    String::from_utf8_lossy(&m).into_owned()
}

pub async fn gateway(yaml: &str) -> Arc<Gateway> {
    let dir = std::env::temp_dir();
    let lc = rampart::load_text(yaml, "test.yaml", &dir)
        .unwrap_or_else(|e| panic!("config invalid:\n{e}\n---\n{yaml}"));
    rampart::start(lc)
        .await
        .unwrap_or_else(|e| panic!("start failed: {e}"))
}

/// Send raw bytes, half-close nothing, read the answer until the server closes or 5 s pass.
pub async fn raw(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of the first response in a raw answer.
pub fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A plain HTTP/1.1 request through the gateway; returns status, headers and body.
pub async fn send(
    c: &Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, http::HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = c.request(req).await.expect("request failed");
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, parts.headers, bytes)
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, Bytes) {
    send(&client(), addr, "GET", path, &[], b"").await
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A real redis-server on a free loopback port, stopped (by PID) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    pub async fn start_on(port: u16) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("rampart-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed (apt-get install redis-server; .ci/run does this)",
            );
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return RedisServer {
                    port,
                    child: Some(child),
                    dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop the server (SIGKILL: as abrupt as a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small deterministic generator (xorshift), so generated test inputs reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform-enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    pub fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }
}
