//! The OpenAPI guard's one-pass JSON check against the full path, on arbitrary bytes: whatever
//! the one pass accepts, `parse_strict` must read and the `serde_json` validator must accept.
//! The schema mixes what the one pass does itself (types, bounds, lengths, enums, `required`,
//! `additionalProperties`, items, refs, recursion, formats and patterns) with parts it leaves
//! to `jsonschema` (`oneOf`, `multipleOf`, `uniqueItems`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_openapi::api::{compile, Api};
use rampart_openapi::spec::Docs;
use std::sync::OnceLock;

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let spec = serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "fuzz", "version": "1"},
            "paths": {"/o": {"post": {
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Order"}}}},
                "responses": {"200": {"description": "ok"}}
            }}},
            "components": {"schemas": {
                "Order": {
                    "type": "object", "additionalProperties": false, "required": ["a"],
                    "properties": {
                        "id": {"type": "integer", "readOnly": true},
                        "a": {"type": "string", "minLength": 1, "maxLength": 4},
                        "b": {"type": ["integer", "null"], "minimum": -3, "exclusiveMaximum": 9},
                        "c": {"type": "number", "minimum": 0.5, "maximum": 1e3},
                        "d": {"enum": ["x", "é", true, null]},
                        "e": {"type": "array", "maxItems": 3, "items": {"$ref": "#/components/schemas/Order"}},
                        "f": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "boolean"}},
                        "g": {"type": "string", "format": "email"},
                        "h": {"type": "string", "pattern": "^[a-c]+$"},
                        "i": {"oneOf": [{"type": "string"}, {"type": "integer", "multipleOf": 3}]},
                        "j": {"type": "array", "uniqueItems": true},
                        "k": {"const": "k"},
                        "l": {}
                    }
                }
            }}
        });
        let docs = Docs::from_value(std::env::temp_dir().join("fuzz.json"), spec).expect("spec");
        compile(&docs, None).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let api = api();
    let c = api.ops[0].body.as_ref().unwrap().media[0].1.schema.as_ref().unwrap();
    let one = c.onepass.as_ref().expect("the one pass takes this schema");
    if one.is_valid(data) {
        let v = rampart_core::json::parse_strict(data).expect("the one pass accepted bad JSON");
        assert!(c.validator.is_valid(&v), "the one pass accepted an invalid body");
    }
});
