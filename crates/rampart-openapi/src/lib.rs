//! Rampart's OpenAPI positive security model.
//!
//! A route (or upstream) names an OpenAPI 3.0/3.1 spec; the [`guard::OpenApiGuard`] then lets
//! through only the requests the spec declares, validated, and checks what the upstream answers.
//! `rampart audit` scores a spec for security problems before it ships ([`audit`]).
//!
//! - [`spec`]: loading the spec's files and resolving `$ref`s (never over the network).
//! - [`schema`]: schemas bundled, translated to JSON Schema 2020-12 and compiled once; the walks
//!   for `readOnly`, `writeOnly` and undeclared properties.
//! - [`router`]: path templates, literal segments first.
//! - [`params`]: parameter styles (`simple`, `label`, `matrix`, `form`, `spaceDelimited`,
//!   `pipeDelimited`, `deepObject`).
//! - [`body`]: media types, form and multipart bodies.
//! - [`tape`]: the fast path for JSON bodies: a strict parser onto a flat tape that the schema
//!   validator reads in place (no `serde_json::Value` tree unless the body is invalid).
//! - [`onepass`]: the fastest path for JSON bodies: parse and validate in one pass over the
//!   bytes, against the schema compiled into plain checks (the tape for what it does not do).
//! - [`api`]: the compiled spec the guard runs on.

pub mod api;
pub mod audit;
pub mod body;
pub mod build;
pub mod guard;
pub mod onepass;
pub mod params;
pub mod router;
pub mod schema;
pub mod spec;
pub mod tape;

pub use build::{build, load_api};
pub use guard::OpenApiGuard;
