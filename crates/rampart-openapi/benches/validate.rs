//! Request-body validation cost: a typical 1 KB JSON order body parsed (strictly, refusing
//! duplicate keys) and validated against its compiled schema (which also refuses `readOnly`
//! properties). `tape_parse_and_validate` is what the `openapi` guard does per valid request
//! (the fast path); `parse_and_validate` is the full path through a `serde_json::Value`, taken
//! by bodies the fast path does not accept. Also: each part alone, and path matching.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rampart_openapi::api::compile;
use rampart_openapi::schema;
use rampart_openapi::spec::Docs;
use serde_json::json;
use std::time::Duration;

// The binary's allocator, so allocation-heavy parsing is measured as it runs in the gateway.
#[global_allocator]
static GLOBAL: rampart_core::alloc::Mimalloc = rampart_core::alloc::Mimalloc;

fn bench(c: &mut Criterion) {
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "bench", "version": "1"},
        "paths": {
            "/orders": {"post": {
                "operationId": "createOrder",
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Order"}}}},
                "responses": {"201": {"description": "ok"}}
            }},
            "/users/{id}/orders/{orderId}": {"get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}},
                    {"name": "orderId", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}},
                    {"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}}
                ],
                "responses": {"200": {"description": "ok"}}
            }}
        },
        "components": {"schemas": {
            "Order": {
                "type": "object", "additionalProperties": false,
                "required": ["customer", "lines", "shipping"],
                "properties": {
                    "id": {"type": "integer", "readOnly": true},
                    "customer": {"type": "string", "format": "email", "maxLength": 120},
                    "note": {"type": ["string", "null"], "maxLength": 500},
                    "coupon": {"type": "string", "pattern": "^[A-Z0-9]{6,12}$"},
                    "shipping": {"$ref": "#/components/schemas/Address"},
                    "lines": {"type": "array", "maxItems": 50, "items": {"$ref": "#/components/schemas/Line"}}
                }
            },
            "Line": {
                "type": "object", "additionalProperties": false, "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                    "unit_price": {"type": "number", "minimum": 0},
                    "gift": {"type": "boolean"}
                }
            },
            "Address": {
                "type": "object", "additionalProperties": false,
                "required": ["street", "city", "country"],
                "properties": {
                    "street": {"type": "string", "maxLength": 120},
                    "city": {"type": "string", "maxLength": 80},
                    "zip": {"type": "string", "maxLength": 12},
                    "country": {"type": "string", "enum": ["DE", "FR", "NL", "US", "GB"]}
                }
            }
        }}
    });
    let docs = Docs::from_value(std::env::temp_dir().join("bench.yaml"), spec).unwrap();
    let api = compile(&docs, None).unwrap();
    let op = &api.ops[0];
    let media = &op.body.as_ref().unwrap().media[0].1;
    let c_schema = media.schema.as_ref().unwrap();
    let lines: Vec<_> = (0..12)
        .map(|i| json!({"sku": format!("KEY-{:04}", 1000 + i), "quantity": i + 1, "unit_price": 19.99, "gift": i % 2 == 0}))
        .collect();
    let body = serde_json::to_vec(&json!({
        "customer": "alice.smith@example.com",
        "note": "Please leave the parcel with the neighbour at number 12 if nobody is home.",
        "coupon": "WINTER2026",
        "shipping": {"street": "Hauptstrasse 1", "city": "Berlin", "zip": "10115", "country": "DE"},
        "lines": lines,
    }))
    .unwrap();
    eprintln!("body: {} bytes", body.len());

    let mut g = c.benchmark_group("openapi");
    g.measurement_time(Duration::from_secs(3));
    let onepass = c_schema.onepass.as_ref().unwrap();
    g.bench_function("request_body_1kb_onepass", |b| {
        b.iter(|| assert!(onepass.is_valid(black_box(&body))))
    });
    g.bench_function("request_body_1kb_tape_parse_and_validate", |b| {
        b.iter(|| {
            let doc = rampart_openapi::tape::parse(black_box(&body)).unwrap();
            assert!(c_schema.fast.is_valid(doc.root()));
        })
    });
    g.bench_function("request_body_1kb_tape_parse_only", |b| {
        b.iter(|| rampart_openapi::tape::parse(black_box(&body)).unwrap())
    });
    g.bench_function("request_body_1kb_parse_and_validate", |b| {
        b.iter(|| {
            let v = rampart_core::json::parse_strict(black_box(&body)).unwrap();
            assert!(schema::check(c_schema, &v, "body", "", 10).is_empty());
        })
    });
    let v = rampart_core::json::parse_strict(&body).unwrap();
    g.bench_function("request_body_1kb_validate_only", |b| {
        b.iter(|| assert!(c_schema.validator.is_valid(black_box(&v))))
    });
    g.bench_function("request_body_1kb_parse_only", |b| {
        b.iter(|| rampart_core::json::parse_strict(black_box(&body)).unwrap())
    });
    g.bench_function("request_body_1kb_serde_value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    g.bench_function("route_match", |b| {
        b.iter(|| {
            api.router
                .find(black_box(
                    "/users/42/orders/0b7e6a55-3c1b-4e5f-9a7b-2f4d3c2b1a00",
                ))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
