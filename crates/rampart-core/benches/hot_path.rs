//! Micro-benchmarks of the per-request work the core adds before a request is forwarded:
//! the raw HTTP/1 head scan and path normalization.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rampart_config::PathPolicy;
use rampart_core::h1scan::{ScanState, Scanner};
use rampart_core::server::ConnActivity;
use std::sync::Arc;

const GET: &[u8] = b"GET /api/v1/users/42?fields=name,email,plan&expand=orders&page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: wrk\r\nAccept: application/json\r\nAuthorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl\r\nX-Request-Id: 0123456789abcdef\r\n\r\n";

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("h1scan");
    g.throughput(Throughput::Bytes(GET.len() as u64));
    let state = Arc::new(ScanState::default());
    let mut s = Scanner::new(state.clone(), Arc::new(ConnActivity::new()), 65536, 16384);
    g.bench_function("typical_get_head", |b| {
        b.iter(|| {
            s.feed(black_box(GET));
            black_box(state.take())
        })
    });
    let mut post = b"POST /api/v1/orders HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: 600\r\n\r\n".to_vec();
    post.extend(std::iter::repeat_n(b'x', 600));
    g.throughput(Throughput::Bytes(post.len() as u64));
    g.bench_function("post_head_and_600b_body", |b| {
        b.iter(|| {
            s.feed(black_box(&post));
            black_box(state.take())
        })
    });
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let policy = PathPolicy::default();
    let mut g = c.benchmark_group("path");
    g.bench_function("normalize_plain", |b| {
        b.iter(|| rampart_core::path::normalize(black_box("/api/v1/users/42/orders"), &policy))
    });
    g.bench_function("normalize_encoded_dots", |b| {
        b.iter(|| {
            rampart_core::path::normalize(black_box("/api/v1/%2e%2e/users/./42/%7Euser"), &policy)
        })
    });
    g.finish();
}

criterion_group!(benches, scan, normalize);
criterion_main!(benches);
