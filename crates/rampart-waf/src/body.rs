//! Request body processors feeding `ARGS_POST`, `FILES`, `MULTIPART_*`, `XML` and
//! `REQBODY_ERROR`: URL-encoded, multipart, JSON and XML. They never give up silently: a body
//! they cannot read sets `REQBODY_ERROR` (and for multipart the strictness flags), which the
//! base rules turn into a block.

use crate::operator::{bad_url_encoding, find};
use crate::transform::url_decode;
use crate::vars::{Data, MultipartFlags, Pairs};

/// Parse `a=1&b=2` (query strings and URL-encoded bodies). Returns whether an invalid
/// percent-encoding was seen.
pub fn urlencoded(s: &[u8], out: &mut Pairs) -> bool {
    let mut bad = false;
    for part in s.split(|&c| c == b'&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|&c| c == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        bad |= bad_url_encoding(k) || bad_url_encoding(v);
        out.push((url_decode(k, false), url_decode(v, false)));
    }
    bad
}

/// JSON: every scalar becomes an argument named by its path (`json.user.name`,
/// `json.items.0`), the way CRS expects. Duplicate keys and nesting deeper than `depth` are
/// errors.
pub fn json(body: &[u8], depth: usize, out: &mut Pairs) -> Result<(), String> {
    let mut p = JsonParser {
        s: body,
        i: 0,
        depth,
        out,
    };
    p.ws();
    let mut name = b"json".to_vec();
    p.value(&mut name, 0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing data at byte {}", p.i));
    }
    Ok(())
}

struct JsonParser<'a, 'o> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    out: &'o mut Pairs,
}

impl JsonParser<'_, '_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn err<T>(&self, m: &str) -> Result<T, String> {
        Err(format!("{m} at byte {}", self.i))
    }
    fn value(&mut self, name: &mut Vec<u8>, d: usize) -> Result<(), String> {
        if d > self.depth {
            return self.err("nesting too deep");
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut seen: Vec<Vec<u8>> = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    self.out.push((name.clone(), Vec::new()));
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a key");
                    }
                    let k = self.string()?;
                    if seen.contains(&k) {
                        return Err(format!(
                            "duplicate key `{}` at byte {}",
                            String::from_utf8_lossy(&k),
                            self.i
                        ));
                    }
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("expected `:`");
                    }
                    self.i += 1;
                    let len = name.len();
                    name.push(b'.');
                    name.extend_from_slice(&k);
                    self.value(name, d + 1)?;
                    name.truncate(len);
                    seen.push(k);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    self.out.push((name.clone(), Vec::new()));
                    return Ok(());
                }
                let mut n = 0usize;
                loop {
                    let len = name.len();
                    name.push(b'.');
                    name.extend_from_slice(n.to_string().as_bytes());
                    self.value(name, d + 1)?;
                    name.truncate(len);
                    n += 1;
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
            }
            Some(b'"') => {
                let v = self.string()?;
                self.out.push((name.clone(), v));
                Ok(())
            }
            Some(_) => {
                let st = self.i;
                while self.i < self.s.len()
                    && !matches!(
                        self.s[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                let tok = &self.s[st..self.i];
                let ok = matches!(tok, b"true" | b"false" | b"null")
                    || std::str::from_utf8(tok)
                        .ok()
                        .is_some_and(|t| t.parse::<f64>().is_ok() && !t.starts_with('+'));
                if !ok {
                    self.i = st;
                    return self.err("invalid value");
                }
                self.out.push((name.clone(), tok.to_vec()));
                Ok(())
            }
            None => self.err("unexpected end"),
        }
    }
    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.i += 1;
        let mut o = Vec::new();
        while self.i < self.s.len() {
            let c = self.s[self.i];
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(o);
                }
                b'\\' => {
                    let e = *self.s.get(self.i + 1).ok_or("unterminated string")?;
                    self.i += 2;
                    match e {
                        b'"' | b'\\' | b'/' => o.push(e),
                        b'b' => o.push(8),
                        b'f' => o.push(12),
                        b'n' => o.push(b'\n'),
                        b'r' => o.push(b'\r'),
                        b't' => o.push(b'\t'),
                        b'u' => {
                            let h = self.s.get(self.i..self.i + 4).ok_or("bad \\u escape")?;
                            let code = std::str::from_utf8(h)
                                .ok()
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or("bad \\u escape")?;
                            self.i += 4;
                            let mut code = code;
                            if (0xd800..0xdc00).contains(&code)
                                && self.s.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                if let Some(lo) = self
                                    .s
                                    .get(self.i + 2..self.i + 6)
                                    .and_then(|h| std::str::from_utf8(h).ok())
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                                    .filter(|lo| (0xdc00..0xe000).contains(lo))
                                {
                                    code = 0x10000 + ((code - 0xd800) << 10) + (lo - 0xdc00);
                                    self.i += 6;
                                }
                            }
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut buf = [0u8; 4];
                            o.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                _ => {
                    o.push(c);
                    self.i += 1;
                }
            }
        }
        self.err("unterminated string")
    }
}

/// XML: the text of the whole document (what `XML:/*` reads) and every attribute value
/// (`XML://@*`). A small, strict reader: unbalanced or malformed markup is an error.
pub fn xml(body: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let s = body;
    let mut text = Vec::new();
    let mut attrs = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    let mut root_seen = false;
    while i < s.len() {
        if s[i] != b'<' {
            let st = i;
            while i < s.len() && s[i] != b'<' {
                i += 1;
            }
            if !stack.is_empty() {
                text.extend_from_slice(&decode_entities(&s[st..i]));
            } else if s[st..i].iter().any(|c| !c.is_ascii_whitespace()) {
                return Err(format!("text outside the root element at byte {st}"));
            }
            continue;
        }
        let rest = &s[i..];
        if rest.starts_with(b"<!--") {
            let e = find(&s[i + 4..], b"-->").ok_or("unterminated comment")?;
            i += 4 + e + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            let e = find(&s[i + 9..], b"]]>").ok_or("unterminated CDATA")?;
            text.extend_from_slice(&s[i + 9..i + 9 + e]);
            i += 9 + e + 3;
        } else if rest.starts_with(b"<?") {
            let e = find(&s[i + 2..], b"?>").ok_or("unterminated processing instruction")?;
            i += 2 + e + 2;
        } else if rest.starts_with(b"<!") {
            // DOCTYPE: skip, including an internal subset.
            let mut depth = 0i32;
            let mut j = i + 2;
            while j < s.len() {
                match s[j] {
                    b'[' => depth += 1,
                    b']' => depth -= 1,
                    b'>' if depth <= 0 => break,
                    _ => {}
                }
                j += 1;
            }
            if j >= s.len() {
                return Err("unterminated DOCTYPE".into());
            }
            i = j + 1;
        } else if rest.starts_with(b"</") {
            let e = find(&s[i..], b">").ok_or("unterminated end tag")?;
            let name = s[i + 2..i + e].trim_ascii();
            match stack.pop() {
                Some(open) if open == name => {}
                _ => return Err(format!("mismatched end tag at byte {i}")),
            }
            i += e + 1;
        } else {
            // Start tag with attributes.
            let mut j = i + 1;
            while j < s.len() && !s[j].is_ascii_whitespace() && s[j] != b'>' && s[j] != b'/' {
                j += 1;
            }
            let name = s[i + 1..j].to_vec();
            if name.is_empty() {
                return Err(format!("bad tag at byte {i}"));
            }
            if stack.is_empty() && root_seen {
                return Err(format!("second root element at byte {i}"));
            }
            root_seen = true;
            let mut self_close = false;
            loop {
                while j < s.len() && s[j].is_ascii_whitespace() {
                    j += 1;
                }
                match s.get(j) {
                    None => return Err("unterminated start tag".into()),
                    Some(b'>') => {
                        j += 1;
                        break;
                    }
                    Some(b'/') if s.get(j + 1) == Some(&b'>') => {
                        self_close = true;
                        j += 2;
                        break;
                    }
                    _ => {}
                }
                let an = j;
                while j < s.len() && s[j] != b'=' && !s[j].is_ascii_whitespace() && s[j] != b'>' {
                    j += 1;
                }
                if j == an {
                    return Err(format!("bad attribute at byte {j}"));
                }
                while j < s.len() && s[j].is_ascii_whitespace() {
                    j += 1;
                }
                if s.get(j) != Some(&b'=') {
                    return Err(format!("attribute without value at byte {j}"));
                }
                j += 1;
                while j < s.len() && s[j].is_ascii_whitespace() {
                    j += 1;
                }
                let q = *s.get(j).ok_or("unterminated attribute")?;
                if q != b'"' && q != b'\'' {
                    return Err(format!("unquoted attribute at byte {j}"));
                }
                let e = s[j + 1..]
                    .iter()
                    .position(|&c| c == q)
                    .ok_or("unterminated attribute")?;
                attrs.push(decode_entities(&s[j + 1..j + 1 + e]));
                j += e + 2;
            }
            if !self_close {
                stack.push(name);
            }
            i = j;
        }
    }
    if !stack.is_empty() {
        return Err("unclosed element at end of body".into());
    }
    if !root_seen {
        return Err("no root element".into());
    }
    Ok((text, attrs))
}

fn decode_entities(v: &[u8]) -> Vec<u8> {
    if v.contains(&b'&') {
        crate::transform::Transform::HtmlEntityDecode
            .apply(v)
            .into_owned()
    } else {
        v.to_vec()
    }
}

/// The boundary of a `multipart/form-data` content type, noting quoting and whitespace.
fn boundary(ct: &[u8], flags: &mut MultipartFlags) -> Option<Vec<u8>> {
    let lc = ct.to_ascii_lowercase();
    let at = find(&lc, b"boundary")?;
    let mut j = at + 8;
    while j < ct.len() && (ct[j] == b' ' || ct[j] == b'\t') {
        flags.boundary_whitespace = true;
        j += 1;
    }
    if ct.get(j) != Some(&b'=') {
        return None;
    }
    j += 1;
    while j < ct.len() && (ct[j] == b' ' || ct[j] == b'\t') {
        flags.boundary_whitespace = true;
        j += 1;
    }
    let rest = &ct[j..];
    let b = if rest.first() == Some(&b'"') {
        flags.boundary_quoted = true;
        let e = rest[1..].iter().position(|&c| c == b'"')?;
        rest[1..1 + e].to_vec()
    } else {
        let e = rest
            .iter()
            .position(|&c| c == b';' || c == b' ' || c == b',')
            .unwrap_or(rest.len());
        rest[..e].to_vec()
    };
    if b.is_empty() || b.len() > 70 {
        return None;
    }
    Some(b)
}

/// Multipart: fields to `ARGS_POST`, files to `FILES` / `FILES_SIZES`, each part's headers to
/// `MULTIPART_PART_HEADERS`, framing oddities to the strictness flags.
pub fn multipart(ct: &[u8], body: &[u8], d: &mut Data) -> Result<(), String> {
    let mut flags = MultipartFlags::default();
    let res = multipart_inner(ct, body, d, &mut flags);
    d.multipart = flags;
    res
}

fn multipart_inner(
    ct: &[u8],
    body: &[u8],
    d: &mut Data,
    f: &mut MultipartFlags,
) -> Result<(), String> {
    let b = boundary(ct, f).ok_or("multipart body without a usable boundary")?;
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(&b);
    // Find the first delimiter line.
    let first = find(body, &delim).ok_or_else(|| {
        f.unmatched_boundary = true;
        "multipart boundary not found".to_string()
    })?;
    if first > 0 {
        let pre = &body[..first];
        if pre.iter().any(|c| !c.is_ascii_whitespace()) {
            f.data_before = true;
        }
    }
    let mut pos = first;
    let mut finished = false;
    while pos < body.len() {
        // At a delimiter.
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            finished = true;
            let after = &body[pos + 2..];
            if after.iter().any(|c| !c.is_ascii_whitespace()) {
                f.data_after = true;
            }
            break;
        }
        // Rest of the delimiter line.
        let eol = match find(&body[pos..], b"\n") {
            Some(e) => e,
            None => {
                f.invalid_part = true;
                return Err("multipart delimiter line not terminated".into());
            }
        };
        let line_rest = &body[pos..pos + eol];
        if line_rest.last() != Some(&b'\r') {
            f.lf_line = true;
        }
        if !line_rest.trim_ascii().is_empty() {
            f.invalid_part = true;
        }
        pos += eol + 1;
        // Headers.
        let mut headers: Vec<Vec<u8>> = Vec::new();
        loop {
            let e = match find(&body[pos..], b"\n") {
                Some(e) => e,
                None => {
                    f.invalid_part = true;
                    return Err("multipart part headers not terminated".into());
                }
            };
            let mut line = &body[pos..pos + e];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            } else {
                f.lf_line = true;
            }
            pos += e + 1;
            if line.is_empty() {
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                f.header_folding = true;
                match headers.last_mut() {
                    Some(h) => {
                        h.push(b' ');
                        h.extend_from_slice(line.trim_ascii());
                    }
                    None => f.invalid_header_folding = true,
                }
                continue;
            }
            if !line.contains(&b':') {
                f.invalid_part = true;
            }
            headers.push(line.to_vec());
        }
        // Body of the part: up to the next delimiter (preceded by CRLF or LF).
        let next = find(&body[pos..], &delim);
        let Some(n) = next else {
            f.unmatched_boundary = true;
            return Err("multipart body ends without a closing boundary".into());
        };
        let mut content = &body[pos..pos + n];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        } else if content.ends_with(b"\n") {
            f.lf_line = true;
            content = &content[..content.len() - 1];
        }
        pos += n;
        // Name, filename from Content-Disposition.
        let mut name: Option<Vec<u8>> = None;
        let mut filename: Option<Vec<u8>> = None;
        for h in &headers {
            let lc = h.to_ascii_lowercase();
            if lc.starts_with(b"content-disposition:") {
                let v = &h[20..];
                let v = v.trim_ascii();
                if !v.to_ascii_lowercase().starts_with(b"form-data") {
                    f.invalid_part = true;
                }
                parse_disposition(v, &mut name, &mut filename, f);
            }
        }
        let Some(name) = name else {
            f.invalid_part = true;
            continue;
        };
        for h in &headers {
            d.part_headers.push((name.clone(), h.clone()));
        }
        match filename {
            Some(fname) => {
                d.files.push((name.clone(), fname));
                d.files_sizes
                    .push((name.clone(), content.len().to_string().into_bytes()));
            }
            None => d.args_post.push((name, content.to_vec())),
        }
    }
    if !finished {
        f.unmatched_boundary = true;
        return Err("multipart body ends without a closing boundary".into());
    }
    Ok(())
}

fn parse_disposition(
    v: &[u8],
    name: &mut Option<Vec<u8>>,
    filename: &mut Option<Vec<u8>>,
    f: &mut MultipartFlags,
) {
    // `form-data; name="a;b"; filename="x.txt"`: parameters split on `;` outside quotes.
    let mut i = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    if i == v.len() && v.contains(&b'=') {
        f.missing_semicolon = true;
    }
    while i < v.len() {
        i += 1; // the `;`
        while i < v.len() && (v[i] == b' ' || v[i] == b'\t') {
            i += 1;
        }
        let ks = i;
        while i < v.len() && v[i] != b'=' && v[i] != b';' {
            i += 1;
        }
        let key = v[ks..i].trim_ascii().to_ascii_lowercase();
        if i >= v.len() || v[i] == b';' {
            continue;
        }
        i += 1; // the `=`
        while i < v.len() && (v[i] == b' ' || v[i] == b'\t') {
            i += 1;
        }
        let mut val = Vec::new();
        if v.get(i) == Some(&b'"') {
            i += 1;
            let mut closed = false;
            while i < v.len() {
                match v[i] {
                    b'\\' if matches!(v.get(i + 1), Some(b'"') | Some(b'\\')) => {
                        val.push(v[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        val.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                f.invalid_quoting = true;
            }
            // Anything but blanks between the closing quote and the next `;` is odd.
            while i < v.len() && v[i] != b';' {
                if !v[i].is_ascii_whitespace() {
                    f.invalid_quoting = true;
                }
                i += 1;
            }
        } else {
            let vs = i;
            while i < v.len() && v[i] != b';' {
                i += 1;
            }
            val = v[vs..i].trim_ascii().to_vec();
            if val.first() == Some(&b'\'') {
                f.invalid_quoting = true;
            }
        }
        match key.as_slice() {
            b"name" => *name = Some(val),
            b"filename" | b"filename*" => *filename = Some(val),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names() {
        let mut out = Vec::new();
        json(br#"{"a":{"b":[1,"x"]},"c":null}"#, 10, &mut out).unwrap();
        let names: Vec<String> = out
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into())
            .collect();
        assert_eq!(names, ["json.a.b.0", "json.a.b.1", "json.c"]);
        assert!(json(br#"{"a":1,"a":2}"#, 10, &mut Vec::new()).is_err());
        assert!(json(b"[[[[1]]]]", 2, &mut Vec::new()).is_err());
    }

    #[test]
    fn xml_text_and_attrs() {
        let (t, a) =
            xml(b"<?xml version=\"1.0\"?><a x='1'><b y=\"&lt;2\">hi</b><![CDATA[<c>]]></a>")
                .unwrap();
        assert_eq!(t, b"hi<c>");
        assert_eq!(a, vec![b"1".to_vec(), b"<2".to_vec()]);
        assert!(xml(b"<a><b></a>").is_err());
    }

    #[test]
    fn multipart_parts() {
        let mut d = Data::default();
        let body = b"--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xx\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--xx--\r\n";
        multipart(b"multipart/form-data; boundary=xx", body, &mut d).unwrap();
        assert_eq!(d.args_post, vec![(b"a".to_vec(), b"1".to_vec())]);
        assert_eq!(d.files, vec![(b"f".to_vec(), b"x.php".to_vec())]);
        assert_eq!(d.part_headers.len(), 3);
        assert!(!d.multipart.strict_error(false));
    }
}
