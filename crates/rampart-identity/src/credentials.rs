//! Finding credentials in a request: bearer tokens (header, cookie, query), API keys.

use http::HeaderMap;

/// `Authorization: <scheme> <value>`, scheme compared case-insensitively.
pub fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    for v in headers.get_all(http::header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        if v.len() > scheme.len()
            && v.as_bytes()[scheme.len()] == b' '
            && v[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            let t = v[scheme.len() + 1..].trim();
            if !t.is_empty() {
                return Some(t);
            }
        }
    }
    None
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == name && !val.is_empty() {
                    return Some(val.trim_matches('"'));
                }
            }
        }
    }
    None
}

/// The percent-decoded value of query parameter `name`.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(name) && !v.is_empty() {
            return percent_decode(v);
        }
    }
    None
}

/// The query string without parameter `name` (None when nothing is left).
pub fn query_without(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let k = p.split_once('=').map(|(k, _)| k).unwrap_or(p);
            percent_decode(k).as_deref() != Some(name)
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// Decode `%XX` and `+` (as space); None on invalid escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(h).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Remove cookie `name` from the Cookie headers.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let values: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|p| p.split_once('=').map(|(k, _)| k) != Some(name))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(http::header::COOKIE);
    for v in values {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.append(http::header::COOKIE, v);
        }
    }
}

/// Looks like a JWT (three base64url parts).
pub fn looks_like_jwt(t: &str) -> bool {
    t.bytes().filter(|&b| b == b'.').count() == 2
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bearer_cookie_query() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
        h.append("cookie", "a=1; token=xyz; b=2".parse().unwrap());
        assert_eq!(authorization(&h, "Bearer"), Some("abc.def.ghi"));
        assert_eq!(authorization(&h, "ApiKey"), None);
        assert_eq!(cookie(&h, "token"), Some("xyz"));
        remove_cookie(&mut h, "token");
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(
            query_param(Some("x=1&access_token=a%2Eb"), "access_token").as_deref(),
            Some("a.b")
        );
        assert_eq!(
            query_without("x=1&access_token=a&y=2", "access_token").as_deref(),
            Some("x=1&y=2")
        );
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("rk_abc_def"));
    }
}
