//! Body types for both directions. Bodies stream frame by frame; only a guard that asks for a
//! body gets it buffered, within a limit.

use crate::h1client::LeanBody;
use crate::upstream::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Errors a body can produce while streaming.
#[derive(Debug)]
pub enum BodyError {
    /// The client sent more than the route allows.
    TooLarge(u64),
    /// The underlying stream failed.
    Hyper(hyper::Error),
    /// The body did not match its framing (say, shorter than its Content-Length).
    Other(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(n) => write!(f, "request body exceeds the limit of {n} bytes"),
            BodyError::Hyper(e) => write!(f, "{e}"),
            BodyError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => Some(e),
            BodyError::TooLarge(_) | BodyError::Other(_) => None,
        }
    }
}

/// A request body as the client sends it: read by hyper (HTTP/2, TLS and h2c connections) or
/// by Rampart's own HTTP/1.1 server ([`crate::h1server`]).
pub enum InBody {
    Hyper(Incoming),
    Lean(crate::h1server::ServerBody),
}

impl Body for InBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            InBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Hyper),
            InBody::Lean(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InBody::Hyper(b) => b.is_end_stream(),
            InBody::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InBody::Hyper(b) => b.size_hint(),
            InBody::Lean(b) => b.size_hint(),
        }
    }
}

/// The body sent upstream: nothing, a buffered body, or the client's body streamed through a
/// byte limit.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Stream {
        first: Option<Frame<Bytes>>,
        inner: InBody,
        seen: Arc<AtomicU64>,
        limit: Option<u64>,
    },
}

impl ReqBody {
    /// True when the body can be sent again (for a retry).
    pub fn replayable(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => Some(ReqBody::Full(b.clone())),
            ReqBody::Stream { .. } => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream {
                first,
                inner,
                seen,
                limit,
            } => {
                if let Some(f) = first.take() {
                    return Poll::Ready(Some(Ok(f)));
                }
                match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            let total =
                                seen.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
                            if let Some(l) = limit {
                                if total > *l {
                                    return Poll::Ready(Some(Err(BodyError::TooLarge(*l))));
                                }
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream { first, inner, .. } => first.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            ReqBody::Stream { first, inner, .. } => {
                let extra = first
                    .as_ref()
                    .and_then(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .unwrap_or(0);
                let h = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + extra);
                if let Some(u) = h.upper() {
                    out.set_upper(u + extra);
                }
                out
            }
        }
    }
}

/// An upstream's response body: from hyper's client (TLS, HTTP/2, upgrades) or from Rampart's
/// own HTTP/1.1 client.
pub enum UpBody {
    Hyper(Incoming),
    Lean(LeanBody),
}

/// The error a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::Lean(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Hyper(b) => b.is_end_stream(),
            UpBody::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Hyper(b) => b.size_hint(),
            UpBody::Lean(b) => b.size_hint(),
        }
    }
}

/// Called once when a response body is finished or dropped, with the bytes sent.
pub type OnDone = Box<dyn FnOnce(u64, bool) + Send>;

/// The body sent to the client. It counts bytes and runs the log phase when it ends.
pub struct RespBody {
    kind: RespKind,
    sent: u64,
    on_done: Option<OnDone>,
    /// Released when the body ends (e.g. the upstream's in-flight slot).
    _hold: Option<InFlight>,
}

enum RespKind {
    Full(Option<Bytes>),
    Upstream(UpBody),
}

impl RespBody {
    pub fn full(b: Bytes) -> Self {
        RespBody {
            kind: RespKind::Full(if b.is_empty() { None } else { Some(b) }),
            sent: 0,
            on_done: None,
            _hold: None,
        }
    }
    pub fn upstream(b: UpBody) -> Self {
        RespBody {
            kind: RespKind::Upstream(b),
            sent: 0,
            on_done: None,
            _hold: None,
        }
    }
    pub fn hold(mut self, h: InFlight) -> Self {
        self._hold = Some(h);
        self
    }
    pub fn on_done(mut self, f: OnDone) -> Self {
        self.on_done = Some(f);
        self
    }
    fn finish(&mut self, complete: bool) {
        if let Some(mut h) = self._hold.take() {
            if complete {
                h.completed();
            }
        }
        if let Some(f) = self.on_done.take() {
            f(self.sent, complete);
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = match &mut this.kind {
            RespKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespKind::Upstream(inc) => Pin::new(inc).poll_frame(cx),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RespKind::Full(b) => b.is_none(),
            RespKind::Upstream(i) => i.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Full(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            RespKind::Upstream(i) => i.size_hint(),
        }
    }
}
