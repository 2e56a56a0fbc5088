//! The rule model: directives compiled into rules, chains, markers and engine settings, and
//! the loader that reads files in order (with `Include`), applies `SecRuleRemove*` and
//! `SecRuleUpdate*`, and checks every reference. Errors say file:line and the directive.

use crate::macros::Macro;
use crate::operator::Operator;
use crate::seclang::{self, Directive, Pos, RawAction, WafError};
use crate::transform::Transform;
use crate::vars::{self, Coll, Target};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `SecRuleEngine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineMode {
    On,
    DetectionOnly,
    Off,
}

impl EngineMode {
    fn parse(s: &str) -> Option<EngineMode> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Some(EngineMode::On),
            "off" => Some(EngineMode::Off),
            "detectiononly" => Some(EngineMode::DetectionOnly),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    Block,
    Deny,
    Drop,
    Allow,
    Redirect,
}

#[derive(Clone, Debug)]
pub enum SetOp {
    Set(Macro),
    Add(Macro),
    Sub(Macro),
    Unset,
}

#[derive(Clone, Debug)]
pub struct SetVar {
    /// `tx`, or another collection (kept per transaction: Rampart has no persistent
    /// collections).
    pub coll: String,
    pub key: Macro,
    /// The full TX name when the key has no macros (`inbound_anomaly_score_pl1`,
    /// `ip.reput_block_flag`), worked out once at load.
    pub fixed: Option<String>,
    /// The fixed name's TX slot (set when the rule set is finished, see
    /// [`crate::vars::TxNames`]).
    pub slot: Option<u32>,
    pub op: SetOp,
}

/// Rule ids as ranges (`ruleRemoveById=1-999999`).
pub type IdRanges = Vec<(u32, u32)>;

/// Sorted ids of the rules a tag selector picks.
pub type Picked = std::sync::Arc<[u32]>;

#[derive(Clone, Debug)]
pub enum Ctl {
    RuleRemoveById(IdRanges),
    /// The tag pattern and the ids of the rules it picks, worked out when the rule set is
    /// finished (a request then costs a binary search per rule, not a regex per tag).
    RuleRemoveByTag(regex::Regex, Picked),
    RuleRemoveByMsg(String),
    RuleRemoveTargetById(IdRanges, Target),
    RuleRemoveTargetByTag(regex::Regex, Target, Picked),
    RuleRemoveTargetByMsg(String, Target),
    RuleEngine(EngineMode),
    RequestBodyProcessor(&'static str),
    ForceRequestBodyVariable(bool),
    RequestBodyAccess(bool),
    ResponseBodyAccess(bool),
    /// Settings of ModSecurity's own audit and debug logs; Rampart's security events replace
    /// them, so these are accepted and have no effect.
    LogSetting,
}

/// One `SecRule` (or `SecAction`) with its chain.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: u32,
    pub phase: u8,
    pub pos: Pos,
    /// Empty for `SecAction` (matches unconditionally).
    pub targets: Vec<Target>,
    pub op: Option<Operator>,
    pub transforms: Vec<Transform>,
    /// The pipeline's number, shared by every rule with the same transformations (set when
    /// the rule set is finished): transformed values are cached per value and pipeline.
    pub pipeline: u32,
    /// What the pipeline can do to a value, by the bytes it holds (set with `pipeline`):
    /// which values come out as they went in, and which at most lower-cased
    /// ([`crate::transform::pipeline_alters`]).
    pub alters: crate::transform::Alters,
    /// The rule's slot in the [`crate::prefilter::Prefilter`], when it has one.
    pub pf: Option<u32>,
    /// For an `@rx`: bytes one of which every match contains
    /// (set when the rule set is finished); a value with none of them is not tried.
    pub need: Option<crate::prefilter::ByteSet>,
    /// For an `@rx` or `@pm`: the alphabets of ordinary values it cannot match (set when the
    /// rule set is finished); a value with one of them is not tried.
    pub unmatchable: Option<crate::prefilter::Unmatchable>,
    /// The link's target-list group (set when the rule set is finished), when every
    /// collection it reads stays put in memory: links with the same target list share it, and
    /// a transaction resolves each group once (see [`crate::values`]).
    pub group: Option<u32>,
    /// For a grouped link, by target: its number among the distinct targets that groups
    /// read (a transaction resolves each of those once, and a group is its targets' values
    /// in order), or [`crate::values::NONE`] for an exclusion and for a target whose
    /// collection an exclusion of the link applies to (`REQUEST_COOKIES` beside
    /// `!REQUEST_COOKIES:/__utm/`), which the group resolves itself. Empty when not grouped.
    pub target_ids: Vec<u32>,
    pub multi_match: bool,
    /// For a multiMatch regex (which has no prefilter slot: it runs on every intermediate
    /// form), an automaton of the literals one of which every match holds: a form without
    /// any is not tried.
    pub literals: Option<Box<crate::prefilter::Dfa>>,
    pub capture: bool,
    pub msg: Option<Macro>,
    pub msg_text: String,
    pub logdata: Option<Macro>,
    pub tags: Vec<String>,
    pub severity: Option<u8>,
    pub disruptive: Option<Disruptive>,
    pub status: Option<u16>,
    pub log: Option<bool>,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub skip_after: Option<String>,
    pub skip: u32,
    pub chain: Option<Box<Rule>>,
}

impl Rule {
    pub fn links(&self) -> impl Iterator<Item = &Rule> {
        let mut cur = Some(self);
        std::iter::from_fn(move || {
            let r = cur?;
            cur = r.chain.as_deref();
            Some(r)
        })
    }

    /// Could the link's operator match a value holding exactly the bytes `present`, whose
    /// [`crate::prefilter::alphabet`] `alphabet` gives (asked only when the link has an
    /// alphabet check)? The needed-byte and alphabet checks of the form cache and of
    /// multiMatch, which know a value's bytes already.
    #[inline(always)]
    pub fn bytes_may_match(
        &self,
        present: &crate::prefilter::ByteSet,
        alphabet: impl FnOnce() -> u16,
    ) -> bool {
        self.need.is_none_or(|n| n.meets(present))
            && self
                .unmatchable
                .as_ref()
                .is_none_or(|u| !u.excludes(alphabet()))
    }
}

/// What runs in a phase, in order.
#[derive(Clone, Debug)]
pub enum Entry {
    Rule(usize),
    Marker(Arc<str>),
}

/// `SecDefaultAction` for one phase.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub disruptive: Disruptive,
    pub log: bool,
    pub transforms: Vec<Transform>,
    pub status: Option<u16>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            disruptive: Disruptive::Pass,
            log: true,
            transforms: Vec::new(),
            status: None,
        }
    }
}

/// A compiled, immutable rule set.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub phases: [Vec<Entry>; 5],
    /// Per phase and entry: where a rule's `skipAfter` resumes (worked out at load).
    pub skip_to: [Vec<usize>; 5],
    /// Literal prefilter for request-side `@rx` rules.
    pub prefilter: Option<crate::prefilter::Prefilter>,
    /// How many distinct transformation pipelines and target-list groups the rules have.
    pub pipelines: usize,
    pub groups: usize,
    /// How many distinct targets the groups read ([`Rule::target_ids`]).
    pub group_targets: usize,
    /// The TX names the rules spell out, each with a slot (TX:0..9 first).
    pub tx_names: std::sync::Arc<crate::vars::TxNames>,
    pub defaults: [Defaults; 5],
    pub engine: EngineMode,
    pub request_body_access: bool,
    pub response_body_access: bool,
    pub response_mime_types: Vec<String>,
    pub request_body_limit: usize,
    pub request_body_no_files_limit: usize,
    pub response_body_limit: usize,
    pub arguments_limit: usize,
    pub json_depth_limit: usize,
    pub signatures: Vec<String>,
}

impl RuleSet {
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// The number of `key` among the distinct keys numbered so far in `ids` (a new one gets the
/// next number).
fn id_of<K: Eq + std::hash::Hash>(ids: &mut std::collections::HashMap<K, u32>, key: K) -> u32 {
    let n = ids.len() as u32;
    *ids.entry(key).or_insert(n)
}

/// Call `f` on every link of every rule's chain, heads first.
fn each_link_mut(rules: &mut [Rule], mut f: impl FnMut(&mut Rule)) {
    for r in rules {
        let mut link = Some(r);
        while let Some(l) = link {
            f(l);
            link = l.chain.as_deref_mut();
        }
    }
}

/// The literals one of which any match of `r` needs, if `r` (the head of its chain) is a
/// request-side, non-negated `@rx` on request variables that stay put (so the engine can scan
/// them all up front) and its pattern proves such a set.
fn prefilterable(r: &Rule) -> Option<Vec<Vec<u8>>> {
    if r.phase > 2 || r.multi_match {
        return None;
    }
    let op = r.op.as_ref()?;
    if op.negated {
        return None;
    }
    let reads: Vec<&Target> = r.targets.iter().filter(|t| !t.exclude).collect();
    if reads.is_empty()
        || reads
            .iter()
            .any(|t| t.count || !vars::is_stable(t.coll) || is_response(t.coll))
    {
        return None;
    }
    match &op.op {
        crate::operator::Op::Rx(crate::operator::Rx::Bytes(re)) => {
            crate::prefilter::required_literals(re.as_str(), false)
        }
        // `@pm` matches exactly when one of its phrases occurs (ASCII case ignored, as the
        // prefilter compares): its phrases are its literal set.
        crate::operator::Op::Pm(_, phrases, _)
            if phrases.iter().all(|p| !p.is_empty())
                && phrases.len() <= crate::operator::MAX_PM_PHRASES =>
        {
            Some(phrases.iter().map(|p| p.to_ascii_lowercase()).collect())
        }
        _ => None,
    }
}

fn is_response(c: Coll) -> bool {
    matches!(
        c,
        Coll::ResponseHeaders | Coll::ResponseHeadersNames | Coll::ResponseBody
    )
}

/// Reads rule files into a [`RuleSet`].
pub struct Loader {
    rules: Vec<Rule>,
    entries: Vec<(u8, Entry)>,
    defaults: [Defaults; 5],
    engine: EngineMode,
    request_body_access: bool,
    response_body_access: bool,
    response_mime_types: Vec<String>,
    request_body_limit: usize,
    request_body_no_files_limit: usize,
    response_body_limit: usize,
    arguments_limit: usize,
    json_depth_limit: usize,
    signatures: Vec<String>,
    /// The head rule whose chain is still open.
    pending_chain: Option<usize>,
    ids: HashMap<u32, Pos>,
    depth: usize,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

impl Loader {
    pub fn new() -> Self {
        Loader {
            rules: Vec::new(),
            entries: Vec::new(),
            defaults: Default::default(),
            engine: EngineMode::On,
            request_body_access: true,
            response_body_access: false,
            response_mime_types: vec!["text/plain".into(), "text/html".into()],
            request_body_limit: 13_107_200,
            request_body_no_files_limit: 131_072,
            response_body_limit: 524_288,
            arguments_limit: 1000,
            json_depth_limit: 512,
            signatures: Vec::new(),
            pending_chain: None,
            ids: HashMap::new(),
            depth: 0,
        }
    }

    /// Load one file (relative `Include`s and data files resolve against its directory).
    pub fn file(&mut self, path: &Path) -> Result<(), WafError> {
        let name: Arc<str> = Arc::from(path.display().to_string());
        let text = std::fs::read_to_string(path).map_err(|e| {
            WafError::new(
                &Pos {
                    file: name.clone(),
                    line: 0,
                },
                format!("cannot read rule file: {e}"),
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.text(&text, &name, &dir)
    }

    /// Load rules from text; `dir` resolves relative paths.
    pub fn text(&mut self, text: &str, name: &Arc<str>, dir: &Path) -> Result<(), WafError> {
        for d in seclang::directives(text, name)? {
            self.directive(&d, dir)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<RuleSet, WafError> {
        if let Some(i) = self.pending_chain.take() {
            return Err(WafError::new(
                &self.rules[i].pos,
                format!(
                    "rule {} ends with `chain` but no rule follows",
                    self.rules[i].id
                ),
            ));
        }
        // Fold each rule's `!COLL:/regex/` exclusions on one collection into one regex (CRS
        // adds 28 cookie-name exclusions to every cookie rule; one DFA scan beats 28).
        fn fold(r: &mut Rule) {
            use std::collections::BTreeMap;
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for t in r.targets.iter().filter(|t| t.exclude && !t.count) {
                if let vars::Selector::Regex(re) = &t.sel {
                    groups
                        .entry(t.coll.name().to_string())
                        .or_default()
                        .push(re.as_str().to_string());
                }
            }
            for (coll, pats) in groups.into_iter().filter(|(_, p)| p.len() > 1) {
                let joined = pats
                    .iter()
                    .map(|p| format!("(?:{p})"))
                    .collect::<Vec<_>>()
                    .join("|");
                let Ok(re) = crate::operator::compile_regex(&joined, true) else {
                    continue;
                };
                let Some(c) = Coll::by_name(&coll) else {
                    continue;
                };
                r.targets.retain(|t| {
                    !(t.exclude
                        && !t.count
                        && t.coll == c
                        && matches!(t.sel, vars::Selector::Regex(_)))
                });
                r.targets.push(Target {
                    coll: c,
                    sel: vars::Selector::Regex(re),
                    count: false,
                    exclude: true,
                    tx_slot: None,
                    tx_slots: None,
                });
            }
            if let Some(ch) = r.chain.as_deref_mut() {
                fold(ch);
            }
        }
        for r in &mut self.rules {
            fold(r);
        }
        // Tag selectors of `ctl` removals, resolved to rule ids once.
        let tagged: Vec<(u32, Vec<String>)> = self
            .rules
            .iter()
            .filter(|r| r.id != u32::MAX)
            .map(|r| (r.id, r.tags.clone()))
            .collect();
        let pick = |re: &regex::Regex| -> Picked {
            let mut ids: Vec<u32> = tagged
                .iter()
                .filter(|(_, tags)| tags.iter().any(|t| re.is_match(t)))
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into()
        };
        each_link_mut(&mut self.rules, |l| {
            for c in &mut l.ctls {
                match c {
                    Ctl::RuleRemoveByTag(re, p) | Ctl::RuleRemoveTargetByTag(re, _, p) => {
                        *p = pick(re)
                    }
                    _ => {}
                }
            }
        });
        // Number the TX names the rules spell out: a transaction keeps each in a slot.
        let mut tx_names = crate::vars::TxNames::default();
        for (i, k) in crate::engine::CAPTURE_KEYS.iter().enumerate() {
            let slot = tx_names.intern(k);
            debug_assert_eq!(slot as usize, i);
        }
        each_link_mut(&mut self.rules, |l| {
            for t in &mut l.targets {
                if let (Coll::Tx, vars::Selector::Key(k)) = (t.coll, &t.sel) {
                    t.tx_slot = std::str::from_utf8(k).ok().map(|k| tx_names.intern(k));
                }
            }
            for sv in &mut l.setvars {
                sv.slot = sv.fixed.as_deref().map(|f| tx_names.intern(f));
                sv.key.intern(&mut tx_names);
                if let SetOp::Set(m) | SetOp::Add(m) | SetOp::Sub(m) = &mut sv.op {
                    m.intern(&mut tx_names);
                }
            }
            for m in [&mut l.msg, &mut l.logdata].into_iter().flatten() {
                m.intern(&mut tx_names);
            }
            if let Some(m) = l.op.as_mut().and_then(|op| op.arg_macro_mut()) {
                m.intern(&mut tx_names);
            }
        });
        // Every name has its slot now: the slots each TX selector picks.
        each_link_mut(&mut self.rules, |l| {
            for t in &mut l.targets {
                if t.coll == Coll::Tx && !matches!(t.sel, vars::Selector::Key(_)) {
                    t.tx_slots = Some(tx_names.picked_by(&t.sel));
                }
            }
        });
        // Number the distinct transformation pipelines.
        let mut ids: std::collections::HashMap<Vec<Transform>, u32> = Default::default();
        each_link_mut(&mut self.rules, |l| {
            l.pipeline = id_of(&mut ids, l.transforms.clone());
            l.alters = crate::transform::pipeline_alters(&l.transforms);
        });
        let pipelines = ids.len();
        // Number the distinct target lists that read only collections that stay put.
        let mut gids: std::collections::HashMap<String, u32> = Default::default();
        let mut tids: std::collections::HashMap<String, u32> = Default::default();
        each_link_mut(&mut self.rules, |l| {
            let mut reads = l.targets.iter().filter(|t| !t.exclude).peekable();
            let stable = reads.peek().is_some()
                && reads.all(|t| crate::vars::is_stable(t.coll))
                && l.targets.iter().all(|t| !t.count);
            if !stable {
                return;
            }
            let sig: Vec<String> = l
                .targets
                .iter()
                .map(crate::vars::Target::signature)
                .collect();
            // An exclusion only takes away members of its own collection: the targets of
            // other collections are shared with every group that reads them.
            let excluded: Vec<Coll> = l
                .targets
                .iter()
                .filter(|t| t.exclude)
                .map(|t| t.coll)
                .collect();
            l.target_ids = l
                .targets
                .iter()
                .zip(&sig)
                .map(|(t, s)| {
                    if t.exclude || excluded.contains(&t.coll) {
                        crate::values::NONE
                    } else {
                        id_of(&mut tids, s.clone())
                    }
                })
                .collect();
            l.group = Some(id_of(&mut gids, sig.join("|")));
        });
        let groups = gids.len();
        let group_targets = tids.len();
        // Prefilter slots for the request-side rules whose match needs a literal, in the
        // pipelines shared by enough such rules to pay for a scan of the request.
        let lits: Vec<Option<Vec<Vec<u8>>>> = self.rules.iter().map(prefilterable).collect();
        let mut per_pipe: std::collections::BTreeMap<u32, usize> = Default::default();
        for (r, l) in self.rules.iter().zip(&lits) {
            if l.is_some() {
                *per_pipe.entry(r.pipeline).or_default() += 1;
            }
        }
        let mut sets = Vec::new();
        let mut colls: std::collections::BTreeMap<u32, std::collections::BTreeSet<Coll>> =
            Default::default();
        for (r, l) in self.rules.iter_mut().zip(lits) {
            let Some(l) = l else { continue };
            if per_pipe[&r.pipeline] < crate::prefilter::MIN_RULES_PER_PIPELINE {
                continue;
            }
            r.pf = Some(sets.len() as u32);
            sets.push((r.pipeline, l));
            colls
                .entry(r.pipeline)
                .or_default()
                .extend(r.targets.iter().filter(|t| !t.exclude).map(|t| t.coll));
        }
        let prefilter = crate::prefilter::Prefilter::build(&sets, &colls);
        if prefilter.is_none() {
            for r in &mut self.rules {
                r.pf = None;
            }
        }
        // Byte checks before running a regex or phrase list on a value; for a multiMatch regex
        // (no prefilter slot: it runs on every intermediate form), its literals' automaton.
        each_link_mut(&mut self.rules, |l| {
            let multi_match = l.multi_match;
            let mut literals = None;
            (l.need, l.unmatchable) = match &l.op {
                Some(op) if !op.negated => match &op.op {
                    crate::operator::Op::Rx(crate::operator::Rx::Bytes(re)) => {
                        if multi_match {
                            literals = crate::prefilter::required_literals(re.as_str(), false)
                                .and_then(|lits| {
                                    let refs: Vec<&[u8]> = lits.iter().map(|l| &l[..]).collect();
                                    // (A rule's literal set is small: the bound is never met.)
                                    crate::prefilter::Dfa::build_within(&refs, 1 << 20)
                                        .map(Box::new)
                                });
                        }
                        crate::prefilter::byte_checks(re.as_str())
                    }
                    crate::operator::Op::Pm(_, phrases, _) => (
                        None,
                        crate::prefilter::Unmatchable::of_phrases(phrases.iter().map(|p| &p[..])),
                    ),
                    _ => (None, None),
                },
                _ => (None, None),
            };
            l.literals = literals;
        });
        let mut phases: [Vec<Entry>; 5] = Default::default();
        for (p, e) in self.entries {
            if let Entry::Rule(i) = &e {
                if self.rules[*i].id == u32::MAX {
                    continue; // removed
                }
            }
            phases[(p - 1) as usize].push(e);
        }
        // Every skipAfter must name a marker that follows in its phase.
        let mut skip_to: [Vec<usize>; 5] = Default::default();
        for (pi, list) in phases.iter().enumerate() {
            skip_to[pi] = vec![list.len(); list.len()];
            for (at, e) in list.iter().enumerate() {
                let Entry::Rule(i) = e else { continue };
                let r = &self.rules[*i];
                if let Some(m) = &r.skip_after {
                    let found = list[at + 1..].iter().position(|e| match e {
                        Entry::Marker(n) => **n == **m,
                        Entry::Rule(j) => self.rules[*j].id.to_string() == *m,
                    });
                    if let Some(p) = found {
                        skip_to[pi][at] = at + 1 + p + 1;
                    } else {
                        return Err(WafError::new(
                            &r.pos,
                            format!(
                                "rule {}: skipAfter:{m} names no marker after it in phase {}",
                                r.id,
                                pi + 1
                            ),
                        ));
                    }
                }
            }
        }
        Ok(RuleSet {
            rules: self.rules,
            phases,
            skip_to,
            prefilter,
            pipelines,
            groups,
            group_targets,
            tx_names: std::sync::Arc::new(tx_names),
            defaults: self.defaults,
            engine: self.engine,
            request_body_access: self.request_body_access,
            response_body_access: self.response_body_access,
            response_mime_types: self.response_mime_types,
            request_body_limit: self.request_body_limit,
            request_body_no_files_limit: self.request_body_no_files_limit,
            response_body_limit: self.response_body_limit,
            arguments_limit: self.arguments_limit,
            json_depth_limit: self.json_depth_limit,
            signatures: self.signatures,
        })
    }

    fn directive(&mut self, d: &Directive, dir: &Path) -> Result<(), WafError> {
        let err = |m: String| WafError::new(&d.pos, format!("{}: {m}", d.name));
        let arg = |n: usize| -> Result<&str, WafError> {
            d.args
                .get(n)
                .map(String::as_str)
                .ok_or_else(|| err(format!("missing argument {}", n + 1)))
        };
        let onoff = |s: &str| -> Result<bool, WafError> {
            match s.to_ascii_lowercase().as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                other => Err(err(format!("expected On or Off, got `{other}`"))),
            }
        };
        let num = |s: &str| -> Result<usize, WafError> {
            s.parse()
                .map_err(|_| err(format!("expected a number, got `{s}`")))
        };
        let name = d.name.to_ascii_lowercase();
        if self.pending_chain.is_some() && name != "secrule" {
            return Err(err("a `chain` rule must be followed by a SecRule".into()));
        }
        match name.as_str() {
            "secrule" => {
                if d.args.len() < 2 || d.args.len() > 3 {
                    return Err(err("expects VARIABLES OPERATOR [ACTIONS]".into()));
                }
                self.rule(d, Some((&d.args[0], &d.args[1])), d.args.get(2), dir)?;
            }
            "secaction" => {
                if d.args.len() != 1 {
                    return Err(err("expects one ACTIONS argument".into()));
                }
                self.rule(d, None, d.args.first(), dir)?;
            }
            "secmarker" => {
                let m: Arc<str> = Arc::from(arg(0)?);
                for p in 1..=5 {
                    self.entries.push((p, Entry::Marker(m.clone())));
                }
            }
            "secdefaultaction" => {
                let acts = seclang::actions(arg(0)?).map_err(err)?;
                let mut phase = None;
                let mut def = Defaults::default();
                let mut disruptive = None;
                for a in &acts {
                    match a.name.to_ascii_lowercase().as_str() {
                        "phase" => phase = Some(parse_phase(a.value.as_deref()).map_err(err)?),
                        "log" => def.log = true,
                        "nolog" => def.log = false,
                        "auditlog" | "noauditlog" => {}
                        "pass" => disruptive = Some(Disruptive::Pass),
                        "deny" => disruptive = Some(Disruptive::Deny),
                        "drop" => disruptive = Some(Disruptive::Drop),
                        "allow" => disruptive = Some(Disruptive::Allow),
                        "block" => return Err(err("`block` cannot be a default action".into())),
                        "status" => {
                            def.status = Some(
                                a.value
                                    .as_deref()
                                    .unwrap_or("")
                                    .parse()
                                    .map_err(|_| err("bad status".into()))?,
                            )
                        }
                        "t" => push_transform(&mut def.transforms, a.value.as_deref()).map_err(err)?,
                        "tag" | "msg" | "severity" => {}
                        other => {
                            return Err(err(format!("action `{other}` is not allowed here")))
                        }
                    }
                }
                let phase = phase.ok_or_else(|| err("needs a phase".into()))?;
                def.disruptive =
                    disruptive.ok_or_else(|| err("needs a disruptive action".into()))?;
                self.defaults[(phase - 1) as usize] = def;
            }
            "include" => {
                self.depth += 1;
                if self.depth > 16 {
                    return Err(err("includes nested more than 16 deep".into()));
                }
                let pattern = arg(0)?;
                let files = glob(&dir.join(pattern)).map_err(err)?;
                if files.is_empty() {
                    return Err(err(format!("`{pattern}` matches no file")));
                }
                for f in files {
                    self.file(&f)?;
                }
                self.depth -= 1;
            }
            "secruleengine" => {
                self.engine = EngineMode::parse(arg(0)?)
                    .ok_or_else(|| err("expected On, Off or DetectionOnly".into()))?
            }
            "secrequestbodyaccess" => self.request_body_access = onoff(arg(0)?)?,
            "secresponsebodyaccess" => self.response_body_access = onoff(arg(0)?)?,
            "secresponsebodymimetype" => {
                self.response_mime_types
                    .extend(d.args.iter().flat_map(|a| a.split_whitespace().map(str::to_string)));
            }
            "secresponsebodymimetypesclear" => self.response_mime_types.clear(),
            "secrequestbodylimit" => self.request_body_limit = num(arg(0)?)?,
            "secrequestbodynofileslimit" => self.request_body_no_files_limit = num(arg(0)?)?,
            "secresponsebodylimit" => self.response_body_limit = num(arg(0)?)?,
            "secargumentslimit" => self.arguments_limit = num(arg(0)?)?,
            "secrequestbodyjsondepthlimit" => self.json_depth_limit = num(arg(0)?)?,
            "secrequestbodylimitaction" | "secresponsebodylimitaction" => {
                match arg(0)?.to_ascii_lowercase().as_str() {
                    "reject" | "processpartial" => {}
                    other => return Err(err(format!("expected Reject or ProcessPartial, got `{other}`"))),
                }
            }
            // Rust's regex engine never backtracks, so PCRE's match limits have nothing to limit.
            "secpcrematchlimit" | "secpcrematchlimitrecursion" => {
                num(arg(0)?)?;
            }
            // Persistent collections (IP, SESSION, ...) live only for one transaction in
            // Rampart, so their timeout has nothing to expire; the value is still checked.
            "seccollectiontimeout" => {
                num(arg(0)?)?;
            }
            "seccomponentsignature" => self.signatures.push(arg(0)?.to_string()),
            "secruleremovebyid" => {
                let ranges = id_ranges(&d.args.join(" ")).map_err(err)?;
                for r in &mut self.rules {
                    if in_ranges(&ranges, r.id) {
                        r.id = u32::MAX;
                    }
                }
            }
            "secruleremovebytag" => {
                let re = regex::Regex::new(arg(0)?).map_err(|e| err(e.to_string()))?;
                for r in &mut self.rules {
                    if r.tags.iter().any(|t| re.is_match(t)) {
                        r.id = u32::MAX;
                    }
                }
            }
            "secruleremovebymsg" => {
                let m = arg(0)?;
                for r in &mut self.rules {
                    if r.msg_text == m {
                        r.id = u32::MAX;
                    }
                }
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" | "secruleupdatetargetbymsg" => {
                let sel = arg(0)?;
                let targets = parse_targets(arg(1)?).map_err(err)?;
                let replaced = match d.args.get(2) {
                    Some(r) => Some(parse_targets(r).map_err(err)?),
                    None => None,
                };
                let pick: Box<dyn Fn(&Rule) -> bool> = match name.as_str() {
                    "secruleupdatetargetbyid" => {
                        let ranges = id_ranges(sel).map_err(err)?;
                        Box::new(move |r: &Rule| in_ranges(&ranges, r.id))
                    }
                    "secruleupdatetargetbytag" => {
                        let re = regex::Regex::new(sel).map_err(|e| err(e.to_string()))?;
                        Box::new(move |r: &Rule| r.tags.iter().any(|t| re.is_match(t)))
                    }
                    _ => {
                        let m = sel.to_string();
                        Box::new(move |r: &Rule| r.msg_text == m)
                    }
                };
                let mut hit = false;
                for r in self.rules.iter_mut().filter(|r| pick(r)) {
                    hit = true;
                    match &replaced {
                        Some(old) => {
                            for o in old {
                                r.targets.retain(|t| {
                                    !(t.coll == o.coll && t.sel.same(&o.sel) && t.exclude == o.exclude)
                                });
                            }
                            r.targets.extend(targets.iter().cloned());
                        }
                        None => r.targets.extend(targets.iter().cloned()),
                    }
                }
                if !hit && name == "secruleupdatetargetbyid" {
                    return Err(err(format!("no loaded rule matches `{sel}`")));
                }
            }
            "secruleupdateactionbyid" => {
                let ranges = id_ranges(arg(0)?).map_err(err)?;
                let acts = seclang::actions(arg(1)?).map_err(err)?;
                let idxs: Vec<usize> = (0..self.rules.len())
                    .filter(|&i| in_ranges(&ranges, self.rules[i].id))
                    .collect();
                if idxs.is_empty() {
                    return Err(err(format!("no loaded rule matches `{}`", arg(0)?)));
                }
                for i in idxs {
                    let mut r = self.rules[i].clone();
                    // Tags and transformations are replaced, not added to.
                    if acts.iter().any(|a| a.name.eq_ignore_ascii_case("tag")) {
                        r.tags.clear();
                    }
                    if acts.iter().any(|a| a.name.eq_ignore_ascii_case("t")) {
                        r.transforms.clear();
                    }
                    apply_actions(&mut r, &acts, false).map_err(err)?;
                    self.rules[i] = r;
                }
            }
            other => {
                return Err(err(format!(
                    "unsupported directive (Rampart supports the SecLang subset CRS uses; `{other}` is not in it)"
                )))
            }
        }
        Ok(())
    }

    fn rule(
        &mut self,
        d: &Directive,
        vo: Option<(&String, &String)>,
        actions: Option<&String>,
        dir: &Path,
    ) -> Result<(), WafError> {
        let err = |m: String| WafError::new(&d.pos, format!("{}: {m}", d.name));
        let mut r = Rule {
            id: 0,
            phase: 2,
            pos: d.pos.clone(),
            targets: Vec::new(),
            op: None,
            transforms: Vec::new(),
            pipeline: 0,
            alters: crate::transform::Alters::ALL,
            need: None,
            unmatchable: None,
            group: None,
            target_ids: Vec::new(),
            pf: None,
            multi_match: false,
            literals: None,
            capture: false,
            msg: None,
            msg_text: String::new(),
            logdata: None,
            tags: Vec::new(),
            severity: None,
            disruptive: None,
            status: None,
            log: None,
            setvars: Vec::new(),
            ctls: Vec::new(),
            skip_after: None,
            skip: 0,
            chain: None,
        };
        if let Some((v, o)) = vo {
            r.targets = parse_targets(v).map_err(err)?;
            let (neg, name, arg) = seclang::operator(o);
            r.op = Some(Operator::compile(neg, &name, &arg, dir).map_err(err)?);
        }
        let acts = match actions {
            Some(a) => seclang::actions(a).map_err(err)?,
            None => Vec::new(),
        };
        let is_link = self.pending_chain.is_some();
        let chained = apply_actions(&mut r, &acts, is_link).map_err(err)?;
        if is_link {
            let Some(head) = self.pending_chain.take() else {
                return Ok(());
            };
            r.phase = self.rules[head].phase;
            append_link(&mut self.rules[head], r);
            if chained {
                self.pending_chain = Some(head);
            }
            return Ok(());
        }
        if r.id == 0 {
            return Err(err("a rule needs an `id`".into()));
        }
        if !acts.iter().any(|a| a.name.eq_ignore_ascii_case("phase")) {
            r.phase = 2;
        }
        if let Some(prev) = self.ids.get(&r.id) {
            return Err(err(format!("duplicate rule id {} (first at {prev})", r.id)));
        }
        self.ids.insert(r.id, d.pos.clone());
        // Default transformations come first unless the rule starts with t:none.
        let def = &self.defaults[(r.phase - 1) as usize];
        if !acts.iter().any(|a| {
            a.name.eq_ignore_ascii_case("t")
                && a.value
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case("none"))
        }) && !def.transforms.is_empty()
        {
            let mut t = def.transforms.clone();
            t.append(&mut r.transforms);
            r.transforms = t;
        }
        let i = self.rules.len();
        let phase = r.phase;
        self.rules.push(r);
        self.entries.push((phase, Entry::Rule(i)));
        if chained {
            self.pending_chain = Some(i);
        }
        Ok(())
    }
}

fn append_link(rule: &mut Rule, link: Rule) {
    match rule.chain.as_deref_mut() {
        Some(next) => append_link(next, link),
        None => rule.chain = Some(Box::new(link)),
    }
}

fn parse_phase(v: Option<&str>) -> Result<u8, String> {
    match v.unwrap_or("").to_ascii_lowercase().as_str() {
        "1" => Ok(1),
        "2" | "request" => Ok(2),
        "3" => Ok(3),
        "4" | "response" => Ok(4),
        "5" | "logging" => Ok(5),
        other => Err(format!("bad phase `{other}` (1-5)")),
    }
}

fn push_transform(list: &mut Vec<Transform>, v: Option<&str>) -> Result<(), String> {
    let name = v.unwrap_or("");
    if name.eq_ignore_ascii_case("none") {
        list.clear();
        return Ok(());
    }
    list.push(
        Transform::by_name(name).ok_or_else(|| format!("unknown transformation `t:{name}`"))?,
    );
    Ok(())
}

pub(crate) fn parse_targets(s: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for t in seclang::targets(s)? {
        let coll = Coll::by_name(&t.collection)
            .ok_or_else(|| format!("unknown variable `{}`", t.collection))?;
        out.push(Target {
            coll,
            sel: vars::selector(coll, t.selector.as_deref())?,
            count: t.count,
            exclude: t.exclude,
            tx_slot: None,
            tx_slots: None,
        });
    }
    Ok(out)
}

pub(crate) fn id_ranges(s: &str) -> Result<IdRanges, String> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id `{part}`"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id `{part}`"))?;
        out.push((a.min(b), a.max(b)));
    }
    Ok(out)
}

pub(crate) fn in_ranges(r: &IdRanges, id: u32) -> bool {
    r.iter().any(|&(a, b)| id >= a && id <= b)
}

/// Apply actions to a rule; returns whether it chains.
fn apply_actions(r: &mut Rule, acts: &[RawAction], is_link: bool) -> Result<bool, String> {
    let mut chained = false;
    for a in acts {
        let v = a.value.as_deref();
        let need = || v.ok_or_else(|| format!("action `{}` needs a value", a.name));
        let lname = a.name.to_ascii_lowercase();
        if is_link
            && matches!(
                lname.as_str(),
                "id" | "phase" | "skipafter" | "skip" | "block" | "deny" | "drop" | "allow"
            )
        {
            return Err(format!("`{}` is not allowed in a chained rule", a.name));
        }
        match lname.as_str() {
            "id" => {
                r.id = need()?
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad rule id `{}`", v.unwrap_or("")))?;
                if r.id == 0 {
                    return Err("rule id 0 is not allowed".into());
                }
            }
            "phase" => r.phase = parse_phase(v)?,
            "chain" => chained = true,
            "t" => push_transform(&mut r.transforms, v)?,
            "msg" => {
                r.msg_text = need()?.to_string();
                r.msg = Some(Macro::parse(need()?)?);
            }
            "logdata" => r.logdata = Some(Macro::parse(need()?)?),
            "tag" => r.tags.push(need()?.to_string()),
            "severity" => {
                r.severity = Some(match need()?.to_ascii_uppercase().as_str() {
                    "0" | "EMERGENCY" => 0,
                    "1" | "ALERT" => 1,
                    "2" | "CRITICAL" => 2,
                    "3" | "ERROR" => 3,
                    "4" | "WARNING" => 4,
                    "5" | "NOTICE" => 5,
                    "6" | "INFO" => 6,
                    "7" | "DEBUG" => 7,
                    other => return Err(format!("bad severity `{other}`")),
                })
            }
            "ver" | "rev" | "maturity" | "accuracy" | "auditlog" | "noauditlog"
            | "sanitisematched" | "sanitizematched" | "sanitisearg" | "sanitizearg" => {}
            "log" => r.log = Some(true),
            "nolog" => r.log = Some(false),
            "capture" => r.capture = true,
            "multimatch" => r.multi_match = true,
            "pass" => r.disruptive = Some(Disruptive::Pass),
            "block" => r.disruptive = Some(Disruptive::Block),
            "deny" => r.disruptive = Some(Disruptive::Deny),
            "drop" => r.disruptive = Some(Disruptive::Drop),
            "allow" => r.disruptive = Some(Disruptive::Allow),
            "redirect" => r.disruptive = Some(Disruptive::Redirect),
            "status" => {
                let s: u16 = need()?
                    .parse()
                    .map_err(|_| format!("bad status `{}`", v.unwrap_or("")))?;
                if !(100..=599).contains(&s) {
                    return Err(format!("status {s} out of range"));
                }
                r.status = Some(s);
            }
            "skipafter" => r.skip_after = Some(need()?.to_string()),
            "skip" => r.skip = need()?.parse().map_err(|_| "bad skip count".to_string())?,
            "setvar" => r.setvars.push(parse_setvar(need()?)?),
            "ctl" => r.ctls.push(parse_ctl(need()?)?),
            "initcol" | "setsid" | "setuid" | "expirevar" | "deprecatevar" => {
                // Persistent collections: Rampart keeps IP/SESSION/USER data per transaction
                // only; the action is accepted and its collection starts empty.
                need()?;
            }
            "exec" | "append" | "prepend" | "proxy" | "setenv" => {
                return Err(format!("action `{}` is not supported", a.name))
            }
            other => return Err(format!("unknown action `{other}`")),
        }
    }
    Ok(chained)
}

fn parse_setvar(s: &str) -> Result<SetVar, String> {
    let (unset, s) = match s.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (name, op) = match s.split_once('=') {
        Some((n, v)) => {
            let op = if unset {
                SetOp::Unset
            } else if let Some(x) = v.strip_prefix('+') {
                SetOp::Add(Macro::parse(x)?)
            } else if let Some(x) = v.strip_prefix('-') {
                SetOp::Sub(Macro::parse(x)?)
            } else {
                SetOp::Set(Macro::parse(v)?)
            };
            (n, op)
        }
        None if unset => (s, SetOp::Unset),
        None => (s, SetOp::Set(Macro::parse("1")?)),
    };
    let (coll, key) = name
        .split_once('.')
        .ok_or_else(|| format!("setvar `{s}` needs COLLECTION.NAME"))?;
    let coll = coll.to_ascii_lowercase();
    if !matches!(
        coll.as_str(),
        "tx" | "ip" | "global" | "session" | "user" | "resource"
    ) {
        return Err(format!("setvar: unknown collection `{coll}`"));
    }
    let key = Macro::parse(key)?;
    let fixed = key.literal().map(|k| {
        let k = String::from_utf8_lossy(k);
        if coll == "tx" {
            k.into_owned()
        } else {
            format!("{coll}.{k}")
        }
    });
    Ok(SetVar {
        coll,
        key,
        fixed,
        slot: None,
        op,
    })
}

fn parse_ctl(s: &str) -> Result<Ctl, String> {
    let (name, v) = s
        .split_once('=')
        .ok_or_else(|| format!("ctl `{s}` needs NAME=VALUE"))?;
    let target = |v: &str| -> Result<(String, Target), String> {
        let (sel, t) = v
            .split_once(';')
            .ok_or_else(|| format!("ctl:{name} needs SELECTOR;TARGET"))?;
        let mut ts = parse_targets(t)?;
        if ts.len() != 1 {
            return Err(format!("ctl:{name} takes one target"));
        }
        let mut t = ts.remove(0);
        t.exclude = true;
        Ok((sel.to_string(), t))
    };
    let onoff = |v: &str| match v.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("ctl:{name}: expected On or Off, got `{other}`")),
    };
    let re = |s: &str| regex::Regex::new(s).map_err(|e| format!("ctl:{name}: {e}"));
    Ok(match name.to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RuleRemoveById(id_ranges(v)?),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(re(v)?, Picked::from([])),
        "ruleremovebymsg" => Ctl::RuleRemoveByMsg(v.to_string()),
        "ruleremovetargetbyid" => {
            let (sel, t) = target(v)?;
            Ctl::RuleRemoveTargetById(id_ranges(&sel)?, t)
        }
        "ruleremovetargetbytag" => {
            let (sel, t) = target(v)?;
            Ctl::RuleRemoveTargetByTag(re(&sel)?, t, Picked::from([]))
        }
        "ruleremovetargetbymsg" => {
            let (sel, t) = target(v)?;
            Ctl::RuleRemoveTargetByMsg(sel, t)
        }
        "ruleengine" => Ctl::RuleEngine(
            EngineMode::parse(v).ok_or_else(|| format!("ctl:ruleEngine: bad mode `{v}`"))?,
        ),
        "requestbodyprocessor" => {
            Ctl::RequestBodyProcessor(match v.to_ascii_uppercase().as_str() {
                "URLENCODED" => "URLENCODED",
                "MULTIPART" => "MULTIPART",
                "JSON" => "JSON",
                "XML" => "XML",
                other => {
                    return Err(format!(
                        "ctl:requestBodyProcessor: unknown processor `{other}`"
                    ))
                }
            })
        }
        "forcerequestbodyvariable" => Ctl::ForceRequestBodyVariable(onoff(v)?),
        "requestbodyaccess" => Ctl::RequestBodyAccess(onoff(v)?),
        "responsebodyaccess" => Ctl::ResponseBodyAccess(onoff(v)?),
        "auditengine" | "auditlogparts" | "debugloglevel" => Ctl::LogSetting,
        other => return Err(format!("unsupported ctl `{other}`")),
    })
}

/// Expand a path whose file name may hold `*` and `?` (directories are literal).
fn glob(p: &Path) -> Result<Vec<PathBuf>, String> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') && !name.contains('?') {
        return Ok(if p.exists() {
            vec![p.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}
