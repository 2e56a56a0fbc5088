//! The SecLang reader: turns rule files into directives (name, arguments, file and line), and
//! splits rule arguments into targets, operator and actions. It knows the syntax, not the
//! meaning; `rules` gives the meaning.
//!
//! Syntax, as Apache's config reader has it: one directive per line, a trailing `\` continues
//! the line, `#` starts a comment line, arguments are separated by blanks and may be double
//! quoted (inside, only `\"` is an escape; every other backslash is kept for the regexes).

use std::fmt;
use std::sync::Arc;

/// Where something was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A load error: where, and what.
#[derive(Clone, Debug)]
pub struct WafError {
    pub pos: Pos,
    pub message: String,
}

impl WafError {
    pub fn new(pos: &Pos, message: impl Into<String>) -> Self {
        WafError {
            pos: pos.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for WafError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for WafError {}

/// One directive as written.
#[derive(Clone, Debug)]
pub struct Directive {
    pub pos: Pos,
    pub name: String,
    pub args: Vec<String>,
}

/// Split a rule file into directives.
pub fn directives(text: &str, file: &Arc<str>) -> Result<Vec<Directive>, WafError> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut start = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if joined.is_empty() {
            start = i + 1;
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            continue;
        }
        joined.push_str(line);
        let pos = Pos {
            file: file.clone(),
            line: start,
        };
        let d = parse_line(&joined, pos)?;
        out.push(d);
        joined.clear();
    }
    if !joined.trim().is_empty() {
        let pos = Pos {
            file: file.clone(),
            line: start,
        };
        out.push(parse_line(&joined, pos)?);
    }
    Ok(out)
}

fn parse_line(line: &str, pos: Pos) -> Result<Directive, WafError> {
    let words = words(line).map_err(|m| WafError::new(&pos, m))?;
    let mut it = words.into_iter();
    let name = it.next().unwrap_or_default();
    Ok(Directive {
        pos,
        name,
        args: it.collect(),
    })
}

/// Blank-separated words; double quotes group, `\"` inside quotes is a quote.
fn words(line: &str) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let mut w = Vec::new();
        if b[i] == b'"' {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'"' {
                    w.push(b'"');
                    i += 2;
                } else if b[i] == b'"' {
                    i += 1;
                    closed = true;
                    break;
                } else {
                    w.push(b[i]);
                    i += 1;
                }
            }
            if !closed {
                return Err("unterminated double-quoted argument".into());
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                w.push(b[i]);
                i += 1;
            }
        }
        out.push(String::from_utf8_lossy(&w).into_owned());
    }
    Ok(out)
}

/// One `name[:value]` action as written (value unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAction {
    pub name: String,
    pub value: Option<String>,
}

/// Split an action list: comma separated, values may be single quoted with `\'` escapes.
pub fn actions(s: &str) -> Result<Vec<RawAction>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ns = i;
        while i < b.len() && b[i] != b':' && b[i] != b',' {
            i += 1;
        }
        let name = s[ns..i].trim().to_string();
        if name.is_empty() {
            return Err(format!("empty action name at offset {ns}"));
        }
        let mut value = None;
        if i < b.len() && b[i] == b':' {
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b'\'' {
                i += 1;
                let mut v = Vec::new();
                let mut closed = false;
                while i < b.len() {
                    if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                        v.push(b'\'');
                        i += 2;
                    } else if b[i] == b'\'' {
                        i += 1;
                        closed = true;
                        break;
                    } else {
                        v.push(b[i]);
                        i += 1;
                    }
                }
                if !closed {
                    return Err(format!("unterminated quote in action `{name}`"));
                }
                value = Some(String::from_utf8_lossy(&v).into_owned());
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                value = Some(s[vs..i].trim_end().to_string());
            }
        }
        out.push(RawAction { name, value });
    }
    Ok(out)
}

/// One target as written: `[!|&]COLL[:selector]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTarget {
    pub exclude: bool,
    pub count: bool,
    pub collection: String,
    pub selector: Option<String>,
}

/// Split a target list on `|`, keeping `/regex/` selectors (which may hold `|`) whole.
pub fn targets(s: &str) -> Result<Vec<RawTarget>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let mut exclude = false;
        let mut count = false;
        while i < b.len() && (b[i] == b'!' || b[i] == b'&' || b[i] == b' ') {
            if b[i] == b'!' {
                exclude = true;
            } else if b[i] == b'&' {
                count = true;
            }
            i += 1;
        }
        let cs = i;
        while i < b.len() && b[i] != b':' && b[i] != b'|' {
            i += 1;
        }
        let collection = s[cs..i].trim().to_string();
        if collection.is_empty() {
            return Err(format!("empty target in `{s}`"));
        }
        let mut selector = None;
        if i < b.len() && b[i] == b':' {
            i += 1;
            let ss = i;
            let is_xml = collection.eq_ignore_ascii_case("XML");
            if !is_xml && i < b.len() && b[i] == b'/' {
                // A regex selector: up to the closing unescaped `/`.
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'/' && (i + 1 == b.len() || b[i + 1] == b'|') {
                        i += 1;
                        closed = true;
                        break;
                    }
                    i += 1;
                }
                if !closed {
                    return Err(format!("unterminated /regex/ selector in `{s}`"));
                }
            } else {
                while i < b.len() && b[i] != b'|' {
                    i += 1;
                }
            }
            selector = Some(s[ss..i.min(b.len())].trim().to_string());
        }
        out.push(RawTarget {
            exclude,
            count,
            collection,
            selector,
        });
        if i < b.len() && b[i] == b'|' {
            i += 1;
        }
    }
    Ok(out)
}

/// Split an operator argument: `[!]@name arg` or a bare regex.
pub fn operator(s: &str) -> (bool, String, String) {
    let mut t = s;
    let negated = t.starts_with('!');
    if negated {
        t = &t[1..];
    }
    if let Some(rest) = t.strip_prefix('@') {
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..end].to_string();
        let arg = rest[end..].strip_prefix(' ').unwrap_or(&rest[end..]);
        (negated, name, arg.to_string())
    } else {
        (negated, "rx".to_string(), t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_and_quotes() {
        let f: Arc<str> = Arc::from("t.conf");
        let d = directives(
            "# c\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    phase:2\"\n\nSecMarker END\n",
            &f,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].pos.line, 2);
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b", "id:1,    phase:2"]);
        assert_eq!(d[1].name, "SecMarker");
        assert_eq!(d[1].pos.line, 6);
    }

    #[test]
    fn action_quotes() {
        let a = actions("id:1, msg:'it\\'s, ok',t:none,setvar:'tx.a=+%{tx.b}',pass").unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[1].value.as_deref(), Some("it's, ok"));
        assert_eq!(a[3].value.as_deref(), Some("tx.a=+%{tx.b}"));
        assert_eq!(a[4].value, None);
    }

    #[test]
    fn regex_selectors_keep_bars() {
        let t =
            targets("REQUEST_COOKIES|!REQUEST_COOKIES:/^(?:a|b)$/|&ARGS|XML:/*|XML://@*").unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t[1].selector.as_deref(), Some("/^(?:a|b)$/"));
        assert!(t[1].exclude);
        assert!(t[2].count);
        assert_eq!(t[4].selector.as_deref(), Some("//@*"));
    }
}
