//! The fast path for JSON bodies: a strict parser that reads a body into one flat array of
//! entries (a "tape") borrowing its strings from the body, and the glue that lets `jsonschema`
//! validate that tape directly (its `Json` representation traits). Compared with building a
//! `serde_json::Value`, this makes one allocation per body instead of one per key, string,
//! object and array, which is most of what validating a typical JSON request costs.
//!
//! The tape only ever answers "valid": any body it cannot parse, and any body that fails
//! validation, goes through the full path (`rampart_core::json::parse_strict` and the
//! `serde_json` validator), which produces the error messages. So the tape parser must be at
//! least as strict as `parse_strict` (it is: same grammar, duplicate keys refused, a lower nesting
//! limit, lone surrogates refused), and the differential tests below hold it to that.

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// Deepest nesting the tape parses (`serde_json` stops at 128; bodies in between take the full
/// path, which decides).
const DEPTH: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    False,
    True,
    Num,
    Str,
    Arr,
    Obj,
}

/// One tape entry. Containers are followed by their children (an object's members as key entry,
/// value entries); `a` is the index just past the container's last descendant, so a walk can
/// skip a whole subtree.
#[derive(Clone, Debug)]
struct Ent {
    kind: Kind,
    /// For strings: the text lives in `Doc::text` (it had escapes) rather than in the body.
    decoded: bool,
    /// Strings: start offset. Containers: index past the last descendant.
    a: u32,
    /// Strings: byte length. Containers: number of elements or members.
    b: u32,
    num: Number,
}

/// A body parsed onto a tape.
#[derive(Debug)]
pub struct Doc<'b> {
    src: &'b str,
    /// Strings that had escape sequences, decoded.
    text: String,
    ents: Vec<Ent>,
}

impl<'b> Doc<'b> {
    /// The root value.
    pub fn root(&self) -> TNode<'_> {
        TNode::At(self, 0)
    }

    fn next(&self, i: u32) -> u32 {
        let e = &self.ents[i as usize];
        match e.kind {
            Kind::Arr | Kind::Obj => e.a,
            _ => i + 1,
        }
    }

    fn str_at(&self, i: u32) -> &str {
        span(&self.ents[i as usize], self.src, &self.text)
    }

    fn value_at(&self, i: u32) -> Value {
        let e = &self.ents[i as usize];
        match e.kind {
            Kind::Null => Value::Null,
            Kind::False => Value::Bool(false),
            Kind::True => Value::Bool(true),
            Kind::Num => Value::Number(e.num.clone()),
            Kind::Str => Value::String(self.str_at(i).to_string()),
            Kind::Arr => Value::Array(
                Container { doc: self, at: i }
                    .elements()
                    .map(|n| n.to_value().into_owned())
                    .collect(),
            ),
            Kind::Obj => Value::Object(
                Container { doc: self, at: i }
                    .members()
                    .map(|(k, n)| (k.to_string(), n.to_value().into_owned()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// The parsed body as a `serde_json::Value` (tests and cold paths).
    pub fn to_value(&self) -> Value {
        self.value_at(0)
    }
}

/// Why the tape refused a body. Deliberately uninformative: the full path re-parses and says
/// what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

type R = Result<(), Refused>;

/// A string entry's text: in the body, or (had escapes) in the decoded text.
fn span<'x>(e: &Ent, src: &'x str, text: &'x str) -> &'x str {
    let s = if e.decoded { text } else { src };
    let (at, len) = (e.a as usize, e.b as usize);
    s.get(at..at + len).unwrap_or("")
}

/// Bytes that end the plain run of a string: the closing quote, an escape, a control character.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index of the first byte of `s` that ends a plain run of a string (`STOP`), eight bytes
/// at a time: a word has such a byte when one of its bytes is `"`, `\\` or below 0x20, found
/// with the usual zero-byte test (`(x - 0x01..) & !x & 0x80..` flags a zero byte; any false
/// flags sit above a true one, so the lowest flag is exact).
pub(crate) fn plain_run(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote
            | slash.wrapping_sub(ONES) & !slash
            | x.wrapping_sub(ONES * 0x20) & !x)
            & HIGH;
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| STOP[b as usize])
        .map(|p| i + p)
}

struct Parser<'b> {
    src: &'b str,
    s: &'b [u8],
    i: usize,
    ents: Vec<Ent>,
    text: String,
    /// Key entries of the objects being parsed (a stack) with a fingerprint of each (length and
    /// first, middle and last bytes), for the duplicate check.
    keys: Vec<(u64, u32)>,
}

/// Decodes a JSON string that has escapes: its text starts at `start` and its first backslash
/// is at `at`. Appends the decoded text to `out` and returns the index just past the closing
/// quote. Refuses control characters, bad escapes, lone surrogates and a missing end.
pub(crate) fn unescape(
    src: &str,
    start: usize,
    mut at: usize,
    out: &mut String,
) -> Result<usize, Refused> {
    let s = src.as_bytes();
    let mut run = start;
    loop {
        match s.get(at).copied().unwrap_or(0) {
            b'"' => break,
            b'\\' => {
                out.push_str(src.get(run..at).ok_or(Refused)?);
                at += 1;
                let c = match s.get(at).copied().unwrap_or(0) {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = hex4(s, at + 1)?;
                        at += 5;
                        let code = match hi {
                            0xD800..=0xDBFF => {
                                if s.get(at..at + 2) != Some(b"\\u") {
                                    return Err(Refused);
                                }
                                let lo = hex4(s, at + 2)?;
                                at += 6;
                                if !(0xDC00..=0xDFFF).contains(&lo) {
                                    return Err(Refused);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            }
                            0xDC00..=0xDFFF => return Err(Refused),
                            c => c,
                        };
                        out.push(char::from_u32(code).ok_or(Refused)?);
                        run = at;
                        continue;
                    }
                    _ => return Err(Refused),
                };
                out.push(c);
                at += 1;
                run = at;
            }
            // Control characters, and the end of the text (read as 0).
            0..=0x1f => return Err(Refused),
            _ => at += 1,
        }
    }
    out.push_str(src.get(run..at).ok_or(Refused)?);
    Ok(at + 1)
}

/// The four hex digits of a `\u` escape at `at`.
fn hex4(s: &[u8], at: usize) -> Result<u32, Refused> {
    let h = s.get(at..at + 4).ok_or(Refused)?;
    h.iter().try_fold(0u32, |v, &c| {
        let d = char::from(c).to_digit(16).ok_or(Refused)?;
        Ok(v * 16 + d)
    })
}

/// Parse `body` strictly onto a tape.
pub fn parse(body: &[u8]) -> Result<Doc<'_>, Refused> {
    if body.len() >= u32::MAX as usize {
        return Err(Refused);
    }
    let src = std::str::from_utf8(body).map_err(|_| Refused)?;
    let mut p = Parser::new(src, 0, body.len());
    p.ws();
    p.value(0)?;
    p.ws();
    if p.i != body.len() {
        return Err(Refused);
    }
    Ok(p.finish())
}

/// Parse the one value that starts at byte `start` of `src` (no whitespace before it), for a
/// caller that parses the text around it; also returns where the value ends.
pub fn parse_at(src: &str, start: usize) -> Result<(Doc<'_>, usize), Refused> {
    if src.len() >= u32::MAX as usize {
        return Err(Refused);
    }
    let mut p = Parser::new(src, start, src.len().saturating_sub(start));
    p.value(0)?;
    let end = p.i;
    Ok((p.finish(), end))
}

impl<'b> Parser<'b> {
    fn new(src: &'b str, at: usize, len: usize) -> Self {
        Parser {
            src,
            s: src.as_bytes(),
            i: at,
            // About one entry per 6 bytes of a typical API body: one allocation for bodies up
            // to ~24 KB; larger ones grow as needed (a 1 MB string is one entry, not 170,000).
            ents: Vec::with_capacity((len / 6 + 8).min(4096)),
            text: String::new(),
            keys: Vec::new(),
        }
    }

    fn finish(self) -> Doc<'b> {
        Doc {
            src: self.src,
            text: self.text,
            ents: self.ents,
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn push(&mut self, kind: Kind) -> usize {
        self.ents.push(Ent {
            kind,
            decoded: false,
            a: 0,
            b: 0,
            num: Number::from(0u64),
        });
        self.ents.len() - 1
    }

    fn value(&mut self, depth: usize) -> R {
        match self.peek() {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.literal(b"true", Kind::True),
            b'f' => self.literal(b"false", Kind::False),
            b'n' => self.literal(b"null", Kind::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Refused),
        }
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> R {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            self.push(kind);
            Ok(())
        } else {
            Err(Refused)
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while self.peek().is_ascii_digit() {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> R {
        let start = self.i;
        let negative = self.peek() == b'-';
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek() {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(Refused),
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == b'.' {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Refused);
            }
            float = true;
        }
        if matches!(self.peek(), b'e' | b'E') {
            self.i += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Refused);
            }
            float = true;
        }
        let literal = self.src.get(start..self.i).ok_or(Refused)?;
        let mut significand: Option<u64> = None;
        if !float {
            let mut v: u64 = 0;
            let mut ok = true;
            for &d in &self.s[int_start..int_end] {
                match v
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(d - b'0')))
                {
                    Some(x) => v = x,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                significand = Some(v);
            }
        }
        // The same numbers serde_json makes: u64 for non-negative integers, i64 for negative
        // ones, f64 for the rest (including -0 and integers past 64 bits).
        let num = match significand {
            Some(v) if !negative => Number::from(v),
            Some(v) => {
                let neg = (v as i64).wrapping_neg();
                if neg >= 0 {
                    Number::from_f64(-(v as f64)).ok_or(Refused)?
                } else {
                    Number::from(neg)
                }
            }
            None => {
                let f: f64 = literal.parse().map_err(|_| Refused)?;
                if !f.is_finite() {
                    return Err(Refused);
                }
                Number::from_f64(f).ok_or(Refused)?
            }
        };
        let at = self.push(Kind::Num);
        self.ents[at].num = num;
        Ok(())
    }

    fn string(&mut self) -> R {
        self.i += 1;
        let start = self.i;
        let stop = plain_run(&self.s[start..]).ok_or(Refused)?;
        self.i += stop;
        match self.s[self.i] {
            b'"' => {
                let at = self.push(Kind::Str);
                self.ents[at].a = start as u32;
                self.ents[at].b = stop as u32;
                self.i += 1;
                Ok(())
            }
            b'\\' => self.escaped(start),
            _ => Err(Refused),
        }
    }

    /// The rest of a string that has escapes, decoded into `text`.
    fn escaped(&mut self, start: usize) -> R {
        let from = self.text.len();
        self.i = unescape(self.src, start, self.i, &mut self.text)?;
        let at = self.push(Kind::Str);
        let e = &mut self.ents[at];
        e.decoded = true;
        e.a = from as u32;
        e.b = (self.text.len() - from) as u32;
        Ok(())
    }

    fn array(&mut self, depth: usize) -> R {
        if depth >= DEPTH {
            return Err(Refused);
        }
        let at = self.push(Kind::Arr);
        self.i += 1;
        self.ws();
        let mut n = 0u32;
        if self.peek() == b']' {
            self.i += 1;
        } else {
            loop {
                self.value(depth + 1)?;
                n += 1;
                self.ws();
                match self.peek() {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Refused),
                }
            }
        }
        let end = self.ents.len() as u32;
        let e = &mut self.ents[at];
        e.a = end;
        e.b = n;
        Ok(())
    }

    fn object(&mut self, depth: usize) -> R {
        if depth >= DEPTH {
            return Err(Refused);
        }
        let at = self.push(Kind::Obj);
        self.i += 1;
        self.ws();
        let mark = self.keys.len();
        if self.peek() == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek() != b'"' {
                    return Err(Refused);
                }
                let k = self.ents.len() as u32;
                self.string()?;
                self.keys.push((self.fingerprint(k), k));
                self.ws();
                if self.peek() != b':' {
                    return Err(Refused);
                }
                self.i += 1;
                self.ws();
                self.value(depth + 1)?;
                self.ws();
                match self.peek() {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Refused),
                }
            }
        }
        let n = self.keys.len() - mark;
        if n > 1 && self.has_duplicates(mark) {
            return Err(Refused);
        }
        self.keys.truncate(mark);
        let end = self.ents.len() as u32;
        let e = &mut self.ents[at];
        e.a = end;
        e.b = n as u32;
        Ok(())
    }

    fn key(&self, i: u32) -> &[u8] {
        span(&self.ents[i as usize], self.src, &self.text).as_bytes()
    }

    fn fingerprint(&self, i: u32) -> u64 {
        let k = self.key(i);
        match k {
            [] => 0,
            [first, .., last] => {
                (k.len() as u64) << 32
                    | u64::from(*first) << 16
                    | u64::from(*last) << 8
                    | u64::from(k[k.len() / 2])
            }
            [only] => 1 << 32 | u64::from(*only),
        }
    }

    fn has_duplicates(&self, mark: usize) -> bool {
        let keys = &self.keys[mark..];
        if keys.len() <= 16 {
            for (x, &(fa, a)) in keys.iter().enumerate() {
                for &(fb, b) in &keys[x + 1..] {
                    if fa == fb && self.key(a) == self.key(b) {
                        return true;
                    }
                }
            }
            return false;
        }
        let mut names: Vec<&[u8]> = keys.iter().map(|&(_, k)| self.key(k)).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    }
}

// ---------------------------------------------------------------------------------------------
// jsonschema's representation traits over the tape.

/// The tape as a `jsonschema` instance representation.
pub struct Tape;

/// One value: an entry of a parsed body, or a bare string (`propertyNames` checks names
/// through these).
#[derive(Clone, Copy, Debug)]
pub enum TNode<'a> {
    At(&'a Doc<'a>, u32),
    Name(&'a str),
}

/// An object or array entry of a tape.
#[derive(Clone, Copy, Debug)]
pub struct Container<'a> {
    doc: &'a Doc<'a>,
    at: u32,
}

impl Json for Tape {
    type Node<'a> = TNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();
    /// Objects are scanned, not hashed: one pass over the members beats a lookup per
    /// property for the small objects API bodies have.
    const KEYS_PER_LOOKUP: usize = 8;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(TNode<'_>) -> T) -> T {
        f(TNode::Name(string))
    }
}

impl<'a> TNode<'a> {
    fn ent(&self) -> Option<&'a Ent> {
        match *self {
            TNode::At(d, i) => Some(&d.ents[i as usize]),
            TNode::Name(_) => None,
        }
    }

    fn kind(&self) -> Kind {
        self.ent().map_or(Kind::Str, |e| e.kind)
    }

    fn text(&self) -> Option<&'a str> {
        match *self {
            TNode::At(d, i) => (d.ents[i as usize].kind == Kind::Str).then(|| d.str_at(i)),
            TNode::Name(s) => Some(s),
        }
    }
}

impl<'a> Node<'a, Tape> for TNode<'a> {
    type Object = Container<'a>;
    type Array = Container<'a>;
    type Number = Number;

    fn as_object(&self) -> Option<Container<'a>> {
        match *self {
            TNode::At(doc, at) if doc.ents[at as usize].kind == Kind::Obj => {
                Some(Container { doc, at })
            }
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Container<'a>> {
        match *self {
            TNode::At(doc, at) if doc.ents[at as usize].kind == Kind::Arr => {
                Some(Container { doc, at })
            }
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.text().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<Number> {
        match self.ent() {
            Some(e) if e.kind == Kind::Num => Some(e.num.clone()),
            _ => None,
        }
    }

    fn is_number(&self) -> bool {
        self.kind() == Kind::Num
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.kind() {
            Kind::True => Some(true),
            Kind::False => Some(false),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }

    fn json_type(&self) -> JsonType {
        match self.kind() {
            Kind::Null => JsonType::Null,
            Kind::False | Kind::True => JsonType::Boolean,
            Kind::Num => JsonType::Number,
            Kind::Str => JsonType::String,
            Kind::Arr => JsonType::Array,
            Kind::Obj => JsonType::Object,
        }
    }

    fn string_length(&self) -> Option<u64> {
        // ASCII (checked a word at a time) has one character per byte.
        self.text().map(|s| {
            if s.is_ascii() {
                s.len() as u64
            } else {
                s.chars().count() as u64
            }
        })
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (self.kind(), expected) {
            (Kind::Str, Value::String(s)) => self.text() == Some(s.as_str()),
            (Kind::Str, _) => false,
            (Kind::Null, e) => e.is_null(),
            (Kind::True, e) => e.as_bool() == Some(true),
            (Kind::False, e) => e.as_bool() == Some(false),
            (Kind::Num, Value::Number(_)) => {
                jsonschema::json::cmp::equal(&self.to_value(), expected)
            }
            (Kind::Num, _) => false,
            (Kind::Arr | Kind::Obj, _) => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match *self {
            TNode::At(d, i) => d.value_at(i),
            TNode::Name(s) => Value::String(s.to_string()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match *self {
            TNode::At(d, i) => Some(NodeIdentity::tagged(std::ptr::from_ref(d) as usize, i)),
            TNode::Name(_) => None,
        }
    }
}

/// An object's members, in body order.
pub struct Members<'a> {
    doc: &'a Doc<'a>,
    at: u32,
    end: u32,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let k = self.at;
        self.at = self.doc.next(k + 1);
        Some((self.doc.str_at(k), TNode::At(self.doc, k + 1)))
    }
}

/// An array's elements, in order.
pub struct Elements<'a> {
    doc: &'a Doc<'a>,
    at: u32,
    end: u32,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TNode<'a>;

    fn next(&mut self) -> Option<TNode<'a>> {
        if self.at >= self.end {
            return None;
        }
        let i = self.at;
        self.at = self.doc.next(i);
        Some(TNode::At(self.doc, i))
    }
}

impl<'a> Object<'a, Tape> for Container<'a> {
    type Node = TNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.doc.ents[self.at as usize].b as usize
    }

    fn get(&self, key: &Box<str>) -> Option<TNode<'a>> {
        self.members()
            .find(|(name, _)| *name == &**key)
            .map(|(_, v)| v)
    }

    fn members(&self) -> Members<'a> {
        Members {
            doc: self.doc,
            at: self.at + 1,
            end: self.doc.ents[self.at as usize].a,
        }
    }
}

impl<'a> Array<'a, Tape> for Container<'a> {
    type Node = TNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.doc.ents[self.at as usize].b as usize
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            doc: self.doc,
            at: self.at + 1,
            end: self.doc.ents[self.at as usize].a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::json::parse_strict;

    /// The tape accepts a body only if the full parser does, and reads the same value; and it
    /// accepts every body the full parser does (short of its lower nesting limit).
    fn agrees(body: &[u8]) {
        let full = parse_strict(body);
        let Ok(doc) = parse(body) else {
            assert!(
                full.is_err(),
                "tape refused what the full parser accepts: {:?}",
                String::from_utf8_lossy(body)
            );
            return;
        };
        match full {
            Ok(v) => assert_eq!(
                doc.to_value(),
                v,
                "tape and serde disagree on {:?}",
                String::from_utf8_lossy(body)
            ),
            Err(e) => panic!(
                "tape accepted what the full parser refuses ({e}): {:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    const CASES: &[&str] = &[
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        r#"  [ 1 , 2 ,3 ]  "#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"{"k\"ey":"v\\al\/ue\n\t\r\b\f","x":"\u00e9\ud83d\ude00"}"#,
        r#""\ud800""#,
        r#""\udc00x""#,
        r#""\ud800\u0041""#,
        r#""é🦀""#,
        "\"a\u{1}b\"",
        "\"tab\tin\"",
        r#"[0,-0,1.0,-1.5e3,1E+2,2e-2,18446744073709551615,18446744073709551616]"#,
        r#"[-9223372036854775808,-9223372036854775809,-12345678901234567890123]"#,
        r#"[1e400]"#,
        r#"[1e-400]"#,
        r#"[01]"#,
        r#"[1.]"#,
        r#"[.5]"#,
        r#"[-]"#,
        r#"[+1]"#,
        r#"[1,]"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"[tru]"#,
        r#"[nul]"#,
        r#"[true false]"#,
        r#"{} {}"#,
        "",
        "   ",
        "\u{feff}{}",
        r#"[0.1,0.30000000000000004,123456789.123456789e-5,5e-324,1.7976931348623157e308]"#,
        r#"{"":""}"#,
        r#"[[[[[[[[[[]]]]]]]]]]"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12"}"#,
        r#"{"a":"\uzzzz"}"#,
    ];

    #[test]
    fn agrees_with_the_full_parser() {
        for c in CASES {
            agrees(c.as_bytes());
        }
        agrees(b"\"\xff\"");
        agrees(b"{\"a\xc3\":1}");
        // Every prefix and every single-byte change of a realistic body.
        let body = br#"{"customer":{"id":"c_1","email":"a@b.example","name":"A \u00e9 \"B\""},"items":[{"sku":"ABC-0001","qty":2,"price":19.99},{"sku":"XYZ-0002","qty":1,"price":-0.5e1}],"note":null,"gift":false}"#;
        for n in 0..=body.len() {
            agrees(&body[..n]);
        }
        for at in 0..body.len() {
            for b in [
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'e', b'.', b' ', 0,
            ] {
                let mut m = body.to_vec();
                m[at] = b;
                agrees(&m);
            }
        }
        assert!(parse(body).is_ok());
    }

    #[test]
    fn plain_run_finds_the_first_stop_byte() {
        for len in 0..40 {
            for stop in 0..=len {
                for &b in &[b'"', b'\\', 0u8, 0x1f, b'\n'] {
                    let mut v: Vec<u8> = (0..len)
                        .map(|i| b"a\xc3\xa9 ~!#\x7f\x80\xff"[i % 10])
                        .collect();
                    if stop < len {
                        v[stop] = b;
                        // Stop bytes after the first must not hide it.
                        for later in v.iter_mut().skip(stop + 1).step_by(3) {
                            *later = b'"';
                        }
                    }
                    let want = v.iter().position(|&c| STOP[c as usize]);
                    assert_eq!(plain_run(&v), want, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn string_length_counts_characters() {
        let doc = parse("[\"h\u{e9}llo\\u00e9\", \"\", \"\u{1F600}x\"]".as_bytes()).unwrap();
        let arr = doc.root().as_array().unwrap();
        let lens: Vec<u64> = arr.elements().map(|n| n.string_length().unwrap()).collect();
        assert_eq!(lens, [6, 0, 2]);
    }

    #[test]
    fn refuses_duplicates_and_deep_nesting() {
        assert_eq!(parse(br#"{"a":1,"a":2}"#).unwrap_err(), Refused);
        assert_eq!(parse(br#"{"a":1,"\u0061":2}"#).unwrap_err(), Refused);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let mut obj = format!("{{{}}}", many.join(","));
        assert!(parse(obj.as_bytes()).is_ok());
        obj.insert_str(1, "\"k7\":0,");
        assert!(parse(obj.as_bytes()).is_err());
        let deep = format!("{}{}", "[".repeat(DEPTH + 1), "]".repeat(DEPTH + 1));
        assert!(parse(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn nodes_read_as_serde_values() {
        let body = serde_json::to_vec(&jsonschema::json::conformance::document()).unwrap();
        let doc = parse(&body).unwrap();
        jsonschema::json::conformance::assert_conformance::<Tape>(&doc.root());
    }
}
