//! Static security audit of a spec: findings with a severity and a JSON pointer, and a 0-100
//! score. What `rampart audit SPEC` prints.
//!
//! Score: 100 minus, for every rule, its weight (high 10, medium 4, low 1) times the number of
//! its findings counted up to 3; never below 0. One rule with hundreds of hits cannot sink the
//! score alone, and fixing every hit of a rule always shows.

use crate::api::METHODS;
use crate::spec::{esc, Docs};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
    fn weight(self) -> u32 {
        match self {
            Severity::High => 10,
            Severity::Medium => 4,
            Severity::Low => 1,
        }
    }
    /// SARIF `level`.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low => "note",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub file: PathBuf,
    pub pointer: String,
    pub message: String,
}

/// Every rule the audit knows, with its severity and a one-line description.
pub const RULES: &[(&str, Severity, &str)] = &[
    (
        "no-security-schemes",
        Severity::High,
        "The spec declares no security schemes.",
    ),
    (
        "operation-without-security",
        Severity::High,
        "An operation requires no authentication.",
    ),
    (
        "http-server",
        Severity::High,
        "A server URL uses plain http.",
    ),
    (
        "api-key-in-query",
        Severity::High,
        "An API key is sent in the query string, where logs and caches keep it.",
    ),
    (
        "sensitive-property-in-response",
        Severity::High,
        "A response exposes a property that looks like a secret or personal data.",
    ),
    (
        "request-allows-additional-properties",
        Severity::Medium,
        "A request body object accepts properties it does not declare (mass assignment).",
    ),
    (
        "array-without-max-items",
        Severity::Medium,
        "An input array has no maxItems.",
    ),
    (
        "id-parameter-unconstrained",
        Severity::Medium,
        "An id parameter has no format, pattern or numeric type.",
    ),
    (
        "missing-auth-error-responses",
        Severity::Medium,
        "A secured operation declares neither 401 nor 403.",
    ),
    (
        "missing-4xx-response",
        Severity::Medium,
        "An operation declares no client-error response.",
    ),
    (
        "string-unbounded",
        Severity::Low,
        "An input string has no maxLength, pattern, format or enum.",
    ),
    (
        "number-unbounded",
        Severity::Low,
        "An input number has no minimum or maximum.",
    ),
    (
        "missing-429-response",
        Severity::Low,
        "An operation does not declare 429 Too Many Requests.",
    ),
    (
        "no-rate-limit-headers",
        Severity::Low,
        "No response declares rate-limit headers (RateLimit, Retry-After, X-RateLimit-*).",
    ),
];

fn severity_of(rule: &str) -> Severity {
    RULES
        .iter()
        .find(|(r, _, _)| *r == rule)
        .map(|(_, s, _)| *s)
        .unwrap_or(Severity::Low)
}

pub struct Report {
    pub findings: Vec<Finding>,
    pub score: u8,
    pub operations: usize,
}

struct Auditor<'d> {
    docs: &'d Docs,
    findings: Vec<Finding>,
    seen_input: HashSet<(PathBuf, String)>,
    seen_output: HashSet<(PathBuf, String)>,
}

const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "ssn",
    "cardnumber",
    "card_number",
    "creditcard",
    "credit_card",
    "cvv",
    "pin",
];

fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n == "pin" || n == "ssn" || n == "cvv" {
        return true;
    }
    SENSITIVE
        .iter()
        .filter(|s| s.len() > 3)
        .any(|s| n.contains(s))
        || n == "card"
        || n.ends_with("_ssn")
}

fn is_loopback_url(u: &str) -> bool {
    let rest = u.trim_start_matches("http://");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl Auditor<'_> {
    fn add(&mut self, rule: &'static str, file: &Path, pointer: &str, message: String) {
        self.findings.push(Finding {
            rule,
            severity: severity_of(rule),
            file: file.to_path_buf(),
            pointer: pointer.to_string(),
            message,
        });
    }

    /// Walk a schema on the input side (parameters, request bodies).
    fn input_schema(&mut self, file: &Path, ptr: &str, s: &Value, top_body: bool, depth: usize) {
        if depth > 32 {
            return;
        }
        let (file, ptr, s) = match self.docs.deref(file, ptr, s) {
            Ok(x) => x,
            Err(_) => return,
        };
        if !self.seen_input.insert((file.clone(), ptr.clone())) {
            return;
        }
        if s.get("readOnly") == Some(&Value::Bool(true)) {
            // Not an input: the guard refuses it in requests.
            return;
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |k: &str| s.get(k).is_some();
        if types.contains(&"string")
            && !(has("maxLength") || has("pattern") || has("format") || has("enum") || has("const"))
        {
            self.add(
                "string-unbounded",
                &file,
                &ptr,
                "string without maxLength, pattern, format or enum".into(),
            );
        }
        if (types.contains(&"integer") || types.contains(&"number"))
            && !(has("maximum") || has("exclusiveMaximum") || has("enum") || has("const"))
            && !matches!(s.get("format").and_then(Value::as_str), Some("int32"))
        {
            self.add(
                "number-unbounded",
                &file,
                &ptr,
                "number without minimum/maximum".into(),
            );
        }
        if types.contains(&"array") && !has("maxItems") {
            self.add(
                "array-without-max-items",
                &file,
                &ptr,
                "array without maxItems".into(),
            );
        }
        let is_object = types.contains(&"object") || has("properties");
        if is_object
            && s.get("additionalProperties") != Some(&Value::Bool(false))
            && s.get("unevaluatedProperties") != Some(&Value::Bool(false))
            && !matches!(s.get("additionalProperties"), Some(Value::Object(_)))
            && !(top_body && (has("allOf") || has("oneOf") || has("anyOf")))
        {
            self.add(
                "request-allows-additional-properties",
                &file,
                &ptr,
                "object without `additionalProperties: false`".into(),
            );
        }
        self.children(&file, &ptr, s, depth, true);
    }

    /// Walk a schema on the output side (responses).
    fn output_schema(&mut self, file: &Path, ptr: &str, s: &Value, depth: usize) {
        if depth > 32 {
            return;
        }
        let (file, ptr, s) = match self.docs.deref(file, ptr, s) {
            Ok(x) => x,
            Err(_) => return,
        };
        if !self.seen_output.insert((file.clone(), ptr.clone())) {
            return;
        }
        if let Some(Value::Object(props)) = s.get("properties") {
            for (k, p) in props {
                let write_only = p.get("writeOnly") == Some(&Value::Bool(true));
                if is_sensitive(k) && !write_only {
                    self.add(
                        "sensitive-property-in-response",
                        &file,
                        &format!("{ptr}/properties/{}", esc(k)),
                        format!(
                            "response property `{k}` looks sensitive; mark it writeOnly or drop it"
                        ),
                    );
                }
            }
        }
        self.children(&file, &ptr, s, depth, false);
    }

    fn children(&mut self, file: &Path, ptr: &str, s: &Value, depth: usize, input: bool) {
        let go = |me: &mut Self, p: String, v: &Value| {
            if input {
                me.input_schema(file, &p, v, false, depth + 1)
            } else {
                me.output_schema(file, &p, v, depth + 1)
            }
        };
        if let Some(Value::Object(props)) = s.get("properties") {
            for (k, v) in props {
                go(self, format!("{ptr}/properties/{}", esc(k)), v);
            }
        }
        for k in ["items", "additionalProperties", "not"] {
            if let Some(v) = s.get(k).filter(|v| v.is_object()) {
                go(self, format!("{ptr}/{k}"), v);
            }
        }
        for k in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            if let Some(Value::Array(list)) = s.get(k) {
                for (i, v) in list.iter().enumerate() {
                    go(self, format!("{ptr}/{k}/{i}"), v);
                }
            }
        }
    }
}

/// Audit a loaded spec.
pub fn audit(docs: &Docs) -> Report {
    let root = docs.root_value();
    let file = docs.root.clone();
    let mut a = Auditor {
        docs,
        findings: Vec::new(),
        seen_input: HashSet::new(),
        seen_output: HashSet::new(),
    };
    let schemes = root
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object);
    if schemes.is_none_or(|s| s.is_empty()) {
        a.add(
            "no-security-schemes",
            &file,
            "/components/securitySchemes",
            "no security schemes are declared".into(),
        );
    }
    if let Some(schemes) = schemes {
        for (name, s) in schemes {
            let p = format!("/components/securitySchemes/{}", esc(name));
            let Ok((_, _, s)) = docs.deref(&file, &p, s) else {
                continue;
            };
            if s.get("type").and_then(Value::as_str) == Some("apiKey")
                && s.get("in").and_then(Value::as_str) == Some("query")
            {
                a.add(
                    "api-key-in-query",
                    &file,
                    &p,
                    format!("security scheme `{name}` takes the API key from the query string"),
                );
            }
        }
    }
    if let Some(Value::Array(servers)) = root.get("servers") {
        for (i, s) in servers.iter().enumerate() {
            if let Some(u) = s.get("url").and_then(Value::as_str) {
                if u.starts_with("http://") && !is_loopback_url(u) {
                    a.add(
                        "http-server",
                        &file,
                        &format!("/servers/{i}/url"),
                        format!("server `{u}` is plain http"),
                    );
                }
            }
        }
    }
    let global_security = root.get("security");
    let mut operations = 0;
    let mut rate_headers = false;
    if let Some(Value::Object(paths)) = root.get("paths") {
        for (template, item) in paths {
            let iptr = format!("/paths/{}", esc(template));
            let Ok((ifile, iptr, item)) = docs.deref(&file, &iptr, item) else {
                continue;
            };
            let shared: Vec<(String, &Value)> = item
                .get("parameters")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .enumerate()
                        .map(|(i, p)| (format!("{iptr}/parameters/{i}"), p))
                        .collect()
                })
                .unwrap_or_default();
            for m in METHODS {
                let Some(op) = item.get(*m) else { continue };
                operations += 1;
                let optr = format!("{iptr}/{m}");
                let label = format!("{} {template}", m.to_ascii_uppercase());
                let security = op.get("security").or(global_security);
                let secured = security.and_then(Value::as_array).is_some_and(|reqs| {
                    !reqs.is_empty()
                        && !reqs
                            .iter()
                            .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
                if !secured {
                    a.add(
                        "operation-without-security",
                        &ifile,
                        &optr,
                        format!("{label} can be called without authentication"),
                    );
                }
                // Parameters.
                let mut params = shared.clone();
                if let Some(l) = op.get("parameters").and_then(Value::as_array) {
                    params.extend(
                        l.iter()
                            .enumerate()
                            .map(|(i, p)| (format!("{optr}/parameters/{i}"), p)),
                    );
                }
                for (pptr, p) in params {
                    let Ok((pfile, pptr, p)) = docs.deref(&ifile, &pptr, p) else {
                        continue;
                    };
                    let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                    if let Some(s) = p.get("schema") {
                        let sp = format!("{pptr}/schema");
                        if let Ok((_, _, rs)) = docs.deref(&pfile, &sp, s) {
                            let lname = name.to_ascii_lowercase();
                            let id_like = lname == "id"
                                || lname.ends_with("_id")
                                || lname.ends_with("-id")
                                || (name.ends_with("Id") && name.len() > 2);
                            let t = rs.get("type").and_then(Value::as_str);
                            if id_like
                                && !matches!(t, Some("integer" | "number"))
                                && rs.get("format").is_none()
                                && rs.get("pattern").is_none()
                                && rs.get("enum").is_none()
                            {
                                a.add(
                                    "id-parameter-unconstrained",
                                    &pfile,
                                    &pptr,
                                    format!(
                                        "id parameter `{name}` of {label} has no format or pattern"
                                    ),
                                );
                            }
                        }
                        a.input_schema(&pfile, &sp, s, false, 0);
                    }
                }
                // Request body.
                if let Some(b) = op.get("requestBody") {
                    if let Ok((bfile, bptr, b)) =
                        docs.deref(&ifile, &format!("{optr}/requestBody"), b)
                    {
                        if let Some(Value::Object(content)) = b.get("content") {
                            for (mt, media) in content {
                                if let Some(s) = media.get("schema") {
                                    let sp = format!("{bptr}/content/{}/schema", esc(mt));
                                    a.input_schema(&bfile, &sp, s, true, 0);
                                }
                            }
                        }
                    }
                }
                // Responses.
                let codes: Vec<String> = op
                    .get("responses")
                    .and_then(Value::as_object)
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default();
                let has = |c: &str| codes.iter().any(|k| k == c);
                let any_4xx = codes.iter().any(|c| c.starts_with('4')) || has("default");
                if !any_4xx {
                    a.add(
                        "missing-4xx-response",
                        &ifile,
                        &format!("{optr}/responses"),
                        format!("{label} declares no 4xx response"),
                    );
                }
                if secured && !(has("401") || has("403") || has("4XX") || has("default")) {
                    a.add(
                        "missing-auth-error-responses",
                        &ifile,
                        &format!("{optr}/responses"),
                        format!("{label} is secured but declares neither 401 nor 403"),
                    );
                }
                if !(has("429") || has("4XX") || has("default")) {
                    a.add(
                        "missing-429-response",
                        &ifile,
                        &format!("{optr}/responses"),
                        format!("{label} does not declare 429"),
                    );
                }
                if let Some(Value::Object(rs)) = op.get("responses") {
                    for (code, r) in rs {
                        let rptr = format!("{optr}/responses/{}", esc(code));
                        let Ok((rfile, rptr, r)) = docs.deref(&ifile, &rptr, r) else {
                            continue;
                        };
                        if let Some(Value::Object(h)) = r.get("headers") {
                            if h.keys().any(|k| {
                                let k = k.to_ascii_lowercase();
                                k.starts_with("ratelimit")
                                    || k.starts_with("x-ratelimit")
                                    || k == "retry-after"
                            }) {
                                rate_headers = true;
                            }
                        }
                        if let Some(Value::Object(content)) = r.get("content") {
                            for (mt, media) in content {
                                if let Some(s) = media.get("schema") {
                                    let sp = format!("{rptr}/content/{}/schema", esc(mt));
                                    a.output_schema(&rfile, &sp, s, 0);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if operations > 0 && !rate_headers {
        a.add(
            "no-rate-limit-headers",
            &file,
            "/paths",
            "no response declares RateLimit, X-RateLimit-* or Retry-After headers".into(),
        );
    }
    let mut per_rule: BTreeMap<&str, u32> = BTreeMap::new();
    for f in &a.findings {
        *per_rule.entry(f.rule).or_default() += 1;
    }
    let penalty: u32 = per_rule
        .iter()
        .map(|(r, n)| severity_of(r).weight() * (*n).min(3))
        .sum();
    let mut findings = a.findings;
    findings.sort_by(|x, y| {
        (x.severity, x.rule, &x.file, &x.pointer).cmp(&(y.severity, y.rule, &y.file, &y.pointer))
    });
    Report {
        findings,
        score: 100u32.saturating_sub(penalty) as u8,
        operations,
    }
}

impl Report {
    pub fn to_json(&self, base: &Path) -> Value {
        json!({
            "score": self.score,
            "operations": self.operations,
            "findings": self.findings.iter().map(|f| json!({
                "rule": f.rule,
                "severity": f.severity.as_str(),
                "file": rel(&f.file, base),
                "pointer": format!("#{}", f.pointer),
                "message": f.message,
            })).collect::<Vec<_>>(),
        })
    }

    /// SARIF 2.1.0, for code-scanning dashboards.
    pub fn to_sarif(&self, base: &Path) -> Value {
        let rules: Vec<Value> = RULES
            .iter()
            .map(|(id, sev, desc)| {
                json!({
                    "id": id,
                    "shortDescription": { "text": desc },
                    "defaultConfiguration": { "level": sev.sarif_level() },
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "ruleId": f.rule,
                    "level": f.severity.sarif_level(),
                    "message": { "text": f.message },
                    "locations": [{
                        "physicalLocation": { "artifactLocation": { "uri": rel(&f.file, base) } },
                        "logicalLocations": [{ "fullyQualifiedName": format!("#{}", f.pointer), "kind": "member" }],
                    }],
                })
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "rampart-audit",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "results": results,
                "properties": { "score": self.score },
            }],
        })
    }

    pub fn to_text(&self, base: &Path) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s.push_str(&format!(
                "{:<6} {:<38} {}#{}\n       {}\n",
                f.severity.as_str(),
                f.rule,
                rel(&f.file, base),
                f.pointer,
                f.message
            ));
        }
        let count = |sev: Severity| self.findings.iter().filter(|f| f.severity == sev).count();
        s.push_str(&format!(
            "\n{} operations, {} findings ({} high, {} medium, {} low)\nscore: {}/100\n",
            self.operations,
            self.findings.len(),
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low),
            self.score
        ));
        s
    }
}

fn rel(file: &Path, base: &Path) -> String {
    file.strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string()
}
