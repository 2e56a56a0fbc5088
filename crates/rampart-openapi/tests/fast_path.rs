//! The fast path (tape parser + validator over the tape) must decide exactly as the full path
//! (`parse_strict` + the `serde_json` validator) on every body the tape parses, and must never
//! accept a body the full path refuses; the one pass (`onepass`) must never accept what the full
//! path refuses, and accept what it accepts but for the cases it leaves to it. Bodies: valid orders and thousands of deterministic
//! mutations of them (wrong types, missing and extra properties, broken patterns, formats,
//! enums and bounds, `readOnly` properties, integers written as `2.0`, escaped keys, duplicate
//! keys, truncation).

use rampart_openapi::api::compile;
use rampart_openapi::spec::Docs;
use rampart_openapi::tape;
use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn spec() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {"/orders": {"post": {
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Order"}}}},
            "responses": {"201": {"description": "ok"}}
        }}},
        "components": {"schemas": {
            "Order": {
                "type": "object", "additionalProperties": false,
                "required": ["customer", "lines", "shipping"],
                "properties": {
                    "id": {"type": "integer", "readOnly": true},
                    "customer": {"type": "string", "format": "email", "maxLength": 40},
                    "note": {"type": "string", "nullable": true, "maxLength": 20},
                    "coupon": {"type": "string", "pattern": "^[A-Z0-9]{6,12}$"},
                    "created": {"type": "string", "format": "date-time"},
                    "ref": {"type": "string", "format": "uuid"},
                    "tags": {"type": "array", "maxItems": 3, "uniqueItems": true,
                             "items": {"type": "string", "minLength": 1}},
                    "meta": {"type": "object", "additionalProperties": {"type": "string"},
                             "maxProperties": 3},
                    "shipping": {"$ref": "#/components/schemas/Address"},
                    "lines": {"type": "array", "minItems": 1, "maxItems": 5,
                              "items": {"$ref": "#/components/schemas/Line"}},
                    "payment": {"oneOf": [
                        {"type": "object", "required": ["card"], "additionalProperties": false,
                         "properties": {"card": {"type": "string", "pattern": "^[0-9]{4}$"}}},
                        {"type": "object", "required": ["iban"], "additionalProperties": false,
                         "properties": {"iban": {"type": "string", "minLength": 5}}}
                    ]}
                }
            },
            "Line": {
                "type": "object", "additionalProperties": false, "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                    "unit_price": {"type": "number", "minimum": 0, "exclusiveMaximum": 1000,
                                   "multipleOf": 0.01},
                    "gift": {"type": "boolean"},
                    "kind": {"type": "string", "enum": ["std", "express", "é"]},
                    "code": {"enum": [1, 2.5, "x", null, true]}
                }
            },
            "Address": {
                "type": "object", "required": ["street", "country"],
                "properties": {
                    "street": {"type": "string", "maxLength": 10},
                    "country": {"type": "string", "enum": ["DE", "FR", "US"]},
                    "zip": {"type": "string", "minLength": 4, "maxLength": 6}
                }
            }
        }}
    })
}

fn valid(r: &mut Rng) -> Value {
    let lines: Vec<Value> = (0..1 + r.below(4))
        .map(|i| {
            let kind = ["std", "express", "é"][r.below(3)];
            let code =
                [json!(1), json!(2.5), json!("x"), Value::Null, json!(true)][r.below(5)].clone();
            json!({"sku": format!("ABC-{:04}", r.below(10_000)), "quantity": 1 + r.below(99),
                   "unit_price": (r.below(100_000) as f64) / 100.0, "gift": i % 2 == 0,
                   "kind": kind, "code": code})
        })
        .collect();
    json!({
        "customer": "a.b@example.com",
        "note": if r.below(2) == 0 { Value::Null } else { json!("leave at door") },
        "coupon": "WINTER2026",
        "created": "2026-11-23T10:00:00Z",
        "ref": "0b7e6a55-3c1b-4e5f-9a7b-2f4d3c2b1a00",
        "tags": ["a", "b"],
        "meta": {"k": "v"},
        "shipping": {"street": "Main 1", "country": "DE", "zip": "10115", "extra": 1},
        "lines": lines,
        "payment": if r.below(2) == 0 { json!({"card": "1234"}) } else { json!({"iban": "DE0012345"}) },
    })
}

/// Replacement values that break (or happen to satisfy) some keyword.
fn odd(r: &mut Rng) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(2.0),
        json!(2.5),
        json!(1e300),
        json!(100),
        json!(101),
        json!(0.001),
        json!(999.99),
        json!(1000),
        json!(""),
        json!("x"),
        json!("é"),
        json!("DE"),
        json!("de"),
        json!("ABC-12345"),
        json!("abc-1234"),
        json!("not an email"),
        json!("2026-13-40T99:00:00Z"),
        json!("0b7e6a55-3c1b-4e5f-9a7b-2f4d3c2b1a0z"),
        json!("🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀"),
        json!("a\"b\\c\nd\u{1}"),
        json!([]),
        json!(["a", "a"]),
        json!(["a", "b", "c", "d"]),
        json!({}),
        json!({"card": "1234", "iban": "DE0012345"}),
        json!({"card": "123"}),
        json!({"k": 1}),
        json!({"a": "1", "b": "2", "c": "3", "d": "4"}),
        json!(7),
        json!("std"),
        json!(1.0),
    ];
    pool[r.below(pool.len())].clone()
}

/// Apply one random mutation somewhere in `v`.
fn mutate(r: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(m) if !m.is_empty() && (depth < 3 && r.below(3) != 0) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[r.below(keys.len())];
            match r.below(6) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    let names = ["id", "extra", "quantity", "sku", "card", "zip", ""];
                    m.insert(names[r.below(names.len())].to_string(), odd(r));
                }
                2 => {
                    m.insert(k.clone(), odd(r));
                }
                _ => {
                    if let Some(c) = m.get_mut(k) {
                        mutate(r, c, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 3 && r.below(3) != 0 => match r.below(4) {
            0 => {
                a.pop();
            }
            1 => a.push(odd(r)),
            _ => {
                let i = r.below(a.len());
                mutate(r, &mut a[i], depth + 1);
            }
        },
        _ => *v = odd(r),
    }
}

/// Textual variants the tape must handle like serde: escaped keys and values, an integer
/// written as `2.0`, whitespace, a duplicated key, truncation.
fn render(r: &mut Rng, v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string(v).unwrap();
    match r.below(8) {
        0 => s = s.replacen("\"sku\"", "\"\\u0073ku\"", 1),
        1 => s = s.replacen("\"quantity\":", "\"quantity\":2.0,\"x\":", 1),
        2 => s = s.replace(',', " ,\n\t"),
        3 => {
            s = s.replacen(
                "\"customer\":",
                "\"customer\":\"x@example.com\",\"customer\":",
                1,
            )
        }
        4 => s = s.replacen("DE", "D\\u0045", 1),
        5 => {
            let mut cut = r.below(s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        _ => {}
    }
    s.into_bytes()
}

#[test]
fn fast_path_decides_like_the_full_path() {
    let docs = Docs::from_value(std::env::temp_dir().join("fast.yaml"), spec()).unwrap();
    let api = compile(&docs, None).unwrap();
    let c = api.ops[0].body.as_ref().unwrap().media[0]
        .1
        .schema
        .as_ref()
        .unwrap();
    let onepass = c.onepass.as_ref().expect("the one pass takes this schema");
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut fast_ok, mut full_ok, mut tape_refused) = (0, 0, 0);
    let (mut one_ok, mut one_left) = (0, 0);
    for n in 0..6000 {
        let mut v = valid(&mut r);
        for _ in 0..(n % 4) {
            mutate(&mut r, &mut v, 0);
        }
        let body = render(&mut r, &v);
        let full = rampart_core::json::parse_strict(&body)
            .map(|v| c.validator.is_valid(&v))
            .unwrap_or(false);
        match tape::parse(&body) {
            Ok(doc) => {
                let fast = c.fast.is_valid(doc.root());
                assert_eq!(
                    fast,
                    full,
                    "fast and full paths disagree on {}",
                    String::from_utf8_lossy(&body)
                );
                fast_ok += usize::from(fast);
            }
            Err(_) => {
                tape_refused += 1;
                assert!(
                    rampart_core::json::parse_strict(&body).is_err(),
                    "the tape refused a body serde parses: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        full_ok += usize::from(full);
        // The one pass never accepts what the full path refuses, and accepts everything it
        // accepts except integers written as floats (`2.0`), which it leaves to the full path.
        let one = onepass.is_valid(&body);
        let text = String::from_utf8_lossy(&body);
        assert!(
            !one || full,
            "the one pass accepted an invalid body: {text}"
        );
        if full && !one {
            assert!(
                text.contains(".0"),
                "the one pass refused a valid body: {text}"
            );
            one_left += 1;
        }
        one_ok += usize::from(one);
    }
    assert!(
        one_ok > 1000,
        "{one_ok} valid by the one pass ({one_left} left to the full path)"
    );
    // The mix exercises both answers and the parser's refusals.
    assert!(fast_ok > 1000, "{fast_ok} valid");
    assert!(6000 - full_ok > 1000, "{} invalid", 6000 - full_ok);
    assert!(tape_refused > 100, "{tape_refused} refused");
}

fn param_spec() -> Value {
    let q = |name: &str, schema: Value| json!({ "name": name, "in": "query", "schema": schema });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "params", "version": "1" },
        "paths": { "/items/{id}/{code}": { "get": {
            "operationId": "getItem",
            "parameters": [
                { "name": "id", "in": "path", "required": true,
                  "schema": { "type": "integer", "minimum": 1, "maximum": 1000000 } },
                { "name": "code", "in": "path", "required": true,
                  "schema": { "type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$" } },
                q("page", json!({ "type": "integer", "minimum": 1, "exclusiveMaximum": 100 })),
                q("ratio", json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 1.5 })),
                q("flag", json!({ "type": "boolean" })),
                q("sort", json!({ "type": "string", "enum": ["asc", "desc"] })),
                q("name", json!({ "type": "string", "minLength": 2, "maxLength": 5 })),
                q("uid", json!({ "type": "string", "format": "uuid" })),
                q("maybe", json!({ "type": ["integer", "null"] })),
                q("any", json!({})),
                q("both", json!({ "type": ["integer", "string"], "maxLength": 3, "minimum": 5 })),
                q("mult", json!({ "type": "integer", "multipleOf": 3 })),
                { "name": "fields", "in": "query", "style": "form", "explode": false,
                  "schema": { "type": "array", "minItems": 1, "maxItems": 3,
                              "items": { "type": "string", "enum": ["a", "b", "c"] } } },
                { "name": "ids", "in": "query",
                  "schema": { "type": "array", "maxItems": 2, "items": { "type": "integer" } } },
            ],
            "responses": { "200": { "description": "ok" } }
        } } }
    })
}

/// Texts a parameter may carry: valid values of each schema above, near misses, and odd ones.
const TEXTS: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "-0",
    "+5",
    "05",
    "7",
    "99",
    "100",
    "1000000",
    "1000001",
    "1e2",
    "2.0",
    "0.5",
    "1.5",
    "1.50",
    "1.6",
    "0.0",
    "-0.0",
    "inf",
    "NaN",
    "1e400",
    "true",
    "false",
    "null",
    "TRUE",
    "asc",
    "desc",
    "Asc",
    "ab",
    "abcde",
    "abcdef",
    "a",
    "é",
    "éé",
    "ab\u{301}",
    "AB-123",
    "AB-1234",
    "ab-123",
    "AB-123\n",
    "a,b",
    "a,b,c",
    "a,b,c,a",
    "a,,b",
    "a,d",
    ",",
    "3,4",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "550e8400-e29b-41d4-a716-446655440000",
    "550e8400-e29b-41d4-a716-44665544000",
    "x y",
    "1 ",
    " 1",
    "9",
    "12",
    "abcd",
];

#[test]
fn parameter_fast_path_never_accepts_what_the_full_path_refuses() {
    let docs = Docs::from_value(std::env::temp_dir().join("params.yaml"), param_spec()).unwrap();
    let api = compile(&docs, None).unwrap();
    let params = &api.ops[0].params;
    let (mut fast, mut full, mut agreed) = (0, 0, 0);
    for p in params {
        for raw in TEXTS {
            let (f, v) = match p.loc {
                rampart_openapi::params::In::Path => {
                    let f = p.fast_valid(raw);
                    let v = p.parse_single(raw).is_ok_and(|v| {
                        let mut out = Vec::new();
                        p.check(&v, &mut out);
                        out.is_empty()
                    });
                    (f, v)
                }
                _ => {
                    // The text as the only value, then repeated, in a query.
                    let mut results = Vec::new();
                    for q in [
                        format!("{}={raw}", p.name),
                        format!("{0}={raw}&{0}={raw}", p.name),
                    ] {
                        // `+` decodes to a space, as both paths read it.
                        let pairs = rampart_openapi::params::query_pairs(&q);
                        let mut used = vec![false; pairs.len()];
                        let f = p.query_fast_valid(&pairs, &mut used);
                        assert!(used.iter().all(|u| *u), "{}: pairs left unmarked", p.name);
                        let mut used = vec![false; pairs.len()];
                        let v = p.from_query(&pairs, &mut used).is_ok_and(|v| {
                            v.is_some_and(|v| {
                                let mut out = Vec::new();
                                p.check(&v, &mut out);
                                out.is_empty()
                            })
                        });
                        results.push((f, v));
                    }
                    for &(f, v) in &results[1..] {
                        assert!(!f || v, "{}: fast path accepted repeated {raw:?}", p.name);
                    }
                    results[0]
                }
            };
            assert!(
                !f || v,
                "{}: fast path accepted {raw:?}, the full path refuses it",
                p.name
            );
            fast += usize::from(f);
            full += usize::from(v);
            agreed += usize::from(f == v);
        }
    }
    let total = params.len() * TEXTS.len();
    // Both answers occur, and the fast path takes nearly every value the full path accepts
    // (what it leaves: an empty value, `-0`, formats of numbers written as floats).
    assert!(
        fast > 100 && total - full > 300,
        "{fast} fast, {full} of {total} valid"
    );
    assert!(full - fast <= full / 10, "{fast} fast of {full} valid");
    assert!(agreed * 10 >= total * 9, "{agreed} of {total} agreed");
}
