//! The OpenAPI guard's fast JSON path against the full one, on arbitrary bytes: the tape parser
//! must never accept a body `parse_strict` refuses, must read the same value when both accept,
//! and must accept everything `parse_strict` accepts short of its lower nesting limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_openapi::tape;

fuzz_target!(|data: &[u8]| {
    let full = rampart_core::json::parse_strict(data);
    match (tape::parse(data), full) {
        (Ok(doc), Ok(v)) => assert_eq!(doc.to_value(), v),
        (Ok(_), Err(e)) => panic!("tape accepted what the full parser refuses: {e}"),
        (Err(_), Ok(v)) => assert!(depth(&v) >= 99, "tape refused a body the full parser reads"),
        (Err(_), Err(_)) => {}
    }
});

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
