//! Parameters: their values read from the path, query, headers and cookies according to
//! `style` and `explode`, turned into JSON by the schema's types, then validated.

use crate::onepass::Scalar;
use crate::schema::{Compiled, Failure};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Simple,
    Label,
    Matrix,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl Style {
    pub fn parse(s: &str) -> Option<Style> {
        Some(match s {
            "simple" => Style::Simple,
            "label" => Style::Label,
            "matrix" => Style::Matrix,
            "form" => Style::Form,
            "spaceDelimited" => Style::SpaceDelimited,
            "pipeDelimited" => Style::PipeDelimited,
            "deepObject" => Style::DeepObject,
            _ => return None,
        })
    }
    /// Which styles each location allows.
    pub fn allowed_in(self, loc: In) -> bool {
        match loc {
            In::Path => matches!(self, Style::Simple | Style::Label | Style::Matrix),
            In::Query => matches!(
                self,
                Style::Form | Style::SpaceDelimited | Style::PipeDelimited | Style::DeepObject
            ),
            In::Header => self == Style::Simple,
            In::Cookie => self == Style::Form,
        }
    }
}

/// A decoded query pair; borrowed from the URI unless decoding changed it.
pub type QueryPair<'a> = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>);

/// The query's name/value pairs, decoded as `application/x-www-form-urlencoded`. A query with
/// nothing to decode (no `%`, no `+`) is split in place, borrowing every name and value.
pub fn query_pairs(q: &str) -> Vec<QueryPair<'_>> {
    if q.bytes().any(|b| b == b'%' || b == b'+') {
        return form_urlencoded::parse(q.as_bytes()).collect();
    }
    split_ascii(q, b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.bytes().position(|b| b == b'=') {
            Some(i) => (p[..i].into(), p[i + 1..].into()),
            None => (p.into(), "".into()),
        })
        .collect()
}

/// `s` split at every `sep`, an ASCII byte: what `str::split` gives, with a plain scan, as
/// fits the short pieces of a query, a path or a list.
pub fn split_ascii(s: &str, sep: u8) -> SplitAscii<'_> {
    debug_assert!(sep.is_ascii());
    SplitAscii { rest: Some(s), sep }
}

/// The pieces of [`split_ascii`].
pub struct SplitAscii<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        match r.bytes().position(|b| b == self.sep) {
            // An ASCII byte is always a character boundary.
            Some(i) => {
                self.rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

/// The JSON types a scalar may take, to turn text into the right JSON value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prim {
    pub int: bool,
    pub num: bool,
    pub boolean: bool,
    pub null: bool,
    pub string: bool,
}

impl Prim {
    pub fn of(schema: &Value) -> Prim {
        let mut p = Prim::default();
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if types.is_empty() {
            p.string = true;
        }
        for t in types {
            match t {
                "integer" => p.int = true,
                "number" => p.num = true,
                "boolean" => p.boolean = true,
                "null" => p.null = true,
                _ => p.string = true,
            }
        }
        p
    }

    /// Text to JSON: the first type the text parses as; a string otherwise (the validator then
    /// reports the type mismatch).
    pub fn coerce(self, s: &str) -> Value {
        self.scalar(s).to_value()
    }

    /// The text read by the schema's types, borrowed: an integer (within 64 bits), a finite
    /// number, a boolean, null (empty text, when strings are not allowed), else the string.
    /// The one pass checks this directly; [`Prim::coerce`] makes JSON of it.
    pub fn scalar(self, s: &str) -> Scalar<'_> {
        if self.int {
            if let Ok(i) = s.parse::<i64>() {
                return Scalar::Int(i.into());
            }
            if let Ok(u) = s.parse::<u64>() {
                return Scalar::Int(u.into());
            }
        }
        if self.num {
            if let Ok(f) = s.parse::<f64>() {
                if f.is_finite() && serde_json::Number::from_f64(f).is_some() {
                    return Scalar::Float(f);
                }
            }
        }
        if self.boolean {
            match s {
                "true" => return Scalar::Bool(true),
                "false" => return Scalar::Bool(false),
                _ => {}
            }
        }
        if self.null && s.is_empty() && !self.string {
            return Scalar::Null;
        }
        Scalar::Str(s)
    }
}

/// How a parameter's text maps to JSON.
#[derive(Clone, Debug)]
pub enum Shape {
    Scalar(Prim),
    Array(Prim),
    /// Object with per-property types (others as strings).
    Object(Vec<(String, Prim)>),
    /// `content: {application/json: ...}`: the value is JSON text.
    Json,
}

impl Shape {
    fn prop(&self, name: &str) -> Prim {
        match self {
            Shape::Object(props) => props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .unwrap_or(Prim {
                    string: true,
                    ..Prim::default()
                }),
            _ => Prim::default(),
        }
    }
    fn object_props(&self) -> impl Iterator<Item = &str> {
        let v: &[(String, Prim)] = match self {
            Shape::Object(p) => p,
            _ => &[],
        };
        v.iter().map(|(n, _)| n.as_str())
    }
}

/// One compiled parameter.
pub struct Param {
    pub name: String,
    pub lname: String,
    pub loc: In,
    pub style: Style,
    pub explode: bool,
    pub required: bool,
    pub allow_empty: bool,
    pub shape: Shape,
    pub schema: Option<Compiled>,
    /// The value cannot carry free text (see `schema::is_strict`).
    pub strict: bool,
}

fn fail(p: &Param, reason: impl Into<String>) -> Failure {
    Failure {
        location: p.loc.as_str(),
        name: p.name.clone(),
        pointer: String::new(),
        reason: reason.into(),
    }
}

fn split_pairs_to_object(shape: &Shape, items: &[&str]) -> Option<Value> {
    if items.len() % 2 != 0 {
        return None;
    }
    let mut m = Map::new();
    for kv in items.chunks(2) {
        m.insert(kv[0].to_string(), shape.prop(kv[0]).coerce(kv[1]));
    }
    Some(Value::Object(m))
}

fn exploded_to_object(shape: &Shape, items: &[&str]) -> Option<Value> {
    let mut m = Map::new();
    for kv in items {
        let (k, v) = kv.split_once('=')?;
        m.insert(k.to_string(), shape.prop(k).coerce(v));
    }
    Some(Value::Object(m))
}

impl Param {
    /// Parse the text of a path, header or cookie parameter (one occurrence).
    pub fn parse_single(&self, raw: &str) -> Result<Value, String> {
        let bad = || {
            format!(
                "is not a valid {} {:?} value",
                self.loc.as_str(),
                self.style
            )
        };
        let mut s = raw;
        // Prefixes of label and matrix styles.
        match self.style {
            Style::Label => s = s.strip_prefix('.').ok_or_else(bad)?,
            Style::Matrix => {
                s = s.strip_prefix(';').ok_or_else(bad)?;
            }
            _ => {}
        }
        match &self.shape {
            Shape::Json => serde_json::from_str(s).map_err(|_| "is not valid JSON".to_string()),
            Shape::Scalar(p) => {
                let v = if self.style == Style::Matrix {
                    let prefix = format!("{}=", self.name);
                    match s.strip_prefix(&prefix) {
                        Some(v) => v,
                        None if s == self.name => "",
                        None => return Err(bad()),
                    }
                } else {
                    s
                };
                Ok(p.coerce(v))
            }
            Shape::Array(p) => {
                let items: Vec<&str> = match (self.style, self.explode) {
                    (Style::Label, true) => s.split('.').collect(),
                    (Style::Matrix, true) => {
                        let prefix = format!("{}=", self.name);
                        s.split(';')
                            .map(|x| x.strip_prefix(&prefix))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(bad)?
                    }
                    (Style::Matrix, false) => {
                        let prefix = format!("{}=", self.name);
                        s.strip_prefix(&prefix)
                            .ok_or_else(bad)?
                            .split(',')
                            .collect()
                    }
                    _ => split_ascii(s, b',').collect(),
                };
                if s.is_empty() && self.style != Style::Matrix {
                    return Ok(Value::Array(Vec::new()));
                }
                Ok(Value::Array(
                    items.into_iter().map(|x| p.coerce(x)).collect(),
                ))
            }
            Shape::Object(_) => {
                let v = match (self.style, self.explode) {
                    (Style::Simple, false) | (Style::Form, false) => {
                        let items: Vec<&str> = s.split(',').collect();
                        split_pairs_to_object(&self.shape, &items)
                    }
                    (Style::Simple, true) => {
                        let items: Vec<&str> = s.split(',').collect();
                        exploded_to_object(&self.shape, &items)
                    }
                    (Style::Label, false) => {
                        let items: Vec<&str> = s.split(',').collect();
                        split_pairs_to_object(&self.shape, &items)
                    }
                    (Style::Label, true) => {
                        let items: Vec<&str> = s.split('.').collect();
                        exploded_to_object(&self.shape, &items)
                    }
                    (Style::Matrix, false) => {
                        let prefix = format!("{}=", self.name);
                        let items: Vec<&str> = s
                            .strip_prefix(&prefix)
                            .ok_or_else(bad)?
                            .split(',')
                            .collect();
                        split_pairs_to_object(&self.shape, &items)
                    }
                    (Style::Matrix, true) => {
                        let items: Vec<&str> = s.split(';').collect();
                        exploded_to_object(&self.shape, &items)
                    }
                    _ => None,
                };
                v.ok_or_else(bad)
            }
        }
    }

    /// Whether the text of one occurrence of this parameter (what [`Param::parse_single`]
    /// reads) is valid, shown by the one pass without building JSON. `false` means "not shown
    /// valid here": the full path parses, checks and explains.
    pub fn fast_valid(&self, raw: &str) -> bool {
        let Some(pass) = self.schema.as_ref().and_then(|c| c.onepass.as_ref()) else {
            return false;
        };
        if !matches!(self.style, Style::Simple | Style::Form) {
            return false;
        }
        match &self.shape {
            Shape::Scalar(p) => pass.scalar_valid(p.scalar(raw)),
            Shape::Array(_) if raw.is_empty() => pass.array_valid([]),
            Shape::Array(p) => pass.array_valid(split_ascii(raw, b',').map(|x| p.scalar(x))),
            Shape::Object(_) | Shape::Json => false,
        }
    }

    /// The index of the first query pair named like this parameter and how many are, each
    /// marked in `used`.
    fn occurrences(&self, pairs: &[QueryPair<'_>], used: &mut [bool]) -> (usize, usize) {
        let (mut first, mut count) = (0, 0);
        for (i, (k, _)) in pairs.iter().enumerate() {
            if *k == self.name {
                used[i] = true;
                if count == 0 {
                    first = i;
                }
                count += 1;
            }
        }
        (first, count)
    }

    /// Whether this query parameter is present and valid, shown by the one pass (see
    /// [`Param::fast_valid`]); marks the pairs it names in `used`. `false`: read it with
    /// [`Param::from_query`], which decides.
    pub fn query_fast_valid(&self, pairs: &[QueryPair<'_>], used: &mut [bool]) -> bool {
        if self.style != Style::Form {
            return false;
        }
        let (first, count) = self.occurrences(pairs, used);
        if count == 0 {
            return false;
        }
        match &self.shape {
            Shape::Array(p) if self.explode => {
                let Some(pass) = self.schema.as_ref().and_then(|c| c.onepass.as_ref()) else {
                    return false;
                };
                pass.array_valid(
                    pairs
                        .iter()
                        .filter(|(k, _)| *k == self.name)
                        .map(|(_, v)| p.scalar(v)),
                )
            }
            Shape::Scalar(_) | Shape::Array(_) => {
                // Repeated or empty scalars are refused (or allowed) by `from_query`.
                let raw = &pairs[first].1;
                count == 1 && !raw.is_empty() && self.fast_valid(raw)
            }
            Shape::Object(_) | Shape::Json => false,
        }
    }

    /// Read this query parameter from the decoded query pairs. `Ok(None)` when absent.
    /// Marks the pairs it consumed in `used`.
    pub fn from_query(
        &self,
        pairs: &[QueryPair<'_>],
        used: &mut [bool],
    ) -> Result<Option<Value>, String> {
        let mut take = |pred: &dyn Fn(&str) -> bool| -> Vec<usize> {
            let idx: Vec<usize> = pairs
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| pred(k))
                .map(|(i, _)| i)
                .collect();
            for &i in &idx {
                used[i] = true;
            }
            idx
        };
        match &self.shape {
            Shape::Object(_) if self.style == Style::DeepObject => {
                let prefix = format!("{}[", self.name);
                let idx = take(&|k: &str| k.starts_with(&prefix) && k.ends_with(']'));
                if idx.is_empty() {
                    return Ok(None);
                }
                let mut m = Map::new();
                for i in idx {
                    let (k, v) = &pairs[i];
                    let prop = &k[prefix.len()..k.len() - 1];
                    if prop.contains('[') || prop.contains(']') {
                        return Err("nested deepObject keys are not supported".into());
                    }
                    if m.insert(prop.to_string(), self.shape.prop(prop).coerce(v))
                        .is_some()
                    {
                        return Err("repeats a property".into());
                    }
                }
                Ok(Some(Value::Object(m)))
            }
            Shape::Object(_) if self.explode => {
                // form, exploded: every property is a query parameter of its own.
                let names: Vec<&str> = self.shape.object_props().collect();
                let idx = take(&|k: &str| names.contains(&k));
                if idx.is_empty() {
                    return Ok(None);
                }
                let mut m = Map::new();
                for i in idx {
                    let (k, v) = &pairs[i];
                    if m.insert(k.to_string(), self.shape.prop(k).coerce(v))
                        .is_some()
                    {
                        return Err("repeats a property".into());
                    }
                }
                Ok(Some(Value::Object(m)))
            }
            _ => {
                // The common case, without collecting indices: one name.
                let (first, count) = self.occurrences(pairs, used);
                if count == 0 {
                    return Ok(None);
                }
                match &self.shape {
                    Shape::Array(p) if self.explode && self.style == Style::Form => {
                        Ok(Some(Value::Array(
                            pairs
                                .iter()
                                .filter(|(k, _)| *k == self.name)
                                .map(|(_, v)| p.coerce(v))
                                .collect(),
                        )))
                    }
                    _ => {
                        if count > 1 {
                            // A repeated scalar: parsers disagree on which one counts.
                            return Err("is repeated".into());
                        }
                        let raw = &pairs[first].1;
                        if raw.is_empty()
                            && !self.allow_empty
                            && !matches!(self.shape, Shape::Array(_))
                        {
                            return Err("is empty".into());
                        }
                        match (&self.shape, self.style) {
                            (Shape::Array(p), Style::SpaceDelimited) => Ok(Some(Value::Array(
                                raw.split(' ').map(|x| p.coerce(x)).collect(),
                            ))),
                            (Shape::Array(p), Style::PipeDelimited) => Ok(Some(Value::Array(
                                raw.split('|').map(|x| p.coerce(x)).collect(),
                            ))),
                            _ => self.parse_single(raw).map(Some),
                        }
                    }
                }
            }
        }
    }

    /// Validate a parsed value against the schema.
    pub fn check(&self, v: &Value, out: &mut Vec<Failure>) {
        if let Some(c) = &self.schema {
            out.extend(crate::schema::check(c, v, self.loc.as_str(), &self.name, 4));
        }
    }

    pub fn missing(&self) -> Failure {
        fail(self, "is required")
    }

    pub fn malformed(&self, why: String) -> Failure {
        fail(self, why)
    }
}

/// Split a `Cookie` header into (name, value) pairs.
pub fn cookies(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(loc: In, style: Style, explode: bool, shape: Shape) -> Param {
        Param {
            name: "id".into(),
            lname: "id".into(),
            loc,
            style,
            explode,
            required: true,
            allow_empty: false,
            shape,
            schema: None,
            strict: false,
        }
    }
    const INT: Prim = Prim {
        int: true,
        num: false,
        boolean: false,
        null: false,
        string: false,
    };

    #[test]
    fn split_ascii_splits_as_str_split() {
        for s in ["", ",", "a", "a,b", ",a,", "a,,b", "é,ü,", "a,b,c,"] {
            let ours: Vec<&str> = split_ascii(s, b',').collect();
            let std: Vec<&str> = s.split(',').collect();
            assert_eq!(ours, std, "{s:?}");
        }
    }

    #[test]
    fn text_is_read_by_the_first_type_it_parses_as() {
        use serde_json::json;
        let prim = |spec: &str| Prim {
            int: spec.contains('i'),
            num: spec.contains('n'),
            boolean: spec.contains('b'),
            null: spec.contains('0'),
            string: spec.contains('s'),
        };
        let cases = [
            ("i", "42", json!(42)),
            ("i", "-9223372036854775808", json!(i64::MIN)),
            ("i", "18446744073709551615", json!(u64::MAX)),
            ("i", "18446744073709551616", json!("18446744073709551616")),
            ("in", "18446744073709551616", json!(18446744073709551616.0)),
            ("i", "+42", json!(42)),
            ("i", "2.0", json!("2.0")),
            ("in", "2.0", json!(2.0)),
            ("n", "42", json!(42.0)),
            ("n", "1e400", json!("1e400")),
            ("n", "inf", json!("inf")),
            ("n", "NaN", json!("NaN")),
            ("ib", "true", json!(true)),
            ("b", "TRUE", json!("TRUE")),
            ("0", "", json!(null)),
            ("0s", "", json!("")),
            ("0", "null", json!("null")),
            ("s", "42", json!("42")),
            ("", "x", json!("x")),
        ];
        for (spec, text, want) in cases {
            let p = prim(spec);
            assert_eq!(p.coerce(text), want, "{spec} {text:?}");
            // The borrowed reading is the same value.
            assert_eq!(p.scalar(text).to_value(), want, "{spec} {text:?}");
        }
        assert_eq!(prim("s").scalar("abc"), Scalar::Str("abc"));
        assert_eq!(prim("i").scalar("7"), Scalar::Int(7));
    }

    #[test]
    fn path_styles() {
        let p = param(In::Path, Style::Simple, false, Shape::Array(INT));
        assert_eq!(
            p.parse_single("3,4,5").unwrap(),
            serde_json::json!([3, 4, 5])
        );
        let p = param(In::Path, Style::Label, true, Shape::Array(INT));
        assert_eq!(p.parse_single(".3.4").unwrap(), serde_json::json!([3, 4]));
        let p = param(In::Path, Style::Matrix, true, Shape::Array(INT));
        assert_eq!(
            p.parse_single(";id=3;id=4").unwrap(),
            serde_json::json!([3, 4])
        );
        let p = param(In::Path, Style::Matrix, false, Shape::Scalar(INT));
        assert_eq!(p.parse_single(";id=7").unwrap(), serde_json::json!(7));
        let obj = Shape::Object(vec![("R".into(), INT), ("G".into(), INT)]);
        let p = param(In::Path, Style::Simple, false, obj.clone());
        assert_eq!(
            p.parse_single("R,100,G,200").unwrap(),
            serde_json::json!({"R": 100, "G": 200})
        );
        let p = param(In::Path, Style::Simple, true, obj);
        assert_eq!(
            p.parse_single("R=100,G=200").unwrap(),
            serde_json::json!({"R": 100, "G": 200})
        );
        let p = param(In::Path, Style::Label, false, Shape::Scalar(INT));
        assert!(p.parse_single("5").is_err());
    }

    #[test]
    fn query_pairs_split_like_form_urlencoded() {
        let pieces = [
            "", "a", "a=", "=b", "a=b", "a=b=c", "é=ü", "x=1,2", "%41=%42", "a+b=c+d",
        ];
        let mut x = 0x9E37_79B9u64;
        for _ in 0..5_000 {
            let mut q = String::new();
            for i in 0..(x % 5) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i > 0 {
                    q.push('&');
                }
                q.push_str(pieces[(x % pieces.len() as u64) as usize]);
            }
            x = x.wrapping_add(0x2545_F491);
            let want: Vec<QueryPair> = form_urlencoded::parse(q.as_bytes()).collect();
            assert_eq!(query_pairs(&q), want, "{q}");
        }
    }

    #[test]
    fn query_styles() {
        let pairs: Vec<QueryPair> =
            form_urlencoded::parse(b"id=1&id=2&tags=a|b&color[R]=1&color[G]=2&sp=x%20y").collect();
        let mut used = vec![false; pairs.len()];
        let p = param(In::Query, Style::Form, true, Shape::Array(INT));
        assert_eq!(
            p.from_query(&pairs, &mut used).unwrap(),
            Some(serde_json::json!([1, 2]))
        );
        let p = param(In::Query, Style::Form, true, Shape::Scalar(INT));
        assert!(p.from_query(&pairs, &mut used).is_err(), "repeated scalar");
        let mut p = param(
            In::Query,
            Style::PipeDelimited,
            false,
            Shape::Array(Prim {
                string: true,
                ..Prim::default()
            }),
        );
        p.name = "tags".into();
        assert_eq!(
            p.from_query(&pairs, &mut used).unwrap(),
            Some(serde_json::json!(["a", "b"]))
        );
        let mut p = param(
            In::Query,
            Style::DeepObject,
            true,
            Shape::Object(vec![("R".into(), INT)]),
        );
        p.name = "color".into();
        assert_eq!(
            p.from_query(&pairs, &mut used).unwrap(),
            Some(serde_json::json!({"R": 1, "G": "2"}))
        );
        let mut p = param(
            In::Query,
            Style::SpaceDelimited,
            false,
            Shape::Array(Prim {
                string: true,
                ..Prim::default()
            }),
        );
        p.name = "sp".into();
        assert_eq!(
            p.from_query(&pairs, &mut used).unwrap(),
            Some(serde_json::json!(["x", "y"]))
        );
        assert!(used.iter().all(|u| *u));
    }
}
