//! Rampart's own HTTP/1.1 server, for plain-TCP listeners (TLS listeners, h2c and HTTP/2 stay
//! on hyper's server; `server.rs` chooses).
//!
//! One connection is one task and one loop: read a request head, check it, hand the request to
//! the proxy ([`crate::proxy::handle`]), write the response as its body arrives, and go on with
//! the next head. The request body reads straight from the connection's buffer and socket when
//! whoever forwards it polls it (the upstream client, or a guard that buffers it); nothing is
//! read ahead of it. hyper's server instead runs a dispatcher between the connection and the
//! service with buffers of its own; this path costs about half of its instructions.
//!
//! What it accepts is what [`crate::h1scan`] allows: every head goes through the scanner's
//! checks (bare CR or LF, obs-fold, control characters, ambiguous framing, long request lines,
//! oversized heads), which hand over the request line and headers as they pass
//! (`check_head_visit`: one pass reads and checks a head; at most [`MAX_HEADERS`] fields), and
//! a violation is answered by the proxy (logged, counted) and the connection closed. The chunked decoder is as
//! strict as the scanner's: hex sizes, every line ended by CRLF, bounded trailers.
//!
//! A connection keeps its read buffer only while it is in use: one that has sent nothing yet
//! holds none, and the connection's watchdog ([`Reader::release`]) frees it once the connection
//! has been idle for `timeouts.idle_release`. Such connections are counted in the
//! `rampart_released_connections` gauge.

use crate::body::{BodyError, InBody, RespBody};
use crate::guard::ConnInfo;
use crate::h1client::{poll_write_queue, queued, Framer, Next, State};
use crate::h1scan::{
    check_head_visit, Framing, Violation, BAD_CHUNK, BAD_REQUEST_LINE, HEAD_TOO_LARGE,
    LONG_REQUEST_LINE, TOO_MANY_HEADERS,
};
use crate::proxy::{handle, Shared};
use crate::server::ConnActivity;
use crate::tunnel::UpgradeSlot;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use rampart_telemetry::metrics::Gauge;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// Most header fields accepted in a request head (the head's byte limit applies as well).
pub const MAX_HEADERS: usize = 128;
/// What a read asks the socket for while a head is read.
const HEAD_READ: usize = 8 * 1024;
/// What a read asks for while a body is read.
const BODY_READ: usize = 64 * 1024;
/// Response bytes queued for the socket before the body is polled further.
const MAX_QUEUED: usize = 256 * 1024;
/// A request body the proxy did not read (a guard answered first) is read and dropped, up to
/// this much, so the connection can carry the next request; a longer one closes it.
const DRAIN_MAX: u64 = 64 * 1024;
/// After a response that closes a connection whose client is still sending, the gateway keeps
/// reading (and dropping) for this long, at most [`LINGER_MAX`] bytes, so the client reads the
/// response instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 1 << 20;

static CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
static CRLF: &[u8] = b"\r\n";
static LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The reading side of a connection: the socket, the bytes read but not used yet, and the
/// state of the request body. Shared (behind a mutex nobody contends) by the connection loop,
/// the request body and the watchdog.
pub struct Reader {
    rd: Option<OwnedReadHalf>,
    buf: BytesMut,
    /// The request body's framing (the decoder Rampart's upstream client uses too).
    body: Framer,
    /// The request body failed; it stays failed.
    failed: bool,
    /// How much of [`CONTINUE`] is still to be written before the body is read
    /// (`CONTINUE.len()` when no interim answer is owed).
    cont: usize,
    /// A [`ServerBody`] for the current request exists.
    body_alive: bool,
    /// Where the head search resumes (the start of the first line not seen whole).
    scan_from: usize,
    /// The first bytes of the current head arrived (its read is being timed).
    head_open: bool,
    /// The connection loop is waiting for the next request head (nothing is being written):
    /// a draining gateway may close it at once.
    pub waiting: bool,
    /// Counted in the released-connections gauge (holds no read buffer).
    released: Option<Gauge>,
    gauge: Gauge,
    /// Told when a released connection takes a buffer again (its watchdog then watches for
    /// the next idle spell).
    pub woken: Arc<tokio::sync::Notify>,
}

impl Reader {
    pub fn new(rd: OwnedReadHalf, gauge: Gauge) -> Self {
        gauge.inc();
        Reader {
            rd: Some(rd),
            buf: BytesMut::new(),
            body: Framer::new(State::Done),
            failed: false,
            cont: CONTINUE.len(),
            body_alive: false,
            scan_from: 0,
            head_open: false,
            waiting: false,
            released: Some(gauge.clone()),
            gauge,
            woken: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Frees the read buffer of an idle connection (nothing buffered, no body being read).
    /// True when the connection holds no buffer afterwards.
    pub fn release(&mut self) -> bool {
        if !self.buf.is_empty() || self.body.state != State::Done || self.body_alive {
            return false;
        }
        self.buf = BytesMut::new();
        self.scan_from = 0;
        if self.released.is_none() {
            self.gauge.inc();
            self.released = Some(self.gauge.clone());
        }
        true
    }

    /// Reads more bytes; `Ok(0)` is the end of the stream. `want` is the room asked for.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let Some(rd) = self.rd.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.released.is_some() {
            // No buffer (new or released): the first bytes are read onto the stack, and a
            // buffer is made only when some arrive.
            loop {
                ready!(rd.as_ref().poll_read_ready(cx))?;
                let mut first = [0u8; 2048];
                match rd.try_read(&mut first) {
                    Ok(0) => return Poll::Ready(Ok(0)),
                    Ok(n) => {
                        if let Some(g) = self.released.take() {
                            g.dec();
                            self.woken.notify_one();
                        }
                        self.buf.reserve(want.max(n));
                        self.buf.put_slice(&first[..n]);
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(rd), cx, &mut self.buf)
    }

    /// Writes what is left of an owed `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(rd) = self.rd.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        let s = rd.as_ref();
        while self.cont < CONTINUE.len() {
            ready!(s.poll_write_ready(cx))?;
            match s.try_write(&CONTINUE[self.cont..]) {
                Ok(n) => self.cont += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn fail_body(&mut self, m: &str) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(BodyError::Other(m.to_string()))))
    }

    /// The next piece of the request body.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if self.failed {
                return Poll::Ready(Some(Err(BodyError::Other(
                    "the request body could not be read".into(),
                ))));
            }
            match self.body.next(&self.buf) {
                Next::Skip(n) => self.buf.advance(n),
                Next::Data(n) => return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze()))),
                Next::End(n) => {
                    self.buf.advance(n);
                    return Poll::Ready(None);
                }
                Next::Fail(m) => return self.fail_body(&format!("{}: {m}", BAD_CHUNK.message)),
                Next::More => {
                    // The client may be waiting for leave to send the body.
                    if let Err(e) = ready!(self.poll_continue(cx)) {
                        return self.fail_body(&format!("writing 100 Continue: {e}"));
                    }
                    let want = match self.body.state {
                        State::Length(n) | State::ChunkData(n) => usize::try_from(n)
                            .unwrap_or(usize::MAX)
                            .clamp(HEAD_READ, BODY_READ),
                        _ => HEAD_READ,
                    };
                    match ready!(self.poll_fill(cx, want)) {
                        Ok(0) => {
                            return self
                                .fail_body("the client closed the connection inside the body")
                        }
                        Ok(_) => {}
                        Err(e) => return self.fail_body(&format!("reading the request body: {e}")),
                    }
                }
            }
        }
    }
}

fn lock(r: &Mutex<Reader>) -> MutexGuard<'_, Reader> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent reader.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request body read by Rampart's HTTP/1.1 server.
pub struct ServerBody {
    /// None for the empty body of a refused head.
    r: Option<Arc<Mutex<Reader>>>,
    ended: bool,
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(r) = this.r.as_ref().filter(|_| !this.ended) else {
            return Poll::Ready(None);
        };
        let mut r = lock(r);
        let out = ready!(r.poll_body(cx));
        this.ended = r.body.state == State::Done;
        if out.is_none() {
            this.ended = true;
        }
        Poll::Ready(out.map(|res| res.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        let Some(r) = self.r.as_ref().filter(|_| !self.ended) else {
            return SizeHint::with_exact(0);
        };
        match lock(r).body.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ServerBody {
    fn drop(&mut self) {
        if let Some(r) = &self.r {
            lock(r).body_alive = false;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(g) = self.released.take() {
            g.dec();
        }
    }
}

/// What one connection needs to serve requests.
pub struct Server {
    pub shared: Arc<Shared>,
    pub conn: Arc<ConnInfo>,
    pub activity: Arc<ConnActivity>,
    pub max_head: usize,
    pub max_request_line: usize,
    pub tunnel_idle: Duration,
}

/// A request head read from the connection.
enum Head {
    Request {
        req: Request<InBody>,
        keep_alive: bool,
        head_only: bool,
    },
    /// Refused before parsing: answered, then the connection closes.
    Violation(Violation, Request<InBody>),
    /// The client closed (or failed) between requests.
    Closed,
}

impl Server {
    /// Reads the next request head (skipping empty lines before it, as RFC 9112 2.2 allows).
    fn poll_head(&self, reader: &Arc<Mutex<Reader>>, cx: &mut Context<'_>) -> Poll<Head> {
        let mut r = lock(reader);
        loop {
            if r.scan_from == 0 {
                let skip = r
                    .buf
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                r.buf.advance(skip);
            }
            if !r.buf.is_empty() {
                if !r.head_open {
                    r.head_open = true;
                    self.activity.head_begin();
                }
                let mut at = r.scan_from;
                // Usually the whole head is here and ends at its first CRLF CRLF: one search
                // instead of one per line. An empty line before that one (a bare LF) makes
                // the head invalid whichever line ends it, so the answer is the same (400).
                // From the previous line's CRLF, which may start the final CRLF CRLF.
                let from = at.saturating_sub(2);
                let mut end = head_end()
                    .find(&r.buf[from..])
                    .map(|i| from + i + 4)
                    .filter(|&len| len <= self.max_head);
                while end.is_none() {
                    let Some(nl) = memchr::memchr(b'\n', &r.buf[at..]) else {
                        break;
                    };
                    let empty = nl == 0 || (nl == 1 && r.buf[at] == b'\r');
                    at += nl + 1;
                    if empty {
                        end = Some(at);
                        break;
                    }
                }
                match end {
                    Some(len) if len <= self.max_head => {
                        r.scan_from = 0;
                        r.head_open = false;
                        let head = r.buf.split_to(len).freeze();
                        drop(r);
                        return Poll::Ready(self.parse(reader, head));
                    }
                    Some(_) => return Poll::Ready(self.refuse(HEAD_TOO_LARGE, &r.buf)),
                    None => {
                        r.scan_from = at;
                        if r.buf.len() > self.max_head {
                            return Poll::Ready(self.refuse(HEAD_TOO_LARGE, &r.buf));
                        }
                        if at == 0 && r.buf.len() > self.max_request_line {
                            return Poll::Ready(self.refuse(LONG_REQUEST_LINE, &r.buf));
                        }
                    }
                }
            }
            match ready!(r.poll_fill(cx, HEAD_READ)) {
                Ok(0) | Err(_) => return Poll::Ready(Head::Closed),
                Ok(_) => {}
            }
        }
    }

    fn refuse(&self, v: Violation, head: &[u8]) -> Head {
        Head::Violation(v, placeholder(head))
    }

    /// Checks and parses a complete head in one pass; the request's body reads from `reader`.
    fn parse(&self, reader: &Arc<Mutex<Reader>>, head: Bytes) -> Head {
        let mut line: Option<(&[u8], &[u8], bool)> = None;
        let mut headers = crate::hmap::take(12);
        let (mut close, mut keep, mut expect) = (false, false, false);
        let mut bad: Option<Violation> = None;
        let checked = check_head_visit(
            &head,
            self.max_request_line,
            |m, t, http10| line = Some((m, t, http10)),
            |name, value| {
                if bad.is_some() {
                    return;
                }
                if headers.len() >= MAX_HEADERS {
                    bad = Some(TOO_MANY_HEADERS);
                    return;
                }
                let Ok(n) = HeaderName::from_bytes(name) else {
                    bad = Some(crate::h1scan::BAD_HEADER_NAME);
                    return;
                };
                let Ok(v) = HeaderValue::from_maybe_shared(head.slice_ref(value)) else {
                    bad = Some(crate::h1scan::CTL_CHAR);
                    return;
                };
                if n == header::CONNECTION {
                    for t in value.split(|b| *b == b',') {
                        let t = t.trim_ascii();
                        close |= t.eq_ignore_ascii_case(b"close");
                        keep |= t.eq_ignore_ascii_case(b"keep-alive");
                    }
                } else if n == header::EXPECT {
                    expect = value.eq_ignore_ascii_case(b"100-continue");
                }
                headers.append(n, v);
            },
        );
        let framing = match (checked, bad) {
            (Err(v), _) | (Ok(_), Some(v)) => return self.refuse(v, &head),
            (Ok(f), None) => f,
        };
        let Some((method, target, http10)) = line else {
            return self.refuse(BAD_REQUEST_LINE, &head);
        };
        let Ok(method) = Method::from_bytes(method) else {
            return self.refuse(BAD_REQUEST_LINE, &head);
        };
        let Ok(uri) = Uri::from_maybe_shared(head.slice_ref(target)) else {
            return self.refuse(BAD_REQUEST_LINE, &head);
        };
        let version = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let keep_alive = !close && (version == Version::HTTP_11 || keep);
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        let expect_continue = expect && version == Version::HTTP_11 && state != State::Done;
        {
            let mut r = lock(reader);
            r.body = Framer::new(state);
            r.failed = false;
            r.body_alive = true;
            r.cont = if expect_continue { 0 } else { CONTINUE.len() };
        }
        let body = ServerBody {
            r: Some(reader.clone()),
            ended: state == State::Done,
        };
        let head_only = method == Method::HEAD;
        let mut req = Request::new(InBody::Lean(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        Head::Request {
            req,
            keep_alive,
            head_only,
        }
    }
}

/// The searcher for the CRLF CRLF that ends a request head, built once.
fn head_end() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    &FINDER
}

/// A stand-in request for a head that is refused unparsed: its method and target when they
/// can be read (for the log), else `GET /`.
fn placeholder(head: &[u8]) -> Request<InBody> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts
        .next()
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let uri = parts
        .next()
        .filter(|t| t.len() <= 8192)
        .and_then(|t| Uri::try_from(t).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut req = Request::new(InBody::Lean(ServerBody {
        r: None,
        ended: true,
    }));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    req
}

/// How the response body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, unknown length).
    Close,
}

/// The `Date` header value, formatted once per second.
fn date() -> HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let secs = crate::clock::coarse_unix_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let v = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            *c = (secs, v);
        }
        c.1.clone()
    })
}

/// Encodes a response head; returns it with the body's framing and whether the connection can
/// carry another request afterwards.
fn encode_head(
    parts: &http::response::Parts,
    hint: SizeHint,
    head_only: bool,
    http10: bool,
    mut keep_alive: bool,
) -> (Bytes, Out, bool) {
    let status = parts.status;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // One pass over the fields for the size and the three the framing needs (instead of a
    // hashed lookup for each).
    let mut size = 64;
    let (mut declared, mut has_length, mut has_date) = (None, false, false);
    for (k, v) in &parts.headers {
        size += k.as_str().len() + v.len() + 4;
        if *k == header::CONTENT_LENGTH {
            if !has_length {
                declared = v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
            }
            has_length = true;
        } else if *k == header::CONNECTION {
            if v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep_alive = false;
            }
        } else if *k == header::DATE {
            has_date = true;
        }
    }
    let out = if no_body {
        Out::None
    } else if let Some(n) = hint.exact() {
        Out::Length(n)
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if !http10 {
        Out::Chunked
    } else {
        Out::Close
    };
    if out == Out::Close {
        keep_alive = false;
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut b = BytesMut::with_capacity(size + 96);
    b.put_slice(b"HTTP/1.1 ");
    b.put_slice(status.as_str().as_bytes());
    b.put_u8(b' ');
    b.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    b.put_slice(CRLF);
    let keep_length = head_only || status == StatusCode::NOT_MODIFIED;
    for (k, v) in &parts.headers {
        if *k == header::TRANSFER_ENCODING
            || (*k == header::CONNECTION && !switching)
            || (*k == header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        b.put_slice(k.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(v.as_bytes());
        b.put_slice(CRLF);
    }
    match out {
        Out::Length(n) => {
            b.put_slice(b"content-length: ");
            let mut digits = [0u8; 20];
            b.put_slice(format_u64(n, &mut digits));
            b.put_slice(CRLF);
        }
        Out::Chunked => b.put_slice(b"transfer-encoding: chunked\r\n"),
        Out::None | Out::Close => {}
    }
    // A HEAD answered by the gateway itself says how long its GET answer would be.
    if head_only && !has_length {
        if let Some(n) = hint.exact().filter(|n| *n > 0) {
            b.put_slice(b"content-length: ");
            let mut digits = [0u8; 20];
            b.put_slice(format_u64(n, &mut digits));
            b.put_slice(CRLF);
        }
    }
    if !switching {
        if !keep_alive {
            b.put_slice(b"connection: close\r\n");
        } else if http10 {
            b.put_slice(b"connection: keep-alive\r\n");
        }
    }
    if !has_date {
        b.put_slice(b"date: ");
        b.put_slice(date().as_bytes());
        b.put_slice(CRLF);
    }
    b.put_slice(CRLF);
    (b.freeze(), out, keep_alive)
}

fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Writes the response: the head, and the body as it arrives (the head and a body that is
/// already there leave in one write). `Err` when the response could not be sent whole.
async fn write_response(
    wr: &mut OwnedWriteHalf,
    head: Bytes,
    out: Out,
    body: &mut RespBody,
) -> Result<(), ()> {
    let mut queue: VecDeque<Bytes> = VecDeque::with_capacity(4);
    queue.push_back(head);
    let mut ended = out == Out::None;
    let mut left = match out {
        Out::Length(n) => n,
        _ => u64::MAX,
    };
    let mut written = false;
    std::future::poll_fn(|cx| loop {
        let mut progress = false;
        while !ended && queued(&queue) < MAX_QUEUED {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    ended = true;
                    progress = true;
                    match out {
                        Out::Chunked => queue.push_back(Bytes::from_static(LAST_CHUNK)),
                        // Shorter than announced: the client must not take it as whole.
                        Out::Length(_) if left != 0 => return Poll::Ready(Err(())),
                        _ => {}
                    }
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(())),
                Poll::Ready(Some(Ok(frame))) => {
                    progress = true;
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not sent on HTTP/1.1
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match out {
                        Out::Length(_) => {
                            if data.len() as u64 > left {
                                return Poll::Ready(Err(()));
                            }
                            left -= data.len() as u64;
                            queue.push_back(data);
                        }
                        Out::Chunked => {
                            queue.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                            queue.push_back(data);
                            queue.push_back(Bytes::from_static(CRLF));
                        }
                        Out::Close => queue.push_back(data),
                        Out::None => {}
                    }
                }
            }
        }
        let before = queue.len();
        match poll_write_queue(wr, &mut queue, cx, &mut written) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
            Poll::Pending => {}
        }
        if ended && queue.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if !progress && queue.len() == before {
            return Poll::Pending;
        }
    })
    .await
}

/// Serves one plain-TCP HTTP/1.1 connection until it closes, an error ends it, or `closing`
/// is set (the gateway drains: the response in progress is the last).
pub async fn serve(
    s: Arc<Server>,
    reader: Arc<Mutex<Reader>>,
    mut wr: OwnedWriteHalf,
    closing: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
) {
    let s = &*s;
    let upgrade = Arc::new(UpgradeSlot::default());
    loop {
        if closing.load(Ordering::Relaxed) && lock(&reader).buf.is_empty() {
            break;
        }
        lock(&reader).waiting = true;
        let head = std::future::poll_fn(|cx| s.poll_head(&reader, cx)).await;
        lock(&reader).waiting = false;
        let (req, keep_alive, head_only, violation) = match head {
            Head::Closed => break,
            Head::Violation(v, req) => (req, false, false, Some(v)),
            Head::Request {
                req,
                keep_alive,
                head_only,
            } => (req, keep_alive, head_only, None),
        };
        let http10 = req.version() == Version::HTTP_10;
        let up = violation.is_none().then(|| upgrade.clone());
        let resp = match handle(
            s.shared.clone(),
            s.conn.clone(),
            violation,
            up,
            s.activity.clone(),
            req,
        )
        .await
        {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, mut body) = resp.into_parts();
        // A request body left unread that cannot be dropped (too long, or the client waits
        // for a 100 Continue it did not get) ends the connection: the answer says so.
        let droppable = {
            let r = lock(&reader);
            match r.body.state {
                State::Done => true,
                _ if r.cont < CONTINUE.len() => false,
                State::Length(n) => n <= DRAIN_MAX,
                _ => true,
            }
        };
        let keep =
            keep_alive && droppable && violation.is_none() && !closing.load(Ordering::Relaxed);
        let (head, out, mut keep) = encode_head(&parts, body.size_hint(), head_only, http10, keep);
        let status = parts.status;
        crate::hmap::give(parts.headers);
        let sent = write_response(&mut wr, head, out, &mut body).await;
        drop(body);
        if sent.is_err() {
            return;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(up) = upgrade.take() {
                // Boxed: a tunnel's state would otherwise enlarge every connection's future.
                Box::pin(tunnel(s, &reader, wr, up, shutdown)).await;
            }
            return;
        }
        // The request body the proxy did not read: a short one is read and dropped so the
        // connection goes on; a long one, or one the client was told to wait with, closes it.
        let (body_left, owed_continue, unread) = {
            let r = lock(&reader);
            (
                r.body.state != State::Done,
                r.cont < CONTINUE.len(),
                !r.buf.is_empty(),
            )
        };
        if body_left && keep {
            // A client still waiting for its 100 Continue may never send the body.
            keep = !owed_continue && drain(&reader).await;
        }
        if !keep {
            let reading = body_left || unread || violation.is_some();
            linger(&reader, &mut wr, reading).await;
            return;
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncWriteExt::shutdown(&mut wr),
    )
    .await;
}

/// Reads and drops what is left of the request body, at most [`DRAIN_MAX`] bytes. True when
/// the body ended (the connection can carry the next request).
async fn drain(reader: &Arc<Mutex<Reader>>) -> bool {
    let mut seen = 0u64;
    std::future::poll_fn(|cx| {
        let mut r = lock(reader);
        if r.body_alive {
            // Someone still holds the body (an upstream client finishing): not ours to read.
            return Poll::Ready(false);
        }
        loop {
            match ready!(r.poll_body(cx)) {
                None => return Poll::Ready(true),
                Some(Err(_)) => return Poll::Ready(false),
                Some(Ok(b)) => {
                    seen += b.len() as u64;
                    if seen > DRAIN_MAX {
                        return Poll::Ready(false);
                    }
                }
            }
        }
    })
    .await
}

/// Closes a connection whose client may still be sending: stop writing, then read and drop
/// for a moment so the response is not lost to a reset.
async fn linger(reader: &Arc<Mutex<Reader>>, wr: &mut OwnedWriteHalf, reading: bool) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncWriteExt::shutdown(wr),
    )
    .await;
    if !reading {
        return;
    }
    let mut seen = 0usize;
    let _ = tokio::time::timeout(
        LINGER_TIME,
        std::future::poll_fn(|cx| {
            let mut r = lock(reader);
            loop {
                let n = r.buf.len();
                r.buf.advance(n);
                seen += n;
                if seen > LINGER_MAX {
                    return Poll::Ready(());
                }
                match ready!(r.poll_fill(cx, HEAD_READ)) {
                    Ok(0) | Err(_) => return Poll::Ready(()),
                    Ok(_) => {}
                }
            }
        }),
    )
    .await;
}

/// The 101 is written: the connection becomes a tunnel to the upstream.
async fn tunnel(
    s: &Server,
    reader: &Arc<Mutex<Reader>>,
    wr: OwnedWriteHalf,
    up: hyper::upgrade::OnUpgrade,
    shutdown: watch::Receiver<bool>,
) {
    let (rd, unparsed) = {
        let mut r = lock(reader);
        let unparsed = r.buf.split().freeze();
        (r.rd.take(), unparsed)
    };
    let Some(rd) = rd else { return };
    let Ok(stream) = rd.reunite(wr) else { return };
    // The tunnel has its own idle rule; the connection's watchdog leaves it alone.
    s.activity.request_started();
    let io = crate::h1scan::ScanIo::new(stream, None);
    let gauge = s.shared.metrics.open_tunnels.clone();
    crate::tunnel::run(io, unparsed, up, s.tunnel_idle, shutdown, &gauge).await;
    s.activity.request_done();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_like_display() {
        let mut b = [0u8; 20];
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            assert_eq!(format_u64(n, &mut b), n.to_string().as_bytes());
        }
    }

    fn parts(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut r = http::Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r.into_parts().0
    }

    fn head_text(
        p: &http::response::Parts,
        hint: SizeHint,
        head_only: bool,
        http10: bool,
        keep: bool,
    ) -> (String, bool) {
        let (h, _, keep) = encode_head(p, hint, head_only, http10, keep);
        (String::from_utf8(h.to_vec()).unwrap(), keep)
    }

    #[test]
    fn response_framing_follows_the_body_and_the_client() {
        let p = parts(
            200,
            &[("content-length", "3"), ("transfer-encoding", "chunked")],
        );
        let (h, keep) = head_text(&p, SizeHint::with_exact(5), false, false, true);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("content-length: 5\r\n"), "{h}");
        assert!(!h.contains("transfer-encoding"), "{h}");
        assert!(!h.contains("connection:"), "{h}");
        assert!(h.contains("date: "), "{h}");
        assert!(keep);

        let p = parts(200, &[("date", "x")]);
        let (h, _) = head_text(&p, SizeHint::default(), false, false, true);
        assert!(h.contains("transfer-encoding: chunked\r\n"), "{h}");
        assert_eq!(h.matches("date:").count(), 1, "{h}");

        // HTTP/1.0, unknown length: the body runs to the close.
        let (h, keep) = head_text(&p, SizeHint::default(), false, true, true);
        assert!(!h.contains("transfer-encoding"), "{h}");
        assert!(h.contains("connection: close\r\n"), "{h}");
        assert!(!keep);
        // HTTP/1.0 with a length and keep-alive asked for.
        let (h, keep) = head_text(&p, SizeHint::with_exact(2), false, true, true);
        assert!(h.contains("connection: keep-alive\r\n"), "{h}");
        assert!(keep);

        // HEAD keeps the upstream's length and sends no body; 204 has no length at all.
        let p = parts(200, &[("content-length", "42")]);
        let (h, _) = head_text(&p, SizeHint::with_exact(0), true, false, true);
        assert!(h.contains("content-length: 42\r\n"), "{h}");
        // A gateway answer to HEAD: the length of the body it does not send.
        let p = parts(404, &[]);
        let (h, _) = head_text(&p, SizeHint::with_exact(17), true, false, true);
        assert!(h.contains("content-length: 17\r\n"), "{h}");
        let p = parts(204, &[("content-length", "0")]);
        let (h, _) = head_text(&p, SizeHint::with_exact(0), false, false, true);
        assert!(!h.contains("content-length"), "{h}");

        // A gateway answer that closes says so once.
        let p = parts(400, &[("connection", "close")]);
        let (h, keep) = head_text(&p, SizeHint::with_exact(0), false, false, true);
        assert_eq!(h.matches("connection: close").count(), 1, "{h}");
        assert!(!keep);
    }
}
