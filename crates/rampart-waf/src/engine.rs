//! The transaction: one request/response pair run through the rule set phase by phase, the
//! way ModSecurity does it (per-match actions, chains, captures, `skipAfter`, `ctl`, anomaly
//! scoring through `setvar`), with every matched rule recorded for the security event.

use crate::body;
use crate::macros::Macro;
use crate::operator::Operator;
use crate::rules::{
    in_ranges, Ctl, Disruptive, EngineMode, Entry, IdRanges, Picked, Rule, RuleSet, SetOp,
};
use crate::transform::Transform;
use crate::values::Values;
use crate::vars::recycle;
use crate::vars::{Coll, Data, Item, Selector, Target};
use std::borrow::Cow;
use std::sync::Arc;

/// A rule that matched (chain included) and logs.
#[derive(Clone, Debug)]
pub struct Matched {
    pub id: u32,
    pub phase: u8,
    pub msg: String,
    pub data: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    /// The variable that matched last (`ARGS:q`).
    pub var: String,
    /// The (transformed) value that matched.
    pub value: Vec<u8>,
    pub log: bool,
}

/// The rule that stopped the transaction.
#[derive(Clone, Debug)]
pub struct Interruption {
    pub id: u32,
    pub status: u16,
    pub action: Disruptive,
    pub msg: String,
}

#[derive(Clone, Debug, Default)]
struct Removed {
    ids: IdRanges,
    /// Rules removed by tag (ids resolved at load).
    tagged: Vec<Picked>,
    msgs: Vec<String>,
    targets: Vec<(RuleSel, Target)>,
}

#[derive(Clone, Debug)]
enum RuleSel {
    Ids(IdRanges),
    Tag(Picked),
    Msg(String),
}

impl RuleSel {
    fn picks(&self, r: &Rule) -> bool {
        match self {
            RuleSel::Ids(ids) => in_ranges(ids, r.id),
            RuleSel::Tag(ids) => ids.binary_search(&r.id).is_ok(),
            RuleSel::Msg(m) => r.msg_text == *m,
        }
    }
}

/// One transaction's state.
#[derive(Clone)]
pub struct Transaction {
    rs: Arc<RuleSet>,
    pub data: Data,
    pub engine: EngineMode,
    pub request_body_access: bool,
    pub response_body_access: bool,
    force_body_variable: bool,
    processor: Option<&'static str>,
    removed: Removed,
    pub matched: Vec<Matched>,
    pub interruption: Option<Interruption>,
    allow: bool,
    done: [bool; 5],
    /// The values rules read, numbered, with their transformed forms and prefilter findings.
    values: Values,
    /// The resolved-variables buffer, kept between rules to save an allocation per rule.
    items: Vec<Item<'static>>,
    /// Per transformation pipeline: the prefilter slots whose literals occur somewhere in the
    /// request (after that pipeline). Worked out on first use; reset with the cache.
    universe: Vec<(u32, Vec<u64>)>,
    /// The current link's matches (only the first `n` of a link are live), kept for their
    /// buffers.
    found: Vec<Found>,
}

/// One match of a rule link: the variable's name, the matched value, the captures.
#[derive(Clone, Debug, Default)]
struct Found {
    name: Vec<u8>,
    value: Vec<u8>,
    caps: Vec<Vec<u8>>,
}

/// multiMatch: the operator runs on the value and after each transformation that changes it
/// (a form without any needed byte, or without any of the regex's literals, cannot match).
/// `present`: the value's bytes. Returns the form that matched.
fn multi_match<'v>(
    data: &Data,
    r: &Rule,
    op: &Operator,
    value: &'v [u8],
    mut present: crate::prefilter::ByteSet,
    caps: &mut Vec<Vec<u8>>,
) -> Option<Cow<'v, [u8]>> {
    // `present` holds exactly the bytes of the current form: the needed-byte check is a test
    // on two sets.
    let may = |v: &[u8], present: &crate::prefilter::ByteSet| {
        r.bytes_may_match(present, || crate::prefilter::alphabet(present))
            && r.literals.as_ref().is_none_or(|l| l.any(v))
    };
    caps.clear();
    if may(value, &present) && op.matches(data, value, r.capture.then_some(&mut *caps)) {
        return Some(Cow::Borrowed(value));
    }
    let mut v: Cow<[u8]> = Cow::Borrowed(value);
    for t in &r.transforms {
        // A transformation leaves a value without any of its trigger bytes as it is.
        if !t.may_change(&present) {
            continue;
        }
        let next = t.apply(&v);
        if next.as_ref() == v.as_ref() {
            continue;
        }
        v = Cow::Owned(next.into_owned());
        present = crate::prefilter::ByteSet::in_value(&v);
        if may(&v, &present) && op.matches(data, &v, r.capture.then_some(&mut *caps)) {
            return Some(v);
        }
    }
    None
}

/// Record a match as entry `*n` of `found` (its buffers reused): the value that matched and
/// its captures (taken from `caps`). Returns the entry, for the caller to name.
fn record<'f>(
    found: &'f mut Vec<Found>,
    n: &mut usize,
    v: &[u8],
    caps: &mut Vec<Vec<u8>>,
) -> &'f mut Found {
    if found.len() == *n {
        found.push(Found::default());
    }
    let f = &mut found[*n];
    *n += 1;
    f.value.clear();
    f.value.extend_from_slice(v);
    std::mem::swap(&mut f.caps, caps);
    f
}

/// TX keys of the capture groups.
pub(crate) const CAPTURE_KEYS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Whether an item's value stays put in `Data` until the collections change (so it can be
/// numbered by where it lives).
fn stays_put(it: &Item<'_>) -> bool {
    matches!(it.value, Cow::Borrowed(_)) && crate::vars::is_stable(it.coll)
}

fn pairs_from<'a>(it: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

impl Drop for Transaction {
    fn drop(&mut self) {
        std::mem::take(&mut self.values).give_back();
        std::mem::take(&mut self.data.tx).give_back();
    }
}

impl Transaction {
    pub fn new(rs: Arc<RuleSet>) -> Self {
        // CRS sets ~100 TX variables (in the slots of the names its rules spell out) and
        // caches a few hundred transformed values per request: sized once instead of grown
        // step by step.
        let data = Data {
            tx: crate::vars::TxMap::take(rs.tx_names.clone()),
            ..Data::default()
        };
        let values = Values::take(
            rs.pipelines,
            rs.prefilter.as_ref().map_or(0, |p| p.slots),
            rs.groups,
            rs.group_targets,
            rs.prefilter.as_ref().map_or(0, |p| p.colls.len()),
        );
        Transaction {
            engine: rs.engine,
            request_body_access: rs.request_body_access,
            response_body_access: rs.response_body_access,
            rs,
            data,
            force_body_variable: false,
            processor: None,
            removed: Removed::default(),
            matched: Vec::new(),
            interruption: None,
            allow: false,
            done: [false; 5],
            values,
            items: Vec::new(),
            universe: Vec::new(),
            found: Vec::new(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rs
    }

    /// Fill the request-line and header variables.
    #[allow(clippy::too_many_arguments)]
    pub fn request_head<'a>(
        &mut self,
        method: &[u8],
        target: &[u8],
        protocol: &[u8],
        headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        remote: std::net::SocketAddr,
        local: std::net::SocketAddr,
        unique_id: &str,
    ) {
        let d = &mut self.data;
        d.method = method.to_vec();
        d.protocol = protocol.to_vec();
        d.uri_raw = target.to_vec();
        // An absolute-form target keeps only its path in REQUEST_URI.
        let path_and_query: &[u8] = if let Some(p) = target
            .windows(3)
            .position(|w| w == b"://")
            .filter(|_| !target.starts_with(b"/"))
        {
            let after = &target[p + 3..];
            match after.iter().position(|&c| c == b'/') {
                Some(s) => &after[s..],
                None => b"/",
            }
        } else {
            target
        };
        d.uri = path_and_query.to_vec();
        let (path, query) = match path_and_query.iter().position(|&c| c == b'?') {
            Some(q) => (&path_and_query[..q], &path_and_query[q + 1..]),
            None => (path_and_query, &b""[..]),
        };
        let path = match path.iter().position(|&c| c == b'#') {
            Some(h) => &path[..h],
            None => path,
        };
        // REQUEST_FILENAME is the percent-decoded path, as ModSecurity gives it.
        d.filename = percent_decode(path);
        d.basename = match d.filename.iter().rposition(|&c| c == b'/') {
            Some(i) => d.filename[i + 1..].to_vec(),
            None => d.filename.clone(),
        };
        d.query = query.to_vec();
        let mut rl = method.to_vec();
        rl.push(b' ');
        rl.extend_from_slice(target);
        rl.push(b' ');
        rl.extend_from_slice(protocol);
        d.request_line = rl;
        d.urlencoded_error |= body::urlencoded(query, &mut d.args_get);
        d.headers = pairs_from(headers);
        for (k, v) in &d.headers {
            if k.eq_ignore_ascii_case(b"cookie") {
                for c in v.split(|&c| c == b';') {
                    let c = c.trim_ascii_start();
                    if c.is_empty() {
                        continue;
                    }
                    match c.iter().position(|&x| x == b'=') {
                        Some(i) => d
                            .cookies
                            .push((c[..i].trim_ascii().to_vec(), c[i + 1..].to_vec())),
                        None => d.cookies.push((c.trim_ascii().to_vec(), Vec::new())),
                    }
                }
            }
        }
        d.remote_addr = remote.ip().to_string().into_bytes();
        d.remote_port = remote.port().to_string().into_bytes();
        d.server_addr = local.ip().to_string().into_bytes();
        d.server_port = local.port().to_string().into_bytes();
        d.server_name = d
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"host"))
            .map(|(_, v)| v.split(|&c| c == b':').next().unwrap_or(v).to_vec())
            .unwrap_or_default();
        d.unique_id = unique_id.as_bytes().to_vec();
        // The processor the content type selects; rules may change it in phase 1.
        let ct = self
            .header(b"content-type")
            .map(<[u8]>::to_ascii_lowercase)
            .unwrap_or_default();
        self.data.processor = if ct.starts_with(b"application/x-www-form-urlencoded") {
            Some("URLENCODED")
        } else if ct.starts_with(b"multipart/form-data") {
            Some("MULTIPART")
        } else {
            None
        };
    }

    /// Forget cached transformations. Call after changing request or response variables in
    /// `data` from outside the engine (the cache keys on where values live).
    pub fn invalidate_cache(&mut self) {
        self.values.clear();
        self.universe.clear();
    }

    /// Could rule `r` (which has prefilter slot `slot`) match anything in this request?
    fn may_match(&mut self, pf: &crate::prefilter::Prefilter, r: &Rule, slot: u32) -> bool {
        let bit = |bits: &[u64]| {
            bits.get(slot as usize / 64)
                .is_some_and(|w| w & (1 << (slot % 64)) != 0)
        };
        if let Some((_, bits)) = self.universe.iter().find(|(p, _)| *p == r.pipeline) {
            return bit(bits);
        }
        let (Some(_), Some(l)) = (pf.automaton(r.pipeline), pf.list(r.pipeline)) else {
            // No literals for this pipeline: nothing to rule out.
            return true;
        };
        let bits = self.values.universe(l, &self.data, r, pf);
        let hit = bit(&bits);
        self.universe.push((r.pipeline, bits));
        hit
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.data
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether phase 2 wants the request body.
    pub fn wants_request_body(&self) -> bool {
        self.request_body_access && self.engine != EngineMode::Off && !self.stopped()
    }

    /// Run the body processor on the buffered request body (call before phase 2).
    pub fn request_body(&mut self, b: &[u8]) {
        self.data.body_length = b.len();
        if b.is_empty() || !self.request_body_access {
            // No body variables change: what phase 1 transformed and scanned stays valid.
            return;
        }
        self.invalidate_cache();
        let ct = self
            .header(b"content-type")
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let processor = self.processor.or(self.data.processor);
        self.data.processor = processor;
        let mut err = None;
        match processor {
            Some("URLENCODED") => {
                let mut out = Vec::new();
                self.data.urlencoded_error |= body::urlencoded(b, &mut out);
                self.data.args_post = out;
            }
            Some("MULTIPART") => {
                let mut d = std::mem::take(&mut self.data);
                if let Err(e) = body::multipart(&ct, b, &mut d) {
                    err = Some(format!("multipart: {e}"));
                }
                self.data = d;
            }
            Some("JSON") => {
                let mut out = Vec::new();
                match body::json(b, self.rs.json_depth_limit, &mut out) {
                    Ok(()) => self.data.args_post = out,
                    Err(e) => err = Some(format!("JSON: {e}")),
                }
            }
            Some("XML") => match body::xml(b) {
                Ok((t, a)) => {
                    self.data.xml_text = Some(t);
                    self.data.xml_attrs = a;
                }
                Err(e) => err = Some(format!("XML: {e}")),
            },
            _ => {}
        }
        let nargs = self.data.args_get.len() + self.data.args_post.len();
        if err.is_none() && nargs > self.rs.arguments_limit {
            err = Some(format!(
                "{nargs} arguments, more than the limit of {}",
                self.rs.arguments_limit
            ));
        }
        self.data.reqbody_error = err;
        // Phase 2 caches each argument name and value once per pipeline (CRS uses ~16 on
        // arguments): room for them now instead of rehashing as the cache grows.
        let values = 2 * (self.data.args_get.len() + self.data.args_post.len()) + 16;
        self.values.reserve(values.min(1 << 12));
        // REQUEST_BODY is there unless a structured processor (XML, multipart) took the body.
        if !matches!(processor, Some("XML") | Some("MULTIPART")) || self.force_body_variable {
            self.data.body = Some(b.to_vec());
        }
    }

    /// Fill the response-head variables.
    pub fn response_head<'a>(
        &mut self,
        status: u16,
        protocol: &[u8],
        headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        self.invalidate_cache();
        self.data.response_status = status.to_string().into_bytes();
        self.data.response_protocol = protocol.to_vec();
        self.data.response_headers = pairs_from(headers);
    }

    /// Whether phase 4 should see a response body of this content type.
    pub fn wants_response_body(&self) -> bool {
        if !self.response_body_access || self.engine == EngineMode::Off || self.stopped() {
            return false;
        }
        let ct = self
            .data
            .response_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(b"");
        let essence = ct.split(|&c| c == b';').next().unwrap_or(b"").trim_ascii();
        self.rs
            .response_mime_types
            .iter()
            .any(|m| m.as_bytes().eq_ignore_ascii_case(essence))
    }

    pub fn response_body(&mut self, b: &[u8]) {
        self.invalidate_cache();
        self.data.response_body = Some(b.to_vec());
    }

    /// Run one phase (1-5). Phases already run are not run again. After an interruption only
    /// phase 5 runs.
    pub fn phase(&mut self, n: u8) {
        let idx = (n as usize).saturating_sub(1).min(4);
        if self.done[idx] || self.engine == EngineMode::Off {
            return;
        }
        self.done[idx] = true;
        if n < 5 && (self.stopped() || (self.allow && n <= 2)) {
            return;
        }
        let rs = self.rs.clone();
        let entries = &rs.phases[idx];
        let mut i = 0;
        while i < entries.len() {
            let Entry::Rule(ri) = &entries[i] else {
                i += 1;
                continue;
            };
            let r = &rs.rules[*ri];
            if self.is_removed(r) {
                i += 1;
                continue;
            }
            if let (Some(slot), Some(pf)) = (r.pf, &rs.prefilter) {
                if !self.may_match(pf, r, slot) {
                    i += 1;
                    continue;
                }
            }
            if !self.eval(r) {
                i += 1;
                continue;
            }
            // The whole chain matched.
            self.log_match(r, n);
            let def = &rs.defaults[idx];
            let disruptive = match r.disruptive {
                Some(Disruptive::Block) | None => def.disruptive,
                Some(d) => d,
            };
            match disruptive {
                Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect => {
                    // In DetectionOnly the first denial is recorded (and reported as
                    // monitored) but rules go on running.
                    if self.interruption.is_none() {
                        self.interruption = Some(Interruption {
                            id: r.id,
                            status: r.status.or(def.status).unwrap_or(403),
                            action: disruptive,
                            msg: self
                                .matched
                                .last()
                                .map(|m| m.msg.clone())
                                .unwrap_or_default(),
                        });
                        if n < 5 && self.engine == EngineMode::On {
                            return;
                        }
                    }
                }
                Disruptive::Allow => {
                    if self.engine == EngineMode::On {
                        self.allow = true;
                        return;
                    }
                }
                Disruptive::Pass | Disruptive::Block => {}
            }
            if r.skip_after.is_some() {
                i = rs.skip_to[idx].get(i).copied().unwrap_or(entries.len());
                continue;
            }
            if r.skip > 0 {
                let mut left = r.skip;
                i += 1;
                while i < entries.len() && left > 0 {
                    if let Entry::Rule(_) = entries[i] {
                        left -= 1;
                    }
                    i += 1;
                }
                continue;
            }
            i += 1;
        }
    }

    /// A denial stopped rule processing (engine `On`).
    pub fn stopped(&self) -> bool {
        self.interruption.is_some() && self.engine == EngineMode::On
    }

    fn is_removed(&self, r: &Rule) -> bool {
        in_ranges(&self.removed.ids, r.id)
            || self
                .removed
                .tagged
                .iter()
                .any(|ids| ids.binary_search(&r.id).is_ok())
            || (!self.removed.msgs.is_empty() && self.removed.msgs.contains(&r.msg_text))
    }

    /// Evaluate a rule and its chain; runs per-match actions as links match.
    fn eval(&mut self, head: &Rule) -> bool {
        for link in head.links() {
            if !self.eval_link(link, head) {
                return false;
            }
        }
        true
    }

    fn eval_link(&mut self, r: &Rule, head: &Rule) -> bool {
        let Some(op) = &r.op else {
            self.actions(r, head);
            return true;
        };
        // Matches go into buffers kept between rules: most rules that match (paranoia-level
        // gates, counters) would otherwise allocate a name and a value copy per match.
        let mut found = std::mem::take(&mut self.found);
        let grouped = r.group.and_then(|g| Some((g, self.removed_whole(head)?)));
        let nfound = match grouped {
            // The link reads a target list it shares with other rules: read the group's
            // resolved values, less the collections removed from this rule.
            Some((g, removed)) => self.eval_group(g, r, op, &removed, &mut found),
            None => self.eval_items(r, head, op, &mut found),
        };
        if nfound == 0 {
            self.found = found;
            return false;
        }
        for (k, f) in found.iter_mut().take(nfound).enumerate() {
            let d = &mut self.data;
            d.matched_var_name.clear();
            d.matched_var_name.extend_from_slice(&f.name);
            d.matched_var.clear();
            d.matched_var.extend_from_slice(&f.value);
            // MATCHED_VARS holds this link's matches so far; entries are reused in place.
            d.matched_vars.truncate(k + 1);
            match d.matched_vars.get_mut(k) {
                Some((n, v)) => {
                    n.clear();
                    n.extend_from_slice(&f.name);
                    v.clear();
                    v.extend_from_slice(&f.value);
                }
                None => d.matched_vars.push((f.name.clone(), f.value.clone())),
            }
            if r.capture {
                for (i, c) in f.caps.iter().enumerate() {
                    // The rule set gives TX:0..9 the first ten slots.
                    let key = crate::vars::TxKey {
                        name: CAPTURE_KEYS[i.min(9)].as_bytes(),
                        slot: Some(i.min(9) as u32),
                    };
                    d.tx_set_bytes(key, c);
                }
            }
            self.actions(r, head);
        }
        self.found = found;
        true
    }

    /// The collections `ctl` removals take away from rule `head` whole (CRS's 941010 takes
    /// REQUEST_FILENAME from the XSS rules on most requests); `None` when one removes only
    /// some keys of a collection.
    fn removed_whole(&self, head: &Rule) -> Option<Vec<Coll>> {
        let mut whole = Vec::new();
        for (sel, t) in &self.removed.targets {
            if sel.picks(head) {
                match t.sel {
                    Selector::All | Selector::XPath(_) => whole.push(t.coll),
                    _ => return None,
                }
            }
        }
        Some(whole)
    }

    /// Run link `r`'s operator on each of its targets' values, resolved here; returns how
    /// many matched (their details are in `found`).
    fn eval_items(
        &mut self,
        r: &Rule,
        head: &Rule,
        op: &Operator,
        found: &mut Vec<Found>,
    ) -> usize {
        let mut nfound = 0;
        {
            let removed = &self.removed.targets;
            // Only the exclusions that can apply: the rule's own `!` targets, and ctl
            // removals aimed at this rule.
            let ctl_excl: Vec<&Target> = if removed.is_empty() {
                Vec::new()
            } else {
                removed
                    .iter()
                    .filter(|(sel, _)| sel.picks(head))
                    .map(|(_, t)| t)
                    .collect()
            };
            let ex = |c: Coll, k: &[u8]| {
                r.targets.iter().any(|t| t.excludes(c, k))
                    || ctl_excl.iter().any(|t| t.excludes(c, k))
            };
            let nothing = |_: Coll, _: &[u8]| false;
            // Most links exclude nothing: no per-item test then.
            let ex: &dyn Fn(Coll, &[u8]) -> bool =
                if ctl_excl.is_empty() && !r.targets.iter().any(|t| t.exclude) {
                    &nothing
                } else {
                    &ex
                };
            let mut items = recycle(std::mem::take(&mut self.items));
            for t in r.targets.iter().filter(|t| !t.exclude) {
                self.data.resolve(t, ex, &mut items);
            }
            let want_caps = r.capture;
            let values = &mut self.values;
            let pf = self.rs.prefilter.as_ref();
            let mut caps = Vec::new();
            for it in &items {
                caps.clear();
                let mut keep = |v: &[u8], caps: &mut Vec<Vec<u8>>| {
                    let f = record(found, &mut nfound, v, caps);
                    f.name.clear();
                    it.write_name(&mut f.name);
                };
                if r.multi_match {
                    let present = crate::prefilter::ByteSet::in_value(&it.value);
                    if let Some(v) = multi_match(&self.data, r, op, &it.value, present, &mut caps) {
                        keep(&v, &mut caps);
                    }
                } else {
                    let v: Cow<[u8]> =
                        if stays_put(it) && !(r.transforms.is_empty() && r.pf.is_none()) {
                            // Transformed and scanned once per value and pipeline.
                            let vid = values.number(&it.value, true);
                            let Some(f) = values.candidate(vid, r, pf) else {
                                continue;
                            };
                            Cow::Borrowed(values.text(f))
                        } else {
                            let v = transform_all(&r.transforms, &it.value);
                            // A value computed here can be long (a body): the needed bytes
                            // are looked for with an early exit, and the value's byte set is
                            // built only for the alphabet check.
                            if r.need.is_some_and(|n| !n.any_in(&v)) {
                                continue;
                            }
                            if let Some(u) = &r.unmatchable {
                                let present = crate::prefilter::ByteSet::in_value(&v);
                                if u.excludes(crate::prefilter::alphabet(&present)) {
                                    continue;
                                }
                            }
                            v
                        };
                    if op.matches(&self.data, &v, want_caps.then_some(&mut caps)) {
                        keep(&v, &mut caps);
                    }
                }
            }
            self.items = recycle(items);
        }
        nfound
    }

    /// Run link `r`'s operator on the values of its target-list group `g`: resolved once per
    /// transaction, and passed over whole when the prefilter shows none of them can match.
    /// The values of collections in `removed` (taken away by `ctl`) are passed over.
    fn eval_group(
        &mut self,
        g: u32,
        r: &Rule,
        op: &Operator,
        removed: &[Coll],
        found: &mut Vec<Found>,
    ) -> usize {
        let pf = self.rs.prefilter.as_ref();
        let values = &mut self.values;
        values.build_group(g, &self.data, r);
        if let Some(slot) = r.pf {
            // Fewer values (some removed) hold no more literals than the whole group.
            if values.group_has_literal(g, r, pf, slot) == Some(false) {
                return 0;
            }
        }
        let mut nfound = 0;
        let mut caps = Vec::new();
        let mut hits = Vec::new();
        for i in 0..values.group_len(g) {
            if !removed.is_empty() && removed.contains(&values.member_coll(g, i)) {
                continue;
            }
            let vid = values.member(g, i);
            let matched: Option<Cow<[u8]>> = if r.multi_match {
                multi_match(
                    &self.data,
                    r,
                    op,
                    values.raw(vid),
                    values.present(vid),
                    &mut caps,
                )
            } else {
                let Some(f) = values.candidate(vid, r, pf) else {
                    continue;
                };
                let v = values.text(f);
                caps.clear();
                op.matches(&self.data, v, r.capture.then_some(&mut caps))
                    .then_some(Cow::Borrowed(v))
            };
            if let Some(v) = matched {
                record(found, &mut nfound, &v, &mut caps);
                hits.push(i);
            }
        }
        if nfound > 0 {
            // The matched variables' names: the group's items, resolved again in the same
            // order (only when something matched).
            let mut items = recycle(std::mem::take(&mut self.items));
            crate::values::resolve_own(&self.data, r, &mut items);
            for (fd, &i) in found.iter_mut().zip(&hits) {
                fd.name.clear();
                if let Some(it) = items.get(i) {
                    it.write_name(&mut fd.name);
                }
            }
            self.items = recycle(items);
        }
        nfound
    }

    /// Non-disruptive actions of one link: setvar and ctl.
    fn actions(&mut self, r: &Rule, head: &Rule) {
        for sv in &r.setvars {
            let full: Cow<str> = match &sv.fixed {
                Some(f) => Cow::Borrowed(f),
                None => {
                    let key = String::from_utf8(self.expand(&sv.key, head))
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    if sv.coll == "tx" {
                        Cow::Owned(key)
                    } else {
                        // Other collections live in TX under their prefix for this transaction.
                        Cow::Owned(format!("{}.{key}", sv.coll))
                    }
                }
            };
            let key = crate::vars::TxKey {
                name: full.as_bytes(),
                slot: sv.slot,
            };
            match &sv.op {
                SetOp::Unset => self.data.tx.remove(key),
                SetOp::Set(m) => match m.literal() {
                    // Most values are literal (`setvar:tx.blocking_paranoia_level=1`): copied
                    // into the buffer the slot kept.
                    Some(l) => self.data.tx_set_bytes(key, l),
                    None => {
                        let v = self.expand(m, head);
                        self.data.tx_set(key, v);
                    }
                },
                SetOp::Add(m) | SetOp::Sub(m) => {
                    let n =
                        crate::operator::atoi(&m.expand_cow(&self.data, &|f| rule_field(head, f)));
                    let cur = self
                        .data
                        .tx_get(key)
                        .map(crate::operator::atoi)
                        .unwrap_or(0);
                    let v = if matches!(sv.op, SetOp::Add(_)) {
                        cur.saturating_add(n)
                    } else {
                        cur.saturating_sub(n)
                    };
                    self.data.tx_set_int(key, v);
                }
            }
        }
        for c in &r.ctls {
            match c {
                Ctl::RuleRemoveById(ids) => self.removed.ids.extend(ids.iter().copied()),
                Ctl::RuleRemoveByTag(_, ids) => self.removed.tagged.push(ids.clone()),
                Ctl::RuleRemoveByMsg(m) => self.removed.msgs.push(m.clone()),
                Ctl::RuleRemoveTargetById(ids, t) => self
                    .removed
                    .targets
                    .push((RuleSel::Ids(ids.clone()), t.clone())),
                Ctl::RuleRemoveTargetByTag(_, t, ids) => self
                    .removed
                    .targets
                    .push((RuleSel::Tag(ids.clone()), t.clone())),
                Ctl::RuleRemoveTargetByMsg(m, t) => self
                    .removed
                    .targets
                    .push((RuleSel::Msg(m.clone()), t.clone())),
                Ctl::RuleEngine(m) => self.engine = *m,
                Ctl::RequestBodyProcessor(p) => {
                    self.processor = Some(p);
                    self.data.processor = Some(p);
                }
                Ctl::ForceRequestBodyVariable(b) => self.force_body_variable = *b,
                Ctl::RequestBodyAccess(b) => self.request_body_access = *b,
                Ctl::ResponseBodyAccess(b) => self.response_body_access = *b,
                Ctl::LogSetting => {}
            }
        }
    }

    fn expand(&self, m: &Macro, head: &Rule) -> Vec<u8> {
        m.expand(&self.data, &|f| rule_field(head, f))
    }

    fn log_match(&mut self, head: &Rule, phase: u8) {
        let def = &self.rs.defaults[(phase as usize).saturating_sub(1).min(4)];
        let log = head.log.unwrap_or(def.log);
        if !log {
            return;
        }
        let msg = head
            .msg
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m, head)).into_owned())
            .unwrap_or_default();
        let data = head
            .logdata
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m, head)).into_owned())
            .unwrap_or_default();
        if let Some(s) = head.severity {
            if self.data.highest_severity == 0 || s < self.data.highest_severity {
                self.data.highest_severity = s;
            }
        }
        self.matched.push(Matched {
            id: head.id,
            phase,
            msg,
            data,
            severity: head.severity,
            tags: head.tags.clone(),
            var: String::from_utf8_lossy(&self.data.matched_var_name).into_owned(),
            value: self.data.matched_var.clone(),
            log,
        });
    }
}

/// `%{rule.id}` and friends.
fn rule_field(head: &Rule, f: &str) -> Option<String> {
    match f {
        "id" => Some(head.id.to_string()),
        "msg" => Some(head.msg_text.clone()),
        "severity" => head.severity.map(|s| s.to_string()),
        "phase" => Some(head.phase.to_string()),
        _ => None,
    }
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            let h = |c: u8| (c as char).to_digit(16);
            if let (Some(a), Some(b)) = (h(v[i + 1]), h(v[i + 2])) {
                o.push((a * 16 + b) as u8);
                i += 3;
                continue;
            }
        }
        o.push(v[i]);
        i += 1;
    }
    o
}

/// Apply a pipeline, allocating only when a step changes the value.
pub fn transform_all<'a>(ts: &[Transform], v: &'a [u8]) -> Cow<'a, [u8]> {
    let mut cur: Cow<'a, [u8]> = Cow::Borrowed(v);
    for t in ts {
        cur = match cur {
            Cow::Borrowed(b) => t.apply(b),
            Cow::Owned(o) => match t.apply(&o) {
                // Unchanged (a trim's borrowed part is shorter).
                Cow::Borrowed(b) if b.len() == o.len() => Cow::Owned(o),
                Cow::Borrowed(b) => Cow::Owned(b.to_vec()),
                Cow::Owned(n) => Cow::Owned(n),
            },
        };
    }
    cur
}
