//! The request body processors (URL-encoded, JSON, XML, multipart) on arbitrary bytes: the
//! first byte picks the processor; for multipart the first line is the Content-Type value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_waf::body;
use rampart_waf::vars::Data;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let mut out = Vec::new();
            let _ = body::urlencoded(rest, &mut out);
        }
        1 => {
            let mut out = Vec::new();
            let _ = body::json(rest, 64, &mut out);
        }
        2 => {
            let _ = body::xml(rest);
        }
        _ => {
            let (ct, b) = match rest.iter().position(|&c| c == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"multipart/form-data; boundary=x"[..], rest),
            };
            let mut d = Data::default();
            let _ = body::multipart(ct, b, &mut d);
        }
    }
});
