//! Request-smuggling hardening for HTTP/1 connections.
//!
//! hyper's parser is lenient where RFC 9112 allows it to be (it accepts bare LF line endings and
//! resolves Content-Length + Transfer-Encoding by preferring chunked). A gateway must not be:
//! a front-end and a back-end that resolve an ambiguity differently is how smuggling works.
//! [`ScanIo`] wraps the client stream and watches the raw bytes of every request head as hyper
//! reads them, following message framing (Content-Length and chunked) to find the next head.
//! Each head's verdict is queued in [`ScanState`]; the request handler takes it before doing
//! anything else and answers 400 (and closes the connection) on a violation. Once a violation is
//! seen, scanning stops: the connection is closed after that response.

use crate::h2watch::{H2Watch, PREFACE_LEN};
use crate::server::ConnActivity;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A problem in a request head, with the status to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub status: u16,
    pub rule: &'static str,
    pub message: &'static str,
}

const fn v(status: u16, rule: &'static str, message: &'static str) -> Violation {
    Violation {
        status,
        rule,
        message,
    }
}

pub const BARE_LF: Violation = v(400, "bare_lf", "line ending without CR (bare LF)");
pub const BARE_CR: Violation = v(400, "bare_cr", "CR not followed by LF");
pub const OBS_FOLD: Violation = v(400, "obs_fold", "obsolete header line folding");
pub const CTL_CHAR: Violation = v(
    400,
    "control_char",
    "NUL or control character in the request head",
);
pub const BAD_HEADER_NAME: Violation = v(400, "bad_header_name", "invalid header name");
pub const CL_AND_TE: Violation = v(
    400,
    "cl_and_te",
    "both Content-Length and Transfer-Encoding",
);
pub const CL_CONFLICT: Violation = v(400, "cl_conflict", "conflicting or invalid Content-Length");
pub const TE_NOT_CHUNKED: Violation = v(
    400,
    "te_not_chunked",
    "Transfer-Encoding other than a single final chunked",
);
pub const TE_HTTP10: Violation = v(400, "te_http10", "Transfer-Encoding in an HTTP/1.0 request");
pub const BAD_REQUEST_LINE: Violation = v(400, "bad_request_line", "malformed request line");
pub const LONG_REQUEST_LINE: Violation = v(414, "request_line_too_long", "request line too long");
pub const HEAD_TOO_LARGE: Violation = v(431, "head_too_large", "request head too large");
pub const TOO_MANY_HEADERS: Violation = v(431, "too_many_headers", "too many header fields");
pub const BAD_CHUNK: Violation = v(400, "bad_chunk", "malformed chunked encoding");

/// Verdicts per request head, in order, shared between the stream wrapper and the handler.
#[derive(Default)]
pub struct ScanState {
    queue: Mutex<VecDeque<Option<Violation>>>,
}

impl ScanState {
    /// The verdict for the next request head hyper hands to the service.
    pub fn take(&self) -> Option<Violation> {
        self.queue
            .lock()
            .map(|mut q| q.pop_front().flatten())
            .unwrap_or(None)
    }
    fn push(&self, v: Option<Violation>) {
        if let Ok(mut q) = self.queue.lock() {
            // Bounded: pipelined heads beyond this are not scanned ahead.
            if q.len() < 64 {
                q.push_back(v);
            }
        }
    }
}

#[derive(Debug)]
enum St {
    /// Reading a head; `line_start` indexes the start of the current line in `head`.
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// Stopped (after a violation, or on a connection that turned out to be HTTP/2).
    Off,
}

pub struct Scanner {
    st: St,
    head: Vec<u8>,
    /// Where the current line of `head` starts.
    line_start: usize,
    line: Vec<u8>,
    max_head: usize,
    max_request_line: usize,
    state: Arc<ScanState>,
    activity: Option<Arc<ConnActivity>>,
    /// Stopped at an HTTP/2 prior-knowledge preface (h2c).
    h2_prior: bool,
}

pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Scanner {
    pub fn new(
        state: Arc<ScanState>,
        activity: Arc<ConnActivity>,
        max_head: usize,
        max_request_line: usize,
    ) -> Self {
        Scanner {
            activity: Some(activity),
            st: St::Head,
            head: Vec::new(),
            line_start: 0,
            line: Vec::new(),
            max_head,
            max_request_line,
            state,
            h2_prior: false,
        }
    }

    fn fail(&mut self, v: Violation) {
        // A framing error inside a body is hyper's to report (its chunk decoder fails the body,
        // and the handler reads the first body frame before contacting an upstream); a head
        // violation is queued for the handler.
        if matches!(self.st, St::Head) {
            self.state.push(Some(v));
        }
        self.st = St::Off;
        self.head = Vec::new();
        self.line = Vec::new();
    }

    /// A complete head was read: check it and follow its framing. `false` when scanning
    /// stops (a violation, or an HTTP/2 preface).
    fn head_done(&mut self, head: &[u8]) -> bool {
        if head.starts_with(b"PRI * HTTP/2.0") {
            // HTTP/2 prior knowledge: not ours to scan (H2Watch's).
            self.st = St::Off;
            self.h2_prior = true;
            return false;
        }
        match check_head(head, self.max_request_line) {
            Err(v) => {
                self.fail(v);
                false
            }
            Ok(f) => {
                self.state.push(None);
                self.st = match f {
                    Framing::None | Framing::Length(0) => St::Head,
                    Framing::Length(n) => St::Body(n),
                    Framing::Chunked => St::ChunkSize,
                };
                true
            }
        }
    }

    /// Feed bytes the client sent.
    pub fn feed(&mut self, buf: &[u8]) {
        self.feed_inner(buf);
        if let Some(a) = &self.activity {
            // Inside a body (or stopped, framing no longer followed): the connection is not
            // between messages, whatever the request handler has done.
            a.set_framing_open(!matches!(self.st, St::Head));
        }
    }

    fn feed_inner(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.st {
                St::Off => return,
                St::Head => {
                    // Skip empty lines before a request line (RFC 9112 2.2).
                    if self.head.is_empty() {
                        let skip = buf
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        buf = &buf[skip..];
                        if buf.is_empty() {
                            return;
                        }
                        if let Some(a) = &self.activity {
                            a.head_begin();
                        }
                    }
                    // The whole head in this read (the usual case): checked where it lies.
                    if self.head.is_empty() {
                        match head_in(buf, self.max_head) {
                            InPlace::Complete(used) => {
                                if !self.head_done(&buf[..used]) {
                                    return;
                                }
                                buf = &buf[used..];
                                continue;
                            }
                            InPlace::TooLarge => {
                                self.fail(HEAD_TOO_LARGE);
                                return;
                            }
                            InPlace::Partial => {}
                        }
                    }
                    // Look for the end of the head: an empty line. Work line by line.
                    let mut end = None;
                    let mut consumed = 0;
                    while let Some(nl) = memchr::memchr(b'\n', &buf[consumed..]) {
                        let line = &buf[consumed..consumed + nl + 1];
                        self.head.extend_from_slice(line);
                        consumed += nl + 1;
                        let line_len = self.head.len() - self.line_start;
                        let empty =
                            line_len == 1 || (line_len == 2 && self.head[self.line_start] == b'\r');
                        self.line_start = self.head.len();
                        if self.head.len() > self.max_head {
                            self.fail(HEAD_TOO_LARGE);
                            return;
                        }
                        if empty {
                            end = Some(consumed);
                            break;
                        }
                    }
                    if end.is_none() {
                        self.head.extend_from_slice(&buf[consumed..]);
                        if self.head.len() > self.max_head {
                            self.fail(HEAD_TOO_LARGE);
                            return;
                        }
                    }
                    match end {
                        None => {
                            // Check the request line early so a huge one is cut short.
                            if self.line_start == 0 && self.head.len() > self.max_request_line {
                                self.fail(LONG_REQUEST_LINE);
                            }
                            return;
                        }
                        Some(used) => {
                            buf = &buf[used..];
                            self.line_start = 0;
                            let head = std::mem::take(&mut self.head);
                            if !self.head_done(&head) {
                                return;
                            }
                            self.head = head;
                            self.head.clear();
                        }
                    }
                }
                St::Body(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.st = if n == take {
                        St::Head
                    } else {
                        St::Body(n - take)
                    };
                }
                St::ChunkSize | St::Trailers | St::ChunkDataEnd => {
                    let Some(nl) = memchr::memchr(b'\n', buf) else {
                        self.line.extend_from_slice(buf);
                        if self.line.len() > 4096 {
                            self.fail(BAD_CHUNK);
                        }
                        return;
                    };
                    self.line.extend_from_slice(&buf[..=nl]);
                    buf = &buf[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    if line.len() < 2 || line[line.len() - 2] != b'\r' {
                        self.fail(BAD_CHUNK);
                        return;
                    }
                    let content = &line[..line.len() - 2];
                    match self.st {
                        St::ChunkDataEnd => {
                            if !content.is_empty() {
                                self.fail(BAD_CHUNK);
                                return;
                            }
                            self.st = St::ChunkSize;
                        }
                        St::Trailers => {
                            if content.is_empty() {
                                self.st = St::Head;
                            } else if content
                                .iter()
                                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
                            {
                                self.fail(BAD_CHUNK);
                                return;
                            }
                        }
                        _ => {
                            let size_part = content.split(|&b| b == b';').next().unwrap_or(b"");
                            let size_part = trim_ows(size_part);
                            if size_part.is_empty()
                                || size_part.len() > 15
                                || !size_part.iter().all(|b| b.is_ascii_hexdigit())
                            {
                                self.fail(BAD_CHUNK);
                                return;
                            }
                            let mut n: u64 = 0;
                            for &b in size_part {
                                n = n * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                            }
                            self.st = if n == 0 {
                                St::Trailers
                            } else {
                                St::ChunkData(n)
                            };
                        }
                    }
                }
                St::ChunkData(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.st = if n == take {
                        St::ChunkDataEnd
                    } else {
                        St::ChunkData(n - take)
                    };
                }
            }
        }
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Byte classes for the head check, one table lookup per byte.
const TCHAR: u8 = 1;
const CTL: u8 = 2;

/// The bytes that are ASCII letters or digits or one of `extra`, as a table (for the
/// character classes of HTTP and URI syntax: token characters, path characters).
pub(crate) const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
}

const fn byte_classes() -> [u8; 256] {
    let tchar = alnum_and(b"!#$%&'*+-.^_`|~");
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if tchar[i] {
            t[i] = TCHAR;
        }
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            t[i] = CTL;
        }
        i += 1;
    }
    t
}

static CLASSES: [u8; 256] = byte_classes();

fn is_tchar(b: u8) -> bool {
    CLASSES[b as usize] == TCHAR
}

enum InPlace {
    /// The head ends this many bytes in.
    Complete(usize),
    /// Its lines so far exceed the head limit.
    TooLarge,
    /// No end yet.
    Partial,
}

/// Where the head at the start of `buf` ends (just past its empty line). The limit counts
/// the whole head, its empty line included, as when the head is gathered across reads.
fn head_in(buf: &[u8], max_head: usize) -> InPlace {
    let mut at = 0;
    while let Some(nl) = memchr::memchr(b'\n', &buf[at..]) {
        let line_len = nl + 1;
        let empty = line_len == 1 || (line_len == 2 && buf[at] == b'\r');
        at += line_len;
        if at > max_head {
            return InPlace::TooLarge;
        }
        if empty {
            return InPlace::Complete(at);
        }
    }
    InPlace::Partial
}

/// The first control character of `line` (HTAB is not one), eight bytes at a time: a word
/// with no byte below 0x20 and none equal to 0x7f (the usual zero-byte test on `x` and on
/// `x ^ 0x7f..`) is skipped whole; any other word is looked at byte by byte.
fn first_ctl(line: &[u8]) -> Option<u8> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = line.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let del = x ^ (ONES * 0x7f);
        if (x.wrapping_sub(ONES * 0x20) & !x | del.wrapping_sub(ONES) & !del) & HIGH != 0 {
            if let Some(&c) = w.iter().find(|&&c| CLASSES[c as usize] == CTL) {
                return Some(c);
            }
        }
    }
    words
        .remainder()
        .iter()
        .find(|&&c| CLASSES[c as usize] == CTL)
        .copied()
}

/// Check one complete request head (request line + headers + empty line), in one pass over
/// its lines and without allocating.
pub(crate) fn check_head(head: &[u8], max_request_line: usize) -> Result<Framing, Violation> {
    check_head_visit(head, max_request_line, |_, _, _| {}, |_, _| {})
}

/// [`check_head`], handing what it finds to the caller as it goes: the request line's method,
/// target and whether it is HTTP/1.0, then each header's name and value (without surrounding
/// whitespace). Everything handed over has passed the checks of its line; the head as a whole
/// is valid only if `Ok` comes back. Rampart's own HTTP/1.1 server builds its request from
/// these, so a head is read once.
pub(crate) fn check_head_visit<'h>(
    head: &'h [u8],
    max_request_line: usize,
    mut on_request_line: impl FnMut(&'h [u8], &'h [u8], bool),
    mut on_header: impl FnMut(&'h [u8], &'h [u8]),
) -> Result<Framing, Violation> {
    let mut content_length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut http10 = false;
    let mut first = true;
    let mut rest = head;
    while !rest.is_empty() {
        let Some(nl) = memchr::memchr(b'\n', rest) else {
            return Err(BAD_REQUEST_LINE);
        };
        if nl == 0 || rest[nl - 1] != b'\r' {
            return Err(BARE_LF);
        }
        let line = &rest[..nl - 1];
        rest = &rest[nl + 1..];
        // Control characters (CR included: a CR inside a line is a bare CR).
        if let Some(b) = first_ctl(line) {
            return Err(if b == b'\r' { BARE_CR } else { CTL_CHAR });
        }
        if first {
            first = false;
            if line.len() > max_request_line {
                return Err(LONG_REQUEST_LINE);
            }
            let mut parts = line.split(|&b| b == b' ');
            let (Some(method), Some(target), Some(version), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(BAD_REQUEST_LINE);
            };
            if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() {
                return Err(BAD_REQUEST_LINE);
            }
            http10 = match version {
                b"HTTP/1.1" => false,
                b"HTTP/1.0" => true,
                _ => return Err(BAD_REQUEST_LINE),
            };
            on_request_line(method, target, http10);
            continue;
        }
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(OBS_FOLD);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(BAD_HEADER_NAME);
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BAD_HEADER_NAME);
        }
        // Only two names matter for framing; compare lengths first.
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            let value = trim_ows(&line[colon + 1..]);
            for item in value.split(|&b| b == b',') {
                let item = trim_ows(item);
                if item.is_empty() || item.len() > 18 || !item.iter().all(|b| b.is_ascii_digit()) {
                    return Err(CL_CONFLICT);
                }
                let n = item.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64);
                match content_length {
                    Some(prev) if prev != n => return Err(CL_CONFLICT),
                    _ => content_length = Some(n),
                }
            }
        } else if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te.is_some() {
                return Err(TE_NOT_CHUNKED);
            }
            te = Some(trim_ows(&line[colon + 1..]));
        }
        on_header(name, trim_ows(&line[colon + 1..]));
    }
    if first {
        return Err(BAD_REQUEST_LINE);
    }
    match (content_length, te) {
        (Some(_), Some(_)) => Err(CL_AND_TE),
        (_, Some(t)) => {
            if http10 {
                Err(TE_HTTP10)
            } else if t.eq_ignore_ascii_case(b"chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(TE_NOT_CHUNKED)
            }
        }
        (Some(n), None) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::None),
    }
}

/// A client stream whose inbound bytes pass through a [`Scanner`].
pub struct ScanIo<T> {
    inner: T,
    scanner: Option<Scanner>,
    /// HTTP/2 frame watch: from the start (TLS with ALPN h2), or from the moment the HTTP/1
    /// scanner sees an h2c prior-knowledge preface.
    h2: Option<H2Watch>,
    /// Bytes read so far, while the HTTP/1 scanner runs (to place the h2c preface).
    seen: usize,
    /// Bytes already read (and scanned) that the next reader gets first: what a finished
    /// HTTP/1 connection had not parsed yet, or what arrived while the connection held no
    /// HTTP state (see `server::serve_h1`).
    prefix: Bytes,
}

impl<T> ScanIo<T> {
    pub fn new(inner: T, scanner: Option<Scanner>) -> Self {
        ScanIo {
            inner,
            scanner,
            h2: None,
            seen: 0,
            prefix: Bytes::new(),
        }
    }

    /// True when read bytes are waiting for the next reader.
    pub(crate) fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// Hand back bytes that were read and scanned but not consumed.
    pub(crate) fn set_prefix(&mut self, bytes: Bytes) {
        // The bytes only, not the buffer they were read into: hyper's read buffer (8 KiB or
        // more) would otherwise stay allocated by every idle connection, even for no bytes.
        self.prefix = if bytes.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&bytes)
        };
    }

    /// The stream stops being HTTP (an upgrade): no more scanning or frame watching.
    pub(crate) fn stop_scanning(&mut self) {
        self.scanner = None;
        self.h2 = None;
    }

    /// Watch the stream as HTTP/2 frames.
    pub fn with_h2(mut self, watch: H2Watch) -> Self {
        self.h2 = Some(watch);
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ScanIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            bytes::Buf::advance(&mut this.prefix, n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !matches!(r, Poll::Ready(Ok(()))) {
            return r;
        }
        let new = &buf.filled()[before..];
        if let Some(s) = this.scanner.as_mut() {
            s.feed(new);
            if matches!(s.st, St::Off) {
                if s.h2_prior {
                    if let Some(a) = s.activity.clone() {
                        this.h2 = Some(H2Watch::new(a, PREFACE_LEN.saturating_sub(this.seen)));
                    }
                }
                this.scanner = None;
            } else {
                this.seen = this.seen.saturating_add(new.len());
            }
        }
        if let Some(w) = this.h2.as_mut() {
            w.feed(new);
        }
        r
    }
}

impl<T: AsyncRead + Unpin> ScanIo<T> {
    /// Wait for the next bytes without an HTTP connection's buffers: read (and scan) what
    /// arrives into a small buffer that lives only during the poll, and keep it for the next
    /// reader. `Ok(0)` is end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; 2048];
        let mut rb = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *self).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n > 0 {
                    self.prefix = Bytes::copy_from_slice(rb.filled());
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ScanIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<Option<Violation>> {
        let st = Arc::new(ScanState::default());
        let mut s = Scanner::new(st.clone(), Arc::new(ConnActivity::new()), 65536, 8192);
        for c in chunks {
            s.feed(c);
        }
        let q = st.queue.lock().unwrap();
        q.iter().cloned().collect()
    }

    #[test]
    fn clean_pipeline_with_bodies() {
        let r = scan(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
            b"loPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /z HTTP/1.1\r\n",
            b"Host: a\r\n\r\n",
        ]);
        assert_eq!(r, vec![None, None, None, None]);
    }

    #[test]
    fn each_smuggling_shape_is_caught() {
        let cases: &[(&[u8], Violation)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", CL_AND_TE),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", CL_CONFLICT),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", CL_CONFLICT),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", CL_CONFLICT),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", TE_NOT_CHUNKED),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", TE_NOT_CHUNKED),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", TE_NOT_CHUNKED),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", OBS_FOLD),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", BARE_LF),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", BARE_CR),
            (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", CTL_CHAR),
            (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", BAD_HEADER_NAME),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD_HEADER_NAME),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", BAD_REQUEST_LINE),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BAD_REQUEST_LINE),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TE_HTTP10),
        ];
        for (raw, want) in cases {
            assert_eq!(
                scan(&[raw]),
                vec![Some(*want)],
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// The same bytes fed in one read (head checked in place) and one byte per read (head
    /// gathered across reads) give the same answers.
    #[test]
    fn heads_read_whole_or_in_pieces_agree() {
        fn scan_with(chunks: &[&[u8]], max_head: usize) -> Vec<Option<Violation>> {
            let st = Arc::new(ScanState::default());
            let mut s = Scanner::new(st.clone(), Arc::new(ConnActivity::new()), max_head, 8192);
            for c in chunks {
                s.feed(c);
            }
            let q = st.queue.lock().unwrap();
            q.iter().cloned().collect()
        }
        let heads: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x7fb\r\nX-Long-Header-Name: with\ta tab\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Some-Header: 0123456789abcdef\x01\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        for raw in heads {
            let pieces: Vec<&[u8]> = raw.chunks(1).collect();
            for max_head in [16, 30, 31, 32, 45, 65536] {
                assert_eq!(
                    scan_with(&[raw], max_head),
                    scan_with(&pieces, max_head),
                    "{} (max_head {max_head})",
                    String::from_utf8_lossy(raw)
                );
            }
        }
    }

    #[test]
    fn first_ctl_finds_what_a_byte_scan_finds() {
        for len in 0..40 {
            for at in 0..=len {
                for &c in &[0u8, 0x1f, 0x7f, b'\r', b'\t'] {
                    let mut line: Vec<u8> = (0..len).map(|i| b"aZ \t~\x80\xff:/"[i % 9]).collect();
                    if at < len {
                        line[at] = c;
                    }
                    let want = line.iter().find(|&&b| CLASSES[b as usize] == CTL).copied();
                    assert_eq!(first_ctl(&line), want, "{line:?}");
                }
            }
        }
    }

    #[test]
    fn malformed_chunks_and_long_lines() {
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
            vec![None]
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n"]),
            vec![None]
        );
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(scan(&[&long]), vec![Some(LONG_REQUEST_LINE)]);
    }
}
