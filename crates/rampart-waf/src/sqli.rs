//! `@detectSQLi`: Rampart's own SQL-injection detector.
//!
//! The input is tokenized as SQL three times: as it is (a number or bare value spliced into a
//! query), and as if it followed an opening `'` or `"` (a value spliced into a string). Each
//! token gets a one-letter class, and the classes of the first tokens form a fingerprint. An
//! input is an injection when a fingerprint shows it leaving its context and continuing as SQL:
//! a string or number followed by a logic operator and an operand (`' or '1'='1`), by UNION or
//! a statement keyword, by a comment that cuts the query (`admin'--`), by a stacked statement,
//! or by a call to a function attackers use (`sleep(`, `benchmark(`). Plain text rarely has
//! these shapes at its start, which keeps false positives down.

/// Token classes.
const STRING: u8 = b's';
const NUMBER: u8 = b'n';
const KEYWORD: u8 = b'k';
const UNION: u8 = b'U';
const STATEMENT: u8 = b'E';
const LOGIC: u8 = b'&';
const OPERATOR: u8 = b'o';
const FUNCTION: u8 = b'f';
const BAREWORD: u8 = b'b';
const VARIABLE: u8 = b'v';
const OPEN: u8 = b'(';
const CLOSE: u8 = b')';
const COMMA: u8 = b',';
const SEMI: u8 = b';';
const COMMENT: u8 = b'c';
const DOT: u8 = b'.';

const STATEMENTS: &[&str] = &[
    "select", "insert", "update", "delete", "drop", "create", "alter", "exec", "execute",
    "declare", "shutdown", "truncate", "waitfor", "grant", "revoke", "rename", "merge", "call",
    "handler", "load", "use",
];
const KEYWORDS: &[&str] = &[
    "from",
    "where",
    "having",
    "group",
    "order",
    "by",
    "limit",
    "offset",
    "into",
    "values",
    "table",
    "procedure",
    "analyse",
    "delay",
    "case",
    "when",
    "then",
    "else",
    "end",
    "all",
    "distinct",
    "as",
    "on",
    "join",
    "null",
    "top",
    "outfile",
    "dumpfile",
    "begin",
    "set",
    "collate",
    "escape",
    "asc",
    "desc",
    "exists",
    "database",
    "schema",
    "sysdate",
    "current_user",
];
const LOGICS: &[&str] = &["and", "or", "xor", "&&", "||", "not"];
const WORD_OPS: &[&str] = &[
    "like", "rlike", "regexp", "is", "in", "between", "div", "mod", "sounds", "glob", "match",
];
/// Functions that are rare outside SQL and common in injections (time, error and file based).
const FUNCTIONS: &[&str] = &[
    "sleep",
    "benchmark",
    "pg_sleep",
    "extractvalue",
    "updatexml",
    "load_file",
    "xmltype",
    "char",
    "chr",
    "concat",
    "concat_ws",
    "ascii",
    "substring",
    "substr",
    "mid",
    "version",
    "database",
    "user",
    "if",
    "ifnull",
    "coalesce",
    "cast",
    "convert",
    "md5",
    "sha1",
    "group_concat",
    "count",
    "unhex",
    "hex",
    "ord",
    "length",
    "randomblob",
    "dbms_pipe",
    "receive_message",
    "utl_inaddr",
    "get_host_address",
    "xp_cmdshell",
    "waitfor",
    "row",
    "exp",
    "floor",
    "rand",
    "name_const",
    "json_keys",
    "geometrycollection",
    "polygon",
    "multipoint",
    "linestring",
    "schema",
    "current_user",
    "system_user",
    "session_user",
    "pg_read_file",
    "lo_import",
    "make_set",
    "elt",
    "instr",
    "locate",
    "position",
    "sys_eval",
    "sys_exec",
    "to_char",
    "to_number",
    "nullif",
    "iif",
    "case",
    "exists",
];

struct Tok<'a> {
    class: u8,
    /// The word, as the input spells it (compared without ASCII case); empty for tokens that
    /// are not words. Borrowed: a tokenization allocates only its token list.
    word: &'a [u8],
}

/// Whether word `w` is `k` (ASCII case ignored).
fn is(w: &[u8], k: &str) -> bool {
    w.eq_ignore_ascii_case(k.as_bytes())
}

/// Whether word `w` is one of `list` (ASCII case ignored).
fn one_of(list: &[&str], w: &[u8]) -> bool {
    list.iter().any(|k| is(w, k))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn tokenize(s: &[u8], quote: Option<u8>, limit: usize) -> Vec<Tok<'_>> {
    let mut out = Vec::with_capacity(limit);
    let mut i = 0;
    if let Some(q) = quote {
        // The input continues a string opened by the query.
        let end = find_quote_end(s, 0, q);
        out.push(Tok {
            class: STRING,
            word: &[],
        });
        match end {
            Some(e) => i = e + 1,
            None => return out,
        }
    }
    while i < s.len() && out.len() < limit {
        let c = s[i];
        if c.is_ascii_whitespace() || c == 0x0b || c == 0xa0 {
            i += 1;
            continue;
        }
        // Comments.
        if c == b'#' || (c == b'-' && s.get(i + 1) == Some(&b'-')) {
            out.push(Tok {
                class: COMMENT,
                word: &[],
            });
            break;
        }
        if c == b'/' && s.get(i + 1) == Some(&b'*') {
            let mysql_exec = s.get(i + 2) == Some(&b'!');
            match s[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(e) => {
                    if mysql_exec {
                        // MySQL runs `/*! ... */` as code: read what is inside.
                        i += 3;
                        while i < s.len() && s[i].is_ascii_digit() {
                            i += 1;
                        }
                        continue;
                    }
                    i += 2 + e + 2;
                    // An inline comment is whitespace to SQL, but one right after the
                    // breakout is a signal too.
                    if out.len() <= 2 {
                        out.push(Tok {
                            class: COMMENT,
                            word: &[],
                        });
                    }
                }
                None => {
                    out.push(Tok {
                        class: COMMENT,
                        word: &[],
                    });
                    break;
                }
            }
            continue;
        }
        if c == b'\'' || c == b'"' || c == b'`' {
            let end = find_quote_end(s, i + 1, c);
            let cls = if c == b'`' { BAREWORD } else { STRING };
            out.push(Tok {
                class: cls,
                word: &[],
            });
            match end {
                Some(e) => i = e + 1,
                None => break,
            }
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && s.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let st = i;
            if c == b'0'
                && matches!(
                    s.get(i + 1),
                    Some(b'x') | Some(b'X') | Some(b'b') | Some(b'B')
                )
            {
                i += 2;
                while i < s.len() && s[i].is_ascii_hexdigit() {
                    i += 1;
                }
            } else {
                while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'.') {
                    i += 1;
                }
                if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
                    i += 1;
                    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
                        i += 1;
                    }
                    while i < s.len() && s[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            // `123abc` is a word, not a number.
            if i < s.len() && is_ident(s[i]) && s[i] != b'.' {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                out.push(Tok {
                    class: BAREWORD,
                    word: &s[st..i],
                });
            } else {
                out.push(Tok {
                    class: NUMBER,
                    word: &[],
                });
            }
            continue;
        }
        if c == b'@' {
            let st = i;
            i += 1;
            while i < s.len() && (s[i] == b'@' || is_ident(s[i])) {
                i += 1;
            }
            out.push(Tok {
                class: VARIABLE,
                word: &s[st..i],
            });
            continue;
        }
        if is_ident(c) {
            let st = i;
            while i < s.len() && (is_ident(s[i]) || s[i] == b'.') {
                i += 1;
            }
            let w = &s[st..i];
            let mut j = i;
            while j < s.len() && s[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = s.get(j) == Some(&b'(');
            let last = w.rsplit(|&b| b == b'.').next().unwrap_or(w);
            let class = if is(w, "union") {
                UNION
            } else if one_of(LOGICS, w) {
                LOGIC
            } else if one_of(WORD_OPS, w) {
                OPERATOR
            } else if call {
                FUNCTION
            } else if one_of(STATEMENTS, w) {
                STATEMENT
            } else if one_of(KEYWORDS, w) {
                KEYWORD
            } else {
                BAREWORD
            };
            out.push(Tok { class, word: last });
            continue;
        }
        let two = s.get(i..i + 2);
        if two == Some(b"||") || two == Some(b"&&") {
            out.push(Tok {
                class: LOGIC,
                word: &[],
            });
            i += 2;
            continue;
        }
        let class = match c {
            b'(' => OPEN,
            b')' => CLOSE,
            b',' => COMMA,
            b';' => SEMI,
            b'.' => DOT,
            b'=' | b'<' | b'>' | b'!' | b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^'
            | b'~' | b':' => OPERATOR,
            _ => 0,
        };
        i += 1;
        if class == 0 {
            continue;
        }
        // Fold runs of operators (`<=`, `!=`, `= -`).
        if class == OPERATOR && out.last().is_some_and(|t| t.class == OPERATOR) {
            continue;
        }
        out.push(Tok { class, word: &[] });
    }
    out
}

fn find_quote_end(s: &[u8], mut i: usize, q: u8) -> Option<usize> {
    while i < s.len() {
        if s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == q {
            // A doubled quote is an escaped quote.
            if s.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn known_fn(t: &Tok) -> bool {
    t.class == FUNCTION && one_of(FUNCTIONS, t.word)
}

/// The token after `i` once closing parentheses are skipped.
fn after_closes(t: &[Tok], mut i: usize) -> usize {
    while i < t.len() && t[i].class == CLOSE {
        i += 1;
    }
    i
}

fn operand(c: u8) -> bool {
    matches!(c, STRING | NUMBER | VARIABLE | FUNCTION | OPEN | BAREWORD)
}

/// Judge one tokenization; `broke_out` says the first token closed the query's string.
fn injection(t: &[Tok], broke_out: bool) -> Option<&'static str> {
    if t.is_empty() {
        return None;
    }
    // UNION [ALL] SELECT, or a statement after a statement separator, anywhere early.
    for (i, tok) in t.iter().enumerate() {
        if tok.class == UNION {
            let mut j = i + 1;
            while j < t.len()
                && (t[j].class == KEYWORD || t[j].class == OPEN || t[j].class == COMMENT)
            {
                j += 1;
            }
            let all = t.get(i + 1).is_some_and(|x| {
                x.class == KEYWORD && (is(x.word, "all") || is(x.word, "distinct"))
            });
            if all
                || t.get(j).is_some_and(|x| {
                    x.class == STATEMENT || (x.class == FUNCTION && is(x.word, "select"))
                })
            {
                return Some("union");
            }
        }
        if tok.class == SEMI
            && t.get(i + 1).is_some_and(|x| {
                x.class == STATEMENT || (x.class == FUNCTION && one_of(STATEMENTS, x.word))
            })
            && i <= 4
        {
            return Some("stacked");
        }
    }
    let first = t[0].class;
    let lead = matches!(first, STRING | NUMBER) || (broke_out && first == STRING);
    if lead {
        let i = after_closes(t, 1);
        let closes = i > 1;
        match t.get(i).map(|x| x.class) {
            Some(LOGIC) => {
                let j = if t
                    .get(i + 1)
                    .is_some_and(|x| x.class == LOGIC && is(x.word, "not"))
                {
                    i + 2
                } else {
                    i + 1
                };
                if let Some(n) = t.get(j) {
                    if matches!(n.class, STRING | NUMBER | VARIABLE | OPEN | STATEMENT)
                        || known_fn(n)
                    {
                        return Some("tautology");
                    }
                    if matches!(n.class, BAREWORD | FUNCTION)
                        && t.get(j + 1)
                            .is_some_and(|x| matches!(x.class, OPERATOR | OPEN))
                    {
                        return Some("tautology");
                    }
                }
                if broke_out && t.get(j).is_none() {
                    return Some("logic");
                }
            }
            Some(COMMENT) if broke_out || closes => return Some("comment"),
            Some(STATEMENT) if broke_out || closes => return Some("statement"),
            Some(KEYWORD)
                if (broke_out || closes)
                    && one_of(
                        &[
                            "order",
                            "group",
                            "having",
                            "limit",
                            "procedure",
                            "into",
                            "where",
                            "from",
                        ],
                        t[i].word,
                    ) =>
            {
                return Some("clause");
            }
            Some(FUNCTION) if (broke_out || closes) && known_fn(&t[i]) => return Some("function"),
            Some(OPERATOR) if broke_out || first == NUMBER => {
                if let Some(n) = t.get(i + 1) {
                    if known_fn(n) {
                        return Some("function");
                    }
                    if broke_out
                        && matches!(n.class, BAREWORD | NUMBER | VARIABLE)
                        && t.get(i + 2).is_some_and(|x| x.class == OPERATOR)
                        && first == STRING
                    {
                        return Some("expression");
                    }
                    if broke_out && n.class == STATEMENT {
                        return Some("statement");
                    }
                }
            }
            Some(SEMI) if broke_out => return Some("stacked"),
            _ => {}
        }
        return None;
    }
    // Not a breakout: whole-value shapes.
    if first == FUNCTION && known_fn(&t[0]) && t.get(1).is_some_and(|x| x.class == OPEN) {
        // `sleep(20)`: a known function called with an operand.
        if t.get(2)
            .is_some_and(|x| operand(x.class) || x.class == STATEMENT)
        {
            return Some("function");
        }
    }
    if first == STATEMENT && is(t[0].word, "select") {
        if t.iter()
            .take(8)
            .any(|x| x.class == KEYWORD && is(x.word, "from"))
        {
            return Some("select");
        }
        if t.get(1).is_some_and(|x| known_fn(x) || x.class == VARIABLE) {
            return Some("select");
        }
    }
    if first == BAREWORD
        && t.get(1).is_some_and(|x| x.class == LOGIC)
        && t.get(2).is_some_and(|x| matches!(x.class, NUMBER | STRING))
        && t.get(3).is_some_and(|x| x.class == OPERATOR)
        && t.get(4).is_some_and(|x| matches!(x.class, NUMBER | STRING))
    {
        return Some("tautology");
    }
    None
}

/// Returns a short description of the injection shape found, or `None`.
pub fn detect(input: &[u8]) -> Option<String> {
    if input.len() < 2 || one_word(input) {
        return None;
    }
    let t = tokenize(input, None, 12);
    if let Some(k) = injection(&t, false) {
        return Some(format!("sqli:{k}"));
    }
    for q in [b'\'', b'"'] {
        if !input.contains(&q) {
            continue;
        }
        let t = tokenize(input, Some(q), 12);
        if t.len() > 1 || t.first().is_some_and(|x| x.class != STRING) {
            if let Some(k) = injection(&t, true) {
                return Some(format!("sqli:{k}"));
            }
        }
    }
    None
}

/// Whether `input` is a single word to the tokenizer: ASCII letters, digits and `_`, or a
/// name starting with a letter or `_` that may hold dots (`json.items.0.sku`). Every shape
/// [`injection`] reports needs at least two tokens, and a value without quotes is tokenized
/// only once, so such a value is never an injection (checked by `one_word_is_one_token`).
fn one_word(input: &[u8]) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    match input.first() {
        Some(&c) if c.is_ascii_alphabetic() || c == b'_' => {
            input.iter().all(|&c| word(c) || c == b'.')
        }
        Some(_) => input.iter().all(|&c| word(c)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{detect, one_word, tokenize};

    /// The tokenizer makes at most one token of anything `one_word` lets through, on many
    /// short inputs over the bytes that decide where words and numbers end.
    #[test]
    fn one_word_is_one_token() {
        let alphabet = b"aeExX0b19_.$";
        let mut checked = 0;
        for (_, v) in crate::testgen::values(0x9e37_79b9_7f4a_7c15, alphabet, 1..=10, 200_000) {
            if one_word(&v) {
                checked += 1;
                assert!(
                    tokenize(&v, None, 12).len() <= 1,
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(checked > 10_000, "too few inputs checked: {checked}");
    }

    #[test]
    fn attacks() {
        for a in [
            "1234 OR 1=1",
            "-1839' or '1'='1",
            "-1839\" or \"1\"=\"2",
            "2010-01-01'+sleep(20.to_i)+'",
            "EmptyValue' and 526=527",
            "foo') UNION ALL select NULL --",
            "foo')waitfor delay'5:0:20'--",
            "JKGHUKGDI8TDHLFJH72FZLFJSKFH' and sleep(12) --",
            "sleep(20)",
            "unittests@coreruleset.org\" sleep(10.to_i) \"",
            "\" | type %SystemDrive%\\\\config.ini | \"",
            "\"unittests@coreruleset.org\"')) and (select*from(select(sleep(5)))x) --",
            "admin'--",
            "1; drop table users",
            "x' union select password from users",
            "select * from users",
            "1' order by 3--",
        ] {
            assert!(detect(a.as_bytes()).is_some(), "missed: {a}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "hello world",
            "O'Reilly",
            "rock and roll",
            "It's a dog's life",
            "Tom said \"hi\" and left",
            "GA1.2.1234567890.1234567890",
            "john.doe@example.com",
            "2024-01-01",
            "select your plan",
            "Choose one or the other",
            "5\" x 7\" photo",
            "/api/v1/users/42",
            "fr-FR,fr;q=0.9,en;q=0.8",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "application/json; charset=utf-8",
            "a-b-c",
            "don't stop",
        ] {
            assert!(
                detect(b.as_bytes()).is_none(),
                "false positive: {b} -> {:?}",
                detect(b.as_bytes())
            );
        }
    }
}
