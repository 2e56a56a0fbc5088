//! Listeners and connections: accept with a connection cap, TLS handshake, HTTP/1.1 or HTTP/2,
//! the per-connection watchdog (header-read and idle timeouts) and graceful shutdown.

use crate::body::InBody;
use crate::clock::coarse_ms;
use crate::guard::{ConnInfo, Verdict};
use crate::h1scan::{ScanIo, ScanState, Scanner};
use crate::h2watch::{H2Watch, PREFACE_LEN};
use crate::proxy::{handle, Shared};
use crate::tunnel::UpgradeSlot;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use rampart_telemetry::metrics::Gauge;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Activity of one connection, read by its watchdog.
pub struct ConnActivity {
    /// When the connection opened or its last request finished (ms, [`coarse_ms`] clock). Bytes
    /// move outside a request only while a head is being read, which `head_started` times, so
    /// this is all the idle rule needs (and no clock is read per socket operation).
    last: AtomicU64,
    /// When the request head now being read started; 0 when no head is being read.
    head_started: AtomicU64,
    /// Requests being handled (until their response body ends).
    active: AtomicUsize,
    /// HTTP/2: when the header block now open started (see [`crate::h2watch`]); 0 when none is.
    /// Timed even while other streams are active.
    h2_head: AtomicU64,
    /// HTTP/1: the client's bytes end inside a message body (a response may have been sent
    /// before the body was read), or the scanner stopped following the framing.
    framing_open: AtomicBool,
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnActivity {
    pub fn new() -> Self {
        let now = coarse_ms();
        ConnActivity {
            last: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            active: AtomicUsize::new(0),
            h2_head: AtomicU64::new(0),
            framing_open: AtomicBool::new(false),
        }
    }
    pub(crate) fn h2_head_begin(&self) {
        self.h2_head.store(coarse_ms(), Ordering::Relaxed);
    }
    pub(crate) fn h2_head_end(&self) {
        self.h2_head.store(0, Ordering::Relaxed);
    }
    #[cfg(test)]
    pub(crate) fn h2_head_open(&self) -> bool {
        self.h2_head.load(Ordering::Relaxed) != 0
    }
    pub(crate) fn set_framing_open(&self, open: bool) {
        self.framing_open.store(open, Ordering::Relaxed);
    }
    pub(crate) fn head_begin(&self) {
        self.head_started.store(coarse_ms(), Ordering::Relaxed);
    }
    pub(crate) fn head_end(&self) {
        self.head_started.store(0, Ordering::Relaxed);
    }
    pub(crate) fn request_started(&self) {
        self.head_end();
        self.active.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn request_done(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.last.store(coarse_ms(), Ordering::Relaxed);
    }

    /// Since when the connection has been idle: no request in flight, no head being read and
    /// the client's bytes end between messages.
    fn idle_since(&self) -> Option<u64> {
        (self.active.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && self.h2_head.load(Ordering::Relaxed) == 0
            && !self.framing_open.load(Ordering::Relaxed))
        .then(|| self.last.load(Ordering::Relaxed))
    }

    /// When to look again, and whether the connection has overstayed now.
    fn check(&self, header_read: Duration, idle: Duration) -> (bool, u64) {
        let now = coarse_ms();
        let (header_read, idle) = (header_read.as_millis() as u64, idle.as_millis() as u64);
        let hs = self.head_started.load(Ordering::Relaxed);
        let mut deadline = if self.active.load(Ordering::Relaxed) > 0 {
            // Requests in flight are never idle: look again later.
            now + idle.max(1)
        } else if hs != 0 {
            hs + header_read
        } else {
            self.last.load(Ordering::Relaxed) + idle
        };
        // An open HTTP/2 header block is timed even while other streams are active.
        let h2 = self.h2_head.load(Ordering::Relaxed);
        if h2 != 0 {
            deadline = deadline.min(h2 + header_read);
        }
        (now >= deadline, deadline.max(now + 10))
    }
}

/// Counts open connections and enforces the cap.
pub(crate) struct ConnCounter {
    pub open: AtomicUsize,
}

struct ConnSlot {
    shared: Arc<Shared>,
    counter: Arc<ConnCounter>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.counter.open.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.open_connections.dec();
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    counter: Arc<ConnCounter>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = shared.snapshot.load().max_connections;
        if counter.open.fetch_add(1, Ordering::Relaxed) >= max {
            counter.open.fetch_sub(1, Ordering::Relaxed);
            shared.metrics.refused_connections.inc();
            drop(stream);
            continue;
        }
        shared.metrics.open_connections.inc();
        let slot = ConnSlot {
            shared: shared.clone(),
            counter: counter.clone(),
        };
        let rx = shutdown.clone();
        tokio::spawn(serve_connection(stream, peer, index, slot, rx));
    }
}

/// A connection's protocol driver, boxed: what an open connection holds for its lifetime.
type Serve = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    index: usize,
    slot: ConnSlot,
    shutdown: watch::Receiver<bool>,
) {
    // Connection guards and the TLS handshake run in their own boxed future, freed before the
    // connection is served: a keep-alive connection then holds only its protocol's state (this
    // task stays a few dozen bytes instead of the ~5 KB the handshake states need).
    let serve = Box::pin(setup(stream, peer, index, slot, shutdown)).await;
    if let Some(serve) = serve {
        serve.await;
    }
}

/// Connection guards, TLS, protocol choice; the connection's driver, or None if it ends here.
async fn setup(
    stream: TcpStream,
    peer: SocketAddr,
    index: usize,
    slot: ConnSlot,
    shutdown: watch::Receiver<bool>,
) -> Option<Serve> {
    let shared = slot.shared.clone();
    let snap = shared.snapshot.load_full();
    let lrt = snap.listeners.get(index)?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let mut conn = ConnInfo::new(peer, local, lrt.name.clone());
    for g in &snap.connection_guards {
        if let Verdict::Block(b) = g.on_connection(&conn) {
            if g.mode() == crate::guard::Mode::Block {
                shared
                    .metrics
                    .guard_decisions
                    .get_or_create(&rampart_telemetry::metrics::GuardAction {
                        guard: g.name(),
                        action: "blocked",
                    })
                    .inc();
                tracing::info!(guard = g.name(), peer = %peer, rule = %b.rule, "connection refused");
                return None;
            }
        }
    }
    let activity = Arc::new(ConnActivity::new());
    let w = Watch {
        header_read: snap.header_read_timeout,
        idle: snap.idle_timeout,
        release: snap.idle_release,
        tunnel_idle: snap.tunnel_idle,
    };
    let max_head = snap.max_head_bytes;
    let h2_streams = snap.h2_max_concurrent_streams;
    let h2c = lrt.h2c;
    match lrt.tls.clone() {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let tls = match tokio::time::timeout(w.header_read, Box::pin(acceptor.accept(stream)))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => return None,
            };
            let info = crate::tls::session_info(tls.get_ref().1);
            let is_h2 = info.alpn.as_deref() == Some("h2");
            conn.tls = Some(Arc::new(info));
            let conn = Arc::new(conn);
            if is_h2 {
                let io =
                    ScanIo::new(tls, None).with_h2(H2Watch::new(activity.clone(), PREFACE_LEN));
                // Each protocol's state machine is boxed so a connection task only holds the one
                // it uses (an idle HTTP/1.1 connection stays small).
                Some(Box::pin(serve_h2(
                    io, conn, shared, activity, h2_streams, w, shutdown, slot,
                )))
            } else {
                Some(serve_h1(
                    tls, conn, shared, activity, max_head, w, shutdown, slot, false,
                ))
            }
        }
        None if !h2c => {
            let conn = Arc::new(conn);
            Some(serve_lean(
                stream, conn, shared, activity, max_head, w, shutdown, slot,
            ))
        }
        None => {
            let conn = Arc::new(conn);
            Some(serve_h1(
                stream, conn, shared, activity, max_head, w, shutdown, slot, h2c,
            ))
        }
    }
}

/// The HTTP/1.1 driver (or, with `h2c`, HTTP/1.1 and HTTP/2 with prior knowledge). Built
/// synchronously; the returned future holds only the connection's live state.
#[allow(clippy::too_many_arguments)]
fn serve_h1<T>(
    stream: T,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    activity: Arc<ConnActivity>,
    max_head: usize,
    w: Watch,
    shutdown: watch::Receiver<bool>,
    slot: ConnSlot,
    h2c: bool,
) -> Serve
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let scan = Arc::new(ScanState::default());
    let scanner = Scanner::new(
        scan.clone(),
        activity.clone(),
        max_head,
        max_head.min(16 * 1024),
    );
    let scan_io = ScanIo::new(stream, Some(scanner));
    // Upgrades (WebSocket) need the HTTP/1.1-only driver, which hands the stream back.
    let upgrade = (!h2c).then(|| Arc::new(UpgradeSlot::default()));
    let svc = {
        let shared = shared.clone();
        let conn = conn.clone();
        let activity = activity.clone();
        let upgrade = upgrade.clone();
        // Boxed: an idle keep-alive connection then holds no space for a request in flight.
        service_fn(move |req| {
            Box::pin(handle(
                shared.clone(),
                conn.clone(),
                scan.take(),
                upgrade.clone(),
                activity.clone(),
                req.map(InBody::Hyper),
            ))
        })
    };
    if h2c {
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(max_head.max(8192))
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(128)
            .max_header_list_size(max_head as u32);
        let fut = b.serve_connection(TokioIo::new(scan_io), svc).into_owned();
        Box::pin(async move {
            drive(fut, &activity, &w, shutdown).await;
            drop(slot);
        })
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(max_head.max(8192))
            .keep_alive(true);
        Box::pin(async move {
            let released = shared.metrics.released_connections.clone();
            let tunnels = shared.metrics.open_tunnels.clone();
            let gauges = (&released, &tunnels);
            drive_h1(scan_io, svc, b, &activity, w, gauges, upgrade, shutdown).await;
            drop(slot);
        })
    }
}

/// A plain-TCP HTTP/1.1 connection on Rampart's own server ([`crate::h1server`]), under the
/// same watchdog as hyper's connections: header-read and idle timeouts, the read buffer given
/// back after `idle_release`, and graceful shutdown (an idle connection closes at once, a busy
/// one after its response).
#[allow(clippy::too_many_arguments)]
fn serve_lean(
    stream: TcpStream,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    activity: Arc<ConnActivity>,
    max_head: usize,
    w: Watch,
    mut shutdown: watch::Receiver<bool>,
    slot: ConnSlot,
) -> Serve {
    Box::pin(async move {
        let (rd, wr) = stream.into_split();
        let reader = Arc::new(std::sync::Mutex::new(crate::h1server::Reader::new(
            rd,
            shared.metrics.released_connections.clone(),
        )));
        let woken = reader.lock().map(|r| r.woken.clone()).unwrap_or_default();
        let closing = Arc::new(AtomicBool::new(*shutdown.borrow()));
        let server = Arc::new(crate::h1server::Server {
            shared: shared.clone(),
            conn,
            activity: activity.clone(),
            max_head,
            max_request_line: max_head.min(16 * 1024),
            tunnel_idle: w.tunnel_idle,
        });
        let release = w.release.as_millis() as u64;
        let mut draining = closing.load(Ordering::Relaxed);
        let mut released_since = None;
        {
            // The connection runs in its own task, woken only by its sockets; this one only by
            // its timer, a shutdown, or a released connection becoming busy again.
            let mut task = tokio::spawn(crate::h1server::serve(
                server,
                reader.clone(),
                wr,
                closing.clone(),
                shutdown.clone(),
            ));
            loop {
                let (expired, mut next) = activity.check(w.header_read, w.idle);
                if expired {
                    // Slow or idle client: close without waiting.
                    break;
                }
                match activity.idle_since() {
                    // Draining: close a connection that waits for its next request; one still
                    // writing its last response is looked at again shortly.
                    Some(_) if draining => {
                        if reader.lock().map(|r| r.waiting).unwrap_or(true) {
                            break;
                        }
                        next = next.min(coarse_ms() + 50);
                    }
                    Some(since) if released_since != Some(since) => {
                        if coarse_ms() >= since + release {
                            let freed = reader.lock().map(|mut r| r.release()).unwrap_or(false);
                            if freed {
                                released_since = Some(since);
                            }
                        } else {
                            next = next.min(since + release);
                        }
                    }
                    Some(_) => {}
                    // Busy: look again later (at least a second: a busy connection's watchdog
                    // must not wake often), by then the request may have ended.
                    None => next = next.min(coarse_ms() + release.max(1000)),
                }
                tokio::select! {
                    _ = &mut task => break,
                    _ = tokio::time::sleep(until(next)) => {}
                    _ = woken.notified() => {}
                    r = shutdown.changed(), if !draining => {
                        if r.is_err() || *shutdown.borrow() {
                            draining = true;
                            closing.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            task.abort();
        }
        drop(reader);
        drop(slot);
    })
}

/// The watchdog's limits for one connection, from the snapshot it was accepted under.
struct Watch {
    header_read: Duration,
    idle: Duration,
    /// HTTP/1.1: how long a connection stays idle before its HTTP state is released.
    release: Duration,
    /// An upgraded connection with no traffic for this long is closed.
    tunnel_idle: Duration,
}

/// Counts itself in a gauge while it lives.
struct Counted<'a>(&'a rampart_telemetry::metrics::Gauge);

impl<'a> Counted<'a> {
    fn new(g: &'a rampart_telemetry::metrics::Gauge) -> Self {
        g.inc();
        Counted(g)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Wait until `deadline` (ms, [`coarse_ms`] clock), at least 10 ms.
fn until(deadline: u64) -> Duration {
    Duration::from_millis(deadline.saturating_sub(coarse_ms()).max(10))
}

/// Run an HTTP/1.1 connection, holding hyper's connection state (its two 8 KiB buffers and a
/// cached header map) only while the connection is busy: a new connection gets it when its
/// first bytes arrive, and a keep-alive connection idle for `release` gives it back (hyper
/// closes its idle state without touching the stream; the stream, any bytes read but not yet
/// parsed, and the service are taken back, and the next bytes build a new one).
#[allow(clippy::too_many_arguments)]
async fn drive_h1<T, S>(
    mut io: ScanIo<T>,
    mut svc: S,
    builder: hyper::server::conn::http1::Builder,
    activity: &ConnActivity,
    w: Watch,
    (released, tunnels): (&Gauge, &Gauge),
    upgrade: Option<Arc<UpgradeSlot>>,
    mut shutdown: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::RespBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let release = w.release.as_millis() as u64;
    let mut draining = *shutdown.borrow();
    loop {
        // No HTTP state: wait for bytes (timed like any idle connection or unfinished head).
        let counted = (!io.has_prefix()).then(|| Counted::new(released));
        while !io.has_prefix() {
            let (expired, next) = activity.check(w.header_read, w.idle);
            if expired || draining {
                return;
            }
            tokio::select! {
                r = std::future::poll_fn(|cx| io.poll_fill(cx)) => match r {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                _ = tokio::time::sleep(until(next)) => {}
                r = shutdown.changed(), if !draining => {
                    draining = r.is_err() || *shutdown.borrow();
                }
            }
        }
        drop(counted);
        let mut conn = builder.serve_connection(TokioIo::new(io), svc);
        let mut releasing = false;
        if draining {
            Pin::new(&mut conn).graceful_shutdown();
        }
        let ended = loop {
            let (expired, mut next) = activity.check(w.header_read, w.idle);
            if expired {
                // Slow or idle client: close without waiting.
                return;
            }
            if !releasing && !draining {
                match activity.idle_since() {
                    Some(since) if coarse_ms() >= since + release => {
                        // Idle: hyper closes its state at once and leaves the stream open.
                        Pin::new(&mut conn).graceful_shutdown();
                        releasing = true;
                    }
                    Some(since) => next = next.min(since + release),
                    // Busy: look again later (at least a second: a busy connection's watchdog
                    // must not wake often), by then the request may have ended.
                    None => next = next.min(coarse_ms() + release.max(1000)),
                }
            }
            tokio::select! {
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
                _ = tokio::time::sleep(until(next)) => {}
                r = shutdown.changed(), if !draining => {
                    if r.is_err() || *shutdown.borrow() {
                        draining = true;
                        Pin::new(&mut conn).graceful_shutdown();
                    }
                }
            }
        };
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        svc = parts.service;
        if let (Ok(()), Some(up)) = (&ended, upgrade.as_ref().and_then(|u| u.take())) {
            // The 101 is written: the connection is a tunnel to the upstream from here on.
            crate::tunnel::run(io, parts.read_buf, up, w.tunnel_idle, shutdown, tunnels).await;
            return;
        }
        if ended.is_err() || !releasing || draining {
            // The connection is over (client closed, `Connection: close`, error, shutdown):
            // close the stream as hyper would have.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut io),
            )
            .await;
            return;
        }
        io.set_prefix(parts.read_buf);
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_h2<T>(
    io: ScanIo<T>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    activity: Arc<ConnActivity>,
    streams: u32,
    w: Watch,
    shutdown: watch::Receiver<bool>,
    slot: ConnSlot,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            Box::pin(handle(
                shared.clone(),
                conn.clone(),
                None,
                None,
                activity.clone(),
                req.map(InBody::Hyper),
            ))
        })
    };
    // The preface, then every header block, is timed like an HTTP/1.1 head (`H2Watch`).
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .max_header_list_size(64 * 1024)
        .max_send_buf_size(256 * 1024)
        .keep_alive_interval(None);
    let fut = b.serve_connection(TokioIo::new(io), svc);
    drive(fut, &activity, &w, shutdown).await;
    drop(slot);
}

/// Run a connection until it ends, the watchdog cuts it, or shutdown drains it.
async fn drive<C>(conn: C, activity: &ConnActivity, w: &Watch, mut shutdown: watch::Receiver<bool>)
where
    C: GracefulConnection + Future,
{
    let mut conn = pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let (expired, next) = activity.check(w.header_read, w.idle);
        if expired {
            // Slow or idle client: close without waiting.
            return;
        }
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(until(next)) => {}
            r = shutdown.changed(), if !draining => {
                if r.is_err() || *shutdown.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
