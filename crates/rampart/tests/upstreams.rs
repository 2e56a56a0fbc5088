//! Upstream failures map to clear statuses and the client never hangs; round-robin and
//! passive health; in-flight cap; streaming with bounded memory.

mod common;
use common::*;

async fn dead_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[tokio::test]
async fn refused_then_ejected_then_recovers() {
    let dead = dead_port().await;
    let gw = gateway(&config(dead, "", "")).await;
    let addr = gw.listen_addrs()[0];
    let (s, _, _) = send(&client(), addr, "POST", "/x", &[], b"{}").await;
    assert_eq!(s, 502, "connection refused");
    let (s, h, _) = get(addr, "/x").await;
    assert_eq!(s, 503, "the only target is ejected");
    assert!(h.contains_key("retry-after"));
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("rampart_upstream_errors_total{upstream=\"api\",kind=\"connect\"}"),
        "{m}"
    );
    assert!(
        m.contains("rampart_upstream_errors_total{upstream=\"api\",kind=\"unavailable\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn response_timeout_is_504() {
    let up = TestUpstream::start().await;
    let gw = gateway(&config(up.addr, "", "")).await;
    let (s, _, _) = get(gw.listen_addrs()[0], "/slow").await;
    assert_eq!(s, 504);
}

#[tokio::test]
async fn request_timeout_earlier_than_the_response_timeout_is_504() {
    // The request's own deadline (300 ms) comes before the upstream's response timeout (1 s):
    // it is the one that ends the wait, and it is counted as such.
    let up = TestUpstream::start().await;
    let top = "server:\n  timeouts:\n    request: 300ms\n";
    let gw = gateway(&config(up.addr, "", top)).await;
    let (s, _, _) = get(gw.listen_addrs()[0], "/slow").await;
    assert_eq!(s, 504);
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("rampart_upstream_errors_total{upstream=\"api\",kind=\"request_timeout\"} 1"),
        "{m}"
    );
    assert!(
        !m.contains("kind=\"timeout\""),
        "the response timeout did not fire: {m}"
    );
}

#[tokio::test]
async fn round_robin_skips_a_dead_target_and_retries_idempotent_requests() {
    let up = TestUpstream::start().await;
    let dead = dead_port().await;
    let yaml = config(up.addr, "", "").replace(
        &format!("targets: [\"http://{}\"]", up.addr),
        &format!("targets: [\"http://{dead}\", \"http://{}\"]", up.addr),
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    for _ in 0..6 {
        let (s, _, _) = get(addr, "/rr").await;
        assert_eq!(s, 200, "GET is retried on the live target");
    }
    assert_eq!(up.count(), 6);
}

#[tokio::test]
async fn in_flight_cap_gives_503() {
    let up = TestUpstream::start().await;
    let yaml = config(up.addr, "", "").replace(
        "response_timeout: 1s",
        "response_timeout: 10s\n    max_in_flight: 1",
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let slow = tokio::spawn(async move { get(addr, "/slow").await.0 });
    // Wait until the slow request is in flight at the upstream.
    up.wait_for(1).await;
    let (s, h, _) = get(addr, "/fast").await;
    assert_eq!(s, 503);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn large_bodies_stream_with_bounded_memory() {
    let up = TestUpstream::start().await;
    let route = "    limits:\n      max_body_bytes: 1GiB\n";
    let yaml = config(up.addr, route, "").replace("response_timeout: 1s", "response_timeout: 60s");
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    const SIZE: u64 = 256 * 1024 * 1024;
    let before = rss_kib();
    // Download.
    let resp = client()
        .request(
            http::Request::get(format!("http://{addr}/big/{SIZE}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
        got += f.unwrap().data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(got, SIZE);
    // Upload, streamed from a generator (chunked).
    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let n = SIZE / chunk.len() as u64;
    let stream = futures_util_stream(chunk, n);
    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let c: hyper_util::client::legacy::Client<_, http_body_util::StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().body_len, SIZE);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB while streaming 2 x 256 MiB"
    );
}

fn futures_util_stream(
    chunk: bytes::Bytes,
    n: u64,
) -> impl futures_core::Stream<
    Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
> + Send
       + Unpin {
    struct S(bytes::Bytes, u64);
    impl futures_core::Stream for S {
        type Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.1 == 0 {
                return std::task::Poll::Ready(None);
            }
            self.1 -= 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.0.clone()))))
        }
    }
    S(chunk, n)
}
