//! WebSocket passthrough: an HTTP/1.1 `Upgrade: websocket` request on a route with
//! `websocket: true` goes to the upstream with its upgrade headers; when the upstream answers
//! `101 Switching Protocols`, that answer goes to the client and the two connections become a
//! byte tunnel (frames are not inspected) until either side closes, neither sends anything for
//! `timeouts.tunnel_idle`, or the gateway shuts down.
//!
//! The handshake is an ordinary request: every guard of the route runs on it (identity, WAF
//! on the headers, rate limits, ...), and a guard that refuses it answers with its own status.

use crate::h1scan::ScanIo;
use crate::upstream::now_ms;
use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// One HTTP/1.1 connection's pending upgrade: set by the request that got a 101 from its
/// upstream, taken by the connection driver once that 101 is written.
#[derive(Default)]
pub(crate) struct UpgradeSlot(Mutex<Option<OnUpgrade>>);

impl UpgradeSlot {
    pub(crate) fn set(&self, upstream: OnUpgrade) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(upstream);
        }
    }

    pub(crate) fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

/// Does the request ask for a WebSocket: HTTP/1.1, GET, `Connection` listing `upgrade`, and
/// `Upgrade` naming `websocket`?
pub(crate) fn websocket_request(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    if method != Method::GET || version != Version::HTTP_11 {
        return false;
    }
    let is_ws = headers.get_all(UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.trim()
                    .split('/')
                    .next()
                    .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
            })
        })
    });
    let conn_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    is_ws && conn_upgrade
}

/// Put the WebSocket upgrade headers back after the hop-by-hop ones were removed.
pub(crate) fn restore_upgrade(headers: &mut HeaderMap) {
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Run the tunnel between the client (its unparsed bytes first) and the upstream.
pub(crate) async fn run<T>(
    mut client: ScanIo<T>,
    unparsed: Bytes,
    upstream: OnUpgrade,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    open: &rampart_telemetry::metrics::Gauge,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // The connection is no longer HTTP: its bytes are not scanned as request heads.
    client.stop_scanning();
    client.set_prefix(unparsed);
    let Ok(upgraded) = upstream.await else {
        return;
    };
    open.inc();
    let last = Arc::new(AtomicU64::new(now_ms()));
    let (client_rd, mut client_wr) = tokio::io::split(client);
    let (upstream_rd, mut upstream_wr) = tokio::io::split(TokioIo::new(upgraded));
    let idle_ms = idle.as_millis() as u64;
    {
        // Each direction copies until its reader ends, then closes the other side's writing
        // half; the tunnel ends when both have (or on idle / shutdown).
        let mut from_client = Touch {
            inner: client_rd,
            last: last.clone(),
        };
        let mut from_upstream = Touch {
            inner: upstream_rd,
            last: last.clone(),
        };
        let up = async {
            let _ = tokio::io::copy(&mut from_client, &mut upstream_wr).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut upstream_wr).await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut from_upstream, &mut client_wr).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut client_wr).await;
        };
        let both = async { tokio::join!(up, down) };
        tokio::pin!(both);
        loop {
            let deadline = last.load(Ordering::Relaxed) + idle_ms;
            let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
            tokio::select! {
                _ = &mut both => break,
                _ = tokio::time::sleep(wait) => {
                    if now_ms() >= last.load(Ordering::Relaxed) + idle_ms {
                        break;
                    }
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
    open.dec();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncWriteExt::shutdown(&mut client_wr),
    )
    .await;
}

/// A stream that records when it last read bytes (the tunnel's idle clock).
struct Touch<S> {
    inner: S,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}
