//! `rampart waf explain`: run one raw HTTP request through a rule set, show every rule that
//! fires (variable, matched fragment, score) and suggest the narrowest exclusion for each:
//! one rule, one parameter.

use crate::engine::{Matched, Transaction};
use crate::operator::find;
use crate::rules::RuleSet;
use std::fmt::Write;
use std::sync::Arc;

/// A raw HTTP/1.x request split into its parts.
pub struct RawRequest {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub version: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Parse a raw request (CRLF or LF line ends). Errors say what is missing.
pub fn parse_raw(raw: &[u8]) -> Result<RawRequest, String> {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(p) => (&raw[..p], &raw[p + 4..]),
        None => match find(raw, b"\n\n") {
            Some(p) => (&raw[..p], &raw[p + 2..]),
            None => (raw, &b""[..]),
        },
    };
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("empty request")?;
    let mut parts = first.splitn(3, |&c| c == b' ');
    let method = parts.next().unwrap_or_default().to_vec();
    let target = parts.next().ok_or("request line has no target")?.to_vec();
    let version = parts.next().unwrap_or(b"HTTP/1.1").to_vec();
    let mut headers = Vec::new();
    for (n, l) in lines.enumerate() {
        let c = l
            .iter()
            .position(|&c| c == b':')
            .ok_or_else(|| format!("header line {} has no `:`", n + 2))?;
        headers.push((
            l[..c].trim_ascii().to_vec(),
            l[c + 1..].trim_ascii().to_vec(),
        ));
    }
    Ok(RawRequest {
        method,
        target,
        version,
        headers,
        body: body.to_vec(),
    })
}

/// Run request phases 1 and 2 (the request side) and return the transaction.
pub fn run(rs: Arc<RuleSet>, r: &RawRequest) -> Transaction {
    let mut tx = Transaction::new(rs);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    tx.request_head(
        &r.method,
        &r.target,
        &r.version,
        r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        peer,
        local,
        "explain",
    );
    tx.phase(1);
    tx.request_body(&r.body);
    tx.phase(2);
    tx
}

/// The narrowest exclusion that silences `m`: the rule for its one variable, or the rule
/// alone when the variable is not a named member.
pub fn suggestion(m: &Matched) -> Option<String> {
    exclusion(m.id, &m.var)
}

/// One fired rule as both reports print it.
fn write_match(
    out: &mut String,
    id: &dyn std::fmt::Display,
    phase: u64,
    msg: &str,
    var: &str,
    value: &str,
    severity: Option<&str>,
) {
    let _ = writeln!(
        out,
        "{id} (phase {phase}) {msg}\n    {} = {value:?}{}",
        if var.is_empty() { "-" } else { var },
        severity.map(|s| format!("  [{s}]")).unwrap_or_default()
    );
}

/// The exclusions block (each entry once), scoped to `route` when it is known.
fn write_exclusions(
    out: &mut String,
    entries: impl IntoIterator<Item = String>,
    route: Option<&str>,
) {
    let mut seen: Vec<String> = Vec::new();
    for e in entries {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.is_empty() {
        return;
    }
    match route {
        Some(r) => {
            let _ = writeln!(
                out,
                "\nIf this request is legitimate, the narrowest exclusions are these, in route {r:?}'s\n`waf.exclusions` (a route's `waf` overrides `guards.waf`: repeat its other keys there),\nor in `guards.waf.exclusions` for every route:"
            );
        }
        None => out.push_str(
            "\nIf this request is legitimate, the narrowest exclusions are (waf.exclusions):\n",
        ),
    }
    for e in seen {
        out.push_str(&e);
        out.push('\n');
    }
}

/// The exclusion entry for rule `id` matching variable `var` (`ARGS:q`, `REQUEST_URI`, ...);
/// None for scoring and blocking rules, which are consequences, not causes.
fn exclusion(id: u32, var: &str) -> Option<String> {
    if (949000..950000).contains(&id) || (959000..960000).contains(&id) || id >= 980000 {
        return None;
    }
    if var.contains(':') {
        Some(format!("- {{ rule: \"{id}\", target: \"{var}\" }}"))
    } else {
        Some(format!("- {{ rule: \"{id}\" }}"))
    }
}

/// `rampart waf explain --log FILE --request-id ID`: the WAF's security events for one logged
/// request (JSON lines as Rampart writes them; other lines are skipped), as a report with the
/// narrowest exclusion for each cause, scoped to the request's route. `source` names the log
/// in messages. An error when the request has no WAF event there.
pub fn report_logged(
    log: impl std::io::BufRead,
    source: &str,
    request_id: &str,
) -> Result<String, String> {
    let mut matched = Vec::new();
    let mut decision: Option<serde_json::Value> = None;
    let mut request: Option<serde_json::Value> = None;
    for (n, line) in log.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{source}: line {}: {e}", n + 1))?;
        // A cheap test first: most lines of a busy log are other requests.
        if crate::operator::find(&line, request_id.as_bytes()).is_none() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        if v["request_id"].as_str() != Some(request_id) {
            continue;
        }
        match (v["type"].as_str(), v["guard"].as_str()) {
            (Some("security_event"), Some("waf")) => {
                if v["detail"]["variable"].is_string() {
                    matched.push(v.clone());
                } else {
                    decision = Some(v.clone());
                }
                request.get_or_insert(v);
            }
            (Some("access"), _) => request = Some(v),
            _ => {}
        }
    }
    if matched.is_empty() && decision.is_none() {
        return Err(format!(
            "{source}: no WAF event for request id {request_id:?} (is this the file `log.access` writes to, and did the WAF see the request?)"
        ));
    }
    let mut out = String::new();
    let route = request
        .as_ref()
        .and_then(|r| r["route"].as_str())
        .map(str::to_string);
    if let Some(r) = &request {
        let _ = writeln!(
            out,
            "Request {request_id}: {} {} from {}, route {}{}\n",
            r["method"].as_str().unwrap_or("?"),
            r["path"].as_str().unwrap_or("?"),
            r["client_ip"].as_str().unwrap_or("?"),
            route.as_deref().unwrap_or("-"),
            r["ts"]
                .as_str()
                .map(|t| format!(", {t}"))
                .unwrap_or_default(),
        );
    }
    let mut sugg = Vec::new();
    for m in &matched {
        let d = &m["detail"];
        let var = d["variable"].as_str().unwrap_or("");
        let rule = m["rule"].as_str().unwrap_or("?");
        write_match(
            &mut out,
            &rule,
            d["phase"].as_u64().unwrap_or(0),
            m["message"].as_str().unwrap_or(""),
            var,
            d["matched"].as_str().unwrap_or(""),
            d["severity"].as_str(),
        );
        sugg.extend(rule.parse::<u32>().ok().and_then(|id| exclusion(id, var)));
    }
    match &decision {
        Some(d) => {
            let _ = writeln!(
                out,
                "\nInbound anomaly score: {}; {} by rule {}{}",
                d["detail"]["inbound_anomaly_score"]
                    .as_i64()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                match d["action"].as_str() {
                    Some("monitored") => "would have been blocked (monitor mode)",
                    _ => "blocked",
                },
                d["rule"].as_str().unwrap_or("?"),
                d["status"]
                    .as_u64()
                    .map(|s| format!(" (status {s})"))
                    .unwrap_or_default(),
            );
        }
        None => out.push_str("\nNot blocked (rules matched below the anomaly threshold).\n"),
    }
    write_exclusions(&mut out, sugg, route.as_deref());
    Ok(out)
}

/// A human report of what fired and what to exclude.
pub fn report(tx: &Transaction) -> String {
    let mut out = String::new();
    if tx.matched.is_empty() {
        out.push_str("No rule fired.\n");
        return out;
    }
    for m in &tx.matched {
        let value = String::from_utf8_lossy(&m.value);
        let short: String = value.chars().take(80).collect();
        write_match(
            &mut out,
            &m.id,
            u64::from(m.phase),
            &m.msg,
            &m.var,
            &short,
            m.severity.map(crate::guard::severity_name),
        );
    }
    let score = tx
        .data
        .tx_get("blocking_inbound_anomaly_score")
        .map(crate::operator::atoi)
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\nInbound anomaly score: {score}; {}",
        match &tx.interruption {
            Some(i) => format!("blocked by rule {} (status {})", i.id, i.status),
            None => "not blocked".to_string(),
        }
    );
    write_exclusions(&mut out, tx.matched.iter().filter_map(suggestion), None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_requests_parse() {
        let r =
            parse_raw(b"POST /a?b=1 HTTP/1.1\nHost: x\nContent-Type: text/plain\n\nhello").unwrap();
        assert_eq!(r.method, b"POST");
        assert_eq!(r.target, b"/a?b=1");
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.body, b"hello");
        assert!(parse_raw(b"GET / HTTP/1.1\r\nbroken\r\n\r\n").is_err());
        assert!(parse_raw(b"").is_err());
    }

    #[test]
    fn logged_requests_are_explained_from_their_events() {
        let log = concat!(
            "not json at all, e.g. a line from another program\n",
            r#"{"type":"security_event","request_id":"r-2","guard":"waf","rule":"941100","message":"XSS","action":"logged","detail":{"phase":2,"variable":"ARGS:x","matched":"<script>"}}"#,
            "\n",
            r#"{"type":"security_event","request_id":"r-1","guard":"waf","rule":"942100","message":"SQLi","action":"logged","detail":{"phase":2,"variable":"ARGS:q","matched":"1' or 1=1","severity":"CRITICAL"}}"#,
            "\n",
            r#"{"type":"security_event","request_id":"r-1","guard":"waf","rule":"920350","message":"Host is an IP","action":"logged","detail":{"phase":1,"variable":"REQUEST_HEADERS:host","matched":"10.0.0.1"}}"#,
            "\n",
            r#"{"type":"security_event","request_id":"r-1","guard":"waf","rule":"949110","message":"Inbound Anomaly Score Exceeded","action":"monitored","status":403,"detail":{"rules":["942100"],"inbound_anomaly_score":8}}"#,
            "\n",
            r#"{"type":"access","request_id":"r-1","method":"GET","path":"/s","client_ip":"10.1.1.1","route":"shop","ts":"2026-11-23T10:00:00Z"}"#,
            "\n",
        );
        let r = report_logged(log.as_bytes(), "test.log", "r-1").unwrap();
        for needle in [
            "Request r-1: GET /s from 10.1.1.1, route shop, 2026-11-23T10:00:00Z",
            "942100 (phase 2) SQLi\n    ARGS:q = \"1' or 1=1\"  [CRITICAL]",
            "Inbound anomaly score: 8; would have been blocked (monitor mode) by rule 949110 (status 403)",
            "route \"shop\"",
            "- { rule: \"942100\", target: \"ARGS:q\" }",
            "- { rule: \"920350\", target: \"REQUEST_HEADERS:host\" }",
        ] {
            assert!(r.contains(needle), "missing {needle:?} in\n{r}");
        }
        assert!(!r.contains("941100"), "another request's event: {r}");
        assert!(
            !r.contains("rule: \"949110\""),
            "the blocking rule is not a cause: {r}"
        );
        let e = report_logged(log.as_bytes(), "test.log", "r-9").unwrap_err();
        assert!(
            e.starts_with("test.log: no WAF event for request id \"r-9\""),
            "{e}"
        );
    }
}
