//! The WAF engine per request kind, with the real CRS v4 at paranoia level 1 (blocking), as
//! `rampart proxy --crs` runs it: a browser-like GET with a query, and a 1 KB JSON POST.
//! Also reports CRS load time. Run: `cargo bench -p rampart-waf`.

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_waf::{load_crs, CrsOptions, Transaction};
use std::sync::Arc;

// The allocator the `rampart` binary uses, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn headers() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b"host", b"api.example.com"),
        (
            b"user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (b"accept", b"application/json"),
        (b"accept-language", b"en-US,en;q=0.5"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"cookie", b"session=3f2a9c1e8b7d4a6f; theme=dark"),
    ]
}

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
                b"/v1/users?page=2&sort=name&q=ann%20smith",
                b"HTTP/1.1",
                headers().into_iter(),
                peer,
                local,
                "bench",
            );
            tx.phase(1);
            tx.phase(2);
            assert!(tx.interruption.is_none());
        })
    });
    let mut body = String::from("{\"items\":[");
    for i in 0..12 {
        body.push_str(&format!(
            "{{\"sku\":\"SKU-{i:05}\",\"qty\":{i},\"note\":\"gift wrap please, thanks\"}},"
        ));
    }
    body.pop();
    body.push_str("],\"customer\":{\"name\":\"Ann Smith\",\"email\":\"ann@example.com\"}}");
    let mut h = headers();
    h.push((b"content-type", b"application/json"));
    c.bench_function("crs_pl1_json_post_1k", |b| {
        b.iter(|| {
            let mut tx = Transaction::new(rs.clone());
            tx.request_head(
                b"POST",
                b"/v1/orders",
                b"HTTP/1.1",
                h.clone().into_iter(),
                peer,
                local,
                "bench",
            );
            tx.phase(1);
            tx.request_body(body.as_bytes());
            tx.phase(2);
            assert!(tx.interruption.is_none());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
