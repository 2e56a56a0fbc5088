//! CRS's go-ftw regression tests (ftw-tests-schema v2): reading the YAML files, building each
//! stage's raw request bytes the way go-ftw does, and judging the outcome from the security
//! events the gateway logged. The network side lives in `rampart waf ftw`.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
pub struct TestFile {
    #[serde(default)]
    pub rule_id: Option<u64>,
    #[serde(default)]
    pub tests: Vec<Test>,
}

#[derive(Debug, Deserialize)]
pub struct Test {
    pub test_id: u64,
    #[serde(default)]
    pub desc: Option<String>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Deserialize)]
pub struct Stage {
    pub input: Input,
    #[serde(default)]
    pub output: Output,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// Headers in file order.
#[derive(Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of headers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Option<Scalar>>()? {
                    out.push((k, v.map(|v| v.text()).unwrap_or_default()));
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Input {
    #[serde(default)]
    pub dest_addr: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub autocomplete_headers: Option<bool>,
    #[serde(default)]
    pub encoded_request: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Output {
    #[serde(default)]
    pub log: Option<LogCheck>,
    #[serde(default)]
    pub status: Option<StatusCheck>,
    #[serde(default)]
    pub expect_error: Option<bool>,
    #[serde(default)]
    pub retry_once: Option<bool>,
    #[serde(default)]
    pub log_contains: Option<String>,
    #[serde(default)]
    pub no_log_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusCheck {
    One(u16),
    Many(Vec<u16>),
}

#[derive(Debug, Default, Deserialize)]
pub struct LogCheck {
    #[serde(default)]
    pub expect_ids: Vec<u64>,
    #[serde(default)]
    pub no_expect_ids: Vec<u64>,
    #[serde(default)]
    pub match_regex: Option<String>,
    #[serde(default)]
    pub no_match_regex: Option<String>,
}

/// One test as loaded: `942100-1`.
#[derive(Debug)]
pub struct Case {
    pub file: PathBuf,
    pub name: String,
    pub test: Test,
}

/// Read every `*.yaml`/`*.yml` under `dir` (sorted). A file that is only comments has no tests.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, String> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
        {
            continue;
        }
        let tf: TestFile =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rule = tf.rule_id.map(|r| r.to_string()).unwrap_or(stem);
        for t in tf.tests {
            out.push(Case {
                file: f.clone(),
                name: format!("{rule}-{}", t.test_id),
                test: t,
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Tests skipped on purpose, each with its reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub skip: Vec<Skip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    pub test: String,
    pub reason: String,
}

impl Overrides {
    pub fn load(path: &Path) -> Result<Overrides, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let o: Overrides =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for s in &o.skip {
            if s.reason.trim().is_empty() {
                return Err(format!(
                    "{}: skip of {} has no reason",
                    path.display(),
                    s.test
                ));
            }
        }
        Ok(o)
    }
    pub fn reason(&self, name: &str) -> Option<&str> {
        self.skip
            .iter()
            .find(|s| s.test == name)
            .map(|s| s.reason.as_str())
    }
}

fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut o = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                o.push(v);
                i += 3;
            }
            b'+' => {
                o.push(b' ');
                i += 1;
            }
            c => {
                o.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&o).into_owned())
}

fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            o.push(c as char);
        } else if c == b' ' {
            o.push('+');
        } else {
            o.push_str(&format!("%{c:02X}"));
        }
    }
    o
}

/// go-ftw's treatment of form data: data that is not URL-encoded yet is parsed as a query and
/// encoded again (keys sorted, as Go's `url.Values.Encode` does).
fn encode_form(data: &str) -> String {
    match query_unescape(data) {
        Some(u) if u == data => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for part in data.split('&') {
                if part.is_empty() {
                    continue;
                }
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                pairs.push((k.to_string(), v.to_string()));
            }
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
                .collect::<Vec<_>>()
                .join("&")
        }
        _ => data.to_string(),
    }
}

/// go-ftw's one data template CRS uses: `{{ "x" | repeat N }}` (N up to 16 MiB).
fn expand_templates(data: &str) -> Result<String, String> {
    if !data.contains("{{") {
        return Ok(data.to_string());
    }
    let re = regex::Regex::new(r#"\{\{\s*"([^"]*)"\s*\|\s*repeat\s+(\d+)\s*\}\}"#)
        .map_err(|e| e.to_string())?;
    let mut err = None;
    let out = re.replace_all(data, |c: &regex::Captures| {
        let n: usize = c[2].parse().unwrap_or(usize::MAX);
        if n.saturating_mul(c[1].len()) > 16 << 20 {
            err = Some(format!("template repeats to more than 16 MiB: {}", &c[0]));
            return String::new();
        }
        c[1].repeat(n)
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out.into_owned()),
    }
}

/// The raw bytes go-ftw would send for a stage, with `extra` headers added after the request
/// line (the runner's request id).
pub fn raw_request(i: &Input, extra: &[(String, String)]) -> Result<Vec<u8>, String> {
    if let Some(enc) = &i.encoded_request {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(enc.split_ascii_whitespace().collect::<String>())
            .map_err(|e| format!("encoded_request: {e}"))?;
        let mut out = Vec::with_capacity(raw.len() + 64);
        match raw.windows(2).position(|w| w == b"\r\n") {
            Some(p) => {
                out.extend_from_slice(&raw[..p + 2]);
                for (k, v) in extra {
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(&raw[p + 2..]);
            }
            None => out = raw,
        }
        return Ok(out);
    }
    let method = i.method.as_deref().unwrap_or("GET");
    let uri = i.uri.as_deref().unwrap_or("/");
    let version = i.version.as_deref().unwrap_or("HTTP/1.1");
    let auto = i.autocomplete_headers.unwrap_or(true);
    let mut headers = i.headers.0.clone();
    let has = |h: &[(String, String)], n: &str| h.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut data = expand_templates(&i.data.clone().unwrap_or_default())?;
    if auto {
        if !data.is_empty() && !has(&headers, "content-type") {
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        if ct == "application/x-www-form-urlencoded" && !data.is_empty() {
            data = encode_form(&data);
        }
        if ct.contains("multipart/form-data") {
            let mut d = String::with_capacity(data.len() + 32);
            let mut prev = '\0';
            for c in data.chars() {
                if c == '\n' && prev != '\r' {
                    d.push('\r');
                }
                d.push(c);
                prev = c;
            }
            data = d;
        }
        if !has(&headers, "connection") {
            headers.push(("Connection".into(), "close".into()));
        }
        if !has(&headers, "content-length") {
            headers.push(("Content-Length".into(), data.len().to_string()));
        }
    }
    let mut out = format!("{method} {uri} {version}\r\n").into_bytes();
    for (k, v) in extra.iter().chain(headers.iter()) {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data.as_bytes());
    Ok(out)
}

/// What the gateway did with one stage's request.
#[derive(Debug, Default)]
pub struct Observed {
    /// Response status, or `None` when the connection failed or no response came.
    pub status: Option<u16>,
    /// Rule ids of the security events logged for the request.
    pub ids: Vec<u64>,
    /// The events as ModSecurity-style log lines (`[id "942100"] [msg "..."] ...`).
    pub lines: Vec<String>,
}

/// Judge one stage. `Err` says what differed.
pub fn check(o: &Output, seen: &Observed) -> Result<(), String> {
    if o.expect_error == Some(true) {
        return match seen.status {
            None | Some(400) => Ok(()),
            Some(s) => Err(format!("expected a connection error, got status {s}")),
        };
    }
    if let Some(st) = &o.status {
        let ok = match (st, seen.status) {
            (StatusCheck::One(s), Some(got)) => *s == got,
            (StatusCheck::Many(v), Some(got)) => v.contains(&got),
            _ => false,
        };
        if !ok {
            return Err(format!("expected status {st:?}, got {:?}", seen.status));
        }
    }
    let text = seen.lines.join("\n");
    if let Some(l) = &o.log {
        let missing: Vec<u64> = l
            .expect_ids
            .iter()
            .copied()
            .filter(|i| !seen.ids.contains(i))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "expected rule(s) {missing:?} did not fire (fired: {:?})",
                seen.ids
            ));
        }
        let unwanted: Vec<u64> = l
            .no_expect_ids
            .iter()
            .copied()
            .filter(|i| seen.ids.contains(i))
            .collect();
        if !unwanted.is_empty() {
            return Err(format!("rule(s) {unwanted:?} fired but must not"));
        }
        if let Some(r) = &l.match_regex {
            let re = regex::Regex::new(r).map_err(|e| format!("bad match_regex: {e}"))?;
            if !re.is_match(&text) {
                return Err(format!("log does not match /{r}/"));
            }
        }
        if let Some(r) = &l.no_match_regex {
            let re = regex::Regex::new(r).map_err(|e| format!("bad no_match_regex: {e}"))?;
            if re.is_match(&text) {
                return Err(format!(
                    "log matches /{r}/ but must not (fired: {:?})",
                    seen.ids
                ));
            }
        }
    }
    if let Some(s) = &o.log_contains {
        let re = regex::Regex::new(s).map_err(|e| format!("bad log_contains: {e}"))?;
        if !re.is_match(&text) {
            return Err(format!("log does not contain /{s}/"));
        }
    }
    if let Some(s) = &o.no_log_contains {
        let re = regex::Regex::new(s).map_err(|e| format!("bad no_log_contains: {e}"))?;
        if re.is_match(&text) {
            return Err(format!("log contains /{s}/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_data_is_encoded_like_go_ftw() {
        assert_eq!(encode_form("b=2&a=x y"), "a=x+y&b=2");
        assert_eq!(encode_form("a=%27"), "a=%27");
        assert_eq!(
            expand_templates(r#"x{{ "ab" | repeat 3 }}y"#).unwrap(),
            "xabababy"
        );
        assert!(expand_templates(r#"{{ "a" | repeat 99999999999 }}"#).is_err());
        let i = Input {
            method: Some("POST".into()),
            data: Some("a=1".into()),
            ..Default::default()
        };
        let raw =
            String::from_utf8(raw_request(&i, &[("X-Request-Id".into(), "t1".into())]).unwrap())
                .unwrap();
        assert!(raw.starts_with("POST / HTTP/1.1\r\nX-Request-Id: t1\r\n"));
        assert!(raw.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
        assert!(raw.ends_with("Content-Length: 3\r\n\r\na=1"));
        let get = raw_request(&Input::default(), &[]).unwrap();
        assert!(String::from_utf8(get)
            .unwrap()
            .contains("Content-Length: 0\r\n"));
    }
}
