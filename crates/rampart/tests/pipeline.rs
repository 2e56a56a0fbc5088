//! The guard contract, exercised with guards written here: request-body inspection (opt-in
//! buffering within a limit), async verdicts, response-body rewriting, monitor mode, and the
//! order of phases.

mod common;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use rampart_core::guard::{Guard, Mode, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;
use std::sync::{Arc, Mutex};

/// Refuses bodies that contain "evil"; asks to see at most 1 KiB.
struct BodyInspector;
impl Guard for BodyInspector {
    fn name(&self) -> &'static str {
        "body_inspector"
    }
    fn request_body_limit(&self, _: &RequestHead, _: &RequestContext) -> Option<usize> {
        Some(1024)
    }
    fn on_request_body<'a>(
        &'a self,
        _: &'a RequestHead,
        body: &'a mut Bytes,
        _: &'a mut RequestContext,
    ) -> Step<'a> {
        if body.windows(4).any(|w| w == b"evil") {
            Verdict::Block(Block::new(
                StatusCode::FORBIDDEN,
                "evil_body",
                "body contains evil",
            ))
            .into()
        } else {
            Verdict::Continue.into()
        }
    }
}

/// Decides after an await (as a guard calling Redis or a key server would).
struct AsyncTagger;
impl Guard for AsyncTagger {
    fn name(&self) -> &'static str {
        "async_tagger"
    }
    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        Step::Pending(Box::pin(async move {
            tokio::task::yield_now().await;
            req.headers
                .insert("x-tagged", ctx.request_id.parse().unwrap());
            Verdict::Continue
        }))
    }
}

/// Masks "secret" in response bodies.
struct Masker;
impl Guard for Masker {
    fn name(&self) -> &'static str {
        "masker"
    }
    fn response_body_limit(&self, _: &http::response::Parts, _: &RequestContext) -> Option<usize> {
        Some(64 * 1024)
    }
    fn on_response_body(
        &self,
        _: &mut http::response::Parts,
        body: &mut Bytes,
        _: &mut RequestContext,
    ) -> Verdict {
        let text = String::from_utf8_lossy(body).replace("secret", "******");
        *body = Bytes::from(text);
        Verdict::Continue
    }
}

/// Blocks everything, but in monitor mode; records the phases it saw.
struct Watcher(Arc<Mutex<Vec<&'static str>>>);
impl Guard for Watcher {
    fn name(&self) -> &'static str {
        "watcher"
    }
    fn mode(&self) -> Mode {
        Mode::Monitor
    }
    fn on_request_headers<'a>(
        &'a self,
        _: &'a mut RequestHead,
        _: &'a mut RequestContext,
    ) -> Step<'a> {
        self.0.lock().unwrap().push("request_headers");
        Verdict::Block(Block::new(StatusCode::FORBIDDEN, "would_block", "watching")).into()
    }
    fn on_response_headers(
        &self,
        _: &mut http::response::Parts,
        _: &mut RequestContext,
    ) -> Verdict {
        self.0.lock().unwrap().push("response_headers");
        Verdict::Continue
    }
    fn on_log(&self, ctx: &mut RequestContext, _status: u16) {
        // The first request is only watched: its verdict is "monitored", with one event.
        let mut p = self.0.lock().unwrap();
        if p.len() == 2 && ctx.verdict == "monitored" && ctx.events.len() == 1 {
            p.push("log");
        } else if p.len() == 2 {
            p.push("log with unexpected verdict");
        }
    }
}

async fn start(yaml: &str, phases: Arc<Mutex<Vec<&'static str>>>) -> Arc<rampart_core::Gateway> {
    let lc = rampart::load_text(yaml, "pipeline.yaml", &std::env::temp_dir()).unwrap();
    let builder: Arc<rampart_core::GuardBuilder> =
        Arc::new(move |lc: &rampart_config::LoadedConfig| {
            let mut g = rampart_guards::build(lc)?;
            for chain in &mut g.routes {
                chain.push(Arc::new(Watcher(phases.clone())));
                chain.push(Arc::new(AsyncTagger));
                chain.push(Arc::new(BodyInspector));
                chain.push(Arc::new(Masker));
            }
            Ok(g)
        });
    rampart_core::Gateway::start(lc, builder, rampart_telemetry::LogSink::off())
        .await
        .unwrap()
}

#[tokio::test]
async fn guards_see_bodies_decide_async_and_rewrite_responses() {
    let up = TestUpstream::start().await;
    let phases = Arc::new(Mutex::new(Vec::new()));
    let gw = start(&config(up.addr, "", ""), phases.clone()).await;
    let addr = gw.listen_addrs()[0];
    let c = client();

    // Allowed body: forwarded whole, tagged by the async guard; the echoed response mentions
    // the header "x-secret-note" which the masker rewrites.
    let (s, h, body) = send(
        &c,
        addr,
        "POST",
        "/p",
        &[("x-secret-note", "1")],
        b"{\"ok\":true}",
    )
    .await;
    assert_eq!(s, 200);
    let seen = up.last();
    assert_eq!(seen.body_len, 11);
    assert_eq!(seen.headers["x-tagged"], h["x-request-id"]);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("x-******-note") && !text.contains("secret"),
        "{text}"
    );
    assert_eq!(
        h["content-length"].to_str().unwrap(),
        body.len().to_string()
    );

    // Refused by the body guard: the upstream never sees it.
    let before = up.count();
    let (s, _, body) = send(&c, addr, "POST", "/p", &[], b"some evil payload").await;
    assert_eq!(s, 403);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["title"], "Forbidden");
    assert!(
        !String::from_utf8_lossy(&body).contains("evil"),
        "no internals in the answer"
    );
    assert_eq!(up.count(), before);

    // Larger than the inspection limit: 413, not forwarded uninspected.
    let (s, _, _) = send(&c, addr, "POST", "/p", &[], &vec![b'a'; 4096]).await;
    assert_eq!(s, 413);
    assert_eq!(up.count(), before);

    // The monitor-mode guard saw the phases in order and never blocked.
    let p = phases.lock().unwrap().clone();
    assert_eq!(&p[..3], &["request_headers", "response_headers", "log"]);
}
