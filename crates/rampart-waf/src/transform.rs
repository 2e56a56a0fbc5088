//! Transformations (`t:`): each turns a value into the normalized form a rule inspects.
//! They work on bytes, like ModSecurity's; decoders leave invalid encodings as they are.

use crate::prefilter::ByteSet;
use std::borrow::Cow;

/// One transformation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    Lowercase,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    UrlEncode,
    JsDecode,
    HtmlEntityDecode,
    Utf8ToUnicode,
    RemoveNulls,
    ReplaceNulls,
    CssDecode,
    CmdLine,
    RemoveWhitespace,
    CompressWhitespace,
    ReplaceComments,
    RemoveComments,
    RemoveCommentsChar,
    NormalizePath,
    NormalizePathWin,
    EscapeSeqDecode,
    Length,
    Base64Decode,
    Base64DecodeExt,
    Base64Encode,
    HexDecode,
    HexEncode,
    SqlHexDecode,
    Sha1,
    Md5,
    Trim,
    TrimLeft,
    TrimRight,
    ParityEven7bit,
    ParityOdd7bit,
    ParityZero7bit,
}

impl Transform {
    /// Look a transformation up by its SecLang name (case-insensitive). `none` is handled by
    /// the caller (it clears the list).
    pub fn by_name(name: &str) -> Option<Transform> {
        use Transform::*;
        Some(match name.to_ascii_lowercase().as_str() {
            "lowercase" => Lowercase,
            "uppercase" => Uppercase,
            "urldecode" => UrlDecode,
            "urldecodeuni" => UrlDecodeUni,
            "urlencode" => UrlEncode,
            "jsdecode" => JsDecode,
            "htmlentitydecode" => HtmlEntityDecode,
            "utf8tounicode" => Utf8ToUnicode,
            "removenulls" => RemoveNulls,
            "replacenulls" => ReplaceNulls,
            "cssdecode" => CssDecode,
            "cmdline" => CmdLine,
            "removewhitespace" => RemoveWhitespace,
            "compresswhitespace" => CompressWhitespace,
            "replacecomments" => ReplaceComments,
            "removecomments" => RemoveComments,
            "removecommentschar" => RemoveCommentsChar,
            "normalizepath" | "normalisepath" => NormalizePath,
            "normalizepathwin" | "normalisepathwin" => NormalizePathWin,
            "escapeseqdecode" => EscapeSeqDecode,
            "length" => Length,
            "base64decode" => Base64Decode,
            "base64decodeext" => Base64DecodeExt,
            "base64encode" => Base64Encode,
            "hexdecode" => HexDecode,
            "hexencode" => HexEncode,
            "sqlhexdecode" => SqlHexDecode,
            "sha1" => Sha1,
            "md5" => Md5,
            "trim" => Trim,
            "trimleft" => TrimLeft,
            "trimright" => TrimRight,
            "parityeven7bit" => ParityEven7bit,
            "parityodd7bit" => ParityOdd7bit,
            "parityzero7bit" => ParityZero7bit,
            _ => return None,
        })
    }

    /// Bytes one of which a value must hold for this transformation to change it; `None` when
    /// it may change any value. (`quick_triggers_never_skip_a_change` holds each set to
    /// [`Transform::apply`].)
    pub fn trigger(self) -> Option<ByteSet> {
        use Transform::*;
        const UPPER: ByteSet = ByteSet::range(b'A', b'Z');
        const PERCENT_PLUS: ByteSet = ByteSet::of(b"%+");
        const BACKSLASH: ByteSet = ByteSet::of(b"\\");
        const AMP: ByteSet = ByteSet::of(b"&");
        const HIGH: ByteSet = ByteSet::range(0x80, 0xff);
        const NUL: ByteSet = ByteSet::of(b"\0");
        const WS_NBSP: ByteSet = ByteSet::of(b" \t\n\r\x0b\x0c\xa0");
        // `/*` and `*/` both hold a `*`.
        const STAR: ByteSet = ByteSet::of(b"*");
        const COMMENT: ByteSet = ByteSet::of(b"/*-#");
        // Without a slash, only a value made of dots can change (see `changes_dots`).
        const PATH: ByteSet = ByteSet::of(b"/");
        const PATH_WIN: ByteSet = ByteSet::of(b"/\\");
        const ZERO: ByteSet = ByteSet::of(b"0");
        const ASCII_WS: ByteSet = ByteSet::of(b" \t\n\r\x0c");
        // What `cmd_line_changes` looks for: a byte it deletes, replaces or lower-cases, and
        // the space every run of separators or space before `/` or `(` holds.
        const CMD_LINE: ByteSet = CMD_LINE_BEYOND_CASE.union(UPPER);
        Some(match self {
            Lowercase => UPPER,
            UrlDecode | UrlDecodeUni => PERCENT_PLUS,
            JsDecode | CssDecode | EscapeSeqDecode => BACKSLASH,
            HtmlEntityDecode => AMP,
            Utf8ToUnicode => HIGH,
            RemoveNulls | ReplaceNulls => NUL,
            RemoveWhitespace | CompressWhitespace => WS_NBSP,
            ReplaceComments => STAR,
            RemoveComments | RemoveCommentsChar => COMMENT,
            NormalizePath => PATH,
            NormalizePathWin => PATH_WIN,
            SqlHexDecode => ZERO,
            Trim | TrimLeft | TrimRight => ASCII_WS,
            CmdLine => CMD_LINE,
            Uppercase | UrlEncode | Length | Base64Decode | Base64DecodeExt | Base64Encode
            | HexDecode | HexEncode | Sha1 | Md5 | ParityEven7bit | ParityOdd7bit
            | ParityZero7bit => return None,
        })
    }

    /// Whether a value made only of dots may change though it holds no trigger byte:
    /// `normalizePath` turns `.` into an empty value (and `..` into `../`). Counting `.` as a
    /// trigger byte instead would send every dotted name (`json.customer.id`), e-mail address
    /// and decimal through the pipelines that hold it.
    pub fn changes_dots(self) -> bool {
        matches!(self, Transform::NormalizePath | Transform::NormalizePathWin)
    }

    /// Whether this transformation may change a value that holds the bytes `present`.
    #[inline]
    pub fn may_change(self, present: &ByteSet) -> bool {
        self.trigger().is_none_or(|set| set.meets(present))
            || (self.changes_dots() && present.is_only(b'.'))
    }

    /// [`Transform::trigger`] less the capitals a transformation only lower-cases: a value
    /// holding none of these comes out at most lower-cased. (`cmdLine` lower-cases as well as
    /// deleting and replacing separators: `SKU-10023` or `USD` only lose their capitals,
    /// which the lower-cased form every such pipeline shares already holds.)
    pub fn beyond_case_trigger(self) -> Option<ByteSet> {
        match self {
            Transform::Lowercase => Some(ByteSet::default()),
            Transform::CmdLine => Some(CMD_LINE_BEYOND_CASE),
            t => t.trigger(),
        }
    }

    /// Apply to a value. Borrowed when nothing changed (or, for the trims, a part of `v`).
    pub fn apply<'a>(self, v: &'a [u8]) -> Cow<'a, [u8]> {
        use Transform::*;
        match self {
            Lowercase => {
                if v.iter().any(|c| c.is_ascii_uppercase()) {
                    Cow::Owned(v.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(v)
                }
            }
            Uppercase => Cow::Owned(v.to_ascii_uppercase()),
            UrlDecode => when(v.iter().any(|&c| c == b'%' || c == b'+'), v, |v| {
                url_decode(v, false)
            }),
            UrlDecodeUni => when(v.iter().any(|&c| c == b'%' || c == b'+'), v, |v| {
                url_decode(v, true)
            }),
            UrlEncode => Cow::Owned(url_encode(v)),
            JsDecode => when(v.contains(&b'\\'), v, js_decode),
            HtmlEntityDecode => when(v.contains(&b'&'), v, html_entity_decode),
            Utf8ToUnicode => when(!v.is_ascii(), v, utf8_to_unicode),
            RemoveNulls => when(v.contains(&0), v, |v| {
                v.iter().copied().filter(|&c| c != 0).collect()
            }),
            ReplaceNulls => when(v.contains(&0), v, |v| {
                v.iter().map(|&c| if c == 0 { b' ' } else { c }).collect()
            }),
            CssDecode => when(v.contains(&b'\\'), v, css_decode),
            CmdLine => when(cmd_line_changes(v), v, cmd_line),
            RemoveWhitespace => lazy(v, is_ws_nbsp, |v| {
                v.iter().copied().filter(|&c| !is_ws_nbsp(c)).collect()
            }),
            // Only a run of whitespace or a whitespace byte other than a space changes.
            CompressWhitespace => when(
                v.iter().enumerate().any(|(i, &c)| {
                    is_ws_nbsp(c) && (c != b' ' || v.get(i + 1).is_some_and(|&n| is_ws_nbsp(n)))
                }),
                v,
                compress_whitespace,
            ),
            // Only `/*` and `*/` change anything.
            ReplaceComments => when(
                v.windows(2).any(|w| w == b"/*" || w == b"*/"),
                v,
                replace_comments,
            ),
            RemoveComments => lazy(
                v,
                |c| matches!(c, b'/' | b'*' | b'-' | b'#'),
                remove_comments,
            ),
            RemoveCommentsChar => lazy(
                v,
                |c| matches!(c, b'/' | b'*' | b'-' | b'#'),
                remove_comments_char,
            ),
            NormalizePath => when(path_changes(v, false), v, |v| normalize_path(v, false)),
            NormalizePathWin => when(path_changes(v, true), v, |v| normalize_path(v, true)),
            EscapeSeqDecode => when(v.contains(&b'\\'), v, escape_seq_decode),
            Length => Cow::Owned(v.len().to_string().into_bytes()),
            Base64Decode => Cow::Owned(base64_decode(v, false)),
            Base64DecodeExt => Cow::Owned(base64_decode(v, true)),
            Base64Encode => {
                use base64::Engine;
                Cow::Owned(
                    base64::engine::general_purpose::STANDARD
                        .encode(v)
                        .into_bytes(),
                )
            }
            HexDecode => Cow::Owned(hex_decode(v)),
            HexEncode => {
                let mut o = Vec::with_capacity(v.len() * 2);
                for c in v {
                    o.extend_from_slice(format!("{c:02x}").as_bytes());
                }
                Cow::Owned(o)
            }
            SqlHexDecode => lazy(v, |c| c == b'0', sql_hex_decode),
            Sha1 => Cow::Owned(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, v)
                    .as_ref()
                    .to_vec(),
            ),
            Md5 => Cow::Owned(md5(v).to_vec()),
            Trim => Cow::Borrowed(v.trim_ascii()),
            TrimLeft => Cow::Borrowed(v.trim_ascii_start()),
            TrimRight => Cow::Borrowed(v.trim_ascii_end()),
            ParityEven7bit => Cow::Owned(v.iter().map(|&c| parity(c, 0)).collect()),
            ParityOdd7bit => Cow::Owned(v.iter().map(|&c| parity(c, 1)).collect()),
            ParityZero7bit => Cow::Owned(v.iter().map(|&c| c & 0x7f).collect()),
        }
    }
}

/// What a pipeline can do to a value, by the bytes it holds ([`pipeline_alters`]).
#[derive(Clone, Copy, Debug)]
pub struct Alters {
    /// A value holding none of these leaves the pipeline as it came (unless `dots`).
    pub any: ByteSet,
    /// A value holding none of these leaves it at most lower-cased (unless `dots`).
    pub beyond_case: ByteSet,
    /// A step may change a value made only of dots ([`Transform::changes_dots`]).
    pub dots: bool,
}

impl Alters {
    /// A pipeline that may change any value.
    pub const ALL: Alters = Alters {
        any: ByteSet::ALL,
        beyond_case: ByteSet::ALL,
        dots: true,
    };

    /// Whether a value holding the bytes `present` may come out changed beyond ASCII case.
    #[inline]
    pub fn beyond_case(&self, present: &ByteSet) -> bool {
        present.meets(&self.beyond_case) || (self.dots && present.is_only(b'.'))
    }

    /// Whether one of some values, which hold the bytes `held` between them, may.
    #[inline]
    pub fn beyond_case_any(&self, held: &ByteSet) -> bool {
        held.meets(&self.beyond_case) || (self.dots && held.contains(b'.'))
    }

    /// Whether a value holding `present` may come out changed at all.
    #[inline]
    pub fn any(&self, present: &ByteSet) -> bool {
        present.meets(&self.any) || (self.dots && present.is_only(b'.'))
    }
}

/// What a pipeline can do to a value, by the bytes it holds. A value that `any` rules out
/// leaves the pipeline as it came; one that `beyond_case` rules out leaves it at most
/// lower-cased (only `lowercase`, or `cmdLine`'s lower-casing, ran). A later step's trigger
/// letters count in upper case too, since a `lowercase` before it may make them. (A value that
/// an earlier step changes holds that step's trigger bytes, so the dots of a value made only
/// of dots are its own.)
pub fn pipeline_alters(ts: &[Transform]) -> Alters {
    let (mut any, mut beyond_case) = (ByteSet::default(), ByteSet::default());
    let widen = |set: Option<ByteSet>| set.map_or(ByteSet::ALL, ByteSet::or_uppercase);
    for &t in ts {
        any = any.union(widen(t.trigger()));
        beyond_case = beyond_case.union(widen(t.beyond_case_trigger()));
    }
    Alters {
        any,
        beyond_case,
        dots: ts.iter().any(|t| t.changes_dots()),
    }
}

/// The bytes `cmdLine` deletes or replaces, and the space every run of separators (or space
/// before `/` or `(`) it folds holds: all it acts on but capitals.
const CMD_LINE_BEYOND_CASE: ByteSet = ByteSet::of(b"\"'\\^ \t\r\n,;");

/// Apply `ts` in order to `v`, which holds the bytes `present`. A transformation none of whose
/// trigger bytes the current value holds is not run; the set is worked out again only when a
/// transformation changed the value. `None` when nothing changed.
pub fn apply_all(ts: &[Transform], v: &[u8], mut present: ByteSet) -> Option<Vec<u8>> {
    let mut cur: Option<Vec<u8>> = None;
    for &t in ts {
        if !t.may_change(&present) {
            continue;
        }
        let now = cur.as_deref().unwrap_or(v);
        let next = match t.apply(now) {
            Cow::Borrowed(b) if b.len() == now.len() => continue,
            Cow::Borrowed(b) => b.to_vec(),
            Cow::Owned(o) => o,
        };
        present = ByteSet::in_value(&next);
        cur = Some(next);
    }
    cur
}

fn parity(c: u8, odd: u32) -> u8 {
    let b = c & 0x7f;
    if (b.count_ones() + odd) & 1 == 1 {
        b | 0x80
    } else {
        b
    }
}

/// Run `f` only when some byte could need it.
/// `f(v)` when `changes` (a quick test that the transformation would change `v`), else `v`.
fn when<'a>(changes: bool, v: &'a [u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Cow<'a, [u8]> {
    if changes {
        Cow::Owned(f(v))
    } else {
        Cow::Borrowed(v)
    }
}

fn lazy<'a>(
    v: &'a [u8],
    trigger: impl Fn(u8) -> bool,
    f: impl Fn(&[u8]) -> Vec<u8>,
) -> Cow<'a, [u8]> {
    if v.iter().any(|&c| trigger(c)) {
        Cow::Owned(f(v))
    } else {
        Cow::Borrowed(v)
    }
}

fn is_ws_nbsp(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hexval(a)? << 4 | hexval(b)?)
}

/// A code point as one byte, the way ModSecurity does without a unicode map: full-width ASCII
/// (U+FF01..U+FF5E) becomes ASCII, everything else keeps its low byte.
fn code_to_byte(code: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&code) {
        (code - 0xfee0) as u8
    } else {
        (code & 0xff) as u8
    }
}

pub fn url_decode(v: &[u8], uni: bool) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if c == b'+' {
            o.push(b' ');
            i += 1;
        } else if c == b'%' {
            if uni && i + 5 < v.len() && (v[i + 1] == b'u' || v[i + 1] == b'U') {
                let h = &v[i + 2..i + 6];
                if h.iter().all(|c| c.is_ascii_hexdigit()) {
                    let code = h
                        .iter()
                        .fold(0u32, |a, &c| a << 4 | hexval(c).unwrap_or(0) as u32);
                    o.push(code_to_byte(code));
                    i += 6;
                    continue;
                }
            }
            if i + 2 < v.len() {
                if let Some(b) = hex2(v[i + 1], v[i + 2]) {
                    o.push(b);
                    i += 3;
                    continue;
                }
            }
            o.push(c);
            i += 1;
        } else {
            o.push(c);
            i += 1;
        }
    }
    o
}

fn url_encode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    for &c in v {
        if c == b' ' {
            o.push(b'+');
        } else if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'*') {
            o.push(c);
        } else {
            o.extend_from_slice(format!("%{c:02x}").as_bytes());
        }
    }
    o
}

/// `\xHH` or `\OOO` (1-3 octal digits) at `v[i]` (the backslash): the byte and where the
/// escape ends.
fn hex_or_octal_escape(v: &[u8], i: usize) -> Option<(u8, usize)> {
    let n = *v.get(i + 1)?;
    if n == b'x' || n == b'X' {
        let b = hex2(*v.get(i + 2)?, *v.get(i + 3)?)?;
        return Some((b, i + 4));
    }
    if !(b'0'..=b'7').contains(&n) {
        return None;
    }
    let mut j = i + 1;
    let mut val: u32 = 0;
    while j < v.len() && j < i + 4 && (b'0'..=b'7').contains(&v[j]) {
        val = val * 8 + (v[j] - b'0') as u32;
        j += 1;
    }
    Some(((val & 0xff) as u8, j))
}

fn js_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            o.push(v[i]);
            i += 1;
            continue;
        }
        let n = v[i + 1];
        if (n == b'u' || n == b'U')
            && i + 5 < v.len()
            && v[i + 2..i + 6].iter().all(|c| c.is_ascii_hexdigit())
        {
            let code = v[i + 2..i + 6]
                .iter()
                .fold(0u32, |a, &c| a << 4 | hexval(c).unwrap_or(0) as u32);
            o.push(code_to_byte(code));
            i += 6;
        } else if let Some((b, next)) = hex_or_octal_escape(v, i) {
            o.push(b);
            i = next;
        } else {
            o.push(match n {
                b'a' => 7,
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 11,
                other => other,
            });
            i += 2;
        }
    }
    o
}

fn html_entity_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'&' {
            o.push(v[i]);
            i += 1;
            continue;
        }
        let rest = &v[i + 1..];
        if rest.first() == Some(&b'#') {
            let (hex, start) = match rest.get(1) {
                Some(b'x') | Some(b'X') => (true, 2),
                _ => (false, 1),
            };
            let mut j = start;
            let mut val: u32 = 0;
            while j < rest.len() {
                let d = rest[j];
                let digit = if hex {
                    hexval(d)
                } else if d.is_ascii_digit() {
                    Some(d - b'0')
                } else {
                    None
                };
                match digit {
                    Some(x) => {
                        val = val
                            .saturating_mul(if hex { 16 } else { 10 })
                            .saturating_add(x as u32);
                        j += 1;
                    }
                    None => break,
                }
            }
            if j > start {
                o.push((val & 0xff) as u8);
                i += 1 + j;
                if v.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
        } else {
            let mut j = 0;
            while j < rest.len() && j < 8 && rest[j].is_ascii_alphanumeric() {
                j += 1;
            }
            let name = rest[..j].to_ascii_lowercase();
            let ch = match name.as_slice() {
                b"quot" => Some(b'"'),
                b"amp" => Some(b'&'),
                b"lt" => Some(b'<'),
                b"gt" => Some(b'>'),
                b"nbsp" => Some(0xa0),
                b"apos" => Some(b'\''),
                _ => None,
            };
            if let Some(c) = ch {
                o.push(c);
                i += 1 + j;
                if v.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
        }
        o.push(b'&');
        i += 1;
    }
    o
}

fn utf8_to_unicode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        let (len, init) = match c {
            0xc0..=0xdf => (2, (c & 0x1f) as u32),
            0xe0..=0xef => (3, (c & 0x0f) as u32),
            0xf0..=0xf7 => (4, (c & 0x07) as u32),
            _ => (1, 0),
        };
        if len > 1 && i + len <= v.len() && v[i + 1..i + len].iter().all(|&b| b & 0xc0 == 0x80) {
            let code = v[i + 1..i + len]
                .iter()
                .fold(init, |a, &b| a << 6 | (b & 0x3f) as u32);
            o.extend_from_slice(format!("%u{:04x}", code & 0xffff).as_bytes());
            i += len;
        } else {
            o.push(c);
            i += 1;
        }
    }
    o
}

fn css_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            o.push(v[i]);
            i += 1;
            continue;
        }
        if i + 1 >= v.len() {
            // A lone trailing backslash is dropped.
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < v.len() && j < i + 7 && v[j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > i + 1 {
            let h = &v[i + 1..j];
            let code = h
                .iter()
                .fold(0u32, |a, &c| a << 4 | hexval(c).unwrap_or(0) as u32);
            o.push(if h.len() >= 5 || code > 0xff {
                code_to_byte(code)
            } else {
                code as u8
            });
            i = j;
            if i < v.len() && v[i].is_ascii_whitespace() {
                i += 1;
            }
        } else if v[i + 1] == b'\n' {
            i += 2;
        } else {
            o.push(v[i + 1]);
            i += 2;
        }
    }
    o
}

/// Whether [`cmd_line`] would change `v`: a byte it deletes, replaces or lower-cases, a run
/// of separators, or a space before `/` or `(`. A plain sentence with single spaces passes.
fn cmd_line_changes(v: &[u8]) -> bool {
    let mut space = false;
    for &c in v {
        match c {
            b'"' | b'\'' | b'\\' | b'^' | b'\t' | b'\r' | b'\n' | b',' | b';' | b'A'..=b'Z' => {
                return true
            }
            b' ' if space => return true,
            b' ' => space = true,
            b'/' | b'(' if space => return true,
            _ => space = false,
        }
    }
    false
}

fn cmd_line(v: &[u8]) -> Vec<u8> {
    let mut o: Vec<u8> = Vec::with_capacity(v.len());
    let mut space = false;
    for &c in v {
        match c {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' => {
                if !space {
                    o.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    o.pop();
                }
                space = false;
                o.push(c);
            }
            _ => {
                space = false;
                o.push(c.to_ascii_lowercase());
            }
        }
    }
    o
}

fn compress_whitespace(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut ws = false;
    for &c in v {
        if is_ws_nbsp(c) {
            if !ws {
                o.push(b' ');
            }
            ws = true;
        } else {
            o.push(c);
            ws = false;
        }
    }
    o
}

fn replace_comments(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
            let end = v[i + 2..].windows(2).position(|w| w == b"*/");
            o.push(b' ');
            match end {
                Some(e) => i = i + 2 + e + 2,
                None => break,
            }
        } else if v[i] == b'*' && v.get(i + 1) == Some(&b'/') {
            o.push(b' ');
            i += 2;
        } else {
            o.push(v[i]);
            i += 1;
        }
    }
    o
}

fn remove_comments(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
            match v[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(e) => i = i + 2 + e + 2,
                None => break,
            }
        } else if v[i] == b'<' && v[i..].starts_with(b"<!--") {
            match v[i + 4..].windows(3).position(|w| w == b"-->") {
                Some(e) => i = i + 4 + e + 3,
                None => break,
            }
        } else if (v[i] == b'-' && v.get(i + 1) == Some(&b'-')) || v[i] == b'#' {
            break;
        } else {
            o.push(v[i]);
            i += 1;
        }
    }
    o
}

fn remove_comments_char(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let two = v.get(i..i + 2);
        if two == Some(b"/*") || two == Some(b"*/") || two == Some(b"--") {
            i += 2;
        } else if v[i..].starts_with(b"<!--") {
            i += 4;
        } else if v[i..].starts_with(b"-->") {
            i += 3;
        } else if v[i] == b'#' {
            i += 1;
        } else {
            o.push(v[i]);
            i += 1;
        }
    }
    o
}

/// Whether [`normalize_path`] would change `v`: only a `//`, a `.` or `..` segment (or, for
/// Windows paths, a backslash) makes it rewrite anything. An e-mail address or a version
/// number holds dots but comes out as it went in.
fn path_changes(v: &[u8], win: bool) -> bool {
    if win && v.contains(&b'\\') {
        return true;
    }
    let mut segs = v.split(|&c| c == b'/').peekable();
    let mut first = true;
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            b"." | b".." => return true,
            // An empty segment is the leading `/` or the trailing one; any other is a `//`.
            b"" if !first && !last => return true,
            _ => {}
        }
        first = false;
    }
    false
}

fn normalize_path(v: &[u8], win: bool) -> Vec<u8> {
    let s: Vec<u8> = if win {
        v.iter()
            .map(|&c| if c == b'\\' { b'/' } else { c })
            .collect()
    } else {
        v.to_vec()
    };
    let absolute = s.first() == Some(&b'/');
    let trailing = s.last() == Some(&b'/') || s.ends_with(b"/.") || s.ends_with(b"/..");
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut ups = 0usize;
    for seg in s.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() && !absolute {
                    ups += 1;
                }
            }
            other => segs.push(other),
        }
    }
    let mut o = Vec::with_capacity(s.len());
    if absolute {
        o.push(b'/');
    }
    for _ in 0..ups {
        o.extend_from_slice(b"../");
    }
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            o.push(b'/');
        }
        o.extend_from_slice(seg);
    }
    if trailing && !segs.is_empty() {
        o.push(b'/');
    }
    o
}

fn escape_seq_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            o.push(v[i]);
            i += 1;
            continue;
        }
        let n = v[i + 1];
        let simple = match n {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'?' => Some(b'?'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(c) = simple {
            o.push(c);
            i += 2;
        } else if let Some((b, next)) = hex_or_octal_escape(v, i) {
            o.push(b);
            i = next;
        } else {
            o.push(v[i]);
            o.push(n);
            i += 2;
        }
    }
    o
}

fn b64val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Lenient base64: stops at the first invalid byte (or skips them with `ext`).
fn base64_decode(v: &[u8], ext: bool) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut n = 0;
    for &c in v {
        if c == b'=' {
            break;
        }
        match b64val(c) {
            Some(x) => {
                acc = acc << 6 | x as u32;
                n += 1;
                if n == 4 {
                    o.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                    acc = 0;
                    n = 0;
                }
            }
            None if ext => {}
            None => break,
        }
    }
    match n {
        2 => o.push((acc >> 4) as u8),
        3 => o.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    o
}

fn hex_decode(v: &[u8]) -> Vec<u8> {
    v.chunks(2)
        .filter_map(|p| if p.len() == 2 { hex2(p[0], p[1]) } else { None })
        .collect()
}

fn sql_hex_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'0' && matches!(v.get(i + 1), Some(b'x') | Some(b'X')) {
            let mut j = i + 2;
            while j + 1 < v.len() && hex2(v[j], v[j + 1]).is_some() {
                j += 2;
            }
            if j > i + 2 {
                o.extend(hex_decode(&v[i + 2..j]));
                i = j;
                continue;
            }
        }
        o.push(v[i]);
        i += 1;
    }
    o
}

/// MD5 (RFC 1321), for `t:md5`; ring has no MD5.
fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = input.to_vec();
    let bits = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f2 = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f2.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a0.to_le_bytes());
    out[4..8].copy_from_slice(&b0.to_le_bytes());
    out[8..12].copy_from_slice(&c0.to_le_bytes());
    out[12..].copy_from_slice(&d0.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tr: Transform, s: &[u8]) -> Vec<u8> {
        tr.apply(s).into_owned()
    }

    /// The quick "would it change?" tests never skip a change: on many short inputs over the
    /// bytes the transformations care about, `apply` equals running the transformation
    /// unconditionally.
    #[test]
    fn quick_change_tests_never_skip_a_change() {
        let alphabet: &[u8] = b" \t\n\r(,'\"^A/*\\%+&;#-.ab0\x00\x0b\xa0\xc3\xa9u";
        type Full = fn(&[u8]) -> Vec<u8>;
        let full: [(Transform, Full); 13] = [
            (Transform::CmdLine, cmd_line),
            (Transform::NormalizePath, |v| normalize_path(v, false)),
            (Transform::NormalizePathWin, |v| normalize_path(v, true)),
            (Transform::UrlDecode, |v| url_decode(v, false)),
            (Transform::UrlDecodeUni, |v| url_decode(v, true)),
            (Transform::JsDecode, js_decode),
            (Transform::HtmlEntityDecode, html_entity_decode),
            (Transform::Utf8ToUnicode, utf8_to_unicode),
            (Transform::RemoveNulls, |v| {
                v.iter().copied().filter(|&c| c != 0).collect()
            }),
            (Transform::CssDecode, css_decode),
            (Transform::CompressWhitespace, compress_whitespace),
            (Transform::ReplaceComments, replace_comments),
            (Transform::EscapeSeqDecode, escape_seq_decode),
        ];
        for (_, v) in crate::testgen::values(0x9e37_79b9_7f4a_7c15, alphabet, 0..=8, 20_000) {
            for (tr, f) in &full {
                assert_eq!(tr.apply(&v).as_ref(), f(&v).as_slice(), "{tr:?} on {v:?}");
            }
        }
    }

    /// Every transformation.
    const EVERY: [super::Transform; 35] = {
        use super::Transform::*;
        [
            Lowercase,
            Uppercase,
            UrlDecode,
            UrlDecodeUni,
            UrlEncode,
            JsDecode,
            HtmlEntityDecode,
            Utf8ToUnicode,
            RemoveNulls,
            ReplaceNulls,
            CssDecode,
            CmdLine,
            RemoveWhitespace,
            CompressWhitespace,
            ReplaceComments,
            RemoveComments,
            RemoveCommentsChar,
            NormalizePath,
            NormalizePathWin,
            EscapeSeqDecode,
            Length,
            Base64Decode,
            Base64DecodeExt,
            Base64Encode,
            HexDecode,
            HexEncode,
            SqlHexDecode,
            Sha1,
            Md5,
            Trim,
            TrimLeft,
            TrimRight,
            ParityEven7bit,
            ParityOdd7bit,
            ParityZero7bit,
        ]
    };

    /// The transformations that claim trigger bytes: each claim is held to `apply`.
    fn with_triggers() -> Vec<super::Transform> {
        let all: Vec<_> = EVERY
            .into_iter()
            .filter(|t| t.trigger().is_some())
            .collect();
        assert!(all.len() >= 22, "{} with triggers", all.len());
        all
    }

    /// A value that holds none of a transformation's trigger bytes comes out unchanged, and
    /// `apply_all` (which skips such transformations) agrees with applying every one.
    #[test]
    fn quick_triggers_never_skip_a_change() {
        use super::apply_all;
        use crate::prefilter::ByteSet;
        use std::borrow::Cow;
        let alphabet: &[u8] = b" \t\n\r\x0c/*\\%+&;#-.aB0\x00\x0b\xa0\xc3\xa9u\"'^,(";
        let all = with_triggers();
        for (x, v) in crate::testgen::values(0x2545_f491_4f6c_dd1d, alphabet, 0..=8, 20_000) {
            let present = ByteSet::in_value(&v);
            for &t in &all {
                if !t.may_change(&present) {
                    assert_eq!(t.apply(&v).as_ref(), v.as_slice(), "{t:?} on {v:?}");
                }
            }
            let pipe = [
                (x >> 3) as usize % all.len(),
                (x >> 9) as usize % all.len(),
                (x >> 15) as usize % all.len(),
            ]
            .map(|i| all[i]);
            let mut want: Cow<[u8]> = Cow::Borrowed(&v);
            for t in pipe {
                want = Cow::Owned(t.apply(&want).into_owned());
            }
            let got = apply_all(&pipe, &v, present);
            assert_eq!(
                got.as_deref().unwrap_or(&v),
                want.as_ref(),
                "{pipe:?} on {v:?}"
            );
        }
    }

    /// What `pipeline_alters` promises, against the pipelines run in full: a value with none
    /// of `alters` comes out unchanged, one with none of `beyond_case` comes out lower-cased.
    #[test]
    fn pipeline_alters_never_hides_a_change() {
        use super::{pipeline_alters, Transform::*};
        use crate::prefilter::ByteSet;
        let alphabet: &[u8] = b" \t/*\\%+&;#-.aBz0\x00\xa0\xc3u\"'^,(";
        // Every step with trigger bytes, and one that may change any value.
        let mut steps = with_triggers();
        steps.push(Base64Decode);
        let (mut same, mut lowered) = (0, 0);
        let mut previous = ByteSet::default();
        for (x, v) in crate::testgen::values(0x9e37_79b9_7f4a_7c15, alphabet, 0..=8, 20_000) {
            let pipe: Vec<_> = (0..1 + x as usize % 3)
                .map(|i| steps[(x >> (4 + 5 * i)) as usize % steps.len()])
                .collect();
            let alters = pipeline_alters(&pipe);
            let present = ByteSet::in_value(&v);
            // Values held together answer for each of them.
            let held = present.union(previous);
            previous = present;
            assert!(
                !alters.beyond_case(&present) || alters.beyond_case_any(&held),
                "{pipe:?} on {v:?} among {held:?}"
            );
            let mut got = v.clone();
            for &t in &pipe {
                got = t.apply(&got).into_owned();
            }
            if !alters.any(&present) {
                assert_eq!(got, v, "{pipe:?} on {v:?}");
                same += 1;
            } else if !alters.beyond_case(&present) {
                assert_eq!(got, v.to_ascii_lowercase(), "{pipe:?} on {v:?}");
                lowered += 1;
            }
        }
        // Both promises were put to the test.
        assert!(same > 1000 && lowered > 100, "{same} {lowered}");
    }

    #[test]
    fn decoders() {
        assert_eq!(
            t(Transform::UrlDecodeUni, b"a%20b+c%u0041%uff1c%zz"),
            b"a b cA<%zz"
        );
        assert_eq!(t(Transform::JsDecode, b"\\x41\\u0042\\101\\n"), b"ABA\n");
        assert_eq!(
            t(Transform::HtmlEntityDecode, b"&lt;&#x41;&#66&quot;&bogus;"),
            b"<AB\"&bogus;"
        );
        assert_eq!(t(Transform::CssDecode, b"\\3c script\\>"), b"<script>");
        assert_eq!(t(Transform::Utf8ToUnicode, "é".as_bytes()), b"%u00e9");
        assert_eq!(
            t(Transform::CmdLine, b"C:\\Win\"dows ,  /c  ( Echo"),
            b"c:windows/c( echo"
        );
        assert_eq!(t(Transform::NormalizePath, b"/a/./b/../../c//d"), b"/c/d");
        assert_eq!(t(Transform::NormalizePathWin, b"..\\..\\etc"), b"../../etc");
        assert_eq!(t(Transform::ReplaceComments, b"a/*x*/b/*open"), b"a b ");
        assert_eq!(t(Transform::Base64Decode, b"aGVsbG8="), b"hello");
        assert_eq!(t(Transform::Length, b"abcd"), b"4");
        assert_eq!(
            t(Transform::HexEncode, &t(Transform::Sha1, b"abc"))[..8],
            *b"a9993e36"
        );
        assert_eq!(md5(b"abc")[..4], [0x90, 0x01, 0x50, 0x98]);
        assert_eq!(t(Transform::CompressWhitespace, b"a \t\n b"), b"a b");
        assert_eq!(t(Transform::RemoveCommentsChar, b"a/*b*/--c#"), b"abc");
    }
}
