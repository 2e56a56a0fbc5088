//! Hostile input never panics: seeded random bytes (biased toward the characters each parser
//! treats specially) through every transformation, detector, body processor and the SecLang
//! reader. A bounded stand-in for the cargo-fuzz runs the issue asks for.

use rampart_waf::{body, seclang, sqli, transform::Transform, vars::Data, xss};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"%u+&=;\\\"'<>/*-#{}[]():,|!@$\r\n \t0aFx\xff\xc3\xa9";
        let n = (self.next() % max as u64) as usize;
        (0..n)
            .map(|_| {
                let r = self.next();
                if r % 3 == 0 {
                    (r >> 8) as u8
                } else {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                }
            })
            .collect()
    }
}

const ALL: &[&str] = &[
    "lowercase",
    "urlDecode",
    "urlDecodeUni",
    "jsDecode",
    "htmlEntityDecode",
    "utf8toUnicode",
    "removeNulls",
    "cssDecode",
    "cmdLine",
    "removeWhitespace",
    "compressWhitespace",
    "replaceComments",
    "removeComments",
    "removeCommentsChar",
    "normalizePath",
    "normalizePathWin",
    "escapeSeqDecode",
    "length",
    "base64Decode",
    "base64DecodeExt",
    "hexDecode",
    "hexEncode",
    "sqlHexDecode",
    "sha1",
    "md5",
    "trim",
    "urlEncode",
];

#[test]
fn random_input_never_panics() {
    let ts: Vec<Transform> = ALL.iter().map(|n| Transform::by_name(n).unwrap()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let name: std::sync::Arc<str> = std::sync::Arc::from("fuzz.conf");
    for _ in 0..20_000 {
        let v = rng.bytes(96);
        for t in &ts {
            let _ = t.apply(&v);
        }
        let _ = sqli::detect(&v);
        let _ = xss::detect(&v);
        let _ = body::json(&v, 32, &mut Vec::new());
        let _ = body::xml(&v);
        let _ = body::urlencoded(&v, &mut Vec::new());
        let mut d = Data::default();
        let _ = body::multipart(b"multipart/form-data; boundary=x", &v, &mut d);
        let mut framed = b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n".to_vec();
        framed.extend_from_slice(&v);
        let _ = body::multipart(b"multipart/form-data; boundary=\"x\"", &framed, &mut d);
        let text = String::from_utf8_lossy(&v);
        let _ = seclang::directives(&text, &name);
        let _ = seclang::actions(&text);
        let _ = seclang::targets(&text);
    }
}

#[test]
fn random_rules_load_or_fail_cleanly() {
    let mut rng = Rng(42);
    let heads = [
        "SecRule ARGS|!ARGS:",
        "SecRule &TX:",
        "SecAction ",
        "SecRule REQUEST_HEADERS:/",
        "SecMarker ",
    ];
    let ops = [
        "@rx ",
        "@pm ",
        "!@within ",
        "@validateByteRange ",
        "@eq ",
        "@ipMatch ",
    ];
    for i in 0..3_000 {
        let pick = |r: u64, n: usize| (r % n as u64) as usize;
        let h = heads[pick(rng.next(), heads.len())];
        let o = ops[pick(rng.next(), ops.len())];
        let a = String::from_utf8_lossy(&rng.bytes(24)).replace('\n', " ");
        let b = String::from_utf8_lossy(&rng.bytes(24)).replace('\n', " ");
        let text = format!(
            "{h}{a} \"{o}{b}\" \"id:{},phase:2,pass,t:lowercase,{a}\"\n",
            i + 1
        );
        let mut l = rampart_waf::Loader::new();
        if l.text(
            &text,
            &std::sync::Arc::from("r.conf"),
            std::path::Path::new("."),
        )
        .is_ok()
        {
            let _ = l.finish();
        }
    }
}
