//! Authorization rules: path templates, required scopes/roles (function level), subject allow
//! lists, and object ownership (BOLA) checks.

use crate::credentials::{percent_decode, query_param};
use rampart_core::guard::Identity;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Param(String),
    Rest,
}

/// A compiled path template: `/users/{id}/orders`, `/admin/**`.
#[derive(Debug, Clone)]
pub struct Template {
    segs: Vec<Seg>,
}

impl Template {
    pub fn parse(t: &str) -> Result<Template, String> {
        let rest = t
            .strip_prefix('/')
            .ok_or_else(|| format!("path template `{t}` must start with `/`"))?;
        let mut segs = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, s) in parts.iter().enumerate() {
            if *s == "**" {
                if i + 1 != parts.len() {
                    return Err(format!("in `{t}`: `**` may only be the last segment"));
                }
                segs.push(Seg::Rest);
            } else if let Some(name) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!("in `{t}`: bad parameter name `{{{name}}}`"));
                }
                if segs.contains(&Seg::Param(name.to_string())) {
                    return Err(format!("in `{t}`: parameter `{name}` appears twice"));
                }
                segs.push(Seg::Param(name.to_string()));
            } else if s.contains(['{', '}', '*']) {
                return Err(format!(
                    "in `{t}`: segment `{s}` mixes literal text with `{{`, `}}` or `*` (use a whole `{{name}}` segment or a final `**`)"
                ));
            } else {
                segs.push(Seg::Lit(s.to_string()));
            }
        }
        Ok(Template { segs })
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(p) => Some(p.as_str()),
            _ => None,
        })
    }

    /// Match a path; on success the parameter values (percent-decoded).
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        // A trailing slash is the same resource.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/').filter(|_| !rest.is_empty());
        let mut out = Vec::new();
        for s in &self.segs {
            match s {
                Seg::Rest => return Some(out),
                Seg::Lit(l) => {
                    if parts.next()? != l {
                        return None;
                    }
                }
                Seg::Param(n) => {
                    let v = parts.next()?;
                    if v.is_empty() {
                        return None;
                    }
                    out.push((n.clone(), percent_decode(v)?));
                }
            }
        }
        parts.next().is_none().then_some(out)
    }
}

/// Where an object id comes from.
#[derive(Debug, Clone)]
pub enum IdSource {
    Path(String),
    Query(String),
    Header(http::HeaderName),
    /// A JSON pointer into the request body.
    Json(String),
}

impl IdSource {
    pub fn parse(s: &str) -> Result<IdSource, String> {
        match s.split_once(':') {
            Some(("path", n)) if !n.is_empty() => Ok(IdSource::Path(n.to_string())),
            Some(("query", n)) if !n.is_empty() => Ok(IdSource::Query(n.to_string())),
            Some(("header", n)) => http::HeaderName::from_bytes(n.as_bytes())
                .map(IdSource::Header)
                .map_err(|_| format!("invalid header name `{n}`")),
            Some(("json", p)) if p.starts_with('/') => Ok(IdSource::Json(p.to_string())),
            Some(("json", p)) => Err(format!(
                "`json:{p}` needs a JSON pointer starting with `/`, e.g. json:/account_id"
            )),
            _ => Err(format!(
                "unknown id source `{s}` (use path:NAME, query:NAME, header:NAME or json:/pointer)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Owner {
    pub from: IdSource,
    pub claim: String,
    pub unless_roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub template: Template,
    pub methods: Option<Vec<http::Method>>,
    pub public: bool,
    pub scopes_all: Vec<String>,
    pub scopes_any: Vec<String>,
    pub roles_all: Vec<String>,
    pub roles_any: Vec<String>,
    pub subjects: Vec<String>,
    pub owner: Vec<Owner>,
}

/// Why a request is not allowed.
#[derive(Debug)]
pub struct Denied {
    pub code: &'static str,
    pub message: String,
    /// For a bearer `insufficient_scope` challenge.
    pub scopes: Vec<String>,
}

impl Rule {
    pub fn applies(&self, method: &http::Method, path: &str) -> Option<Vec<(String, String)>> {
        if let Some(ms) = &self.methods {
            if !ms.contains(method) {
                return None;
            }
        }
        self.template.matches(path)
    }

    pub fn needs_body(&self) -> bool {
        self.owner
            .iter()
            .any(|o| matches!(o.from, IdSource::Json(_)))
    }

    /// Function-level checks: scopes, roles, subjects.
    pub fn check_function(&self, id: &Identity) -> Result<(), Denied> {
        let has_scope = |s: &String| id.scopes.iter().any(|x| x == s);
        let has_role = |r: &String| id.roles.iter().any(|x| x == r);
        let missing: Vec<String> = self
            .scopes_all
            .iter()
            .filter(|s| !has_scope(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Denied {
                code: "insufficient_scope",
                message: format!("subject lacks scopes {}", missing.join(" ")),
                scopes: self.scopes_all.clone(),
            });
        }
        if !self.scopes_any.is_empty() && !self.scopes_any.iter().any(has_scope) {
            return Err(Denied {
                code: "insufficient_scope",
                message: format!("subject has none of scopes {}", self.scopes_any.join(" ")),
                scopes: self.scopes_any.clone(),
            });
        }
        if let Some(r) = self.roles_all.iter().find(|r| !has_role(r)) {
            return Err(Denied {
                code: "missing_role",
                message: format!("subject lacks role `{r}`"),
                scopes: Vec::new(),
            });
        }
        if !self.roles_any.is_empty() && !self.roles_any.iter().any(has_role) {
            return Err(Denied {
                code: "missing_role",
                message: format!("subject has none of roles {}", self.roles_any.join(", ")),
                scopes: Vec::new(),
            });
        }
        if !self.subjects.is_empty() && !self.subjects.contains(&id.subject) {
            return Err(Denied {
                code: "subject_not_allowed",
                message: "subject is not on this rule's list".into(),
                scopes: Vec::new(),
            });
        }
        Ok(())
    }

    /// Ownership checks whose ids come from the request head.
    pub fn check_owner_head(
        &self,
        id: &Identity,
        params: &[(String, String)],
        req: &http::request::Parts,
    ) -> Result<(), Denied> {
        for o in &self.owner {
            let value = match &o.from {
                IdSource::Path(n) => params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
                IdSource::Query(n) => query_param(req.uri.query(), n),
                IdSource::Header(h) => {
                    let mut vals = req.headers.get_all(h).iter();
                    let first = vals.next();
                    if vals.next().is_some() {
                        return Err(Denied {
                            code: "ambiguous_object_id",
                            message: format!("header `{h}` appears more than once"),
                            scopes: Vec::new(),
                        });
                    }
                    first.and_then(|v| v.to_str().ok()).map(str::to_string)
                }
                IdSource::Json(_) => continue,
            };
            if let IdSource::Query(n) = &o.from {
                let count = req
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter(|p| {
                        percent_decode(p.split_once('=').map(|(k, _)| k).unwrap_or(p)).as_deref()
                            == Some(n.as_str())
                    })
                    .count();
                if count > 1 {
                    return Err(Denied {
                        code: "ambiguous_object_id",
                        message: format!("query parameter `{n}` appears more than once"),
                        scopes: Vec::new(),
                    });
                }
            }
            if let Some(v) = value {
                owns(o, id, &Value::String(v))?;
            }
        }
        Ok(())
    }

    /// Ownership checks whose ids come from the JSON body.
    pub fn check_owner_body(&self, id: &Identity, body: &Value) -> Result<(), Denied> {
        for o in &self.owner {
            if let IdSource::Json(p) = &o.from {
                if let Some(v) = body.pointer(p) {
                    owns(o, id, v)?;
                }
            }
        }
        Ok(())
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim by name: `sub` (or the configured subject claim) is the identity's subject; dotted
/// names walk nested objects.
pub fn claim<'a>(id: &'a Identity, name: &str) -> Option<std::borrow::Cow<'a, Value>> {
    if let Some(v) = id.claims.get(name) {
        return Some(std::borrow::Cow::Borrowed(v));
    }
    if name.contains('.') {
        let mut parts = name.split('.');
        let mut cur = id.claims.get(parts.next()?)?;
        for p in parts {
            cur = cur.get(p)?;
        }
        return Some(std::borrow::Cow::Borrowed(cur));
    }
    if name == "sub" {
        return Some(std::borrow::Cow::Owned(Value::String(id.subject.clone())));
    }
    None
}

fn owns(o: &Owner, id: &Identity, object: &Value) -> Result<(), Denied> {
    if o.unless_roles.iter().any(|r| id.roles.contains(r)) {
        return Ok(());
    }
    let deny = |why: &str| Denied {
        code: "not_owner",
        message: format!("object id does not belong to the subject ({why})"),
        scopes: Vec::new(),
    };
    let Some(obj) = scalar(object) else {
        return Err(deny("the object id is not a scalar"));
    };
    let Some(c) = claim(id, &o.claim) else {
        return Err(deny(&format!("no `{}` claim", o.claim)));
    };
    let ok = match c.as_ref() {
        Value::Array(items) => items.iter().any(|i| scalar(i).as_deref() == Some(&obj)),
        Value::String(s) if o.claim != "sub" && s.contains(' ') => s.split(' ').any(|x| x == obj),
        other => scalar(other).as_deref() == Some(&obj),
    };
    if ok {
        Ok(())
    } else {
        Err(deny(&format!("`{}` does not match", o.claim)))
    }
}

pub use rampart_core::json::parse_strict as parse_json_strict;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ident(sub: &str, roles: &[&str], claims: Value) -> Identity {
        Identity {
            subject: sub.into(),
            scopes: vec!["orders:read".into()],
            roles: roles.iter().map(|r| r.to_string()).collect(),
            method: "jwt",
            provider: "p".into(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
        }
    }

    #[test]
    fn templates() {
        let t = Template::parse("/users/{id}/orders").unwrap();
        assert_eq!(
            t.matches("/users/42/orders"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(
            t.matches("/users/42/orders/"),
            Some(vec![("id".into(), "42".into())])
        );
        assert!(t.matches("/users/42").is_none());
        assert!(t.matches("/users//orders").is_none());
        let r = Template::parse("/admin/**").unwrap();
        assert!(r.matches("/admin/x/y").is_some());
        assert!(r.matches("/admin").is_some());
        assert!(r.matches("/administrator").is_none());
        assert!(Template::parse("/a/x{id}").is_err());
        assert!(Template::parse("/a/**/b").is_err());
        assert!(Template::parse("a").is_err());
    }

    #[test]
    fn ownership() {
        let o = Owner {
            from: IdSource::Json("/account".into()),
            claim: "accounts".into(),
            unless_roles: vec!["admin".into()],
        };
        let rule = Rule {
            template: Template::parse("/x").unwrap(),
            methods: None,
            public: false,
            scopes_all: vec![],
            scopes_any: vec![],
            roles_all: vec![],
            roles_any: vec![],
            subjects: vec![],
            owner: vec![o],
        };
        let alice = ident("alice", &[], serde_json::json!({"accounts": ["a1", 7]}));
        let ok = serde_json::json!({"account": "a1"});
        let ok_num = serde_json::json!({"account": 7});
        let bad = serde_json::json!({"account": "b9"});
        assert!(rule.check_owner_body(&alice, &ok).is_ok());
        assert!(rule.check_owner_body(&alice, &ok_num).is_ok());
        assert!(rule.check_owner_body(&alice, &bad).is_err());
        let admin = ident("root", &["admin"], serde_json::json!({}));
        assert!(rule.check_owner_body(&admin, &bad).is_ok());
        assert!(parse_json_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_json_strict(br#"{"a":{"b":1,"c":[1,{"d":2}]}}"#).is_ok());
    }
}
