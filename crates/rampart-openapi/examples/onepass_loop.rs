//! Checks the shared harness's JSON order body N times against `bench/harness-openapi.yaml`
//! with the one-pass check, for counting instructions with valgrind (instruction counts repeat
//! exactly for the same binary, where time on a shared VM varies by ±15 %):
//!
//! ```sh
//! cargo build --release -p rampart-openapi --example onepass_loop
//! for n in 1000 2000; do valgrind --tool=callgrind target/release/examples/onepass_loop $n; done
//! ```
//!
//! Per body = (count for 2000 - count for 1000) / 1000.

use rampart_openapi::api::compile;
use rampart_openapi::spec::Docs;
use std::path::Path;

const BODY: &[u8] = br#"{"customer":{"id":"c_81724","name":"Maria Garcia","email":"maria.garcia@example.com","phone":"+1-415-555-0142"},"shipping":{"line1":"742 Evergreen Terrace","line2":"Apt 3B","city":"Springfield","postal_code":"97403","country":"US"},"items":[{"sku":"SKU-10023","name":"Trail running shoes","qty":2,"unit_price":89.99},{"sku":"SKU-20417","name":"Water bottle, 750 ml","qty":1,"unit_price":14.5}],"coupon":"WELCOME10","currency":"USD","gift":false,"notes":"Please leave the parcel at the back door if nobody answers."}"#;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/harness-openapi.yaml");
    let docs = match Docs::load(&spec) {
        Ok(d) => d,
        Err(e) => return eprintln!("{}: {e:?}", spec.display()),
    };
    let api = match compile(&docs, None) {
        Ok(a) => a,
        Err(e) => return eprintln!("{e:?}"),
    };
    let Some(schema) = api
        .ops
        .iter()
        .filter_map(|o| o.body.as_ref())
        .find_map(|b| b.media.first().and_then(|m| m.1.schema.as_ref()))
    else {
        return eprintln!("no request body schema in {}", spec.display());
    };
    let Some(pass) = schema.onepass.as_ref() else {
        return eprintln!("the one pass does not take this schema");
    };
    let valid = (0..n)
        .filter(|_| pass.is_valid(std::hint::black_box(BODY)))
        .count();
    println!("{valid} of {n} valid");
}
