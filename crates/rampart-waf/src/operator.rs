//! Operators (`@rx`, `@pm`, `@detectSQLi`, ...): compiled once at load, run per value.

use crate::macros::Macro;
use crate::vars::Data;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use std::path::Path;

/// Compile a SecLang regex the way ModSecurity runs it: on bytes, not Unicode (`\xbc` is a
/// byte), `.` matching newlines; `\x{HH}` is rewritten to `\xHH` so it stays a byte.
pub fn compile_regex(pattern: &str, caseless: bool) -> Result<Regex, String> {
    let pattern = &pcre_to_rust(pattern);
    let mut p = String::with_capacity(pattern.len());
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' && b.get(i + 2) == Some(&b'{') {
                if let Some(close) = pattern[i + 3..].find('}') {
                    let hex = &pattern[i + 3..i + 3 + close];
                    if hex.len() <= 2
                        && !hex.is_empty()
                        && hex.bytes().all(|c| c.is_ascii_hexdigit())
                    {
                        p.push_str("\\x");
                        if hex.len() == 1 {
                            p.push('0');
                        }
                        p.push_str(hex);
                        i += 3 + close + 1;
                        continue;
                    }
                }
            }
            // A backslash and the whole (possibly multi-byte) character after it.
            let end = pattern[i + 1..]
                .chars()
                .next()
                .map_or(i + 1, |c| i + 1 + c.len_utf8());
            p.push_str(&pattern[i..end]);
            i = end;
            continue;
        }
        let end = pattern[i..]
            .chars()
            .next()
            .map_or(i + 1, |c| i + c.len_utf8());
        p.push_str(&pattern[i..end]);
        i = end;
    }
    RegexBuilder::new(&p)
        .unicode(false)
        .dot_matches_new_line(true)
        .case_insensitive(caseless)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// PCRE syntax Rust's parser reads differently: `[` inside a class is literal.
/// PCRE's possessive quantifiers (`*+`, `++`, `?+`, `{n}+`) become greedy ones: Rust's
/// engine does not backtrack, so possessiveness only changes which inputs fail to match, never
/// the cost. (Older CRS versions use them as a ReDoS guard.)
fn pcre_to_rust(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_class = false;
    let mut prev_quant = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // `\x{..}`, `\p{..}`: copy whole.
            if matches!(b[i + 1], b'x' | b'p' | b'P') && b.get(i + 2) == Some(&b'{') {
                if let Some(e) = b[i + 2..].iter().position(|&x| x == b'}') {
                    out.extend_from_slice(&b[i..i + 2 + e + 1]);
                    i += 2 + e + 1;
                    prev_quant = false;
                    continue;
                }
            }
            // PCRE's `\<` and `\>` are literal brackets; in Rust they are word boundaries.
            if b[i + 1] != b'<' && b[i + 1] != b'>' {
                out.push(c);
            }
            out.push(b[i + 1]);
            i += 2;
            prev_quant = false;
            continue;
        }
        if in_class {
            match c {
                b']' => {
                    in_class = false;
                    out.push(c);
                }
                // PCRE reads these literally in a class; Rust reads `[` as a nested class
                // and `&&`, `~~`, `--` as set operations.
                b'[' | b'&' | b'~' => {
                    out.push(b'\\');
                    out.push(c);
                }
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    out.push(c);
                    out.push(b'\\');
                    out.push(b'-');
                    i += 1;
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            b'[' => {
                in_class = true;
                out.push(c);
                // `[]...]` and `[^]...]` hold a literal `]`.
                if b.get(i + 1) == Some(&b'^') {
                    out.push(b'^');
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    out.push(b']');
                    i += 1;
                }
                prev_quant = false;
            }
            b'+' if prev_quant => {
                prev_quant = false;
            }
            b'{' => {
                // A `{` that does not start `{n}`, `{n,}` or `{n,m}` is literal in PCRE.
                let rest = &b[i + 1..];
                let close = rest.iter().position(|&x| x == b'}');
                let valid = close.is_some_and(|e| {
                    let inner = &rest[..e];
                    !inner.is_empty()
                        && inner[0].is_ascii_digit()
                        && inner.iter().all(|x| x.is_ascii_digit() || *x == b',')
                        && inner.iter().filter(|x| **x == b',').count() <= 1
                });
                if valid {
                    out.push(c);
                } else {
                    out.push(b'\\');
                    out.push(c);
                }
                prev_quant = false;
            }
            b'*' | b'+' | b'}' => {
                out.push(c);
                prev_quant = true;
            }
            b'?' => {
                // `(?` starts group syntax, not a quantifier.
                let group = out.last() == Some(&b'(');
                out.push(c);
                prev_quant = !group;
            }
            _ => {
                out.push(c);
                prev_quant = false;
            }
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| p.to_string())
}

/// An operator argument: fixed, or with macros expanded per transaction.
#[derive(Clone, Debug)]
pub enum Arg {
    Lit(Vec<u8>),
    Macro(Macro),
}

impl Arg {
    fn parse(s: &str) -> Result<Arg, String> {
        let m = Macro::parse(s)?;
        Ok(match m.literal() {
            Some(l) => Arg::Lit(l.to_vec()),
            None => Arg::Macro(m),
        })
    }
    fn get<'a>(&'a self, data: &'a Data) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Arg::Lit(l) => std::borrow::Cow::Borrowed(l),
            Arg::Macro(m) => m.expand_cow(data, &|_| None),
        }
    }
}

/// A compiled `@rx`: the byte regex engine, or (only for the few older-CRS patterns that use
/// look-around, which it lacks) a backtracking engine on the input read as UTF-8 (invalid
/// bytes become U+FFFD).
#[derive(Clone, Debug)]
pub enum Rx {
    /// `^.*$` (or `.*`): with dot-all on it matches every value, whole. No regex runs;
    /// TX:0 is the value. (CRS captures each header name this way, in 920450.)
    Whole,
    Bytes(Regex),
    Fancy(Box<fancy_regex::Regex>),
}

impl Rx {
    pub fn compile(pattern: &str) -> Result<Rx, String> {
        if matches!(pattern, "^.*$" | ".*" | "^.*") {
            return Ok(Rx::Whole);
        }
        match compile_regex(pattern, false) {
            Ok(r) => Ok(Rx::Bytes(r)),
            Err(e) => {
                let p = format!("(?s){pattern}");
                match fancy_regex::RegexBuilder::new(&p)
                    .backtrack_limit(100_000)
                    .build()
                {
                    Ok(f) => Ok(Rx::Fancy(Box::new(f))),
                    Err(f) => Err(format!("{e} (and as a backtracking regex: {f})")),
                }
            }
        }
    }
    fn is_match(&self, v: &[u8]) -> bool {
        match self {
            Rx::Whole => true,
            Rx::Bytes(r) => r.is_match(v),
            Rx::Fancy(f) => f
                .is_match(String::from_utf8_lossy(v).as_ref())
                .unwrap_or(false),
        }
    }
    fn captures(&self, v: &[u8], c: &mut Vec<Vec<u8>>) -> bool {
        c.clear();
        match self {
            Rx::Whole => {
                c.push(v.to_vec());
                true
            }
            // The DFA answers "no" fast; capture groups only for a match.
            Rx::Bytes(r) if !r.is_match(v) => false,
            // No groups: TX:0 is the match, which the DFA finds without the capture engine.
            Rx::Bytes(r) if r.captures_len() == 1 => match r.find(v) {
                Some(m) => {
                    c.push(m.as_bytes().to_vec());
                    true
                }
                None => false,
            },
            Rx::Bytes(r) => match r.captures(v) {
                Some(caps) => {
                    for m in caps.iter().take(10) {
                        c.push(m.map(|m| m.as_bytes().to_vec()).unwrap_or_default());
                    }
                    true
                }
                None => false,
            },
            Rx::Fancy(f) => {
                let s = String::from_utf8_lossy(v);
                match f.captures(s.as_ref()) {
                    Ok(Some(caps)) => {
                        for m in caps.iter().take(10) {
                            c.push(
                                m.map(|m| m.as_str().as_bytes().to_vec())
                                    .unwrap_or_default(),
                            );
                        }
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Rx(Rx),
    /// The phrases' automaton, the phrases (kept for the rule prefilter), and for a list too
    /// long for the rule prefilter, a DFA that answers "no phrase here" at one table lookup
    /// per byte (the crate's NFA took ~900 instructions on an 18-byte value).
    Pm(
        AhoCorasick,
        Vec<Vec<u8>>,
        Option<Box<crate::prefilter::Dfa>>,
    ),
    DetectSqli,
    DetectXss,
    Within(Arg),
    Streq(Arg),
    StrMatch(Arg),
    Contains(Arg),
    ContainsWord(Arg),
    BeginsWith(Arg),
    EndsWith(Arg),
    Eq(Arg),
    Ge(Arg),
    Gt(Arg),
    Le(Arg),
    Lt(Arg),
    IpMatch(Vec<ipnet::IpNet>),
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    Unconditional,
    NoMatch,
    /// `@rbl` and `@geoLookup`: Rampart makes no DNS or GeoIP lookups from rules, so these
    /// never match (geofencing is the `geo` guard's job).
    NoLookup(&'static str),
}

/// A compiled operator with its negation.
#[derive(Clone, Debug)]
pub struct Operator {
    pub name: String,
    pub negated: bool,
    pub op: Op,
}

impl Operator {
    /// The macro in the operator's argument, if it has one (`@lt %{tx.detection_paranoia_level}`).
    pub fn arg_macro_mut(&mut self) -> Option<&mut Macro> {
        match &mut self.op {
            Op::Within(Arg::Macro(m))
            | Op::Streq(Arg::Macro(m))
            | Op::StrMatch(Arg::Macro(m))
            | Op::Contains(Arg::Macro(m))
            | Op::ContainsWord(Arg::Macro(m))
            | Op::BeginsWith(Arg::Macro(m))
            | Op::EndsWith(Arg::Macro(m))
            | Op::Eq(Arg::Macro(m))
            | Op::Ge(Arg::Macro(m))
            | Op::Gt(Arg::Macro(m))
            | Op::Le(Arg::Macro(m))
            | Op::Lt(Arg::Macro(m)) => Some(m),
            _ => None,
        }
    }

    pub fn compile(negated: bool, name: &str, arg: &str, dir: &Path) -> Result<Operator, String> {
        let lname = name.to_ascii_lowercase();
        let op = match lname.as_str() {
            "rx" => Op::Rx(Rx::compile(arg).map_err(|e| format!("@rx: {e}"))?),
            "pm" => pm(arg.split_ascii_whitespace().map(str::to_string).collect())?,
            "pmfromfile" | "pmf" => {
                let mut phrases = Vec::new();
                for f in arg.split_ascii_whitespace() {
                    let path = dir.join(f);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("@pmFromFile: cannot read {}: {e}", path.display()))?;
                    phrases.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                pm(phrases)?
            }
            "detectsqli" => Op::DetectSqli,
            "detectxss" => Op::DetectXss,
            "within" => Op::Within(Arg::parse(arg)?),
            "streq" => Op::Streq(Arg::parse(arg)?),
            "strmatch" => Op::StrMatch(Arg::parse(arg)?),
            "contains" => Op::Contains(Arg::parse(arg)?),
            "containsword" => Op::ContainsWord(Arg::parse(arg)?),
            "beginswith" => Op::BeginsWith(Arg::parse(arg)?),
            "endswith" => Op::EndsWith(Arg::parse(arg)?),
            "eq" => Op::Eq(Arg::parse(arg)?),
            "ge" => Op::Ge(Arg::parse(arg)?),
            "gt" => Op::Gt(Arg::parse(arg)?),
            "le" => Op::Le(Arg::parse(arg)?),
            "lt" => Op::Lt(Arg::parse(arg)?),
            "ipmatch" => Op::IpMatch(ip_list(arg.split(',').map(str::to_string))?),
            "ipmatchfromfile" | "ipmatchf" => {
                let path = dir.join(arg.trim());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("@ipMatchFromFile: cannot read {}: {e}", path.display())
                })?;
                ip_list(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string),
                )?
                .pipe(Op::IpMatch)
            }
            "validatebyterange" => Op::ValidateByteRange(byte_range(arg)?),
            "validateurlencoding" => Op::ValidateUrlEncoding,
            "validateutf8encoding" => Op::ValidateUtf8Encoding,
            "unconditionalmatch" => Op::Unconditional,
            "nomatch" => Op::NoMatch,
            "rbl" => Op::NoLookup("rbl"),
            "geolookup" => Op::NoLookup("geoLookup"),
            other => return Err(format!("unsupported operator `@{other}`")),
        };
        Ok(Operator {
            name: name.to_string(),
            negated,
            op,
        })
    }

    /// Run on one value. `capture` receives TX:0..9 when the rule captures.
    pub fn matches(&self, data: &Data, v: &[u8], capture: Option<&mut Vec<Vec<u8>>>) -> bool {
        self.run(data, v, capture) != self.negated
    }

    fn run(&self, data: &Data, v: &[u8], capture: Option<&mut Vec<Vec<u8>>>) -> bool {
        match &self.op {
            Op::Rx(re) => match capture {
                Some(c) => re.captures(v, c),
                None => re.is_match(v),
            },
            Op::Pm(_, _, Some(dfa)) if !dfa.any(v) => false,
            Op::Pm(ac, _, _) => match ac.find(v) {
                Some(m) => {
                    if let Some(c) = capture {
                        c.clear();
                        c.push(v[m.start()..m.end()].to_vec());
                    }
                    true
                }
                None => false,
            },
            Op::DetectSqli => match crate::sqli::detect(v) {
                Some(fp) => {
                    if let Some(c) = capture {
                        c.clear();
                        c.push(fp.into_bytes());
                    }
                    true
                }
                None => false,
            },
            Op::DetectXss => crate::xss::detect(v),
            Op::Within(a) => !v.is_empty() && contains(&a.get(data), v),
            Op::Streq(a) => a.get(data).as_ref() == v,
            Op::StrMatch(a) | Op::Contains(a) => contains(v, &a.get(data)),
            Op::ContainsWord(a) => {
                let w = a.get(data);
                if w.is_empty() {
                    return true;
                }
                let mut from = 0;
                while let Some(i) = find(&v[from..], &w) {
                    let s = from + i;
                    let e = s + w.len();
                    let before = s == 0 || !is_word(v[s - 1]);
                    let after = e == v.len() || !is_word(v[e]);
                    if before && after {
                        return true;
                    }
                    from = s + 1;
                }
                false
            }
            Op::BeginsWith(a) => v.starts_with(&a.get(data)),
            Op::EndsWith(a) => v.ends_with(&a.get(data)),
            Op::Eq(a) => atoi(v) == atoi(&a.get(data)),
            Op::Ge(a) => atoi(v) >= atoi(&a.get(data)),
            Op::Gt(a) => atoi(v) > atoi(&a.get(data)),
            Op::Le(a) => atoi(v) <= atoi(&a.get(data)),
            Op::Lt(a) => atoi(v) < atoi(&a.get(data)),
            Op::IpMatch(nets) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Op::ValidateByteRange(ok) => v.iter().any(|&c| !ok[c as usize]),
            Op::ValidateUrlEncoding => bad_url_encoding(v),
            Op::ValidateUtf8Encoding => std::str::from_utf8(v).is_err(),
            Op::Unconditional => true,
            Op::NoMatch | Op::NoLookup(_) => false,
        }
    }
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// First position of `n` in `h` (shared by the body processors and `explain`).
pub(crate) fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    memchr::memmem::find(h, n)
}

pub(crate) fn contains(h: &[u8], n: &[u8]) -> bool {
    find(h, n).is_some()
}

/// `@pm` lists longer than this keep their own automata only (the word lists CRS reads with
/// `@pmFromFile` would make every pipeline's prefilter automaton much larger).
pub(crate) const MAX_PM_PHRASES: usize = 256;

/// The largest table a long list's DFA may take, counted as one state per phrase byte (an
/// upper bound). CRS's request-side lists come to 0.9-2.3 MB so (0.4-1.2 MB built); its PHP
/// error messages (1,833 phrases, response bodies) to 18 MB, and keep only the crate's
/// automaton.
const MAX_PM_DFA_BYTES: usize = 4 << 20;

fn pm(phrases: Vec<String>) -> Result<Op, String> {
    if phrases.is_empty() {
        return Err("@pm needs at least one phrase".into());
    }
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .build(&phrases)
        .map_err(|e| format!("@pm: {e}"))?;
    let phrases: Vec<Vec<u8>> = phrases.into_iter().map(String::into_bytes).collect();
    // (Every phrase is non-empty: the DFA leaves empty patterns out.)
    let dfa = if phrases.len() > MAX_PM_PHRASES && phrases.iter().all(|p| !p.is_empty()) {
        let refs: Vec<&[u8]> = phrases.iter().map(|p| &p[..]).collect();
        crate::prefilter::Dfa::build_within(&refs, MAX_PM_DFA_BYTES).map(Box::new)
    } else {
        None
    };
    Ok(Op::Pm(ac, phrases, dfa))
}

fn ip_list(items: impl Iterator<Item = String>) -> Result<Vec<ipnet::IpNet>, String> {
    let mut out = Vec::new();
    for s in items {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let net = if s.contains('/') {
            s.parse::<ipnet::IpNet>()
                .map_err(|e| format!("@ipMatch: `{s}`: {e}"))?
        } else {
            let ip: std::net::IpAddr = s.parse().map_err(|e| format!("@ipMatch: `{s}`: {e}"))?;
            ipnet::IpNet::from(ip)
        };
        out.push(net);
    }
    Ok(out)
}

fn byte_range(arg: &str) -> Result<Box<[bool; 256]>, String> {
    let mut ok = Box::new([false; 256]);
    for part in arg.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u8 = a
            .parse()
            .map_err(|_| format!("@validateByteRange: bad byte `{a}`"))?;
        let b: u8 = b
            .parse()
            .map_err(|_| format!("@validateByteRange: bad byte `{b}`"))?;
        if a > b {
            return Err(format!("@validateByteRange: empty range `{part}`"));
        }
        for c in a..=b {
            ok[c as usize] = true;
        }
    }
    Ok(ok)
}

/// A `%` not followed by two hex digits (`@validateUrlEncoding`, `URLENCODED_ERROR`).
pub(crate) fn bad_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if i + 2 >= v.len() {
                return true;
            }
            if !(v[i + 1].is_ascii_hexdigit() && v[i + 2].is_ascii_hexdigit()) {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// C `atoi`: leading blanks, a sign, digits; anything else is 0.
pub fn atoi(v: &[u8]) -> i64 {
    let s = v.trim_ascii_start();
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add((c - b'0') as i64);
    }
    if neg {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_bytes() {
        let re = compile_regex(r"\x{bc}[^\x{be}]*\x{be}", false).unwrap();
        assert!(re.is_match(b"\xbcscript\xbe"));
        let re = compile_regex(r"(?i)k", false).unwrap();
        assert!(!re.is_match("\u{212a}".as_bytes()));
        let re = compile_regex(r"a.b$", false).unwrap();
        assert!(re.is_match(b"a\nb"));
        assert_eq!(pcre_to_rust(r"a*+b++[x+]+\++c?+"), r"a*b+[x+]+\++c?");
    }

    /// `^.*$` needs no regex, and captures what the regex would: the whole value, newlines
    /// and all (dot-all), the empty value too.
    #[test]
    fn match_all_captures_the_whole_value() {
        let whole = Rx::compile("^.*$").unwrap();
        assert!(matches!(whole, Rx::Whole));
        let re = compile_regex("^.*$", false).unwrap();
        for v in [&b"x-forwarded-for"[..], b"a\nb\r\n", b"", b"\xff\x00"] {
            let mut c = Vec::new();
            assert!(whole.captures(v, &mut c));
            assert_eq!(c, vec![re.find(v).unwrap().as_bytes().to_vec()]);
        }
    }

    /// A long `@pm` list's DFA says "no phrase" exactly when the crate's automaton finds none:
    /// CRS's own lists, on values with and without their phrases (in either ASCII case).
    #[test]
    fn long_phrase_lists_answer_as_their_automaton() {
        let rules =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs/rules");
        for file in [
            "lfi-os-files.data",
            "windows-powershell-commands.data",
            "unix-shell.data",
        ] {
            let text = std::fs::read_to_string(rules.join(file)).unwrap();
            let phrases: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            let Ok(Op::Pm(ac, list, Some(dfa))) = pm(phrases) else {
                panic!("{file}: no DFA");
            };
            let mut hits = 0;
            for (state, noise) in
                crate::testgen::values(0x51ed_2701_f3a5_c7b9, b"ab./\\-_ etcwinEXE", 0..=24, 20_000)
            {
                let mut v = noise.clone();
                if state % 4 == 0 {
                    let p = &list[(state >> 8) as usize % list.len()];
                    let p = if state % 8 == 0 {
                        p.to_ascii_uppercase()
                    } else {
                        p.clone()
                    };
                    // The whole phrase, or all but its last byte.
                    let keep = if state % 3 == 0 { p.len() - 1 } else { p.len() };
                    v.extend_from_slice(&p[..keep]);
                    v.extend_from_slice(&noise);
                }
                let found = ac.find(&v[..]).is_some();
                assert_eq!(
                    dfa.any(&v),
                    found,
                    "{file}: {:?}",
                    String::from_utf8_lossy(&v)
                );
                hits += found as usize;
            }
            assert!(hits > 2_000, "{file}: {hits} values hold a phrase");
        }
    }

    #[test]
    fn small_operators() {
        let d = Data::default();
        let dir = Path::new(".");
        let op = Operator::compile(false, "validateByteRange", "32-126", dir).unwrap();
        assert!(op.matches(&d, b"a\x01", None));
        assert!(!op.matches(&d, b"abc", None));
        let op = Operator::compile(false, "ipMatch", "127.0.0.1,::1,10.0.0.0/8", dir).unwrap();
        assert!(op.matches(&d, b"10.2.3.4", None));
        assert!(!op.matches(&d, b"11.2.3.4", None));
        let op = Operator::compile(true, "within", "GET POST", dir).unwrap();
        assert!(op.matches(&d, b"PUT", None));
        assert!(!op.matches(&d, b"GET", None));
        assert!(Operator::compile(false, "validateUrlEncoding", "", dir)
            .unwrap()
            .matches(&d, b"a%2", None));
        assert_eq!(atoi(b" 12abc"), 12);
        assert!(Operator::compile(false, "frobnicate", "", dir).is_err());
    }
}
