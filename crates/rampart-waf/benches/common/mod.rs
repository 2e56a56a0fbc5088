//! The requests the engine benchmarks run, shared by `benches/engine.rs` (criterion) and
//! `examples/engine_loop.rs` (instruction counts).

/// GET target with a query of three arguments.
pub const GET_TARGET: &[u8] = b"/v1/users?page=2&sort=name&q=ann%20smith";

/// A browser-like set of request headers, with a cookie.
pub fn headers() -> Vec<(&'static [u8], &'static [u8])> {
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

/// A ~1 KB JSON order: 12 items and a customer (38 JSON arguments).
pub fn json_body() -> String {
    let mut body = String::from("{\"items\":[");
    for i in 0..12 {
        body.push_str(&format!(
            "{{\"sku\":\"SKU-{i:05}\",\"qty\":{i},\"note\":\"gift wrap please, thanks\"}},"
        ));
    }
    body.pop();
    body.push_str("],\"customer\":{\"name\":\"Ann Smith\",\"email\":\"ann@example.com\"}}");
    body
}

/// The end-to-end benchmark's POST (`../shared/bench/wrk/post_json.lua`): its headers and its
/// ~0.6 KB JSON order, as `bench/waf.sh` sends them through the proxy.
pub fn order_headers() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b"host", b"api.example.com"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"user-agent", b"acme-mobile/3.2.1 (iPhone; iOS 17.1)"),
        (
            b"authorization",
            b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dGVzdHNpZ25hdHVyZQ",
        ),
        (b"content-length", b"515"),
    ]
}

/// The body `order_headers` goes with (its `content-length` says 515).
pub const ORDER_BODY: &str = r#"{"customer":{"id":"c_81724","name":"Maria Garcia","email":"maria.garcia@example.com","phone":"+1-415-555-0142"},"shipping":{"line1":"742 Evergreen Terrace","line2":"Apt 3B","city":"Springfield","postal_code":"97403","country":"US"},"items":[{"sku":"SKU-10023","name":"Trail running shoes","qty":2,"unit_price":89.99},{"sku":"SKU-20417","name":"Water bottle, 750 ml","qty":1,"unit_price":14.5}],"coupon":"WELCOME10","currency":"USD","gift":false,"notes":"Please leave the parcel at the back door if nobody answers."}"#;

const _: () = assert!(ORDER_BODY.len() == 515, "order_headers' content-length");
