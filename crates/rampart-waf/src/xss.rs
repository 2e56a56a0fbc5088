//! `@detectXSS`: Rampart's own cross-site-scripting detector.
//!
//! It reads the input the way a browser's HTML tokenizer would where the input could land: as
//! text (a tag opens), or inside an attribute (a quote closes it and new attributes follow).
//! It reports an injection when the input opens an element that runs or loads code (`script`,
//! `iframe`, `svg`, ...), or gives any element an event handler (`on...=`), a dangerous
//! attribute value (`javascript:`, `vbscript:`, `data:text/html`), or a CSS expression.

use crate::operator::contains;

const DANGEROUS_TAGS: &[&str] = &[
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math", "style",
    "link", "meta", "base", "form", "isindex", "xml", "import", "template", "video", "audio",
    "source", "marquee", "bgsound", "layer", "ilayer", "xss", "html", "body", "vmlframe",
    "animate", "set", "handler", "listener", "image",
];

const URL_ATTRS: &[&str] = &[
    "src",
    "href",
    "action",
    "formaction",
    "data",
    "xlink:href",
    "background",
    "dynsrc",
    "lowsrc",
    "poster",
    "code",
    "codebase",
    "from",
    "to",
    "values",
    "by",
    "folder",
    "srcdoc",
    "xmlns",
    "ping",
    "content",
];

fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.')
}

fn dangerous_url(v: &[u8]) -> bool {
    let cleaned: Vec<u8> = v
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace() && *c != 0 && *c != b'"' && *c != b'\'' && *c != b'`')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    cleaned.starts_with(b"javascript:")
        || cleaned.starts_with(b"vbscript:")
        || cleaned.starts_with(b"livescript:")
        || cleaned.starts_with(b"data:text/html")
        || cleaned.starts_with(b"data:image/svg")
        || cleaned.starts_with(b"data:application")
        || cleaned.starts_with(b"data:,")
}

/// Look at attributes from `i` until the tag ends. True when one is dangerous.
fn bad_attributes(s: &[u8], mut i: usize) -> bool {
    while i < s.len() {
        while i < s.len()
            && (s[i].is_ascii_whitespace() || s[i] == b'/' || s[i] == b'"' || s[i] == b'\'')
        {
            i += 1;
        }
        if i >= s.len() || s[i] == b'>' {
            return false;
        }
        let st = i;
        while i < s.len() && !s[i].is_ascii_whitespace() && !matches!(s[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = s[st..i].to_ascii_lowercase();
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if name.len() > 2
            && name.starts_with(b"on")
            && name[2..].iter().all(|c| c.is_ascii_alphabetic())
            && s.get(i) == Some(&b'=')
        {
            return true;
        }
        if s.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        let vst = i;
        let value: &[u8] = match s.get(i) {
            Some(&q) if q == b'"' || q == b'\'' || q == b'`' => {
                let e = s[i + 1..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(s.len(), |e| i + 1 + e);
                i = (e + 1).min(s.len());
                &s[vst + 1..e]
            }
            _ => {
                while i < s.len() && !s[i].is_ascii_whitespace() && s[i] != b'>' {
                    i += 1;
                }
                &s[vst..i]
            }
        };
        let n = name.as_slice();
        if URL_ATTRS.iter().any(|a| a.as_bytes() == n) && n != b"xmlns" && dangerous_url(value) {
            return true;
        }
        if n == b"style" {
            let lv = value.to_ascii_lowercase();
            let lv: Vec<u8> = lv
                .into_iter()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            if contains(&lv, b"expression(")
                || contains(&lv, b"javascript:")
                || contains(&lv, b"-moz-binding")
                || contains(&lv, b"behavior:")
            {
                return true;
            }
        }
    }
    false
}

/// True when the input would inject script into an HTML page.
pub fn detect(s: &[u8]) -> bool {
    // Every shape below starts at a quote, a `<` or a URL scheme's `:`.
    s.len() >= 3 && s.iter().any(|&c| matches!(c, b'"' | b'\'' | b'<' | b':')) && shapes(s)
}

fn shapes(s: &[u8]) -> bool {
    // Inside an attribute: the input may close it and add its own.
    for q in [b'"', b'\''] {
        if let Some(p) = s.iter().position(|&c| c == q) {
            if p < 64 && bad_attributes(s, p + 1) && event_or_url_after_quote(s, p + 1) {
                return true;
            }
        }
    }
    // An attribute value position: the whole input is a URL.
    if dangerous_url(s) && s.len() > 11 {
        let l = s.trim_ascii_start().to_ascii_lowercase();
        if l.starts_with(b"javascript:")
            || l.starts_with(b"vbscript:")
            || l.starts_with(b"data:text/html")
        {
            return true;
        }
    }
    // As text: find tags.
    let mut i = 0;
    while let Some(p) = s[i..].iter().position(|&c| c == b'<') {
        let st = i + p + 1;
        i = st;
        let Some(&c) = s.get(st) else { break };
        if c == b'!' {
            let rest = s[st..].to_ascii_lowercase();
            if rest.starts_with(b"![cdata[")
                || rest.starts_with(b"!doctype")
                || rest.starts_with(b"!entity")
            {
                return true;
            }
            continue;
        }
        if c == b'?' {
            // `<?import`, `<?xml-stylesheet`
            let rest = s[st + 1..].to_ascii_lowercase();
            if rest.starts_with(b"import") || rest.starts_with(b"xml-stylesheet") {
                return true;
            }
            continue;
        }
        let mut j = st;
        if c == b'/' {
            j += 1;
        }
        let nst = j;
        while j < s.len() && is_name(s[j]) {
            j += 1;
        }
        if j == nst || !s[nst].is_ascii_alphabetic() {
            continue;
        }
        let name = s[nst..j].to_ascii_lowercase();
        let local = match name.iter().rposition(|&c| c == b':') {
            Some(k) => &name[k + 1..],
            None => &name[..],
        };
        let closing = c == b'/';
        if !closing && DANGEROUS_TAGS.iter().any(|t| t.as_bytes() == local) {
            // A dangerous element needs something after the name: `>`, a blank, `/`.
            if j >= s.len() || matches!(s[j], b'>' | b'/' | b' ' | b'\t' | b'\n' | b'\r' | 0x0c) {
                return true;
            }
        }
        if !closing && bad_attributes(s, j) {
            return true;
        }
    }
    false
}

fn event_or_url_after_quote(s: &[u8], from: usize) -> bool {
    // The attribute list after a quote must start with blank, `/` or `>` to be a breakout.
    if matches!(
        s.get(from),
        Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'/') | Some(b'>') | Some(0x0c)
    ) {
        return true;
    }
    // `"onmouseover=...`: an event handler right after the quote.
    let rest = s[from.min(s.len())..].to_ascii_lowercase();
    rest.starts_with(b"on")
        && rest[2..]
            .iter()
            .position(|c| !c.is_ascii_alphabetic())
            .is_some_and(|p| p > 2 && rest[2 + p..].trim_ascii_start().first() == Some(&b'='))
}

#[cfg(test)]
mod tests {
    use super::{detect, shapes};

    /// The shapes never match a value without a quote, `<` or `:` (what `detect` checks
    /// first), on many short inputs over the bytes the shapes look at.
    #[test]
    fn no_trigger_byte_no_shape() {
        let alphabet = b"ascriptjvon=/ >(&#;x\t\n";
        for (_, v) in crate::testgen::values(0x2545_f491_4f6c_dd1d, alphabet, 3..=14, 200_000) {
            assert!(!shapes(&v), "{:?}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn attacks() {
        for a in [
            "<script>alert(1)</script>",
            "<x:script xmlns:x=\"http://www.w3.org/1999/xhtml\" src=\"data:,alert(1)\" />",
            "<xss onbeforehellfreezes=alerw(1)>",
            "<img src=x onerror=alert(1)>",
            "\" onmouseover=\"alert(1)",
            "/get/\"onmouseover='prompt(document.cookie)'\"",
            "javascript:alert(document.cookie)",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<svg/onload=alert(1)>",
            "<div style=\"width:expression(alert(1))\">",
            "<iframe src=//evil>",
        ] {
            assert!(detect(a.as_bytes()), "missed: {a}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "OWASP CRS test agent",
            "a < b and c > d",
            "x<3",
            "I <3 you",
            "see the <b>bold</b> text",
            "<p>Hello</p>",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "don't \"quote\" me",
            "1 < 2",
            "https://example.com/a?b=c",
            "user@example.com",
        ] {
            assert!(!detect(b.as_bytes()), "false positive: {b}");
        }
    }
}
