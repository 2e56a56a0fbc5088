//! Rampart's configuration: one YAML file, a typed model, and validation that reports
//! every problem as `FILE:LINE:COL: message`.
//!
//! Loading is three steps:
//! 1. [`interpolate`] replaces `${ENV_VAR}` references (an unset variable is an error with its location);
//! 2. the YAML is deserialized into [`Config`] (unknown keys and wrong types are errors);
//! 3. [`Config::validate`] checks everything the type system cannot (CIDRs, durations, file paths,
//!    references between sections, duplicate names, CORS wildcard with credentials, ...).
//!
//! The runtime never reads this model on the request path: the core and the guards compile it
//! into immutable snapshots.

mod model;
pub mod units;
pub mod validate;

pub use model::*;
pub use serde_saphyr::Spanned;
pub use units::{ByteSize, Duration};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where something is in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u64,
    pub col: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One configuration problem, with its place in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)
    }
}

/// Every problem found in one config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded, validated config and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    /// The config file's path (as given), used for error locations.
    pub source: Arc<str>,
    /// The directory relative file paths in the config are resolved against.
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// Location of a spanned value in this file.
    pub fn loc<T>(&self, s: &Spanned<T>) -> Loc {
        loc_of(&self.source, s)
    }

    /// A config-relative path made absolute against the config's directory.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// An error at a spanned value.
    pub fn error_at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            loc: self.loc(s),
            message: message.into(),
        }
    }
}

pub(crate) fn loc_of<T>(file: &Arc<str>, s: &Spanned<T>) -> Loc {
    Loc {
        file: file.clone(),
        line: s.referenced.line(),
        col: s.referenced.column(),
    }
}

/// Read, interpolate, parse and validate a config file, taking `${VAR}` values from the process
/// environment.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    load_file_with(path, &|k| std::env::var(k).ok())
}

/// Like [`load_file`], with an explicit variable lookup.
pub fn load_file_with(
    path: &Path,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            loc: Loc {
                file: name.clone(),
                line: 1,
                col: 1,
            },
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&text, name, base_dir, vars)
}

/// Parse and validate config text. `source` names the text in errors; `base_dir` resolves
/// relative file paths.
pub fn load_str(
    text: &str,
    source: Arc<str>,
    base_dir: PathBuf,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let text = interpolate(text, &source, vars)?;
    let config: Config = if text.trim().is_empty() {
        return Err(ConfigErrors(vec![ConfigError {
            loc: Loc {
                file: source,
                line: 1,
                col: 1,
            },
            message: "config file is empty".into(),
        }]));
    } else {
        serde_saphyr::from_str(&text).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line().max(1), l.column().max(1)))
                .unwrap_or((1, 1));
            ConfigErrors(vec![ConfigError {
                loc: Loc {
                    file: source.clone(),
                    line,
                    col,
                },
                message: clean_yaml_message(&e.to_string()),
            }])
        })?
    };
    let loaded = LoadedConfig {
        config,
        source,
        base_dir,
    };
    let errors = validate::validate(&loaded);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The YAML library renders a snippet of the source after the message; keep the first line,
/// without its own location suffix, since we print `file:line:col` ourselves.
fn clean_yaml_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = first.strip_prefix("error: ").unwrap_or(first);
    first.to_string()
}

/// Replace `${NAME}` with the variable's value. `$${` is a literal `${`.
pub fn interpolate(
    text: &str,
    source: &Arc<str>,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut col = 1usize;
        while let Some(i) = rest.find("${") {
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                col += i + 2;
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let here = Loc {
                file: source.clone(),
                line: lineno as u64 + 1,
                col: (col + i) as u64,
            };
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    let valid = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !valid {
                        errors.push(ConfigError {
                            loc: here,
                            message: format!(
                                "invalid variable name `{name}` in ${{...}} (letters, digits and _ only)"
                            ),
                        });
                    } else if let Some(v) = vars(name) {
                        if v.contains('\n') {
                            errors.push(ConfigError {
                                loc: here,
                                message: format!(
                                    "environment variable {name} contains a newline, which is not allowed in config interpolation"
                                ),
                            });
                        } else {
                            out.push_str(&v);
                        }
                    } else {
                        errors.push(ConfigError {
                            loc: here,
                            message: format!("environment variable {name} is not set"),
                        });
                    }
                    col += i + 2 + end + 1;
                    rest = &after[end + 1..];
                }
                None => {
                    errors.push(ConfigError {
                        loc: here,
                        message: "unterminated ${ (expected `}` on the same line)".into(),
                    });
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedConfig, ConfigErrors> {
        load_str(text, Arc::from("t.yaml"), PathBuf::from("."), &|k| {
            (k == "SECRET").then(|| "s3cr3t".to_string())
        })
    }

    const MINIMAL: &str = "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:9\"]\nroutes:\n  - name: all\n    path_prefix: /\n    upstream: api\n";

    #[test]
    fn minimal_config_loads() {
        let c = load(MINIMAL).expect("valid");
        assert_eq!(c.config.routes.len(), 1);
        assert_eq!(c.config.routes[0].value.upstream.value, "api");
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("    upstream: api\n", "    upstream: api\n    bogus: 1\n");
        let e = load(&text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].loc.line, 10, "{e}");
        assert!(e.0[0].message.contains("bogus"), "{e}");
    }

    #[test]
    fn route_limits_may_not_reuse_global_names() {
        let text = format!(
            "{MINIMAL}    rate_limits:\n      - {{ name: per-ip, key: [client_ip], rate: 5, period: 1m, ipv6_prefix: 200 }}\nguards:\n  rate_limits:\n    - {{ name: per-ip, key: [client_ip], rate: 50, period: 1m }}\n"
        );
        let e = load(&text).unwrap_err().to_string();
        assert!(
            e.contains("t.yaml:11:17: rate limit `per-ip` has the name of a global rate limit"),
            "{e}"
        );
        assert!(e.contains("ipv6_prefix must be between 0 and 128"), "{e}");
    }

    #[test]
    fn env_interpolation_and_missing_var() {
        let out = interpolate("a: ${SECRET}\nb: $${X}\n", &Arc::from("f"), &|k| {
            (k == "SECRET").then(|| "v".to_string())
        })
        .unwrap();
        assert_eq!(out, "a: v\nb: ${X}\n");
        let e = interpolate("a: 1\nb: x${NOPE}\n", &Arc::from("f"), &|_| None).unwrap_err();
        assert_eq!(e.to_string(), "f:2:5: environment variable NOPE is not set");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_locations() {
        let text = "listeners:\n  - address: nope\nupstreams:\n  - name: api\n    targets: [\"ftp://x\"]\nroutes:\n  - name: r\n    path_prefix: /\n    upstream: missing\n  - name: r\n    path_prefix: api\n    upstream: api\n    ip_filter:\n      deny: [\"10.0.0.0/33\"]\n    cors:\n      allow_origins: [\"*\"]\n      allow_credentials: true\n";
        let e = load(text).unwrap_err();
        let s = e.to_string();
        for needle in [
            "t.yaml:2:14: invalid listen address",
            "t.yaml:5:15: upstream target",
            "t.yaml:9:15: route `r` names upstream `missing`",
            "t.yaml:10:11: duplicate route name `r`",
            "t.yaml:11:18: path_prefix must start with `/`",
            "t.yaml:14:14: invalid CIDR",
            "allow_credentials",
        ] {
            assert!(s.contains(needle), "missing `{needle}` in:\n{s}");
        }
    }

    #[test]
    fn websocket_needs_an_http1_upstream() {
        let text = "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: api\n    targets: [\"http://127.0.0.1:1\"]\n    http2: true\nroutes:\n  - name: ws\n    path_prefix: /\n    upstream: api\n    websocket: true\n";
        let e = load(text).unwrap_err().to_string();
        assert!(
            e.contains("t.yaml:8:11: route `ws` passes WebSocket upgrades"),
            "{e}"
        );
        assert!(load(&text.replace("    http2: true\n", "")).is_ok());
    }
}
