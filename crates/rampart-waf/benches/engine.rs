//! The WAF engine per request kind, with the real CRS v4 at paranoia level 1 (blocking), as
//! `rampart proxy --crs` runs it: a browser-like GET with a query, a 1 KB JSON POST, and the
//! end-to-end benchmark's 0.5 KB JSON order (`../shared/bench/wrk/post_json.lua`).
//! Also reports CRS load time. Run: `cargo bench -p rampart-waf`.

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_waf::{load_crs, CrsOptions, Transaction};
use std::sync::Arc;

// The allocator the `rampart` binary uses, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: rampart_core::alloc::Mimalloc = rampart_core::alloc::Mimalloc;

mod common;
use common::headers;

fn bench(c: &mut Criterion) {
    let crs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let t = std::time::Instant::now();
    let rs = Arc::new(load_crs(&CrsOptions::new(&crs)).expect("CRS loads"));
    eprintln!(
        "CRS v4 load + compile: {:?} ({} rules)",
        t.elapsed(),
        rs.rules.len()
    );
    let peer = "10.1.2.3:50000".parse().unwrap();
    let local = "10.0.0.1:8080".parse().unwrap();
    c.bench_function("crs_pl1_get_query", |b| {
        b.iter(|| {
            let mut tx = Transaction::new(rs.clone());
            tx.request_head(
                b"GET",
                common::GET_TARGET,
                b"HTTP/1.1",
                headers().into_iter(),
                peer,
                local,
                "bench",
            );
            tx.phase(1);
            // As the guard does: the body phase runs with an empty body when there is none.
            tx.request_body(b"");
            tx.phase(2);
            assert!(tx.interruption.is_none());
        })
    });
    let body = common::json_body();
    let mut h = headers();
    h.push((b"content-type", b"application/json"));
    post(
        c,
        "crs_pl1_json_post_1k",
        &rs,
        b"/v1/orders",
        &h,
        body.as_bytes(),
    );
    let order = common::order_headers();
    let o = common::ORDER_BODY.as_bytes();
    post(c, "crs_pl1_json_order", &rs, b"/api/v1/orders", &order, o);
}

/// One benchmark of a POST through both request phases, as the guard runs them.
fn post(
    c: &mut Criterion,
    name: &str,
    rs: &Arc<rampart_waf::RuleSet>,
    target: &[u8],
    headers: &[(&'static [u8], &'static [u8])],
    body: &[u8],
) {
    let peer = "10.1.2.3:50000".parse().unwrap();
    let local = "10.0.0.1:8080".parse().unwrap();
    c.bench_function(name, |b| {
        b.iter(|| {
            let mut tx = Transaction::new(rs.clone());
            tx.request_head(
                b"POST",
                target,
                b"HTTP/1.1",
                headers.iter().copied(),
                peer,
                local,
                "bench",
            );
            tx.phase(1);
            tx.request_body(body);
            tx.phase(2);
            assert!(tx.interruption.is_none());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
