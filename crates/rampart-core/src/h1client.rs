//! Rampart's own HTTP/1.1 client, for upstream targets reached over plain TCP.
//!
//! hyper's client runs each connection as its own task and talks to it through channels: a
//! request is handed over, the connection task is woken to write it and read the answer, and
//! the response head and every body frame come back through a channel. Here the request's own
//! task writes the request and reads the response on the pooled socket, and the response body
//! reads straight from it. hyper's client still serves TLS targets, HTTP/2 and upgrades
//! (`upstream.rs` chooses).
//!
//! What it accepts from an upstream is strict, as a gateway must be: a response head is parsed
//! by `httparse` (no obs-fold, at most [`MAX_HEADERS`] headers and [`MAX_HEAD`] bytes);
//! `Content-Length` values must agree; a `Transfer-Encoding` whose last coding is not `chunked`
//! means the body runs to the close; chunk sizes are hex with at most 16 digits and every line
//! ends in CRLF. A connection goes back to the pool only when its response was read exactly to
//! its end, the request was sent in full, and neither side asked to close.

use crate::body::{BodyError, ReqBody};
use bytes::{BufMut, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest response head accepted from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line or trailer section accepted.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// The read buffer a connection starts with; it grows (up to [`MAX_HEAD`]) only for a larger head.
const READ_BUF: usize = 16 * 1024;

/// One upstream connection: the socket and the bytes read from it but not used yet.
pub struct Conn {
    io: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            } else {
                return Poll::Ready(Err(io::Error::other("upstream response head too large")));
            }
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// An idle connection is usable when nothing arrived on it since its last response: no
    /// bytes and no close. Asks the reactor first (no system call when nothing happened).
    fn idle_ok(&mut self) -> bool {
        if self.end != self.start {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut one = [0u8; 1];
                matches!(self.io.try_read(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Idle connections of one target.
pub struct Pool {
    conns: Mutex<Vec<(Conn, u64)>>,
    max: usize,
    idle_ms: u64,
    /// Whether the task that closes expired and closed idle connections runs.
    sweeping: AtomicBool,
}

impl Pool {
    pub fn new(max: usize, idle_ms: u64) -> Self {
        Pool {
            conns: Mutex::new(Vec::new()),
            max,
            idle_ms,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently used connection that is still usable and was idle for less than
    /// the idle timeout; stale ones are closed.
    pub fn take(&self, now: u64) -> Option<Conn> {
        let mut v = self.conns.lock().ok()?;
        while let Some((mut c, since)) = v.pop() {
            if now.saturating_sub(since) < self.idle_ms && c.idle_ok() {
                return Some(c);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, c: Conn) {
        if let Ok(mut v) = self.conns.lock() {
            if v.len() < self.max {
                v.push((c, crate::clock::coarse_ms()));
            }
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            // Idle connections nobody takes would otherwise stay open after they expire or
            // after the upstream closed them. The task ends with the pool (a reload).
            let pool = Arc::downgrade(self);
            let every = Duration::from_millis((self.idle_ms / 2).clamp(100, 30_000));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let Some(p) = pool.upgrade() else { break };
                        p.sweep(crate::clock::coarse_ms());
                    }
                });
            }
        }
    }

    /// Closes the idle connections that expired or that the upstream closed.
    fn sweep(&self, now: u64) {
        if let Ok(mut v) = self.conns.lock() {
            v.retain_mut(|(c, since)| now.saturating_sub(*since) < self.idle_ms && c.idle_ok());
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// No byte of a response arrived: the connection failed or closed. `written` says whether
    /// any byte of the request was accepted by the socket.
    NoResponse { error: String, written: bool },
    /// The client's body failed (over the limit, malformed, cut).
    Body(BodyError),
    /// The upstream broke the protocol.
    Protocol(String),
}

/// How the request body is sent.
enum Out {
    Done,
    Length(ReqBody, u64),
    Chunked(ReqBody),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// Sends one request on `conn` and reads the response head. The body is streamed while the
/// head is awaited, so an upstream that answers before reading the whole body is heard.
pub async fn send(
    mut conn: Conn,
    method: &Method,
    pq: &PathAndQuery,
    headers: &HeaderMap,
    body: ReqBody,
    pool: Arc<Pool>,
) -> Result<(http::response::Parts, LeanBody), SendError> {
    let mut full = None;
    let mut out = match body {
        ReqBody::Empty | ReqBody::Full(None) => Out::Done,
        ReqBody::Full(Some(b)) => {
            full = Some(b);
            Out::Done
        }
        b @ ReqBody::Stream { .. } => match headers.get(header::CONTENT_LENGTH) {
            // The server side refuses such requests; nothing is sent if one gets here.
            Some(v) => match parse_length(v.as_bytes()) {
                Some(n) => Out::Length(b, n),
                None => {
                    return Err(SendError::Body(BodyError::Other(
                        "request has an invalid Content-Length".into(),
                    )))
                }
            },
            None => Out::Chunked(b),
        },
    };
    let mut queue: VecDeque<Bytes> = VecDeque::with_capacity(4);
    queue.push_back(encode_head(
        method,
        pq,
        headers,
        matches!(out, Out::Chunked(_)),
    ));
    if let Some(b) = full.filter(|b| !b.is_empty()) {
        queue.push_back(b);
    }
    let head_only = method == Method::HEAD;
    let mut written = false;
    let mut write_error: Option<io::Error> = None;

    let (parts, framing, mut reusable) = std::future::poll_fn(|cx| loop {
        let mut progress = false;
        // Writer: queue what the body has ready (so the head and a body that is already here
        // leave in one write), then flush.
        if write_error.is_none() {
            while queued(&queue) < MAX_QUEUED {
                match poll_body(&mut out, &mut queue, cx) {
                    None => break,
                    Some(Ok(())) => progress = true,
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                }
            }
            let full = queued(&queue) >= MAX_QUEUED;
            match poll_write_queue(&mut conn.io, &mut queue, cx, &mut written) {
                // A queue that was too full to take more of the body has room again: the body
                // must be polled again (nothing else would wake this task for it).
                Poll::Ready(Ok(())) => progress |= full,
                Poll::Ready(Err(e)) => {
                    // The upstream may have answered before it stopped reading: listen on.
                    write_error = Some(e);
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        // Reader: a complete head ends the exchange.
        if conn.end > conn.start {
            match parse_head(&mut conn, head_only) {
                Ok(Some(h)) => return Poll::Ready(Ok(h)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(SendError::Protocol(e))),
            }
        }
        match conn.poll_fill(cx) {
            Poll::Ready(Ok(0)) => {
                let error = match &write_error {
                    Some(e) => format!("upstream connection failed: {e}"),
                    None => "upstream closed the connection before responding".to_string(),
                };
                return Poll::Ready(Err(if conn.end > conn.start {
                    SendError::Protocol(
                        "upstream closed the connection inside its response head".into(),
                    )
                } else {
                    SendError::NoResponse { error, written }
                }));
            }
            Poll::Ready(Ok(_)) => progress = true,
            Poll::Ready(Err(e)) => {
                return Poll::Ready(Err(if conn.end > conn.start {
                    SendError::Protocol(format!("reading the upstream response: {e}"))
                } else {
                    SendError::NoResponse {
                        error: format!("upstream connection failed: {e}"),
                        written,
                    }
                }))
            }
            Poll::Pending => {}
        }
        if !progress {
            return Poll::Pending;
        }
    })
    .await?;

    // A request not sent in full (the upstream answered early) leaves the connection unusable.
    if write_error.is_some() || !queue.is_empty() || !matches!(out, Out::Done) {
        reusable = false;
    }
    let state = match framing {
        Framing::Empty => State::Done,
        Framing::Length(0) => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::ChunkSize,
        Framing::Close => {
            reusable = false;
            State::Close
        }
    };
    let mut body = LeanBody {
        conn: Some(conn),
        framer: Framer::new(state),
        reusable,
        pool,
    };
    if body.framer.state == State::Done {
        body.release();
    }
    Ok((parts, body))
}

/// Bytes queued for the socket; the body is not read further ahead than [`MAX_QUEUED`].
pub(crate) fn queued(queue: &VecDeque<Bytes>) -> usize {
    queue.iter().map(Bytes::len).sum()
}
const MAX_QUEUED: usize = 256 * 1024;

fn encode_head(method: &Method, pq: &PathAndQuery, headers: &HeaderMap, chunked: bool) -> Bytes {
    let mut size = method.as_str().len() + pq.as_str().len() + 16;
    for (k, v) in headers {
        size += k.as_str().len() + v.len() + 4;
    }
    let mut b = BytesMut::with_capacity(size + 32);
    b.put_slice(method.as_str().as_bytes());
    b.put_u8(b' ');
    b.put_slice(pq.as_str().as_bytes());
    b.put_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        b.put_slice(k.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(v.as_bytes());
        b.put_slice(b"\r\n");
    }
    if chunked {
        b.put_slice(b"transfer-encoding: chunked\r\n");
    }
    b.put_slice(b"\r\n");
    b.freeze()
}

pub(crate) fn poll_write_queue<W: AsyncWrite + Unpin>(
    io: &mut W,
    queue: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
    written: &mut bool,
) -> Poll<io::Result<()>> {
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); 16];
        let mut n = 0;
        for (s, b) in slices.iter_mut().zip(queue.iter()) {
            *s = IoSlice::new(b);
            n += 1;
        }
        let mut wrote = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "upstream accepted no bytes",
                )))
            }
            Poll::Ready(Ok(w)) => w,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        *written = true;
        while wrote > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if wrote >= front.len() {
                wrote -= front.len();
                queue.pop_front();
            } else {
                let _ = front.split_to(wrote);
                wrote = 0;
            }
        }
        while queue.front().is_some_and(|b| b.is_empty()) {
            queue.pop_front();
        }
    }
    Poll::Ready(Ok(()))
}

static CRLF: &[u8] = b"\r\n";
static LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Moves the next piece of a streamed body into the queue. `None`: nothing to do now (done, or
/// the body is not ready; its waker is registered).
fn poll_body(
    out: &mut Out,
    queue: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Option<Result<(), SendError>> {
    let (body, chunked) = match out {
        Out::Done => return None,
        Out::Length(b, _) => (b, false),
        Out::Chunked(b) => (b, true),
    };
    match Pin::new(body).poll_frame(cx) {
        Poll::Pending => None,
        Poll::Ready(Some(Err(e))) => Some(Err(SendError::Body(e))),
        Poll::Ready(Some(Ok(frame))) => {
            let Ok(data) = frame.into_data() else {
                return Some(Ok(())); // trailers of the client's body are not forwarded
            };
            if data.is_empty() {
                return Some(Ok(()));
            }
            if let Out::Length(_, left) = out {
                if data.len() as u64 > *left {
                    return Some(Err(SendError::Body(BodyError::Other(
                        "request body longer than its Content-Length".into(),
                    ))));
                }
                *left -= data.len() as u64;
            }
            if chunked {
                queue.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                queue.push_back(data);
                queue.push_back(Bytes::from_static(CRLF));
            } else {
                queue.push_back(data);
            }
            Some(Ok(()))
        }
        Poll::Ready(None) => {
            match out {
                Out::Length(_, left) if *left != 0 => {
                    return Some(Err(SendError::Body(BodyError::Other(
                        "request body shorter than its Content-Length".into(),
                    ))))
                }
                Out::Chunked(_) => queue.push_back(Bytes::from_static(LAST_CHUNK)),
                _ => {}
            }
            *out = Out::Done;
            Some(Ok(()))
        }
    }
}

/// Parses a response head from the connection's buffer. Informational responses (1xx other
/// than 101) are skipped. `Ok(None)`: more bytes are needed.
#[allow(clippy::type_complexity)]
fn parse_head(
    conn: &mut Conn,
    head_only: bool,
) -> Result<Option<(http::response::Parts, Framing, bool)>, String> {
    loop {
        // Uninitialized slots: no 4 KiB of empty headers written before every parse.
        let mut hs =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut r,
            &conn.buf[conn.start..conn.end],
            &mut hs,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if conn.end - conn.start >= MAX_HEAD {
                    return Err(format!(
                        "upstream response head larger than {MAX_HEAD} bytes"
                    ));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!(
                    "upstream response has more than {MAX_HEADERS} header fields"
                ))
            }
            Err(e) => return Err(format!("malformed upstream response head: {e}")),
        };
        let code = r.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| format!("invalid upstream status code {code}"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            conn.consume(len);
            continue;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("upstream switched protocols on a request that did not ask to".into());
        }
        let version = if r.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Room for the headers the response guards add (security headers, request id)
        // without growing the map.
        let mut headers = crate::hmap::take(r.headers.len() + 6);
        // One copy of the head for all the values to share, not an allocation per value.
        let base = conn.start;
        let head = Bytes::copy_from_slice(&conn.buf[base..base + len]);
        let head_ptr = conn.buf[base..].as_ptr() as usize;
        let mut close = version == Version::HTTP_10;
        let mut te_chunked: Option<bool> = None;
        let mut length: Option<u64> = None;
        let mut named: Vec<HeaderName> = Vec::new();
        for h in r.headers.iter() {
            // Connection (hop-by-hop, and on nearly every response) is read from its bytes
            // and never becomes a field.
            if h.name.len() == 10 && h.name.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|b| *b == b',') {
                    let t = t.trim_ascii();
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        if version == Version::HTTP_10 {
                            close = false;
                        }
                    } else if let Ok(n) = HeaderName::from_bytes(t) {
                        named.push(n);
                    }
                }
                continue;
            }
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("invalid upstream header name `{}`", h.name))?;
            // httparse's values are slices of the parsed buffer; anything else is copied.
            let shared = (h.value.as_ptr() as usize)
                .checked_sub(head_ptr)
                .filter(|at| at + h.value.len() <= head.len())
                .map(|at| head.slice(at..at + h.value.len()));
            let value = match shared {
                Some(b) => HeaderValue::from_maybe_shared(b),
                None => HeaderValue::from_bytes(h.value),
            }
            .map_err(|_| format!("invalid value of upstream header `{}`", h.name))?;
            if name == header::CONTENT_LENGTH {
                let n = parse_length(h.value)
                    .ok_or_else(|| "invalid upstream Content-Length".to_string())?;
                if length.is_some_and(|l| l != n) {
                    return Err("upstream sent differing Content-Length values".into());
                }
                length = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                // The last coding decides: chunked, or the body runs to the close.
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                te_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            // Hop-by-hop fields describe this connection only (RFC 9110 7.6.1): they are
            // read above and never reach the response the client gets, so the proxy's own
            // removal finds nothing to do.
            if !crate::proxy::is_hop_by_hop(&name) {
                headers.append(name, value);
            }
        }
        // Names the upstream's Connection header made hop-by-hop (rare).
        for n in named {
            headers.remove(n);
        }
        conn.consume(len);
        let framing = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if let Some(chunked) = te_chunked {
            if length.is_some() {
                // Both: Transfer-Encoding wins (RFC 9112 6.3), the length goes, and a
                // connection that sent both is not trusted with another request.
                headers.remove(header::CONTENT_LENGTH);
                close = true;
            }
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let mut resp = http::Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        let (parts, ()) = resp.into_parts();
        return Ok(Some((parts, framing, !close)));
    }
}

fn parse_length(v: &[u8]) -> Option<u64> {
    // A list of equal values ("5, 5") is one length.
    let mut out: Option<u64> = None;
    for part in v.split(|b| *b == b',') {
        let p = part.trim_ascii();
        if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = p.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// Parses a chunk-size line (without its CRLF): hex digits, then optional extensions.
pub(crate) fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest_ok = rest.is_empty()
        || (matches!(rest[0], b';' | b' ' | b'\t')
            && rest
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80));
    if !rest_ok {
        return None;
    }
    let mut n = 0u64;
    for d in &line[..digits] {
        n = n << 4 | u64::from((*d as char).to_digit(16)?);
    }
    Some(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Length(u64),
    Close,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

/// What a message body's framing says about the bytes buffered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// This many framing bytes (a chunk-size line, a CRLF, a trailer) are used up.
    Skip(usize),
    /// The next this many bytes are body data.
    Data(usize),
    /// The body ends after this many more framing bytes.
    End(usize),
    /// More bytes are needed.
    More,
    /// The framing is broken.
    Fail(&'static str),
}

/// The HTTP/1.1 body decoder both directions share (Rampart's upstream client for responses,
/// its server for requests): `Content-Length`, chunked (hex sizes of at most 16 digits,
/// extensions allowed, every line ended by CRLF, at most [`MAX_CHUNK_LINE`] bytes per line and
/// [`MAX_TRAILERS`] bytes of trailer fields, which are dropped), or to the close. It only
/// looks at buffered bytes; the caller reads and consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framer {
    pub(crate) state: State,
    trailer_bytes: usize,
}

impl Framer {
    pub(crate) fn new(state: State) -> Self {
        Framer {
            state,
            trailer_bytes: 0,
        }
    }

    /// The next step over `avail`, the bytes buffered and not yet consumed.
    pub(crate) fn next(&mut self, avail: &[u8]) -> Next {
        let have = !avail.is_empty();
        match self.state {
            State::Done => Next::End(0),
            State::Length(n) | State::ChunkData(n) if have => {
                let k = usize::try_from(n).unwrap_or(usize::MAX).min(avail.len());
                let left = n - k as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), l) => State::Length(l),
                    (_, 0) => State::ChunkEnd,
                    (_, l) => State::ChunkData(l),
                };
                Next::Data(k)
            }
            State::Close if have => Next::Data(avail.len()),
            State::ChunkEnd if avail.len() >= 2 => {
                if avail[..2] != *CRLF {
                    return Next::Fail("chunk data not followed by CRLF");
                }
                self.state = State::ChunkSize;
                Next::Skip(2)
            }
            State::ChunkSize | State::Trailers if have => {
                let len = match memchr::memchr(b'\n', avail) {
                    Some(i) if i == 0 || avail[i - 1] != b'\r' => {
                        return Next::Fail("chunked body has a line not ended by CRLF")
                    }
                    Some(i) => i - 1,
                    None if avail.len() > MAX_CHUNK_LINE => {
                        return Next::Fail("chunk line too long")
                    }
                    None => return Next::More,
                };
                let line = &avail[..len];
                if self.state == State::ChunkSize {
                    self.state = match chunk_size(line) {
                        None => return Next::Fail("malformed chunk size"),
                        Some(0) => State::Trailers,
                        Some(n) => State::ChunkData(n),
                    };
                } else if len == 0 {
                    self.state = State::Done;
                    return Next::End(2);
                } else {
                    self.trailer_bytes += len + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Next::Fail("trailers too large");
                    }
                    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        return Next::Fail("control character in a trailer");
                    }
                }
                Next::Skip(len + 2)
            }
            _ => Next::More,
        }
    }

    /// The stream ended: the end of a body that runs to the close, else a cut-off body.
    pub(crate) fn at_eof(&mut self) -> bool {
        let ok = matches!(self.state, State::Close | State::Done);
        self.state = State::Done;
        ok
    }
}

/// Why a response body failed.
#[derive(Debug)]
pub struct UpstreamBodyError(pub String);

impl std::fmt::Display for UpstreamBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UpstreamBodyError {}

/// A response body read from the upstream connection. When it has been read exactly to its
/// end, the connection goes back to its pool.
pub struct LeanBody {
    conn: Option<Conn>,
    framer: Framer,
    reusable: bool,
    pool: Arc<Pool>,
}

impl LeanBody {
    /// The body ended: the connection returns to the pool if it can carry another request.
    fn release(&mut self) {
        self.framer.state = State::Done;
        if let Some(c) = self.conn.take() {
            if self.reusable && c.end == c.start {
                self.pool.put(c);
            }
        }
    }

    fn fail(
        &mut self,
        m: impl Into<String>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        self.framer.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(UpstreamBodyError(m.into()))))
    }
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framer.next(conn.avail()) {
                Next::Skip(n) => conn.consume(n),
                Next::Data(n) => {
                    let b = Bytes::copy_from_slice(&conn.avail()[..n]);
                    conn.consume(n);
                    if this.framer.state == State::Done {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Next::End(n) => {
                    conn.consume(n);
                    this.release();
                    return Poll::Ready(None);
                }
                Next::Fail(m) => return this.fail(format!("upstream response body: {m}")),
                Next::More => match conn.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        if this.framer.at_eof() {
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        return this.fail(
                            "upstream closed the connection before the end of its response body",
                        );
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        return this.fail(format!("reading the upstream response body: {e}"))
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framer.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        // What is left to read, as the trait asks.
        match self.framer.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for LeanBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection closes with it (it is never pooled half-read).
        if self.framer.state == State::Done {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_size, parse_length, Conn, LeanBody, Pool, State};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// A response body in `state` read from `client`, returning its connection to `pool`.
    fn body_on(client: tokio::net::TcpStream, state: State, pool: &Arc<Pool>) -> LeanBody {
        LeanBody {
            conn: Some(Conn::new(client)),
            framer: super::Framer::new(state),
            reusable: true,
            pool: pool.clone(),
        }
    }

    /// xorshift: repeatable inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Reads `wire` through a real socket, written in pieces of random size, as a body in
    /// `state`; returns the body and whether the connection went back to the pool.
    async fn decode(
        wire: Vec<u8>,
        state: State,
        rng: &mut Rng,
    ) -> (Result<Vec<u8>, String>, usize) {
        let close = state == State::Close;
        decode_with(wire, state, close, rng).await
    }

    /// As `decode`, and the upstream closes after the last piece.
    async fn decode_closed(
        wire: Vec<u8>,
        state: State,
        rng: &mut Rng,
    ) -> (Result<Vec<u8>, String>, usize) {
        decode_with(wire, state, true, rng).await
    }

    async fn decode_with(
        wire: Vec<u8>,
        state: State,
        close: bool,
        rng: &mut Rng,
    ) -> (Result<Vec<u8>, String>, usize) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = (1 + rng.next(40) as usize).min(wire.len() - at);
            pieces.push(wire[at..at + n].to_vec());
            at += n;
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(async move {
            for p in pieces {
                server.write_all(&p).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if close {
                drop(server);
            } else {
                // A keep-alive upstream: the connection stays open and quiet, so a reader that
                // waits for more bytes while the rest of the body is already buffered hangs.
                let _ = done_rx.await;
            }
        });
        let pool = Arc::new(Pool::new(4, 60_000));
        let body = body_on(client, state, &pool);
        // Not a timing assertion: the bound only turns a hang into a failure.
        let got =
            match tokio::time::timeout(std::time::Duration::from_secs(2), body.collect()).await {
                Ok(r) => r.map(|c| c.to_bytes().to_vec()).map_err(|e| e.to_string()),
                Err(_) => Err("stalled: waited for bytes with the body's end already read".into()),
            };
        let _ = done_tx.send(());
        writer.abort();
        let pooled = pool.conns.lock().map(|v| v.len()).unwrap_or(0);
        (got, pooled)
    }

    /// The body never waits for the socket while bytes it could use are buffered: a keep-alive
    /// upstream sends nothing more, so such a wait would hang the response.
    #[tokio::test]
    async fn a_body_never_waits_with_usable_bytes_buffered() {
        use http_body::Body;
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};
        for (wire, expect) in [
            (
                &b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\n"[..],
                &b"hello world"[..],
            ),
            (b"0\r\n\r\n", b""),
            (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let (mut server, _) = l.accept().await.unwrap();
            server.write_all(wire).await.unwrap();
            let pool = Arc::new(Pool::new(4, 60_000));
            let mut body = body_on(client, State::ChunkSize, &pool);
            let mut cx = Context::from_waker(Waker::noop());
            let mut out = Vec::new();
            let mut waits = 0;
            loop {
                match Pin::new(&mut body).poll_frame(&mut cx) {
                    Poll::Ready(Some(Ok(f))) => out.extend_from_slice(f.data_ref().unwrap()),
                    Poll::Ready(Some(Err(e))) => panic!("{e}"),
                    Poll::Ready(None) => break,
                    Poll::Pending => {
                        let buffered = body.conn.as_ref().map(|c| c.end - c.start).unwrap_or(0);
                        assert_eq!(
                            buffered, 0,
                            "waited with {buffered} bytes buffered in {:?}",
                            body.framer.state
                        );
                        // Nothing buffered: the bytes are still on their way (bounded).
                        waits += 1;
                        assert!(waits < 1000, "the wire never arrived");
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
            }
            assert_eq!(out, expect);
            assert_eq!(pool.conns.lock().map(|v| v.len()).unwrap_or(0), 1);
        }
    }

    #[tokio::test]
    async fn bodies_decode_the_same_however_the_reads_split() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..60 {
            let mut body = Vec::new();
            let mut wire = Vec::new();
            for _ in 0..rng.next(6) {
                let n = 1 + rng.next(300) as usize;
                let chunk: Vec<u8> = (0..n).map(|_| rng.next(256) as u8).collect();
                let ext = if rng.next(3) == 0 { ";name=\"v\"" } else { "" };
                let size = if rng.next(2) == 0 {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                wire.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&chunk);
                wire.extend_from_slice(b"\r\n");
                body.extend_from_slice(&chunk);
            }
            wire.extend_from_slice(b"0\r\n");
            if rng.next(2) == 0 {
                wire.extend_from_slice(b"X-Checksum: abc\r\nX-More: 1\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let (got, pooled) = decode(wire.clone(), State::ChunkSize, &mut rng).await;
            assert_eq!(got.as_deref(), Ok(&body[..]), "round {round}: chunked");
            assert_eq!(
                pooled, 1,
                "round {round}: a chunked body read to its end pools the connection"
            );

            if body.is_empty() {
                continue; // a zero length is no body at all (the exchange ends it at once)
            }
            let (got, pooled) =
                decode(body.clone(), State::Length(body.len() as u64), &mut rng).await;
            assert_eq!(got.as_deref(), Ok(&body[..]), "round {round}: length");
            assert_eq!(pooled, 1, "round {round}: length");

            let (got, pooled) = decode(body.clone(), State::Close, &mut rng).await;
            assert_eq!(got.as_deref(), Ok(&body[..]), "round {round}: to the close");
            assert_eq!(
                pooled, 0,
                "round {round}: a close-delimited body never pools"
            );

            // Cut short by a close: an error, never a body that looks complete, never pooled.
            let cut = rng.next(wire.len() as u64 - 1) as usize;
            let (got, pooled) =
                decode_closed(wire[..cut].to_vec(), State::ChunkSize, &mut rng).await;
            assert!(
                got.is_err(),
                "round {round}: chunked body cut at {cut} must fail"
            );
            assert_eq!(pooled, 0, "round {round}");
            let cut = rng.next(body.len() as u64) as usize;
            let (got, pooled) = decode_closed(
                body[..cut].to_vec(),
                State::Length(body.len() as u64),
                &mut rng,
            )
            .await;
            assert!(
                got.is_err(),
                "round {round}: length body cut at {cut} must fail"
            );
            assert_eq!(pooled, 0, "round {round}");
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"FF;name=value"), Some(255));
        assert_eq!(chunk_size(b"10 ; x"), Some(16));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"0x10",
            b"1g",
            b"11111111111111111",
            b"1\x00",
            b";a",
        ] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"5, 5"), Some(5));
        for bad in [
            &b""[..],
            b"5, 6",
            b"-1",
            b"+1",
            b"1 2",
            b"0x1",
            b"99999999999999999999",
            b",",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
