//! Request and response bodies: media types, and form and multipart bodies read into JSON so
//! one schema check covers every kind.

use std::borrow::Cow;

use crate::params::Prim;
use serde_json::{Map, Value};

/// How a body of a media type is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
    Multipart,
    /// Only the content type is checked.
    Other,
}

impl Kind {
    pub fn of(media: &str) -> Kind {
        let m = media.to_ascii_lowercase();
        if m == "application/json" || m.ends_with("+json") {
            Kind::Json
        } else if m == "application/x-www-form-urlencoded" {
            Kind::Form
        } else if m == "multipart/form-data" {
            Kind::Multipart
        } else {
            Kind::Other
        }
    }
}

/// The media type of a `Content-Type` value: lower case, parameters dropped.
pub fn essence(content_type: &str) -> Cow<'_, str> {
    let e = content_type.split(';').next().unwrap_or("").trim();
    if e.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(e.to_ascii_lowercase())
    } else {
        Cow::Borrowed(e)
    }
}

/// Pick the declared media range that best matches `media` (exact, then `type/*`, then `*/*`);
/// its index in `declared`.
pub fn best_match<T>(declared: &[(String, T)], media: &str) -> Option<usize> {
    let mut best: Option<(u8, usize)> = None;
    for (i, (range, _)) in declared.iter().enumerate() {
        let score = if range == media {
            3
        } else if let Some(prefix) = range.strip_suffix("/*") {
            if range != "*/*" && media.split('/').next() == Some(prefix) {
                2
            } else if range == "*/*" {
                1
            } else {
                0
            }
        } else {
            0
        };
        if score > 0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The type of each property the body schema declares (for form values, which are text).
#[derive(Clone, Debug, Default)]
pub struct FormShape {
    pub props: Vec<(String, Prim, bool)>,
}

impl FormShape {
    fn field(&self, name: &str) -> (Prim, bool) {
        self.props
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, p, arr)| (*p, *arr))
            .unwrap_or((
                Prim {
                    string: true,
                    ..Prim::default()
                },
                false,
            ))
    }

    fn put(&self, m: &mut Map<String, Value>, name: &str, text: &str) -> Result<(), String> {
        let (prim, array) = self.field(name);
        let v = prim.coerce(text);
        if array {
            match m
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(a) => a.push(v),
                _ => return Err("field is repeated".into()),
            }
        } else if m.insert(name.to_string(), v).is_some() {
            // Which of two values counts differs between parsers: refuse.
            return Err("a field that is not a list is repeated".into());
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` into a JSON object.
pub fn form_to_json(body: &[u8], shape: &FormShape) -> Result<Value, String> {
    let mut m = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        shape.put(&mut m, &k, &v)?;
    }
    Ok(Value::Object(m))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The `boundary` parameter of a multipart content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            (!v.is_empty() && v.len() <= 70).then(|| v.to_string())
        } else {
            None
        }
    })
}

/// `multipart/form-data` into a JSON object: text parts as their (typed) values, file parts as
/// their text (lossy). Malformed framing is an error, not a partial read.
pub fn multipart_to_json(body: &[u8], boundary: &str, shape: &FormShape) -> Result<Value, String> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut m = Map::new();
    let mut pos = find(body, d, 0).ok_or("no multipart boundary in the body")?;
    let mut parts = 0usize;
    loop {
        pos += d.len();
        if body[pos..].starts_with(b"--") {
            return Ok(Value::Object(m));
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err("malformed multipart boundary line".into());
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("multipart part without headers end")?;
        let head = std::str::from_utf8(&body[pos..head_end])
            .map_err(|_| "multipart part headers are not UTF-8")?;
        let mut name = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                return Err("malformed multipart part header".into());
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                let mut it = v.split(';');
                if !it
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("form-data"))
                {
                    return Err("multipart part is not form-data".into());
                }
                for p in it {
                    if let Some((pk, pv)) = p.trim().split_once('=') {
                        if pk.trim().eq_ignore_ascii_case("name") {
                            if name.is_some() {
                                return Err("multipart part names itself twice".into());
                            }
                            name = Some(pv.trim().trim_matches('"').to_string());
                        }
                    }
                }
            }
        }
        let name = name.ok_or("multipart part without a name")?;
        let data_start = head_end + 4;
        let mut needle = b"\r\n".to_vec();
        needle.extend_from_slice(d);
        let data_end = find(body, &needle, data_start).ok_or("multipart body is not terminated")?;
        let text = String::from_utf8_lossy(&body[data_start..data_end]);
        shape.put(&mut m, &name, &text)?;
        parts += 1;
        if parts > 1000 {
            return Err("too many multipart parts".into());
        }
        pos = data_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_matching() {
        let d = vec![
            ("application/json".to_string(), 1),
            ("text/*".to_string(), 2),
            ("*/*".to_string(), 3),
        ];
        assert_eq!(best_match(&d, "application/json"), Some(0));
        assert_eq!(best_match(&d, "text/plain"), Some(1));
        assert_eq!(best_match(&d, "image/png"), Some(2));
        assert_eq!(
            essence("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert!(matches!(
            essence(" application/json ;charset=utf-8"),
            Cow::Borrowed("application/json")
        ));
        assert_eq!(Kind::of("application/merge-patch+json"), Kind::Json);
    }

    #[test]
    fn forms_and_multipart() {
        let shape = FormShape {
            props: vec![
                (
                    "qty".into(),
                    Prim {
                        int: true,
                        ..Prim::default()
                    },
                    false,
                ),
                (
                    "tag".into(),
                    Prim {
                        string: true,
                        ..Prim::default()
                    },
                    true,
                ),
            ],
        };
        let v = form_to_json(b"qty=3&tag=a&tag=b&name=x+y", &shape).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"qty": 3, "tag": ["a", "b"], "name": "x y"})
        );
        assert!(form_to_json(b"qty=3&qty=4", &shape).is_err());
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"qty\"\r\n\r\n5\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
        let v = multipart_to_json(body, "XyZ", &shape).unwrap();
        assert_eq!(v, serde_json::json!({"qty": 5, "file": "hello"}));
        assert!(multipart_to_json(b"--XyZ\r\nbroken", "XyZ", &shape).is_err());
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(),
            Some("XyZ")
        );
    }
}
