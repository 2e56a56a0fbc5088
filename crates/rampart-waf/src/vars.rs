//! Variables: the collections a rule can inspect, the per-transaction data behind them, and
//! target resolution (`ARGS:id`, `!ARGS:/^utm_/`, `&TX:score`, `XML://@*`).

use regex::bytes::Regex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One TX variable: (name as set, value).
pub type TxVar = (Vec<u8>, Vec<u8>);

/// The TX names a rule set spells out (`setvar:tx.inbound_anomaly_score_pl1=0`,
/// `TX:DETECTION_PARANOIA_LEVEL`, `%{tx.critical_anomaly_score}`), lower-cased and numbered at
/// load: a transaction keeps each in a slot, found by its number without hashing the name.
#[derive(Clone, Debug, Default)]
pub struct TxNames {
    slot_of: HashMap<String, u32, BuildHasherDefault<Fnv>>,
    names: Vec<String>,
}

impl TxNames {
    /// The slot of `name` (any ASCII case), given a new one if it has none yet.
    pub fn intern(&mut self, name: &str) -> u32 {
        let lower = name.to_ascii_lowercase();
        let n = self.names.len() as u32;
        *self.slot_of.entry(lower.clone()).or_insert_with(|| {
            self.names.push(lower);
            n
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The slots whose (lower-cased) names `sel` picks, in slot order.
    pub fn picked_by(&self, sel: &Selector) -> Box<[u32]> {
        (0..self.names.len() as u32)
            .filter(|&i| sel.matches(self.names[i as usize].as_bytes()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A TX name as a rule spells it, with its slot when the rule set numbered it.
#[derive(Clone, Copy, Debug)]
pub struct TxKey<'a> {
    pub name: &'a [u8],
    pub slot: Option<u32>,
}

impl<'a> From<&'a str> for TxKey<'a> {
    fn from(name: &'a str) -> TxKey<'a> {
        TxKey {
            name: name.as_bytes(),
            slot: None,
        }
    }
}

/// A transaction's TX variables: the names of its rule set ([`TxNames`]) in slots, any other
/// (made by macros at run time) by lower-cased name. A name with a slot lives only there, so a
/// lookup by name finds it too.
#[derive(Clone, Debug, Default)]
pub struct TxMap {
    names: std::sync::Arc<TxNames>,
    slots: Vec<TxSlot>,
    other: HashMap<String, TxVar, BuildHasherDefault<Fnv>>,
}

/// A slot keeps its buffers when unset, so a map handed on to a later transaction
/// ([`TxMap::take`]) sets CRS's ~100 variables without allocating their names and values.
#[derive(Clone, Debug, Default)]
struct TxSlot {
    set: bool,
    var: TxVar,
}

thread_local! {
    /// The TX maps transactions on this thread left behind, unset.
    static SPARE_TX: std::cell::RefCell<crate::spare::Spares<TxMap>> =
        const { std::cell::RefCell::new(crate::spare::Spares::new()) };
}

/// Where a TX variable lives.
enum TxAt<'l> {
    Slot(usize),
    Other(Cow<'l, str>),
}

impl TxMap {
    /// An empty map with a slot for every name of `names` (the rule set the transaction runs).
    pub fn new(names: std::sync::Arc<TxNames>) -> TxMap {
        TxMap {
            slots: vec![TxSlot::default(); names.len()],
            names,
            other: HashMap::default(),
        }
    }

    /// [`TxMap::new`], reusing the buffers of a map an earlier transaction on this thread
    /// gave back when it ran the same rule set.
    pub fn take(names: std::sync::Arc<TxNames>) -> TxMap {
        SPARE_TX
            .with(|s| {
                s.borrow_mut()
                    .take(|m| std::sync::Arc::ptr_eq(&m.names, &names))
            })
            .unwrap_or_else(|| TxMap::new(names))
    }

    /// Keep this map's buffers for a later transaction on this thread, every variable unset
    /// (and only while they hold at most 64 KiB: a request that set huge values gives them up).
    pub fn give_back(mut self) {
        const MAX_KEPT: usize = 64 * 1024;
        // Up to 64 spares per thread in 2 MiB (CRS's map holds ~8 KiB).
        const SPARES: usize = 64;
        const BUDGET: usize = 2 * 1024 * 1024;
        // The run-time names are dropped, but their table keeps its size.
        let held: usize = self
            .slots
            .iter()
            .map(|s| s.var.0.capacity() + s.var.1.capacity())
            .sum::<usize>()
            + self.other.capacity() * std::mem::size_of::<(String, TxVar)>();
        if held > MAX_KEPT {
            return;
        }
        for s in &mut self.slots {
            s.set = false;
        }
        self.other.clear();
        let size = held + self.slots.capacity() * std::mem::size_of::<TxSlot>();
        SPARE_TX.with(|s| s.borrow_mut().put(self, size, SPARES, BUDGET));
    }

    /// Where `k` lives (`None`: a name that is not UTF-8, which `setvar` cannot make).
    fn at<'l>(&self, k: TxKey<'l>) -> Option<TxAt<'l>> {
        if let Some(s) = k.slot.filter(|&s| (s as usize) < self.slots.len()) {
            return Some(TxAt::Slot(s as usize));
        }
        let name = lower(std::str::from_utf8(k.name).ok()?);
        Some(match self.names.slot_of.get(name.as_ref()) {
            Some(&s) if (s as usize) < self.slots.len() => TxAt::Slot(s as usize),
            _ => TxAt::Other(name),
        })
    }

    pub fn get<'k>(&self, k: impl Into<TxKey<'k>>) -> Option<&TxVar> {
        match self.at(k.into())? {
            TxAt::Slot(s) => {
                let s = &self.slots[s];
                s.set.then_some(&s.var)
            }
            TxAt::Other(n) => self.other.get(n.as_ref()),
        }
    }

    pub fn get_mut<'k>(&mut self, k: impl Into<TxKey<'k>>) -> Option<&mut TxVar> {
        match self.at(k.into())? {
            TxAt::Slot(s) => {
                let s = &mut self.slots[s];
                s.set.then_some(&mut s.var)
            }
            TxAt::Other(n) => self.other.get_mut(n.as_ref()),
        }
    }

    /// Set `k` (named as `k` spells it when it is new).
    pub fn insert<'k>(&mut self, k: impl Into<TxKey<'k>>, value: Vec<u8>) {
        self.set_with(k, move |v| *v = value);
    }

    /// Set `k` (named as `k` spells it when it is new) to what `fill` writes into the emptied
    /// value buffer, reusing the buffers a slot kept.
    pub fn set_with<'k>(&mut self, k: impl Into<TxKey<'k>>, fill: impl FnOnce(&mut Vec<u8>)) {
        let k = k.into();
        let var = match self.at(k) {
            Some(TxAt::Slot(s)) => {
                let slot = &mut self.slots[s];
                if !slot.set {
                    slot.set = true;
                    slot.var.0.clear();
                    slot.var.0.extend_from_slice(k.name);
                }
                &mut slot.var
            }
            Some(TxAt::Other(n)) => {
                // The name is copied only when it is new.
                match self.other.get_mut(n.as_ref()) {
                    Some(var) => var,
                    None => {
                        let mut v = Vec::new();
                        fill(&mut v);
                        self.other.insert(n.into_owned(), (k.name.to_vec(), v));
                        return;
                    }
                }
            }
            None => return,
        };
        var.1.clear();
        fill(&mut var.1);
    }

    pub fn remove<'k>(&mut self, k: impl Into<TxKey<'k>>) {
        match self.at(k.into()) {
            Some(TxAt::Slot(s)) => self.slots[s].set = false,
            Some(TxAt::Other(n)) => {
                self.other.remove(n.as_ref());
            }
            None => {}
        }
    }

    /// The variable in slot `s`, with its lower-cased name.
    pub fn in_slot(&self, s: u32) -> Option<(&str, &TxVar)> {
        let v = self.slots.get(s as usize).filter(|v| v.set)?;
        Some((self.names.names[s as usize].as_str(), &v.var))
    }

    /// The variables without a slot (names made at run time), with their lower-cased names,
    /// in name order. (The table's own order depends on its history: a map handed on from
    /// an earlier transaction would list the same names in another order, and a
    /// `TX:/regex/` target would report another first match.)
    pub fn unslotted(&self) -> impl Iterator<Item = (&str, &TxVar)> {
        let mut vars: Vec<(&str, &TxVar)> =
            self.other.iter().map(|(k, v)| (k.as_str(), v)).collect();
        vars.sort_unstable_by_key(|&(k, _)| k);
        vars.into_iter()
    }

    /// Every variable with its lower-cased name: the slots in order, then [`TxMap::unslotted`].
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TxVar)> {
        let slots = self.slots.iter().enumerate();
        slots
            .filter(|(_, v)| v.set)
            .map(|(i, v)| (self.names.names[i].as_str(), &v.var))
            .chain(self.unslotted())
    }
}

/// A word-at-a-time multiplicative hash for the engine's small tables (TX names, value
/// addresses): SipHash cost more than the lookups it guards.
///
/// Some keys come from clients: rules such as 920450 set TX variables named after request
/// header names. Each process therefore starts the hash from its own random seed, so a
/// client cannot prepare names that all land in one bucket; the number of such names is
/// bounded by the header and argument limits besides.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(seed())
    }
}

/// This process's hash seed, drawn once from the standard library's random keys.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    })
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        // A final mix so that the low bits (which pick the bucket) depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
    /// Eight bytes at a time (names like `detection_paranoia_level` are hashed on every
    /// lookup); the tail is zero-padded and its length mixed in.
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }
}

/// `s` lower-cased, borrowed when it already is.
pub fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Name/value pairs in arrival order (names keep their case; lookups ignore it).
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

macro_rules! collections {
    ($($v:ident = $n:literal),* $(,)?) => {
        /// Every collection and variable the engine knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Coll { $($v),* }
        impl Coll {
            pub fn by_name(s: &str) -> Option<Coll> {
                let u = s.to_ascii_uppercase();
                match u.as_str() { $($n => Some(Coll::$v),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Coll::$v => $n),* }
            }
        }
    };
}

collections! {
    Args = "ARGS", ArgsGet = "ARGS_GET", ArgsPost = "ARGS_POST", ArgsNames = "ARGS_NAMES",
    ArgsGetNames = "ARGS_GET_NAMES", ArgsPostNames = "ARGS_POST_NAMES",
    ArgsCombinedSize = "ARGS_COMBINED_SIZE",
    RequestHeaders = "REQUEST_HEADERS", RequestHeadersNames = "REQUEST_HEADERS_NAMES",
    RequestCookies = "REQUEST_COOKIES", RequestCookiesNames = "REQUEST_COOKIES_NAMES",
    RequestMethod = "REQUEST_METHOD", RequestLine = "REQUEST_LINE", RequestUri = "REQUEST_URI",
    RequestUriRaw = "REQUEST_URI_RAW", RequestFilename = "REQUEST_FILENAME",
    RequestBasename = "REQUEST_BASENAME", RequestProtocol = "REQUEST_PROTOCOL",
    QueryString = "QUERY_STRING", RequestBody = "REQUEST_BODY",
    RequestBodyLength = "REQUEST_BODY_LENGTH", ReqbodyProcessor = "REQBODY_PROCESSOR",
    ReqbodyError = "REQBODY_ERROR", ReqbodyErrorMsg = "REQBODY_ERROR_MSG",
    ReqbodyProcessorError = "REQBODY_PROCESSOR_ERROR",
    MultipartStrictError = "MULTIPART_STRICT_ERROR",
    MultipartUnmatchedBoundary = "MULTIPART_UNMATCHED_BOUNDARY",
    MultipartBoundaryQuoted = "MULTIPART_BOUNDARY_QUOTED",
    MultipartBoundaryWhitespace = "MULTIPART_BOUNDARY_WHITESPACE",
    MultipartDataBefore = "MULTIPART_DATA_BEFORE", MultipartDataAfter = "MULTIPART_DATA_AFTER",
    MultipartHeaderFolding = "MULTIPART_HEADER_FOLDING", MultipartLfLine = "MULTIPART_LF_LINE",
    MultipartCrlfLfLines = "MULTIPART_CRLF_LF_LINES",
    MultipartMissingSemicolon = "MULTIPART_MISSING_SEMICOLON",
    MultipartInvalidQuoting = "MULTIPART_INVALID_QUOTING",
    MultipartInvalidPart = "MULTIPART_INVALID_PART",
    MultipartInvalidHeaderFolding = "MULTIPART_INVALID_HEADER_FOLDING",
    MultipartFileLimitExceeded = "MULTIPART_FILE_LIMIT_EXCEEDED",
    MultipartPartHeaders = "MULTIPART_PART_HEADERS", MultipartFilename = "MULTIPART_FILENAME",
    MultipartName = "MULTIPART_NAME",
    Files = "FILES", FilesNames = "FILES_NAMES", FilesSizes = "FILES_SIZES",
    FilesTmpnames = "FILES_TMPNAMES", FilesTmpContent = "FILES_TMP_CONTENT",
    FilesCombinedSize = "FILES_COMBINED_SIZE",
    Xml = "XML", Tx = "TX", Env = "ENV", Geo = "GEO", Ip = "IP", Global = "GLOBAL",
    Session = "SESSION", User = "USER", Resource = "RESOURCE", Rule = "RULE",
    MatchedVar = "MATCHED_VAR", MatchedVarName = "MATCHED_VAR_NAME",
    MatchedVars = "MATCHED_VARS", MatchedVarsNames = "MATCHED_VARS_NAMES",
    RemoteAddr = "REMOTE_ADDR", RemotePort = "REMOTE_PORT", RemoteHost = "REMOTE_HOST",
    RemoteUser = "REMOTE_USER", ServerAddr = "SERVER_ADDR", ServerName = "SERVER_NAME",
    ServerPort = "SERVER_PORT", UniqueId = "UNIQUE_ID", AuthType = "AUTH_TYPE",
    PathInfo = "PATH_INFO", FullRequest = "FULL_REQUEST",
    FullRequestLength = "FULL_REQUEST_LENGTH",
    ResponseStatus = "RESPONSE_STATUS", ResponseProtocol = "RESPONSE_PROTOCOL",
    ResponseHeaders = "RESPONSE_HEADERS", ResponseHeadersNames = "RESPONSE_HEADERS_NAMES",
    ResponseBody = "RESPONSE_BODY", ResponseContentType = "RESPONSE_CONTENT_TYPE",
    ResponseContentLength = "RESPONSE_CONTENT_LENGTH", StatusLine = "STATUS_LINE",
    InboundDataError = "INBOUND_DATA_ERROR", OutboundDataError = "OUTBOUND_DATA_ERROR",
    UrlencodedError = "URLENCODED_ERROR", HighestSeverity = "HIGHEST_SEVERITY",
    Duration = "DURATION", Time = "TIME", TimeEpoch = "TIME_EPOCH", TimeYear = "TIME_YEAR",
    TimeMon = "TIME_MON", TimeDay = "TIME_DAY", TimeHour = "TIME_HOUR", TimeMin = "TIME_MIN",
    TimeSec = "TIME_SEC", TimeWday = "TIME_WDAY", WebserverErrorLog = "WEBSERVER_ERROR_LOG",
    Userid = "USERID", Sessionid = "SESSIONID", Webappid = "WEBAPPID",
}

/// How a target picks members of its collection.
#[derive(Clone, Debug)]
pub enum Selector {
    All,
    /// A key, compared without case.
    Key(Vec<u8>),
    /// A `/regex/` on keys (case-insensitive, like ModSecurity).
    Regex(Regex),
    /// A `/^literal/` regex: a case-insensitive prefix test, no regex run. Keeps the source
    /// pattern for comparisons.
    Prefix(Vec<u8>, String),
    /// An XPath expression on `XML`; the engine supports `/*` (all text) and `//@*` (all
    /// attribute values), which is what CRS uses.
    XPath(String),
}

impl Selector {
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Selector::All | Selector::XPath(_) => true,
            Selector::Key(k) => k.eq_ignore_ascii_case(key),
            Selector::Regex(r) => r.is_match(key),
            Selector::Prefix(p, _) => {
                key.len() >= p.len() && key[..p.len()].eq_ignore_ascii_case(p)
            }
        }
    }
    pub fn same(&self, other: &Selector) -> bool {
        match (self, other) {
            (Selector::All, Selector::All) => true,
            (Selector::Key(a), Selector::Key(b)) => a.eq_ignore_ascii_case(b),
            (Selector::Regex(a), Selector::Regex(b)) => a.as_str() == b.as_str(),
            (Selector::Prefix(_, a), Selector::Prefix(_, b)) => a == b,
            (Selector::XPath(a), Selector::XPath(b)) => a == b,
            _ => false,
        }
    }
}

/// A compiled target.
#[derive(Clone, Debug)]
pub struct Target {
    pub coll: Coll,
    pub sel: Selector,
    pub count: bool,
    pub exclude: bool,
    /// For `TX:name`: the name's slot ([`TxNames`], set when the rule set is finished).
    pub tx_slot: Option<u32>,
    /// For `TX:/regex/` and the like: the slots whose names the selector picks (set when
    /// the rule set is finished, after every name has its slot). A transaction then tries
    /// the selector only on the names made at run time.
    pub tx_slots: Option<Box<[u32]>>,
}

impl Target {
    /// The plain target `coll` (`:sel`): no count, no exclusion, no TX slots yet.
    pub fn of(coll: Coll, sel: Selector) -> Target {
        Target {
            coll,
            sel,
            count: false,
            exclude: false,
            tx_slot: None,
            tx_slots: None,
        }
    }

    /// The target as text, the same for two targets that pick the same members
    /// (`!REQUEST_COOKIES:/__utm/`).
    pub fn signature(&self) -> String {
        let sel = match &self.sel {
            Selector::All => String::new(),
            Selector::Key(k) => format!(":{}", String::from_utf8_lossy(&k.to_ascii_lowercase())),
            Selector::Regex(r) => format!(":/{}/", r.as_str()),
            Selector::Prefix(_, src) => format!(":^/{src}/"),
            Selector::XPath(x) => format!(":{x}"),
        };
        format!(
            "{}{}{}{sel}",
            if self.exclude { "!" } else { "" },
            if self.count { "&" } else { "" },
            self.coll.name()
        )
    }

    /// Does this exclusion remove the member `key` of `coll`?
    pub fn excludes(&self, coll: Coll, key: &[u8]) -> bool {
        self.exclude && self.coll == coll && self.sel.matches(key)
    }
}

/// Compile a target's selector.
pub fn selector(coll: Coll, raw: Option<&str>) -> Result<Selector, String> {
    let Some(s) = raw else {
        return Ok(Selector::All);
    };
    if coll == Coll::Xml {
        return match s {
            "/*" | "//@*" => Ok(Selector::XPath(s.to_string())),
            other => Err(format!(
                "XML XPath `{other}` is not supported (only `/*` and `//@*`)"
            )),
        };
    }
    if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') {
        let pat = &s[1..s.len() - 1];
        if let Some(lit) = pat.strip_prefix('^') {
            if !lit.is_empty()
                && lit
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Ok(Selector::Prefix(lit.as_bytes().to_vec(), pat.to_string()));
            }
        }
        let re = crate::operator::compile_regex(pat, true)
            .map_err(|e| format!("bad /regex/ selector `{s}`: {e}"))?;
        return Ok(Selector::Regex(re));
    }
    if s.starts_with('\'') && s.ends_with('\'') && s.len() >= 2 {
        return Ok(Selector::Key(
            s.as_bytes()[1..s.len() - 1].to_ascii_lowercase(),
        ));
    }
    // Keys compare without case; lower-cased once here so TX lookups need no copy.
    Ok(Selector::Key(s.as_bytes().to_ascii_lowercase()))
}

/// One resolved variable: its name as logged (`ARGS:id`) and value.
#[derive(Clone, Debug)]
pub struct Item<'a> {
    pub coll: Coll,
    pub key: Cow<'a, [u8]>,
    pub value: Cow<'a, [u8]>,
}

impl Item<'_> {
    /// Append the variable's name (`ARGS:q`) to `out`.
    pub fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.coll.name().as_bytes());
        if !self.key.is_empty() || is_keyed(self.coll) {
            out.push(b':');
            out.extend_from_slice(&self.key);
        }
    }

    pub fn name(&self) -> String {
        let mut n = Vec::new();
        self.write_name(&mut n);
        String::from_utf8_lossy(&n).into_owned()
    }
}

/// Collections whose values stay put in memory from the moment they are filled until the
/// request body or the response arrives (the transform cache keys on their addresses).
pub fn is_stable(c: Coll) -> bool {
    use Coll::*;
    matches!(
        c,
        Args | ArgsGet
            | ArgsPost
            | ArgsNames
            | ArgsGetNames
            | ArgsPostNames
            | RequestHeaders
            | RequestHeadersNames
            | RequestCookies
            | RequestCookiesNames
            | RequestMethod
            | RequestLine
            | RequestUri
            | RequestUriRaw
            | RequestFilename
            | RequestBasename
            | RequestProtocol
            | QueryString
            | RequestBody
            | Files
            | FilesNames
            | MultipartPartHeaders
            | Xml
            | ResponseHeaders
            | ResponseHeadersNames
            | ResponseBody
    )
}

fn is_keyed(c: Coll) -> bool {
    use Coll::*;
    matches!(
        c,
        Args | ArgsGet
            | ArgsPost
            | ArgsNames
            | ArgsGetNames
            | ArgsPostNames
            | RequestHeaders
            | RequestHeadersNames
            | RequestCookies
            | RequestCookiesNames
            | ResponseHeaders
            | ResponseHeadersNames
            | Files
            | FilesNames
            | FilesSizes
            | FilesTmpnames
            | FilesTmpContent
            | MultipartPartHeaders
            | MultipartFilename
            | MultipartName
            | Xml
            | Tx
            | Env
            | Geo
            | Ip
            | Global
            | Session
            | User
            | Resource
            | Rule
            | MatchedVars
            | MatchedVarsNames
    )
}

/// Everything the rules can see about one transaction.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub args_get: Pairs,
    pub args_post: Pairs,
    pub headers: Pairs,
    pub cookies: Pairs,
    pub method: Vec<u8>,
    pub request_line: Vec<u8>,
    pub uri: Vec<u8>,
    pub uri_raw: Vec<u8>,
    pub filename: Vec<u8>,
    pub basename: Vec<u8>,
    pub protocol: Vec<u8>,
    pub query: Vec<u8>,
    pub body: Option<Vec<u8>>,
    pub body_length: usize,
    pub processor: Option<&'static str>,
    pub reqbody_error: Option<String>,
    pub multipart: MultipartFlags,
    pub part_headers: Pairs,
    pub files: Pairs,
    pub files_sizes: Pairs,
    pub xml_text: Option<Vec<u8>>,
    pub xml_attrs: Vec<Vec<u8>>,
    pub remote_addr: Vec<u8>,
    pub remote_port: Vec<u8>,
    pub server_addr: Vec<u8>,
    pub server_port: Vec<u8>,
    pub server_name: Vec<u8>,
    pub unique_id: Vec<u8>,
    pub tx: TxMap,
    pub env: Pairs,
    pub matched_var: Vec<u8>,
    pub matched_var_name: Vec<u8>,
    pub matched_vars: Pairs,
    pub response_status: Vec<u8>,
    pub response_protocol: Vec<u8>,
    pub response_headers: Pairs,
    pub response_body: Option<Vec<u8>>,
    pub highest_severity: u8,
    pub urlencoded_error: bool,
    pub rule: Pairs,
}

/// Multipart strictness flags, as CRS reads them.
#[derive(Clone, Debug, Default)]
pub struct MultipartFlags {
    pub unmatched_boundary: bool,
    pub boundary_quoted: bool,
    pub boundary_whitespace: bool,
    pub data_before: bool,
    pub data_after: bool,
    pub header_folding: bool,
    pub lf_line: bool,
    pub crlf_lf_lines: bool,
    pub missing_semicolon: bool,
    pub invalid_quoting: bool,
    pub invalid_part: bool,
    pub invalid_header_folding: bool,
    pub file_limit_exceeded: bool,
}

impl MultipartFlags {
    pub fn strict_error(&self, body_error: bool) -> bool {
        body_error
            || self.unmatched_boundary
            || self.boundary_quoted
            || self.boundary_whitespace
            || self.data_before
            || self.data_after
            || self.header_folding
            || self.lf_line
            || self.missing_semicolon
            || self.invalid_quoting
            || self.invalid_part
            || self.invalid_header_folding
            || self.file_limit_exceeded
    }
}

fn flag(b: bool) -> Cow<'static, [u8]> {
    Cow::Borrowed(if b { b"1" } else { b"0" })
}

impl Data {
    pub fn tx_get<'k>(&self, key: impl Into<TxKey<'k>>) -> Option<&[u8]> {
        self.tx.get(key).map(|(_, v)| v.as_slice())
    }

    /// Set a TX variable to a number, reusing the old value's buffer.
    pub fn tx_set_int<'k>(&mut self, key: impl Into<TxKey<'k>>, n: i64) {
        use std::io::Write;
        self.tx.set_with(key, |v| {
            let _ = write!(v, "{n}");
        });
    }

    /// Set a TX variable to a copy of `value`, reusing the old value's buffer.
    pub fn tx_set_bytes<'k>(&mut self, key: impl Into<TxKey<'k>>, value: &[u8]) {
        self.tx.set_with(key, |v| v.extend_from_slice(value));
    }

    pub fn tx_set<'k>(&mut self, key: impl Into<TxKey<'k>>, value: Vec<u8>) {
        self.tx.insert(key, value);
    }

    /// Resolve one (non-exclusion) target into items, skipping members `excluded` says to.
    pub fn resolve<'a>(
        &'a self,
        t: &'a Target,
        excluded: &dyn Fn(Coll, &[u8]) -> bool,
        out: &mut Vec<Item<'a>>,
    ) {
        let start = out.len();
        self.collect(t, excluded, out);
        if t.count {
            let n = out.len() - start;
            out.truncate(start);
            // `&TX:x`, `&REQUEST_HEADERS:Host`: counts are nearly always small, spelled
            // without allocating.
            const SMALL: [&[u8]; 10] = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];
            out.push(Item {
                coll: t.coll,
                key: match &t.sel {
                    Selector::Key(k) => Cow::Borrowed(k),
                    _ => Cow::Borrowed(b""),
                },
                value: match SMALL.get(n) {
                    Some(s) => Cow::Borrowed(s),
                    None => Cow::Owned(n.to_string().into_bytes()),
                },
            });
        }
    }

    fn collect<'a>(
        &'a self,
        t: &Target,
        excluded: &dyn Fn(Coll, &[u8]) -> bool,
        out: &mut Vec<Item<'a>>,
    ) {
        use Coll::*;
        let c = t.coll;
        let pairs = |p: &'a Pairs, out: &mut Vec<Item<'a>>, names: bool| {
            for (k, v) in p {
                if t.sel.matches(k) && !excluded(c, k) {
                    out.push(Item {
                        coll: c,
                        key: Cow::Borrowed(k),
                        value: Cow::Borrowed(if names { k } else { v }),
                    });
                }
            }
        };
        let single = |v: Cow<'a, [u8]>, out: &mut Vec<Item<'a>>| {
            if !excluded(c, b"") {
                out.push(Item {
                    coll: c,
                    key: Cow::Borrowed(b""),
                    value: v,
                });
            }
        };
        match c {
            Args => {
                pairs(&self.args_get, out, false);
                pairs(&self.args_post, out, false);
            }
            ArgsGet => pairs(&self.args_get, out, false),
            ArgsPost => pairs(&self.args_post, out, false),
            ArgsNames => {
                pairs(&self.args_get, out, true);
                pairs(&self.args_post, out, true);
            }
            ArgsGetNames => pairs(&self.args_get, out, true),
            ArgsPostNames => pairs(&self.args_post, out, true),
            ArgsCombinedSize => {
                let n: usize = self
                    .args_get
                    .iter()
                    .chain(&self.args_post)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                single(Cow::Owned(n.to_string().into_bytes()), out)
            }
            RequestHeaders => pairs(&self.headers, out, false),
            RequestHeadersNames => pairs(&self.headers, out, true),
            RequestCookies => pairs(&self.cookies, out, false),
            RequestCookiesNames => pairs(&self.cookies, out, true),
            ResponseHeaders => pairs(&self.response_headers, out, false),
            ResponseHeadersNames => pairs(&self.response_headers, out, true),
            Files => pairs(&self.files, out, false),
            FilesNames => pairs(&self.files, out, true),
            FilesSizes => pairs(&self.files_sizes, out, false),
            FilesCombinedSize => {
                let n: usize = self
                    .files_sizes
                    .iter()
                    .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
                    .sum();
                single(Cow::Owned(n.to_string().into_bytes()), out)
            }
            MultipartPartHeaders => pairs(&self.part_headers, out, false),
            MultipartFilename | MultipartName | FilesTmpnames | FilesTmpContent => {}
            Env => pairs(&self.env, out, false),
            Rule => pairs(&self.rule, out, false),
            MatchedVars => pairs(&self.matched_vars, out, false),
            MatchedVarsNames => pairs(&self.matched_vars, out, true),
            Geo | Ip | Global | Session | User | Resource => {}
            Tx => {
                if let Selector::Key(key) = &t.sel {
                    // One name (`TX:DETECTION_PARANOIA_LEVEL`): looked up (by its slot when
                    // the rule set numbered it), not searched for.
                    let k = TxKey {
                        name: key,
                        slot: t.tx_slot,
                    };
                    if let Some((k, v)) = self.tx.get(k) {
                        if !excluded(c, k) {
                            out.push(Item {
                                coll: c,
                                key: Cow::Borrowed(k),
                                value: Cow::Borrowed(v),
                            });
                        }
                    }
                    return;
                }
                let mut push = |k: &'a [u8], v: &'a [u8]| {
                    if !excluded(c, k) {
                        out.push(Item {
                            coll: c,
                            key: Cow::Borrowed(k),
                            value: Cow::Borrowed(v),
                        });
                    }
                };
                match &t.tx_slots {
                    // The slotted names the selector picks are known: only the names made at
                    // run time are tried.
                    Some(slots) => {
                        for &s in slots.iter() {
                            if let Some((_, (k, v))) = self.tx.in_slot(s) {
                                push(k, v);
                            }
                        }
                        for (lk, (k, v)) in self.tx.unslotted() {
                            if t.sel.matches(lk.as_bytes()) {
                                push(k, v);
                            }
                        }
                    }
                    None => {
                        for (lk, (k, v)) in self.tx.iter() {
                            if t.sel.matches(lk.as_bytes()) {
                                push(k, v);
                            }
                        }
                    }
                }
            }
            Xml => match &t.sel {
                Selector::XPath(x) if x == "//@*" => {
                    for a in &self.xml_attrs {
                        out.push(Item {
                            coll: c,
                            key: Cow::Borrowed(b"//@*"),
                            value: Cow::Borrowed(a),
                        });
                    }
                }
                _ => {
                    if let Some(tx) = &self.xml_text {
                        out.push(Item {
                            coll: c,
                            key: Cow::Borrowed(b"/*"),
                            value: Cow::Borrowed(tx),
                        });
                    }
                }
            },
            RequestMethod => single(Cow::Borrowed(&self.method), out),
            RequestLine => single(Cow::Borrowed(&self.request_line), out),
            RequestUri => single(Cow::Borrowed(&self.uri), out),
            RequestUriRaw => single(Cow::Borrowed(&self.uri_raw), out),
            RequestFilename | PathInfo => single(Cow::Borrowed(&self.filename), out),
            RequestBasename => single(Cow::Borrowed(&self.basename), out),
            RequestProtocol => single(Cow::Borrowed(&self.protocol), out),
            QueryString => single(Cow::Borrowed(&self.query), out),
            RequestBody => {
                if let Some(b) = &self.body {
                    single(Cow::Borrowed(b), out)
                }
            }
            RequestBodyLength => single(Cow::Owned(self.body_length.to_string().into_bytes()), out),
            ReqbodyProcessor => {
                if let Some(p) = self.processor {
                    single(Cow::Borrowed(p.as_bytes()), out)
                }
            }
            ReqbodyError | ReqbodyProcessorError => single(flag(self.reqbody_error.is_some()), out),
            ReqbodyErrorMsg => single(
                Cow::Owned(self.reqbody_error.clone().unwrap_or_default().into_bytes()),
                out,
            ),
            MultipartStrictError => single(
                flag(
                    self.processor == Some("MULTIPART")
                        && self.multipart.strict_error(self.reqbody_error.is_some()),
                ),
                out,
            ),
            MultipartUnmatchedBoundary => single(flag(self.multipart.unmatched_boundary), out),
            MultipartBoundaryQuoted => single(flag(self.multipart.boundary_quoted), out),
            MultipartBoundaryWhitespace => single(flag(self.multipart.boundary_whitespace), out),
            MultipartDataBefore => single(flag(self.multipart.data_before), out),
            MultipartDataAfter => single(flag(self.multipart.data_after), out),
            MultipartHeaderFolding => single(flag(self.multipart.header_folding), out),
            MultipartLfLine => single(flag(self.multipart.lf_line), out),
            MultipartCrlfLfLines => single(flag(self.multipart.crlf_lf_lines), out),
            MultipartMissingSemicolon => single(flag(self.multipart.missing_semicolon), out),
            MultipartInvalidQuoting => single(flag(self.multipart.invalid_quoting), out),
            MultipartInvalidPart => single(flag(self.multipart.invalid_part), out),
            MultipartInvalidHeaderFolding => {
                single(flag(self.multipart.invalid_header_folding), out)
            }
            MultipartFileLimitExceeded => single(flag(self.multipart.file_limit_exceeded), out),
            MatchedVar => single(Cow::Borrowed(&self.matched_var), out),
            MatchedVarName => single(Cow::Borrowed(&self.matched_var_name), out),
            RemoteAddr | RemoteHost => single(Cow::Borrowed(&self.remote_addr), out),
            RemotePort => single(Cow::Borrowed(&self.remote_port), out),
            ServerAddr => single(Cow::Borrowed(&self.server_addr), out),
            ServerPort => single(Cow::Borrowed(&self.server_port), out),
            ServerName => single(Cow::Borrowed(&self.server_name), out),
            UniqueId => single(Cow::Borrowed(&self.unique_id), out),
            RemoteUser | AuthType | Userid | Sessionid | Webappid | WebserverErrorLog => {}
            FullRequest => {
                let mut v = self.request_line.clone();
                for (k, val) in &self.headers {
                    v.extend_from_slice(b"\n");
                    v.extend_from_slice(k);
                    v.extend_from_slice(b": ");
                    v.extend_from_slice(val);
                }
                if let Some(b) = &self.body {
                    v.extend_from_slice(b"\n\n");
                    v.extend_from_slice(b);
                }
                single(Cow::Owned(v), out)
            }
            FullRequestLength => single(
                Cow::Owned(
                    (self.request_line.len()
                        + self
                            .headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 4)
                            .sum::<usize>()
                        + self.body_length)
                        .to_string()
                        .into_bytes(),
                ),
                out,
            ),
            ResponseStatus => single(Cow::Borrowed(&self.response_status), out),
            StatusLine => {
                let mut v = self.response_protocol.clone();
                v.push(b' ');
                v.extend_from_slice(&self.response_status);
                single(Cow::Owned(v), out)
            }
            ResponseProtocol => single(Cow::Borrowed(&self.response_protocol), out),
            ResponseBody => {
                if let Some(b) = &self.response_body {
                    single(Cow::Borrowed(b), out)
                }
            }
            ResponseContentType => {
                if let Some((_, v)) = self
                    .response_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
                {
                    single(Cow::Borrowed(v), out)
                }
            }
            ResponseContentLength => {
                if let Some((_, v)) = self
                    .response_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
                {
                    single(Cow::Borrowed(v), out)
                }
            }
            InboundDataError | OutboundDataError => single(flag(false), out),
            UrlencodedError => single(flag(self.urlencoded_error), out),
            HighestSeverity => single(
                Cow::Owned(self.highest_severity.to_string().into_bytes()),
                out,
            ),
            Duration | Time | TimeEpoch | TimeYear | TimeMon | TimeDay | TimeHour | TimeMin
            | TimeSec | TimeWday => single(Cow::Owned(time_value(c).into_bytes()), out),
        }
    }

    /// The first value of a variable, for macros (`%{tx.score}`, `%{request_headers.host}`).
    pub fn first(&self, coll: Coll, key: Option<&[u8]>) -> Option<Cow<'_, [u8]>> {
        if let (Coll::Tx, Some(k)) = (coll, key) {
            return self
                .tx_get(TxKey {
                    name: k,
                    slot: None,
                })
                .map(Cow::Borrowed);
        }
        let t = Target::of(
            coll,
            key.map_or(Selector::All, |k| Selector::Key(k.to_vec())),
        );
        let mut v = Vec::new();
        self.collect(&t, &|_, _| false, &mut v);
        v.into_iter().next().map(|i| i.value)
    }
}

fn time_value(c: Coll) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day_secs = secs % 86_400;
    match c {
        Coll::TimeEpoch => secs.to_string(),
        Coll::TimeHour => format!("{:02}", day_secs / 3600),
        Coll::TimeMin => format!("{:02}", day_secs % 3600 / 60),
        Coll::TimeSec => format!("{:02}", day_secs % 60),
        Coll::TimeWday => ((secs / 86_400 + 4) % 7).to_string(),
        Coll::Duration => "0".to_string(),
        _ => secs.to_string(),
    }
}

/// An emptied buffer of items with any lifetime, keeping its allocation.
///
/// The engine calls this twice per rule it evaluates. (It was an in-place `collect`, which is
/// safe code and the same allocation, but not always inlined: out of line it cost a GET 13k
/// instructions.)
#[inline]
pub(crate) fn recycle<'b>(mut v: Vec<Item<'_>>) -> Vec<Item<'b>> {
    v.clear();
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, cap) = (v.as_mut_ptr(), v.capacity());
    // SAFETY: the vector is empty, so no item of the old lifetime outlives it; `Item<'a>` and
    // `Item<'b>` differ only in a lifetime, so they have the same size and alignment; and the
    // allocation passes from the old vector (which is not dropped) to the new one.
    unsafe { Vec::from_raw_parts(ptr.cast::<Item<'b>>(), 0, cap) }
}

#[cfg(test)]
mod tests {
    use super::{Coll, Data, Fnv, Selector, Target, TxKey, TxMap, TxNames};
    use std::hash::Hasher;

    #[test]
    fn name_hash_is_stable_in_a_process_and_depends_on_the_seed() {
        let hash = |mut h: Fnv, name: &str| {
            h.write(name.as_bytes());
            h.finish()
        };
        let name = "header_name_user-agent";
        assert_eq!(hash(Fnv::default(), name), hash(Fnv::default(), name));
        assert_ne!(hash(Fnv(1), name), hash(Fnv(2), name));
    }

    /// The (name, value) pairs a `TX` target with selector `sel` (and, when given, the slots
    /// it picks) resolves to.
    fn tx_items(
        d: &Data,
        sel: &Selector,
        tx_slots: Option<Box<[u32]>>,
        excluded: &dyn Fn(Coll, &[u8]) -> bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let t = Target {
            tx_slots,
            ..Target::of(Coll::Tx, sel.clone())
        };
        let mut out = Vec::new();
        d.resolve(&t, excluded, &mut out);
        out.iter()
            .map(|i| (i.key.to_vec(), i.value.to_vec()))
            .collect()
    }

    #[test]
    fn counts_of_any_size() {
        for n in [0usize, 1, 9, 10, 123] {
            let d = Data {
                args_get: (0..n)
                    .map(|i| (format!("a{i}").into_bytes(), Vec::new()))
                    .collect(),
                ..Data::default()
            };
            for sel in [Selector::All, Selector::Key(b"a0".to_vec())] {
                let t = Target {
                    count: true,
                    ..Target::of(Coll::ArgsGet, sel.clone())
                };
                let mut out = Vec::new();
                d.resolve(&t, &|_, _| false, &mut out);
                let want = if matches!(sel, Selector::All) {
                    n
                } else {
                    n.min(1)
                };
                assert_eq!(out.len(), 1);
                assert_eq!(
                    out[0].value.as_ref(),
                    want.to_string().as_bytes(),
                    "{n} {sel:?}"
                );
                let key: &[u8] = if matches!(sel, Selector::All) {
                    b""
                } else {
                    b"a0"
                };
                assert_eq!(out[0].key.as_ref(), key);
            }
        }
    }

    #[test]
    fn spare_tx_maps_are_handed_on_unset_and_small() {
        let mut names = TxNames::default();
        let score = names.intern("score");
        let names = std::sync::Arc::new(names);
        let key = TxKey {
            name: b"Score",
            slot: Some(score),
        };
        let mut m = TxMap::take(names.clone());
        m.insert(key, b"5".to_vec());
        m.insert("made_at_run_time", b"x".to_vec());
        m.give_back();
        let mut m = TxMap::take(names.clone());
        assert!(m.get(key).is_none(), "slot unset");
        assert!(m.get("made_at_run_time").is_none(), "run-time name gone");
        assert_eq!(m.iter().count(), 0);
        assert!(
            m.slots[score as usize].var.0.capacity() >= 5,
            "the same buffers"
        );
        // A name set again is spelled the way this transaction spells it.
        let key2 = TxKey {
            name: b"SCORE",
            slot: Some(score),
        };
        m.set_with(key2, |v| v.extend_from_slice(b"7"));
        assert_eq!(m.get(key), Some(&(b"SCORE".to_vec(), b"7".to_vec())));
        m.remove(key);
        assert!(m.get(key).is_none());
        assert_eq!(m.in_slot(score), None);
        // A map that held big values is not kept; another rule set gets a fresh map.
        m.insert(key, vec![b'a'; 100_000]);
        m.give_back();
        assert_eq!(
            TxMap::take(names.clone()).slots[score as usize]
                .var
                .1
                .capacity(),
            0
        );
        // Nor one whose run-time names grew its table.
        let mut m = TxMap::take(names.clone());
        for i in 0..5_000 {
            m.insert(format!("n{i}").as_str(), Vec::new());
        }
        m.give_back();
        assert!(TxMap::take(names.clone()).other.capacity() < 5_000);
        TxMap::new(names.clone()).give_back();
        let other = std::sync::Arc::new(TxNames::default());
        assert_eq!(TxMap::take(other).slots.len(), 0);
    }

    fn tx_values(d: &Data, sel: Selector, excluded: &dyn Fn(Coll, &[u8]) -> bool) -> Vec<Vec<u8>> {
        tx_items(d, &sel, None, excluded)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// `TX:name` is looked up, not searched for: the same answers as matching every name.
    #[test]
    fn tx_names_are_looked_up_in_any_case() {
        let mut d = Data::default();
        let long = "n".repeat(70);
        d.tx_set("Detection_Paranoia_Level", b"1".to_vec());
        d.tx_set(long.as_str(), b"2".to_vec());
        let none = |_: Coll, _: &[u8]| false;
        let key = |k: &[u8]| Selector::Key(k.to_vec());
        assert_eq!(
            tx_values(&d, key(b"DETECTION_PARANOIA_LEVEL"), &none),
            [b"1"]
        );
        assert_eq!(
            tx_values(&d, key(long.to_uppercase().as_bytes()), &none),
            [b"2"]
        );
        assert!(tx_values(&d, key(b"detection_paranoia"), &none).is_empty());
        assert!(tx_values(&d, key(b"\xff"), &none).is_empty());
        let not_it = |_: Coll, k: &[u8]| k.eq_ignore_ascii_case(b"detection_paranoia_level");
        assert!(tx_values(&d, key(b"detection_paranoia_level"), &not_it).is_empty());
        assert_eq!(tx_values(&d, Selector::All, &none).len(), 2);
    }

    /// `TX:/regex/` with the slots it picks worked out at load finds what matching every
    /// name finds, in the same order: slotted names and names made at run time.
    #[test]
    fn tx_selectors_pick_slots_and_run_time_names() {
        let mut names = TxNames::default();
        for n in [
            "header_name_920450_host",
            "Blocking_Score",
            "header_name_x",
            "other",
        ] {
            names.intern(n);
        }
        let names = std::sync::Arc::new(names);
        let mut d = Data {
            tx: TxMap::new(names.clone()),
            ..Data::default()
        };
        d.tx_set("header_name_920450_host", b"/host/".to_vec());
        d.tx_set("blocking_score", b"5".to_vec());
        d.tx_set("Header_Name_920450_Cookie", b"/cookie/".to_vec());
        d.tx_set("other", b"1".to_vec());
        let none = |_: Coll, _: &[u8]| false;
        let not_cookie = |_: Coll, k: &[u8]| k.ends_with(b"Cookie");
        for raw in ["/^header_name_920450_/", "/SCORE$/", "/./", "/^nothing/"] {
            let sel = super::selector(Coll::Tx, Some(raw)).unwrap();
            for excluded in [&none as &dyn Fn(Coll, &[u8]) -> bool, &not_cookie] {
                assert_eq!(
                    tx_items(&d, &sel, Some(names.picked_by(&sel)), excluded),
                    tx_items(&d, &sel, None, excluded),
                    "{raw}"
                );
            }
        }
        let sel = super::selector(Coll::Tx, Some("/^header_name_920450_/")).unwrap();
        assert_eq!(&*names.picked_by(&sel), &[0]);
        let values: Vec<_> = tx_items(&d, &sel, Some(names.picked_by(&sel)), &none)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values, [b"/host/".to_vec(), b"/cookie/".to_vec()]);
    }

    /// A name with a slot is one variable, whether reached by its slot or by its name.
    #[test]
    fn a_slot_and_its_name_are_one_variable() {
        let mut names = TxNames::default();
        let s = names.intern("Inbound_Score");
        let mut tx = TxMap::new(std::sync::Arc::new(names));
        let by_slot = |name: &'static [u8]| TxKey {
            name,
            slot: Some(s),
        };
        let value = |tx: &TxMap, k: TxKey| tx.get(k).map(|v| v.1.clone());
        tx.insert(by_slot(b"Inbound_Score"), b"5".to_vec());
        assert_eq!(value(&tx, "INBOUND_SCORE".into()), Some(b"5".to_vec()));
        tx.insert("inbound_score", b"7".to_vec());
        assert_eq!(value(&tx, by_slot(b"inbound_score")), Some(b"7".to_vec()));
        tx.insert("other", b"1".to_vec());
        let mut all: Vec<_> = tx
            .iter()
            .map(|(k, v)| (k.to_string(), v.0.clone(), v.1.clone()))
            .collect();
        all.sort();
        assert_eq!(
            all,
            [
                (
                    "inbound_score".into(),
                    b"Inbound_Score".to_vec(),
                    b"7".to_vec()
                ),
                ("other".into(), b"other".to_vec(), b"1".to_vec())
            ]
        );
        tx.remove("INBOUND_SCORE");
        assert_eq!(value(&tx, by_slot(b"inbound_score")), None);
        assert_eq!(tx.iter().count(), 1);
    }
}
