//! Runs the WAF engine over one request kind N times, for counting instructions with valgrind
//! (`bench/waf-instructions.sh`): instruction counts repeat exactly for the same binary and
//! input, where wall-clock time on a shared VM varies by ±15 %. Same requests as the criterion
//! benchmark (`benches/engine.rs`): CRS v4 from ../shared/crs at paranoia level 1, blocking.
//!
//! `cargo run --release -p rampart-waf --example engine_loop -- get|post|order|none N`
//! (`order`: the end-to-end benchmark's POST, `../shared/bench/wrk/post_json.lua`)
//! (`REMOVE=ID ...` runs without the rules `SecRuleRemoveById ID` names)

#[global_allocator]
static GLOBAL: rampart_core::alloc::Mimalloc = rampart_core::alloc::Mimalloc;

#[path = "../benches/common/mod.rs"]
mod common;

use rampart_waf::{load_crs, CrsOptions, Transaction};
use std::sync::Arc;

fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let n: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    if !matches!(kind.as_str(), "get" | "post" | "order" | "none") {
        eprintln!("usage: engine_loop get|post|order|none [N]");
        std::process::exit(2);
    }
    let crs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let mut options = CrsOptions::new(&crs);
    // `REMOVE=920450` (rule ids as `SecRuleRemoveById` takes them): what one rule costs is
    // the difference it makes to the count.
    if let Ok(ids) = std::env::var("REMOVE") {
        options.exclusions.push((ids, None));
    }
    let rs = match load_crs(&options) {
        Ok(rs) => Arc::new(rs),
        Err(e) => {
            eprintln!("cannot load CRS: {e}");
            std::process::exit(1);
        }
    };
    let mut headers = common::headers();
    let mut body = common::json_body();
    if kind == "post" {
        headers.push((b"content-type", b"application/json"));
    }
    if kind == "order" {
        headers = common::order_headers();
        body = common::ORDER_BODY.to_string();
    }
    let (peer, local) = (
        std::net::SocketAddr::from(([10, 1, 2, 3], 50000)),
        std::net::SocketAddr::from(([10, 0, 0, 1], 8080)),
    );
    let t = std::time::Instant::now();
    for _ in 0..n {
        if kind == "none" {
            break;
        }
        let mut tx = Transaction::new(rs.clone());
        let (method, target): (&[u8], &[u8]) = if kind == "post" {
            (b"POST", b"/v1/orders")
        } else if kind == "order" {
            (b"POST", b"/api/v1/orders")
        } else {
            (b"GET", common::GET_TARGET)
        };
        let h = headers.clone().into_iter();
        tx.request_head(method, target, b"HTTP/1.1", h, peer, local, "bench");
        tx.phase(1);
        // As the guard does: the body phase runs with an empty body when there is none.
        tx.request_body(if kind == "get" { b"" } else { body.as_bytes() });
        tx.phase(2);
        if tx.interruption.is_some() {
            eprintln!("the benign request was blocked");
            std::process::exit(1);
        }
    }
    eprintln!("{kind}: {:?} per request", t.elapsed() / n.max(1));
}
