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
    // Scoring and blocking rules are consequences, not causes.
    if (949000..950000).contains(&m.id) || (959000..960000).contains(&m.id) || m.id >= 980000 {
        return None;
    }
    if m.var.contains(':') {
        Some(format!("- {{ rule: \"{}\", target: \"{}\" }}", m.id, m.var))
    } else {
        Some(format!("- {{ rule: \"{}\" }}", m.id))
    }
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
        let _ = writeln!(
            out,
            "{} (phase {}) {}\n    {} = {:?}{}",
            m.id,
            m.phase,
            m.msg,
            if m.var.is_empty() { "-" } else { &m.var },
            short,
            m.severity
                .map(|s| format!("  [{}]", crate::guard::severity_name(s)))
                .unwrap_or_default()
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
    let sugg: Vec<String> = tx.matched.iter().filter_map(suggestion).collect();
    if !sugg.is_empty() {
        out.push_str(
            "\nIf this request is legitimate, the narrowest exclusions are (waf.exclusions):\n",
        );
        for s in sugg {
            out.push_str(&s);
            out.push('\n');
        }
    }
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
}
