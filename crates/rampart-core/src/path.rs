//! Request path normalization: percent-decoding and dot-segment removal, so that routing,
//! guards and the upstream all see one unambiguous path.
//!
//! The output is canonical: unreserved and sub-delim characters decoded, everything else that
//! needs it percent-encoded (upper-case hex), `.` and `..` segments resolved. The upstream
//! receives exactly this path, so it cannot parse the request differently from Rampart.

use rampart_config::{Backslash, EncodedSlash, PathPolicy};

#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    EncodedSlash,
    EncodedNul,
    Backslash,
    BadEncoding,
    NotAbsolute,
    ControlChar,
}

impl PathError {
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::EncodedSlash => "path contains an encoded slash (%2F)",
            PathError::EncodedNul => "path contains an encoded NUL (%00)",
            PathError::Backslash => "path contains a backslash",
            PathError::BadEncoding => "path contains an invalid percent-encoding",
            PathError::NotAbsolute => "path must start with /",
            PathError::ControlChar => "path contains a control character",
        }
    }
    pub fn rule(&self) -> &'static str {
        match self {
            PathError::EncodedSlash => "path_encoded_slash",
            PathError::EncodedNul => "path_encoded_nul",
            PathError::Backslash => "path_backslash",
            PathError::BadEncoding => "path_bad_encoding",
            PathError::NotAbsolute => "path_not_absolute",
            PathError::ControlChar => "path_control_char",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters kept literally in a normalized segment (RFC 3986 pchar minus `%`).
fn is_pchar(b: u8) -> bool {
    PCHAR[b as usize]
}

/// [`is_pchar`] as a table: one load per byte of every request path.
static PCHAR: [bool; 256] = crate::h1scan::alnum_and(b"-._~!$&'()*+,;=:@");

/// A `%2F` kept inside a segment (only with `encoded_slash: keep`).
const KEPT_SLASH: u16 = 0x100;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Normalize a raw request path (no query). Returns the canonical path.
pub fn normalize(raw: &str, policy: &PathPolicy) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode or resolve, and every byte already canonical.
    if bytes.iter().all(|&b| b == b'/' || is_pchar(b)) && !has_dot_segment(bytes) {
        return Ok(raw.to_string());
    }
    let raw = bytes;
    // Split into segments on '/', decoding each segment.
    let mut segments: Vec<Vec<u16>> = Vec::with_capacity(8);
    let mut cur: Vec<u16> = Vec::with_capacity(raw.len());
    let mut i = 1;
    // True when the last thing seen was a separator (so the path ends with `/`).
    let mut ends_with_slash = raw.len() == 1;
    while i < raw.len() {
        let b = raw[i];
        ends_with_slash = false;
        match b {
            b'/' => {
                push_segment(&mut segments, std::mem::take(&mut cur));
                ends_with_slash = true;
            }
            b'\\' => match policy.backslash {
                Backslash::Reject => return Err(PathError::Backslash),
                Backslash::Slash => {
                    push_segment(&mut segments, std::mem::take(&mut cur));
                    ends_with_slash = true;
                }
            },
            b'%' => {
                let (h, l) = match (raw.get(i + 1), raw.get(i + 2)) {
                    (Some(&h), Some(&l)) => (h, l),
                    _ => return Err(PathError::BadEncoding),
                };
                let v = match (hex(h), hex(l)) {
                    (Some(h), Some(l)) => h * 16 + l,
                    _ => return Err(PathError::BadEncoding),
                };
                match v {
                    0 if !policy.allow_encoded_nul => return Err(PathError::EncodedNul),
                    b'/' => match policy.encoded_slash {
                        EncodedSlash::Reject => return Err(PathError::EncodedSlash),
                        EncodedSlash::Keep => cur.push(KEPT_SLASH),
                    },
                    b'\\' => match policy.backslash {
                        Backslash::Reject => return Err(PathError::Backslash),
                        Backslash::Slash => {
                            push_segment(&mut segments, std::mem::take(&mut cur));
                            ends_with_slash = true;
                        }
                    },
                    _ => cur.push(v as u16),
                }
                i += 2;
            }
            c if c < 0x20 || c == 0x7f => return Err(PathError::ControlChar),
            c => cur.push(c as u16),
        }
        i += 1;
    }
    // The last segment; `.` and `..` at the end leave a trailing slash (RFC 3986 5.2.4).
    let dot_end = matches!(cur.as_slice(), [0x2e] | [0x2e, 0x2e]);
    if !ends_with_slash {
        push_segment(&mut segments, cur);
    }
    let trailing_slash = ends_with_slash || dot_end;
    let mut out = String::with_capacity(raw.len() + 8);
    for seg in &segments {
        out.push('/');
        for &b in seg {
            if b == KEPT_SLASH {
                out.push_str("%2F");
                continue;
            }
            let b = b as u8;
            if is_pchar(b) {
                out.push(b as char);
            } else {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// True if some segment is `.` or `..`.
fn has_dot_segment(p: &[u8]) -> bool {
    p.split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
}

fn push_segment(segments: &mut Vec<Vec<u16>>, seg: Vec<u16>) {
    match seg.as_slice() {
        [0x2e] => {}
        [0x2e, 0x2e] => {
            segments.pop();
        }
        _ => segments.push(seg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, &PathPolicy::default())
    }

    #[test]
    fn dot_segments_and_decoding() {
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/a/b").unwrap(), "/a/b");
        assert_eq!(n("/a/b/").unwrap(), "/a/b/");
        assert_eq!(n("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(n("/a/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/%61pi/users").unwrap(), "/api/users");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/a//b").unwrap(), "/a//b");
        assert_eq!(n("/a%FF").unwrap(), "/a%FF");
    }

    #[test]
    fn risky_encodings_rejected_by_default() {
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(n("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%2"), Err(PathError::BadEncoding));
        assert_eq!(n("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn configurable_policies() {
        let p = PathPolicy {
            encoded_slash: EncodedSlash::Keep,
            backslash: Backslash::Slash,
            allow_encoded_nul: false,
        };
        assert_eq!(normalize("/a%2Fb/c", &p).unwrap(), "/a%2Fb/c");
        assert_eq!(normalize("/a\\..\\b", &p).unwrap(), "/b");
    }
}
