//! Macro expansion: `%{tx.score}`, `%{MATCHED_VAR}`, `%{request_headers.host}` in operator
//! arguments, `msg`, `logdata` and `setvar`.

use crate::vars::{Coll, Data, TxKey, TxNames};
use std::borrow::Cow;

#[derive(Clone, Debug)]
enum Part {
    Lit(Vec<u8>),
    Var(Coll, Option<Vec<u8>>),
    /// `%{tx.name}`: the name lower-cased, with its slot once the rule set numbered it.
    Tx(Vec<u8>, Option<u32>),
    /// `%{rule.id}` and friends, filled in from the rule being run.
    RuleField(String),
}

/// A string that may hold macros, compiled once.
#[derive(Clone, Debug)]
pub struct Macro {
    parts: Vec<Part>,
}

impl Macro {
    pub fn parse(s: &str) -> Result<Macro, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("%{") {
            let Some(end) = rest[i..].find('}') else {
                break;
            };
            if i > 0 {
                parts.push(Part::Lit(rest.as_bytes()[..i].to_vec()));
            }
            let inner = &rest[i + 2..i + end];
            let (c, k) = match inner.split_once('.') {
                Some((c, k)) => (c, Some(k)),
                None => (inner, None),
            };
            if c.eq_ignore_ascii_case("rule") {
                parts.push(Part::RuleField(k.unwrap_or("").to_ascii_lowercase()));
            } else {
                let coll = Coll::by_name(c)
                    .ok_or_else(|| format!("unknown variable `{c}` in macro `%{{{inner}}}`"))?;
                match (coll, k) {
                    // TX names are looked up lower-cased; do it once here.
                    (Coll::Tx, Some(k)) => {
                        parts.push(Part::Tx(k.to_ascii_lowercase().into_bytes(), None))
                    }
                    (coll, k) => parts.push(Part::Var(coll, k.map(|k| k.as_bytes().to_vec()))),
                }
            }
            rest = &rest[i + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.as_bytes().to_vec()));
        }
        Ok(Macro { parts })
    }

    /// Give the TX names the macro reads their slots in `names`.
    pub fn intern(&mut self, names: &mut TxNames) {
        for p in &mut self.parts {
            if let Part::Tx(k, slot) = p {
                if let Ok(name) = std::str::from_utf8(k) {
                    *slot = Some(names.intern(name));
                }
            }
        }
    }

    /// The text when there are no macros in it.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// Expand without copying when the text is literal or one variable.
    pub fn expand_cow<'a>(
        &'a self,
        data: &'a Data,
        rule: &dyn Fn(&str) -> Option<String>,
    ) -> Cow<'a, [u8]> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(b""),
            [Part::Lit(l)] => Cow::Borrowed(l),
            [Part::Var(c, k)] => data.first(*c, k.as_deref()).unwrap_or(Cow::Borrowed(b"")),
            [Part::Tx(k, slot)] => Cow::Borrowed(data.tx_get(tx_key(k, *slot)).unwrap_or(b"")),
            _ => Cow::Owned(self.expand(data, rule)),
        }
    }

    pub fn expand(&self, data: &Data, rule: &dyn Fn(&str) -> Option<String>) -> Vec<u8> {
        if let Some(l) = self.literal() {
            return l.to_vec();
        }
        // Room for the literal parts and a short value or two: most expansions then fit
        // without growing.
        let lits: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(l) => l.len(),
                _ => 24,
            })
            .sum();
        let mut out = Vec::with_capacity(lits);
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Var(c, k) => {
                    if let Some(v) = data.first(*c, k.as_deref()) {
                        out.extend_from_slice(&v);
                    }
                }
                Part::Tx(k, slot) => {
                    if let Some(v) = data.tx_get(tx_key(k, *slot)) {
                        out.extend_from_slice(v);
                    }
                }
                Part::RuleField(f) => {
                    if let Some(v) = rule(f) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
            }
        }
        out
    }
}

fn tx_key(name: &[u8], slot: Option<u32>) -> TxKey<'_> {
    TxKey { name, slot }
}
