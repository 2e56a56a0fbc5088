//! `rampart audit SPEC`: the static security audit of an OpenAPI spec, for people and for CI.

use rampart_openapi::audit::audit;
use rampart_openapi::spec::Docs;
use std::path::Path;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

/// Print the report on stdout. Exit 0, 1 when under `fail_under`, 2 when the spec cannot be read.
pub fn run(spec: &Path, format: Format, fail_under: Option<u8>) -> ExitCode {
    if fail_under.is_some_and(|f| f > 100) {
        eprintln!("--fail-under: the score is 0-100");
        return ExitCode::from(2);
    }
    let docs = match Docs::load(spec) {
        Ok(d) => d,
        Err(es) => {
            for e in es {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let report = audit(&docs);
    let base = docs
        .root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    match format {
        Format::Text => print!("{}", report.to_text(&base)),
        Format::Json => println!("{:#}", report.to_json(&base)),
        Format::Sarif => println!("{:#}", report.to_sarif(&base)),
    }
    match fail_under {
        Some(min) if report.score < min => {
            eprintln!("score {} is under --fail-under {min}", report.score);
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}
