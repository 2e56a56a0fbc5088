//! Path templates (`/users/{id}`, `/files/{name}.json`) compiled into a matcher. Literal
//! segments win over templated ones, segment by segment, as OpenAPI requires.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Param(String),
}

#[derive(Clone, Debug)]
enum Seg {
    Lit(String),
    /// One or more parameters mixed with literal text.
    Pattern(Vec<Part>),
}

impl Seg {
    fn rank(&self) -> u8 {
        match self {
            Seg::Lit(_) => 0,
            Seg::Pattern(p) if p.len() > 1 => 1,
            Seg::Pattern(_) => 2,
        }
    }
}

#[derive(Debug)]
struct Entry {
    segs: Vec<Seg>,
    id: usize,
}

/// A compiled set of path templates.
#[derive(Debug, Default)]
pub struct Router {
    /// Entries grouped by segment count (the index), most specific first.
    by_len: Vec<Vec<Entry>>,
}

/// Parse a template into segments; errors name what is wrong.
fn parse(template: &str) -> Result<Vec<Seg>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a path must start with `/`".into());
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for seg in rest.split('/') {
        if !seg.contains('{') && !seg.contains('}') {
            out.push(Seg::Lit(seg.to_string()));
            continue;
        }
        let mut parts = Vec::new();
        let mut s = seg;
        while !s.is_empty() {
            match s.find('{') {
                Some(0) => {
                    let end = s
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in segment `{seg}`"))?;
                    let name = &s[1..end];
                    if name.is_empty() || name.contains('{') {
                        return Err(format!("bad parameter in segment `{seg}`"));
                    }
                    if matches!(parts.last(), Some(Part::Param(_))) {
                        return Err(format!(
                            "two parameters without a literal between them in `{seg}`"
                        ));
                    }
                    parts.push(Part::Param(name.to_string()));
                    s = &s[end + 1..];
                }
                Some(i) => {
                    parts.push(Part::Lit(s[..i].to_string()));
                    s = &s[i..];
                }
                None => {
                    if s.contains('}') {
                        return Err(format!("stray `}}` in segment `{seg}`"));
                    }
                    parts.push(Part::Lit(s.to_string()));
                    s = "";
                }
            }
        }
        out.push(Seg::Pattern(parts));
    }
    Ok(out)
}

/// The parameter names of a template, in order.
pub fn param_names(template: &str) -> Vec<String> {
    parse(template)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| match s {
            Seg::Lit(_) => Vec::new(),
            Seg::Pattern(p) => p
                .into_iter()
                .filter_map(|x| match x {
                    Part::Param(n) => Some(n),
                    Part::Lit(_) => None,
                })
                .collect(),
        })
        .collect()
}

/// A template with parameter names erased, to find ambiguous paths.
fn shape(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        s.push('/');
        match seg {
            Seg::Lit(l) => s.push_str(l),
            Seg::Pattern(p) => {
                for x in p {
                    match x {
                        Part::Lit(l) => s.push_str(l),
                        Part::Param(_) => s.push_str("{}"),
                    }
                }
            }
        }
    }
    s
}

impl Router {
    /// Build from (template, id) pairs. Errors are (template, message).
    pub fn build<'a>(
        paths: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Result<Router, Vec<(String, String)>> {
        let mut r = Router::default();
        let mut errors = Vec::new();
        let mut shapes: HashMap<String, String> = HashMap::new();
        for (t, id) in paths {
            match parse(t) {
                Ok(segs) => {
                    let sh = shape(&segs);
                    if let Some(prev) = shapes.insert(sh, t.to_string()) {
                        errors.push((
                            t.to_string(),
                            format!("ambiguous: matches the same requests as `{prev}`"),
                        ));
                        continue;
                    }
                    if r.by_len.len() <= segs.len() {
                        r.by_len.resize_with(segs.len() + 1, Vec::new);
                    }
                    r.by_len[segs.len()].push(Entry { segs, id });
                }
                Err(m) => errors.push((t.to_string(), m)),
            }
        }
        for list in &mut r.by_len {
            list.sort_by(|a, b| {
                let ka: Vec<u8> = a.segs.iter().map(Seg::rank).collect();
                let kb: Vec<u8> = b.segs.iter().map(Seg::rank).collect();
                ka.cmp(&kb)
            });
        }
        if errors.is_empty() {
            Ok(r)
        } else {
            Err(errors)
        }
    }

    /// Match a normalized path. Returns the id and the captured (name, value) pairs.
    pub fn find<'p>(&self, path: &'p str) -> Option<(usize, Vec<(&str, &'p str)>)> {
        let rest = path.strip_prefix('/')?;
        let count = if rest.is_empty() {
            0
        } else {
            rest.bytes().filter(|&b| b == b'/').count() + 1
        };
        let list = self.by_len.get(count)?;
        let mut caps = Vec::new();
        'entries: for e in list {
            caps.clear();
            // Every entry here has `count` segments, as does the path.
            for (seg, got) in e.segs.iter().zip(crate::params::split_ascii(rest, b'/')) {
                match seg {
                    Seg::Lit(l) => {
                        if l != got {
                            continue 'entries;
                        }
                    }
                    Seg::Pattern(parts) => {
                        if !match_parts(parts, got, &mut caps) {
                            continue 'entries;
                        }
                    }
                }
            }
            return Some((e.id, caps));
        }
        None
    }
}

fn match_parts<'r, 'p>(
    parts: &'r [Part],
    mut s: &'p str,
    caps: &mut Vec<(&'r str, &'p str)>,
) -> bool {
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            Part::Lit(l) => {
                let Some(r) = s.strip_prefix(l.as_str()) else {
                    return false;
                };
                s = r;
            }
            Part::Param(name) => {
                let value = match parts.get(i + 1) {
                    Some(Part::Lit(next)) => {
                        // The last occurrence when the literal ends the segment (`{name}.json`
                        // with a dotted name), the first otherwise.
                        let at = if i + 2 == parts.len() {
                            if !s.ends_with(next.as_str()) {
                                return false;
                            }
                            s.len() - next.len()
                        } else {
                            match s.find(next.as_str()) {
                                Some(a) => a,
                                None => return false,
                            }
                        };
                        let (v, r) = s.split_at(at);
                        s = r;
                        v
                    }
                    _ => std::mem::take(&mut s),
                };
                if value.is_empty() {
                    return false;
                }
                caps.push((name.as_str(), value));
            }
        }
        i += 1;
    }
    s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_wins_and_params_capture() {
        let r = Router::build([
            ("/users/{id}", 0),
            ("/users/me", 1),
            ("/users/{id}/orders/{oid}", 2),
            ("/files/{name}.json", 3),
            ("/", 4),
        ])
        .unwrap();
        assert_eq!(r.find("/users/me").unwrap().0, 1);
        let (id, caps) = r.find("/users/42").unwrap();
        assert_eq!((id, caps), (0, vec![("id", "42")]));
        let (id, caps) = r.find("/users/7/orders/9").unwrap();
        assert_eq!((id, caps), (2, vec![("id", "7"), ("oid", "9")]));
        let (id, caps) = r.find("/files/a.b.json").unwrap();
        assert_eq!((id, caps), (3, vec![("name", "a.b")]));
        assert!(r.find("/files/.json").is_none());
        assert_eq!(r.find("/").unwrap().0, 4);
        assert!(r.find("/users").is_none());
        assert!(r.find("/users/").is_none());
    }

    #[test]
    fn ambiguous_and_malformed_templates_are_errors() {
        assert!(Router::build([("/a/{x}", 0), ("/a/{y}", 1)]).is_err());
        assert!(Router::build([("/a/{x", 0)]).is_err());
        assert!(Router::build([("a", 0)]).is_err());
        assert!(Router::build([("/a/{x}{y}", 0)]).is_err());
    }
}
