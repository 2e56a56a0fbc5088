//! Rule prefilter: most CRS rules are one `@rx` whose every match must contain one of a few
//! literal strings (`<script`, `union`, `/etc/`...), or a `@pm` phrase list. At load, those
//! strings are worked out from each regex's syntax tree (a `@pm`'s are its phrases) and put
//! into one Aho-Corasick automaton per transformation pipeline. Per request, every value the
//! rules can see is scanned once per pipeline with that pipeline's automaton; a rule none of
//! whose strings occur anywhere in the request (after its own transformations) cannot match, and is skipped
//! without collecting its variables or running its regex. Each value's own result is kept
//! with its transformed form, so a rule that does run tries its regex only on the values that
//! contain one of its strings. One-byte literals (`"`, `(`, a space) are not in the automata:
//! the set of bytes a value holds answers for them, where an automaton would report a match at
//! nearly every position.
//!
//! The literal sets are a necessary condition, never a guess: a set is only used when the tree
//! proves that every match contains one of its strings (compared without ASCII case, which only
//! widens it). Anything the analysis cannot prove (`.`, large classes, optional parts) makes
//! that part of the pattern "anything", and a rule with no provable set is always run.
//!
//! Regexes often also need one of a few bytes (`<`, `=`, `(`, `|`): [`byte_checks`] works that
//! set out the same way, and the engine does not run the regex on a value holding none of
//! them. It also works out the alphabets over which the regex cannot match at all
//! ([`Unmatchable`], for `@pm` too). An alphabet is letters and digits plus some of
//! [`COMMON`]'s ordinary punctuation. A value made only of such bytes is not tried by a rule
//! that cannot match over its alphabet: 932230's shell commands never run on `SKU-00001`.

use regex_syntax::hir::{Class, Hir, HirKind};
use std::collections::BTreeSet;

/// Most strings an intermediate set may hold before it counts as "anything".
const MAX_SET: usize = 64;
/// Most strings a rule's final set may hold.
const MAX_RULE_SET: usize = 256;
/// Longer patterns are not analysed for literals: in CRS they are long word lists whose sets
/// would exceed [`MAX_RULE_SET`] anyway. (Their needed bytes are: see [`required_bytes`].)
const MAX_PATTERN_LEN: usize = 4096;

#[derive(Clone, Debug, Default)]
struct Info {
    /// Every string the node can match, lower-cased, when that is a small finite set.
    exact: Option<BTreeSet<Vec<u8>>>,
    /// Strings one of which every match contains (none empty), when known.
    required: Option<BTreeSet<Vec<u8>>>,
}

fn lower_all(s: BTreeSet<Vec<u8>>) -> BTreeSet<Vec<u8>> {
    s.into_iter().map(|v| v.to_ascii_lowercase()).collect()
}

/// The better of two required sets: the one whose shortest string is longest (then the smaller).
fn better(a: Option<BTreeSet<Vec<u8>>>, b: Option<BTreeSet<Vec<u8>>>) -> Option<BTreeSet<Vec<u8>>> {
    let score = |s: &BTreeSet<Vec<u8>>| {
        let min = s.iter().map(Vec::len).min().unwrap_or(0);
        (min.min(8), usize::MAX - s.len())
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

fn non_empty(s: &BTreeSet<Vec<u8>>) -> bool {
    !s.is_empty() && s.iter().all(|v| !v.is_empty())
}

fn product(a: &BTreeSet<Vec<u8>>, b: &BTreeSet<Vec<u8>>) -> Option<BTreeSet<Vec<u8>>> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let mut out = BTreeSet::new();
    for x in a {
        for y in b {
            let mut v = x.clone();
            v.extend_from_slice(y);
            out.insert(v);
        }
    }
    Some(out)
}

fn class_bytes(c: &Class) -> Option<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    match c {
        Class::Bytes(b) => {
            for r in b.ranges() {
                for x in r.start()..=r.end() {
                    out.insert(vec![x.to_ascii_lowercase()]);
                    if out.len() > 8 {
                        return None;
                    }
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.ranges() {
                for ch in r.start()..=r.end() {
                    let mut buf = [0u8; 4];
                    out.insert(ch.encode_utf8(&mut buf).as_bytes().to_ascii_lowercase());
                    if out.len() > 8 {
                        return None;
                    }
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn info(h: &Hir) -> Info {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(BTreeSet::from([Vec::new()])),
            required: None,
        },
        HirKind::Literal(l) => {
            let s = BTreeSet::from([l.0.to_ascii_lowercase()]);
            Info {
                required: non_empty(&s).then(|| s.clone()),
                exact: Some(s),
            }
        }
        HirKind::Class(c) => {
            let s = class_bytes(c);
            Info {
                required: s.clone(),
                exact: s,
            }
        }
        HirKind::Capture(c) => info(&c.sub),
        HirKind::Repetition(r) => {
            let sub = info(&r.sub);
            match (r.min, r.max) {
                (1, Some(1)) => sub,
                (0, Some(1)) => Info {
                    exact: sub.exact.and_then(|mut e| {
                        e.insert(Vec::new());
                        (e.len() <= MAX_SET).then_some(e)
                    }),
                    required: None,
                },
                (0, _) => Info::default(),
                // At least one repetition: every match contains a match of the sub-pattern.
                _ => Info {
                    exact: None,
                    required: sub.required,
                },
            }
        }
        HirKind::Concat(parts) => {
            let mut best: Option<BTreeSet<Vec<u8>>> = None;
            let mut run: Option<BTreeSet<Vec<u8>>> = Some(BTreeSet::from([Vec::new()]));
            let mut all_exact = true;
            for part in parts {
                let i = info(part);
                best = better(best, i.required);
                match (run.take(), i.exact) {
                    (Some(r), Some(e)) => match product(&r, &e) {
                        Some(p) => run = Some(p),
                        None => {
                            // Too many combinations: close the run, start again here.
                            best = better(best, Some(r).filter(non_empty));
                            all_exact = false;
                            run = Some(e);
                        }
                    },
                    (r, None) => {
                        best = better(best, r.filter(non_empty));
                        all_exact = false;
                        run = Some(BTreeSet::from([Vec::new()]));
                    }
                    (None, Some(e)) => run = Some(e),
                }
            }
            let exact = if all_exact { run.clone() } else { None };
            best = better(best, run.filter(non_empty));
            Info {
                exact,
                required: best,
            }
        }
        HirKind::Alternation(alts) => {
            let mut exact = Some(BTreeSet::new());
            let mut required = Some(BTreeSet::new());
            for alt in alts {
                let i = info(alt);
                exact = match (exact, i.exact) {
                    (Some(mut acc), Some(e)) if acc.len() + e.len() <= MAX_SET => {
                        acc.extend(e);
                        Some(acc)
                    }
                    _ => None,
                };
                required = match (required, i.required) {
                    (Some(mut acc), Some(r)) if acc.len() + r.len() <= MAX_RULE_SET => {
                        acc.extend(r);
                        Some(acc)
                    }
                    _ => None,
                };
                if exact.is_none() && required.is_none() {
                    break;
                }
            }
            Info {
                required: better(required, exact.clone().filter(non_empty)),
                exact,
            }
        }
    }
}

/// The lower-cased strings one of which every match of `pattern` contains, or `None` when that
/// cannot be proven. `pattern` is the final Rust-syntax pattern the engine compiled (bytes,
/// Unicode off, dot matches newline).
pub fn required_literals(pattern: &str, caseless: bool) -> Option<Vec<Vec<u8>>> {
    let hir = parse(pattern, caseless)?;
    let req = info(&hir).required?;
    if !non_empty(&req) || req.len() > MAX_RULE_SET {
        return None;
    }
    Some(lower_all(req).into_iter().collect())
}

/// A set of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// Every byte.
    pub const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    /// The word and bit of byte `b`.
    const fn at(b: u8) -> (usize, u64) {
        ((b >> 6) as usize, 1 << (b & 63))
    }

    pub(crate) const fn of(bytes: &[u8]) -> ByteSet {
        let mut s = [0u64; 4];
        let mut i = 0;
        while i < bytes.len() {
            let (w, bit) = ByteSet::at(bytes[i]);
            s[w] |= bit;
            i += 1;
        }
        ByteSet(s)
    }

    fn insert(&mut self, b: u8) {
        let (w, bit) = ByteSet::at(b);
        self.0[w] |= bit;
    }

    pub fn contains(&self, b: u8) -> bool {
        let (w, bit) = ByteSet::at(b);
        self.0[w] & bit != 0
    }

    /// Whether the set is exactly `{b}`.
    #[inline]
    pub fn is_only(&self, b: u8) -> bool {
        let (w, bit) = ByteSet::at(b);
        let mut only = [0u64; 4];
        only[w] = bit;
        self.0 == only
    }

    /// Does `v` hold any byte of the set?
    #[inline]
    pub fn any_in(&self, v: &[u8]) -> bool {
        v.iter().any(|&b| self.contains(b))
    }

    /// The bytes `lo..=hi`.
    pub(crate) const fn range(lo: u8, hi: u8) -> ByteSet {
        let mut s = [0u64; 4];
        let mut b = lo as usize;
        while b <= hi as usize {
            s[b >> 6] |= 1 << (b & 63);
            b += 1;
        }
        ByteSet(s)
    }

    /// The bytes `v` holds.
    pub fn in_value(v: &[u8]) -> ByteSet {
        let mut s = [0u64; 4];
        for &b in v {
            let (w, bit) = ByteSet::at(b);
            s[w] |= bit;
        }
        ByteSet(s)
    }

    /// Do the two sets share a byte?
    #[inline]
    pub fn meets(&self, o: &ByteSet) -> bool {
        let (a, b) = (self.0, o.0);
        (a[0] & b[0]) | (a[1] & b[1]) | (a[2] & b[2]) | (a[3] & b[3]) != 0
    }

    pub const fn union(self, o: ByteSet) -> ByteSet {
        let (a, b) = (self.0, o.0);
        ByteSet([a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]])
    }

    /// The set with the upper case of each lower-case letter in it added: the bytes a value
    /// may hold for its lower-cased form to meet the set.
    pub fn or_uppercase(self) -> ByteSet {
        let mut s = self;
        for b in b'a'..=b'z' {
            if self.contains(b) {
                s.insert(b.to_ascii_uppercase());
            }
        }
        s
    }

    /// How likely an ordinary value is to hold one of these bytes, roughly: letters and digits
    /// are in nearly every value, separators in many, most punctuation in few.
    fn cost(&self) -> u32 {
        const SEP: ByteSet = ByteSet::of(b" -./_");
        const PUNCT: ByteSet = ByteSet::of(b",;:=()+%&?");
        let mut cost = 0;
        for i in 0..4 {
            let w = self.0[i];
            let (an, sp, pu) = (ALNUM.0[i], SEP.0[i], PUNCT.0[i]);
            let (a, s, p) = (w & an, w & sp, w & pu);
            cost += 16 * a.count_ones()
                + 8 * s.count_ones()
                + 4 * p.count_ones()
                + (w & !(an | sp | pu)).count_ones();
        }
        cost
    }

    /// `b` in both ASCII cases.
    fn folded(b: u8) -> ByteSet {
        let mut s = ByteSet::default();
        s.insert(b.to_ascii_lowercase());
        s.insert(b.to_ascii_uppercase());
        s
    }
}

/// Sets costing more than this (about three letters' worth) are in most values: not worth a
/// check.
const MAX_BYTES_COST: u32 = 48;

/// Bytes one of which every match of `pattern` contains (in either ASCII case), when that can
/// be proven and the set is selective enough to be worth checking before running the regex.
/// For the patterns without a literal set: e.g. an XSS pattern that needs `<` or `=` never
/// runs on a value of letters and digits.
///
/// With it, the alphabets over which the pattern cannot match ([`Unmatchable`]): the syntax
/// tree is parsed once for both.
pub fn byte_checks(pattern: &str) -> (Option<ByteSet>, Option<Unmatchable>) {
    // Long patterns too: see `parse_any`.
    let Some(hir) = parse_any(pattern, false) else {
        return (None, None);
    };
    (
        needed(&hir).filter(|s| s.cost() <= MAX_BYTES_COST),
        Unmatchable::of_hir(&hir),
    )
}

/// The syntax tree of a pattern as the engine compiles it (bytes, Unicode off, dot matches
/// newline), or `None` for patterns too long to be worth a literal analysis.
fn parse(pattern: &str, caseless: bool) -> Option<Hir> {
    if pattern.len() > MAX_PATTERN_LEN {
        return None;
    }
    parse_any(pattern, caseless)
}

/// The syntax tree of any pattern. Parsing one of CRS's long word lists again costs ~1 ms (17
/// of them, ~20 ms of loading CRS, +13 % of its instructions); their needed bytes (941160's
/// `<`) keep the regex off ~6 % of a JSON POST's instructions and ~3 % of a GET's.
fn parse_any(pattern: &str, caseless: bool) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .case_insensitive(caseless)
        .build()
        .parse(pattern)
        .ok()
}

/// One of these bytes is in every match of `h` (`None`: not provable, e.g. it can match empty).
fn needed(h: &Hir) -> Option<ByteSet> {
    let cheapest = |sets: &mut dyn Iterator<Item = ByteSet>| sets.min_by_key(ByteSet::cost);
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        HirKind::Literal(l) => cheapest(&mut l.0.iter().map(|&b| ByteSet::folded(b))),
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = ByteSet::default();
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    s = s.union(ByteSet::folded(b));
                }
            }
            (s != ByteSet::default()).then_some(s)
        }
        HirKind::Class(Class::Unicode(c)) => {
            // The first byte of each character's UTF-8 form.
            let mut s = ByteSet::default();
            for r in c.ranges() {
                if (r.start() as u32) < 0x80 {
                    for b in (r.start() as u32)..=(r.end() as u32).min(0x7f) {
                        s = s.union(ByteSet::folded(b as u8));
                    }
                }
                if (r.end() as u32) >= 0x80 {
                    for b in 0xc0..=0xff {
                        s.insert(b);
                    }
                }
            }
            (s != ByteSet::default()).then_some(s)
        }
        HirKind::Capture(c) => needed(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => needed(&r.sub),
        HirKind::Repetition(_) => None,
        HirKind::Concat(parts) => cheapest(&mut parts.iter().filter_map(needed)),
        HirKind::Alternation(alts) => {
            let mut s = ByteSet::default();
            for a in alts {
                s = s.union(needed(a)?);
                if s.cost() > MAX_BYTES_COST {
                    // Only grows from here: not worth a check.
                    return None;
                }
            }
            Some(s)
        }
    }
}

/// Pipelines with fewer prefilterable rules than this are not worth a scan of the request.
pub const MIN_RULES_PER_PIPELINE: usize = 4;

/// The compiled prefilter of a rule set.
#[derive(Clone, Debug)]
pub struct Prefilter {
    /// Per pipeline number: an automaton of the literals of that pipeline's rules (a value
    /// after one pipeline is only ever tested for its own rules' literals).
    pub automata: Vec<(u32, Automaton)>,
    /// How many rules have a slot.
    pub slots: u32,
    /// The distinct collections (as whole-collection targets) that prefiltered rules read.
    pub colls: Vec<crate::vars::Target>,
    /// The distinct lists of collections that pipelines' prefiltered rules read, as indexes in
    /// `colls`.
    pub lists: Vec<Vec<u32>>,
    /// Per pipeline number: its list's index in `lists`.
    pub list_of: Vec<(u32, u32)>,
    /// Every pipeline's literals in one automaton, for a value that comes out of a pipeline
    /// unchanged (or changed in ASCII case only, which the automata ignore): one scan of the
    /// value serves every such pipeline.
    pub all: Automaton,
}

/// One pipeline's literals.
#[derive(Clone, Debug)]
pub struct Automaton {
    /// One pattern per distinct literal of two bytes or more, matched without ASCII case
    /// (`None`: there are none).
    pub ac: Option<Dfa>,
    /// Pattern number -> the rule slots it stands for.
    pub slots_of: Vec<Vec<u32>>,
    /// The one-byte literals (`"`, `(`, `;`, a space...), answered from the bytes a value
    /// holds: in an automaton they would report a match at nearly every position of many
    /// values. Byte (either ASCII case) -> the rule slots it stands for (empty: none).
    pub singles: Vec<Vec<u32>>,
    /// Every byte with slots in `singles`.
    pub single_bytes: ByteSet,
}

/// A full Aho-Corasick DFA over ASCII-case-folded byte classes, walked byte by byte: one
/// table lookup per byte, and at a match state every pattern that ends there.
///
/// Built here rather than taken from the `aho-corasick` crate for the memory a scan touches.
/// States are numbered breadth first, so the start state and the shallow states an ordinary
/// value keeps coming back to sit together at the front of the table; a row has one entry per
/// byte class (the crate rounds rows up to a power of two). CRS's largest automaton (1,529
/// literals) took 10 MB as the crate's DFA and takes 4 MB here; all of CRS's, 19 MB and 7.4 MB.
#[derive(Clone, Debug)]
pub struct Dfa {
    /// Byte -> its class; the two ASCII cases of a letter share one, and every byte that is in
    /// no pattern is class 0.
    class: [u8; 256],
    /// Classes per row.
    stride: usize,
    /// Row offset + class -> the next state's row offset, with [`MATCH_FLAG`] set when that
    /// state has patterns.
    table: Vec<u32>,
    /// State -> where its patterns (its own and those of its failure chain) start in `outs`.
    outs_at: Vec<u32>,
    outs: Vec<u32>,
}

const NO_STATE: u32 = u32::MAX;
const MATCH_FLAG: u32 = 1 << 31;

impl Dfa {
    /// The automaton of `pats` (ASCII case ignored). Empty patterns are left out: the callers
    /// give literals of two bytes or more.
    fn build(pats: &[&[u8]]) -> Option<Dfa> {
        Dfa::build_within(pats, usize::MAX)
    }

    /// [`Dfa::build`], or `None` when its table could take more than `max_bytes` (one state
    /// per pattern byte).
    pub(crate) fn build_within(pats: &[&[u8]], max_bytes: usize) -> Option<Dfa> {
        let mut class = [0u8; 256];
        let mut stride = 1;
        for p in pats {
            for &b in *p {
                let b = b.to_ascii_lowercase() as usize;
                if class[b] == 0 {
                    // At most 230 distinct bytes once letters are folded: fits a u8.
                    class[b] = u8::try_from(stride).ok()?;
                    stride += 1;
                }
            }
        }
        for b in b'A'..=b'Z' {
            class[b as usize] = class[b.to_ascii_lowercase() as usize];
        }
        // At most one state per pattern byte, and the trie is built dense: the bound is checked
        // before anything that size is made.
        let bound = pats.iter().map(|p| p.len()).sum::<usize>() + 1;
        if bound.checked_mul(stride * 4)? > max_bytes {
            return None;
        }
        // The trie, one dense row per state.
        let mut trans = vec![NO_STATE; stride];
        let mut outs: Vec<Vec<u32>> = vec![Vec::new()];
        for (i, p) in pats.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            let mut s = 0;
            for &b in *p {
                let at = s * stride + class[b as usize] as usize;
                s = match trans[at] {
                    NO_STATE => {
                        let t = outs.len();
                        trans[at] = u32::try_from(t).ok()?;
                        trans.resize(trans.len() + stride, NO_STATE);
                        outs.push(Vec::new());
                        t
                    }
                    t => t as usize,
                };
            }
            outs[s].push(i as u32);
        }
        // Breadth first: failure links, the missing transitions (those of the failure state),
        // and each state's patterns with those of its failure state (shallower, so done).
        let states = outs.len();
        let mut fail = vec![0usize; states];
        let mut order = vec![0usize];
        for t in &mut trans[..stride] {
            match *t {
                NO_STATE => *t = 0,
                child => order.push(child as usize),
            }
        }
        let mut next = 1;
        while next < order.len() {
            let s = order[next];
            next += 1;
            let f = fail[s];
            if f != 0 {
                let inherited = outs[f].clone();
                outs[s].extend(inherited);
            }
            for c in 0..stride {
                let via_fail = trans[f * stride + c];
                match trans[s * stride + c] {
                    NO_STATE => trans[s * stride + c] = via_fail,
                    t => {
                        fail[t as usize] = via_fail as usize;
                        order.push(t as usize);
                    }
                }
            }
        }
        // Renumbered in breadth-first order; an entry holds the next state's row offset
        // (state × stride), so the walk adds the class and loads: no multiply per byte.
        let mut renumber = vec![0u32; states];
        for (i, &o) in order.iter().enumerate() {
            renumber[o] = i as u32;
        }
        if states.checked_mul(stride)? >= MATCH_FLAG as usize {
            return None;
        }
        let mut table = Vec::with_capacity(states * stride);
        for &o in &order {
            table.extend(trans[o * stride..(o + 1) * stride].iter().map(|&t| {
                let t = t as usize;
                (renumber[t] * stride as u32) | if outs[t].is_empty() { 0 } else { MATCH_FLAG }
            }));
        }
        drop(trans);
        let mut outs_at = Vec::with_capacity(states + 1);
        let mut flat = Vec::new();
        for &o in &order {
            outs_at.push(flat.len() as u32);
            flat.extend_from_slice(&outs[o]);
        }
        outs_at.push(flat.len() as u32);
        Some(Dfa {
            class,
            stride,
            table,
            outs_at,
            outs: flat,
        })
    }

    /// Whether any pattern occurs in `v` (stops at the first).
    pub(crate) fn any(&self, v: &[u8]) -> bool {
        let mut at = 0;
        for &b in v {
            let e = self.table[at + self.class[b as usize] as usize];
            if e & MATCH_FLAG != 0 {
                return true;
            }
            at = e as usize;
        }
        false
    }

    /// Call `each` with the number of every pattern occurring in `v`, once per occurrence.
    #[inline]
    fn each_match(&self, v: &[u8], mut each: impl FnMut(usize)) {
        let mut at = 0;
        for &b in v {
            let e = self.table[at + self.class[b as usize] as usize];
            at = (e & !MATCH_FLAG) as usize;
            if e & MATCH_FLAG != 0 {
                let s = at / self.stride;
                let (from, to) = (self.outs_at[s], self.outs_at[s + 1]);
                for &p in &self.outs[from as usize..to as usize] {
                    each(p as usize);
                }
            }
        }
    }
}

impl Prefilter {
    /// Build from each rule slot's literal set and pipeline, and per pipeline the collections
    /// read.
    pub fn build(
        sets: &[(u32, Vec<Vec<u8>>)],
        colls: &std::collections::BTreeMap<u32, BTreeSet<crate::vars::Coll>>,
    ) -> Option<Prefilter> {
        use crate::vars::Coll;
        let mut by_pipe: std::collections::BTreeMap<
            u32,
            std::collections::BTreeMap<&[u8], Vec<u32>>,
        > = Default::default();
        for (slot, (pipe, set)) in sets.iter().enumerate() {
            for lit in set {
                by_pipe
                    .entry(*pipe)
                    .or_default()
                    .entry(lit.as_slice())
                    .or_default()
                    .push(slot as u32);
            }
        }
        if by_pipe.is_empty() {
            return None;
        }
        let mut every: std::collections::BTreeMap<&[u8], Vec<u32>> = Default::default();
        for by_lit in by_pipe.values() {
            for (lit, slots) in by_lit {
                every.entry(lit).or_default().extend(slots);
            }
        }
        let all = Automaton::build(every)?;
        let mut automata = Vec::new();
        for (pipe, by_lit) in by_pipe {
            automata.push((pipe, Automaton::build(by_lit)?));
        }
        let mut all_colls: Vec<crate::vars::Target> = Vec::new();
        let mut coll_ids: std::collections::HashMap<String, u32> = Default::default();
        let mut lists: Vec<Vec<u32>> = Vec::new();
        let mut list_ids: std::collections::HashMap<String, u32> = Default::default();
        let mut list_of = Vec::new();
        for (&p, cs) in colls {
            // ARGS covers ARGS_GET and ARGS_POST; scan each value once.
            let covered = |c: &Coll| match c {
                Coll::ArgsGet | Coll::ArgsPost => cs.contains(&Coll::Args),
                Coll::ArgsGetNames | Coll::ArgsPostNames => cs.contains(&Coll::ArgsNames),
                _ => false,
            };
            let mut ts = Vec::new();
            for &c in cs.iter().filter(|c| !covered(c)) {
                if c == Coll::Xml {
                    // XML's selectors pick different values: text and attributes.
                    for x in ["/*", "//@*"] {
                        ts.push(crate::vars::Target::of(
                            c,
                            crate::vars::Selector::XPath(x.into()),
                        ));
                    }
                } else {
                    ts.push(crate::vars::Target::of(c, crate::vars::Selector::All));
                }
            }
            let sig: Vec<String> = ts.iter().map(crate::vars::Target::signature).collect();
            let n = lists.len() as u32;
            let l = *list_ids.entry(sig.join("|")).or_insert(n);
            if l == n {
                let mut ids = Vec::new();
                for (t, s) in ts.into_iter().zip(sig) {
                    let n = all_colls.len() as u32;
                    let c = *coll_ids.entry(s).or_insert(n);
                    if c == n {
                        all_colls.push(t);
                    }
                    ids.push(c);
                }
                lists.push(ids);
            }
            list_of.push((p, l));
        }
        Some(Prefilter {
            automata,
            slots: sets.len() as u32,
            colls: all_colls,
            lists,
            list_of,
            all,
        })
    }

    /// The index in [`Prefilter::lists`] of the collections a pipeline's prefiltered rules
    /// read.
    pub fn list(&self, pipeline: u32) -> Option<u32> {
        self.list_of
            .iter()
            .find(|(p, _)| *p == pipeline)
            .map(|&(_, l)| l)
    }

    /// The automaton of a pipeline's literals.
    pub fn automaton(&self, pipeline: u32) -> Option<&Automaton> {
        self.automata
            .iter()
            .find(|(p, _)| *p == pipeline)
            .map(|(_, a)| a)
    }
}

impl Automaton {
    /// An automaton of the literals, each standing for its rule slots.
    fn build(by_lit: std::collections::BTreeMap<&[u8], Vec<u32>>) -> Option<Automaton> {
        let (mut pats, mut slots_of) = (Vec::new(), Vec::new());
        let (mut singles, mut single_bytes) = (vec![Vec::new(); 256], ByteSet::default());
        for (lit, slots) in by_lit {
            match *lit {
                [b] => {
                    for c in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                        single_bytes.insert(c);
                        singles[c as usize].clone_from(&slots);
                    }
                }
                _ => {
                    pats.push(lit);
                    slots_of.push(slots);
                }
            }
        }
        // A full DFA: one table lookup per byte. The scan runs over every value once per
        // pipeline, and an NFA's failure transitions cost several times that.
        let ac = if pats.is_empty() {
            None
        } else {
            Some(Dfa::build(&pats)?)
        };
        Some(Automaton {
            ac,
            slots_of,
            singles,
            single_bytes,
        })
    }

    /// Set the bit of every rule slot one of whose literals occurs in `v`, which holds the
    /// bytes `present`. `seen` is scratch space: one bit per pattern.
    pub fn scan(&self, v: &[u8], present: ByteSet, bits: &mut [u64], seen: &mut Vec<u64>) {
        let mut set = |s: u32| {
            if let Some(w) = bits.get_mut(s as usize / 64) {
                *w |= 1 << (s % 64);
            }
        };
        for (i, (&p, &o)) in present.0.iter().zip(&self.single_bytes.0).enumerate() {
            let mut x = p & o;
            while x != 0 {
                let b = i * 64 + x.trailing_zeros() as usize;
                self.singles[b].iter().for_each(|&s| set(s));
                x &= x - 1;
            }
        }
        let Some(ac) = &self.ac else { return };
        seen.clear();
        seen.resize(self.slots_of.len().div_ceil(64), 0);
        ac.each_match(v, |p| {
            let (w, b) = (p / 64, 1u64 << (p % 64));
            if seen[w] & b == 0 {
                seen[w] |= b;
                self.slots_of[p].iter().for_each(|&s| set(s));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn required_bytes_are_a_necessary_condition() {
        let set = |p: &str| {
            super::byte_checks(p).0.map(|s| {
                (0..=255u8)
                    .filter(|&b| s.contains(b))
                    .map(|b| b as char)
                    .collect::<String>()
            })
        };
        assert_eq!(set("<script"), Some("<".into()));
        assert_eq!(set("(?i)[a-z]+=x"), Some("=".into()));
        assert_eq!(set("a<|b>"), Some("<>".into()));
        assert_eq!(
            set("x(?:<|=)?y;"),
            Some(";".into()),
            "optional parts prove nothing"
        );
        assert_eq!(set("^$"), None);
        assert_eq!(set("^.*$"), None);
        assert_eq!(
            set("<|a*"),
            None,
            "a branch that matches empty proves nothing"
        );
        assert_eq!(
            set("[\\xbc]x"),
            Some("\u{bc}".into()),
            "bytes, not characters"
        );
        assert_eq!(set("abc"), Some("Aa".into()), "either case");
        assert_eq!(
            set("[a-z]"),
            None,
            "letters are in most values: not worth a check"
        );
    }

    #[test]
    fn unmatchable_alphabets_are_a_necessary_condition() {
        use super::{alphabet, ByteSet, Unmatchable};
        // The check for pattern `p`, held to the regex on each value it is asked about.
        let checker = |p: &str| {
            let u = super::byte_checks(p).1;
            let re = regex::bytes::Regex::new(p).unwrap();
            let p = p.to_string();
            move |v: &str| {
                let a = alphabet(&ByteSet::in_value(v.as_bytes()));
                let excluded = u.as_ref().is_some_and(|u| u.excludes(a));
                assert!(
                    !(excluded && re.is_match(v.as_bytes())),
                    "{p} excludes {v:?}, which it matches"
                );
                excluded
            }
        };
        let excluded = |p: &str, v: &str| checker(p)(v);
        // A shell command after a separator.
        let cmd = r"(?i)(?:[;|&`]|\$\(|\s)(?:ls|cat)\b";
        assert!(excluded(cmd, "json.items.0.sku"));
        assert!(excluded(cmd, "SKU-00001"));
        assert!(
            !excluded(cmd, "wrap please, thanks"),
            "a space may come before"
        );
        assert!(!excluded(cmd, "x;ls"), "`;` may come before");
        // Event handlers need `=`.
        let on = r#"(?i)[\s"'/]on[a-z]{3,50}\s*=[^=]"#;
        assert!(excluded(on, "json.customer.name"));
        assert!(!excluded(on, "a onload=x"));
        assert!(!excluded("^$", "x"), "matches empty: no alphabet excluded");
        assert!(!excluded("(?i)ab", "AB"), "either case");
        assert!(
            !excluded("a{2}", "a"),
            "bytes it could match: tried, too short or not"
        );
        // Phrases: a phrase made of ordinary bytes matches over their alphabet.
        let pm = |v: &[&str], value: &str| {
            Unmatchable::of_phrases(v.iter().map(|p| p.as_bytes()))
                .is_some_and(|u| u.excludes(alphabet(&ByteSet::in_value(value.as_bytes()))))
        };
        assert!(pm(&["/etc/passwd", "~root"], "ann smith"));
        assert!(!pm(&["/etc/passwd", "~root"], "/x/"));
        assert!(
            !pm(&["/etc/passwd", "cmd"], "ann smith"),
            "a word of letters"
        );
        assert_eq!(alphabet(&ByteSet::in_value(b"a<b")), super::NO_ALPHABET);
        // Small patterns of the shapes CRS uses, against many short values over a few
        // letters, ordinary punctuation and bytes beyond it: every value the check rules out
        // must be one the regex does not match, and the check must rule some out.
        let patterns = [
            r"(?:^|[;|])\s*ls\b",
            r"a[.\-]b|x@",
            r"(?i)[ (]on[a-z]+\s*=",
            r"(?:ab|b\.)+c?;?",
            r"^[a-z]+$|=\(",
            r"[^a-z0-9]{2}",
            r"\bl(?:s|[@_]x)",
        ];
        let mut ruled_out = 0;
        for p in patterns {
            let excluded = checker(p);
            for (_, v) in
                crate::testgen::values(0x9e37_79b9_7f4a_7c15, b"abxlsonc .-@=(_;<", 0..=6, 20_000)
            {
                let v = String::from_utf8(v).unwrap();
                ruled_out += excluded(&v) as usize;
            }
        }
        assert!(ruled_out > 10_000, "{ruled_out} values ruled out");
    }

    /// The DFA walk finds every pattern occurring in a value, overlapping or not, in either
    /// case: the same set as a plain substring search.
    #[test]
    fn dfa_walk_finds_every_pattern() {
        let pats: [&[u8]; 7] = [b"on", b"no", b"onon", b"Or", b"ro", b"oon", b"n o"];
        let dfa = super::Dfa::build(&pats).unwrap();
        let mut checked = 0;
        for (_, v) in crate::testgen::values(0x2545_f491_4f6c_dd1d, b"onORx ", 0..=9, 20_000) {
            checked += finds_as_substring_search(&dfa, &pats, &v);
        }
        assert!(checked > 10_000, "{checked} occurrences");
    }

    /// Holds `dfa.each_match` on `v` to a substring search (ASCII case ignored) for each
    /// pattern; returns how many of the patterns occur.
    fn finds_as_substring_search<P: AsRef<[u8]>>(dfa: &super::Dfa, pats: &[P], v: &[u8]) -> usize {
        let mut found = vec![false; pats.len()];
        dfa.each_match(v, |p| found[p] = true);
        let lower = v.to_ascii_lowercase();
        let mut occur = 0;
        for (p, pat) in pats.iter().enumerate() {
            let pat = pat.as_ref().to_ascii_lowercase();
            let naive = lower.windows(pat.len()).any(|w| w == pat.as_slice());
            assert_eq!(
                found[p],
                naive,
                "pattern {p} in {:?}",
                String::from_utf8_lossy(v)
            );
            occur += naive as usize;
        }
        occur
    }

    #[test]
    fn dfa_with_a_large_table_finds_every_pattern() {
        // 40 patterns of 1,000 bytes: ~40,000 states, deep chains of failure links.
        let pats: Vec<Vec<u8>> =
            crate::testgen::values(0x9e37_79b9_7f4a_7c15, b"abcdAB", 1000..=1000, 40)
                .map(|(_, v)| v)
                .collect();
        let refs: Vec<&[u8]> = pats.iter().map(|p| &p[..]).collect();
        let dfa = super::Dfa::build(&refs).unwrap();
        let mut checked = 0;
        for (state, noise) in crate::testgen::values(0x1234_5678_9abc_def1, b"abcdx", 0..=40, 400) {
            // Noise, a pattern (in the other ASCII case half of the time) or most of one, noise.
            let p = &pats[state as usize % pats.len()];
            let cut = if state % 3 == 0 { p.len() - 1 } else { p.len() };
            let mut v = noise.clone();
            if state % 2 == 0 {
                v.extend(p[..cut].to_ascii_uppercase());
            } else {
                v.extend_from_slice(&p[..cut]);
            }
            v.extend_from_slice(&noise);
            checked += finds_as_substring_search(&dfa, &pats, &v);
        }
        assert!(checked > 100, "{checked} occurrences");
    }

    use super::required_literals as req;

    fn set(v: &[&str]) -> Option<Vec<Vec<u8>>> {
        let mut s: Vec<Vec<u8>> = v.iter().map(|x| x.as_bytes().to_vec()).collect();
        s.sort();
        Some(s)
    }

    #[test]
    fn literals_words_and_alternations() {
        assert_eq!(req("(?i)<script[^>]*>", false), set(&["<script"]));
        assert_eq!(
            req("(?i)\\b(?:union|select)\\b", false),
            set(&["select", "union"])
        );
        assert_eq!(req("colou?r", false), set(&["color", "colour"]));
        assert_eq!(req("(?:ab|cd)+x", false), set(&["ab", "cd"]));
        assert_eq!(req("[\"'`]\\s*or", false), set(&["or"]));
    }

    #[test]
    fn unprovable_parts_give_no_set() {
        assert_eq!(req(".*", false), None);
        assert_eq!(req("a?", false), None);
        assert_eq!(req("[a-z]+", false), None);
        assert_eq!(req("foo|.*", false), None);
    }

    #[test]
    fn every_match_contains_a_required_literal() {
        // Property: for many patterns and inputs, a match implies a literal is present.
        let pats = [
            "(?i)(?:union\\s+select|select\\s+from)",
            "(?i)on(?:error|load)\\s*=",
            "(?i)\\.\\./|/etc/passwd",
            "[\"'`]\\s*;\\s*(?:drop|alter)",
            "(?i)java\\s*script:",
            "ab{2,}c",
        ];
        let inputs = [
            "UNION   SELECT x",
            "select from",
            "onLoad =",
            "../x",
            "/ETC/passwd",
            "\"; DROP",
            "JavaScript:",
            "jav ascript:",
            "abbbc",
            "abc",
            "nothing here",
        ];
        for p in pats {
            let lits = req(p, false).unwrap_or_default();
            let re = regex::bytes::RegexBuilder::new(p)
                .unicode(false)
                .build()
                .unwrap();
            for i in inputs {
                if re.is_match(i.as_bytes()) {
                    let low = i.to_ascii_lowercase();
                    assert!(
                        lits.is_empty()
                            || lits.iter().any(|l| low
                                .as_bytes()
                                .windows(l.len())
                                .any(|w| w == l.as_slice())),
                        "{p} matched {i:?} without any of {lits:?}"
                    );
                }
            }
        }
    }
}

/// The punctuation ordinary values are mostly made of, beside letters and digits: names like
/// `json.items.0.sku`, `SKU-00001`, `ann@example.com`, `gift wrap please, thanks`, header
/// values like `en-US,en;q=0.5`.
pub const COMMON: &[u8; 12] = b" .-_,@:/;=()";

/// Letters (both cases) and digits.
const ALNUM: ByteSet =
    ByteSet::of(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");

/// A value's alphabet when it holds nothing but letters, digits and [`COMMON`] bytes: the
/// set of the [`COMMON`] bytes it holds, bit `i` for `COMMON[i]`. A value holding any other
/// byte has none ([`NO_ALPHABET`]).
pub fn alphabet(present: &ByteSet) -> u16 {
    const ORDINARY: ByteSet = ALNUM.union(ByteSet::of(COMMON));
    let p = present.0;
    let o = ORDINARY.0;
    if (p[0] & !o[0]) | (p[1] & !o[1]) | p[2] | p[3] != 0 {
        return NO_ALPHABET;
    }
    let mut x = 0;
    for (i, &b) in COMMON.iter().enumerate() {
        x |= (present.contains(b) as u16) << i;
    }
    x
}

/// The alphabet of a value holding bytes beyond letters, digits and [`COMMON`].
pub const NO_ALPHABET: u16 = u16::MAX;

/// One bit per alphabet (letters, digits and a subset of [`COMMON`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Alphabets([u64; 64]);

impl Alphabets {
    const NONE: Alphabets = Alphabets([0; 64]);
    const ALL: Alphabets = Alphabets([u64::MAX; 64]);

    fn and(mut self, o: &Alphabets) -> Alphabets {
        self.0.iter_mut().zip(&o.0).for_each(|(a, b)| *a &= b);
        self
    }

    fn or(mut self, o: &Alphabets) -> Alphabets {
        self.0.iter_mut().zip(&o.0).for_each(|(a, b)| *a |= b);
        self
    }

    /// The alphabets holding `COMMON[i]`.
    const fn with(i: usize) -> Alphabets {
        let mut s = [0u64; 64];
        let mut x = 0;
        while x < 1 << COMMON.len() {
            if x >> i & 1 == 1 {
                s[x >> 6] |= 1 << (x & 63);
            }
            x += 1;
        }
        Alphabets(s)
    }
}

/// [`Alphabets::with`] for each [`COMMON`] byte.
static WITH: [Alphabets; COMMON.len()] = {
    let mut w = [Alphabets::NONE; COMMON.len()];
    let mut i = 0;
    while i < COMMON.len() {
        w[i] = Alphabets::with(i);
        i += 1;
    }
    w
};

/// The alphabets over which a pattern cannot match at all: a value of letters, digits and
/// [`COMMON`] bytes whose alphabet is one of them is not tried. E.g. 932230's shell commands
/// need a separator such as `;`, `|` or a space before them, so it never runs on
/// `json.items.0.sku` or `SKU-00001`; 941120's event handlers need a `=`.
///
/// A necessary condition like the others here: any match of the pattern on a value is made of
/// the value's bytes, so it is a string over the value's alphabet; when the syntax tree shows
/// that no string over that alphabet matches (look-arounds taken as always holding, which only
/// widens the answer), neither can the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Unmatchable(Box<[u64; 64]>);

impl std::fmt::Debug for Unmatchable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "Unmatchable({n} of {} alphabets)", 1 << COMMON.len())
    }
}

impl Unmatchable {
    /// For an `@rx` pattern; `None` when it can match over every alphabet.
    fn of_hir(hir: &Hir) -> Option<Unmatchable> {
        Unmatchable::from_matchable(matchable(hir, &WITH))
    }

    /// For `@pm` phrases (compared without ASCII case).
    pub fn of_phrases<'a>(phrases: impl Iterator<Item = &'a [u8]>) -> Option<Unmatchable> {
        let mut any = Alphabets::NONE;
        for p in phrases {
            let mut all = Alphabets::ALL;
            for &b in p {
                all = all.and(&byte_alphabets(b, &WITH));
            }
            any = any.or(&all);
            if any == Alphabets::ALL {
                return None;
            }
        }
        Unmatchable::from_matchable(any)
    }

    fn from_matchable(m: Alphabets) -> Option<Unmatchable> {
        let mut u = Box::new([0u64; 64]);
        for (o, w) in u.iter_mut().zip(m.0) {
            *o = !w;
        }
        u.iter().any(|&w| w != 0).then_some(Unmatchable(u))
    }

    /// Is a value with this [`alphabet`] sure not to match?
    #[inline(always)]
    pub fn excludes(&self, alphabet: u16) -> bool {
        alphabet != NO_ALPHABET && self.0[(alphabet >> 6) as usize] >> (alphabet & 63) & 1 == 1
    }
}

/// The alphabets holding byte `b` (either ASCII case).
fn byte_alphabets(b: u8, with: &[Alphabets]) -> Alphabets {
    if ALNUM.contains(b) {
        return Alphabets::ALL;
    }
    match COMMON.iter().position(|&c| c == b) {
        Some(i) => with[i],
        None => Alphabets::NONE,
    }
}

/// The alphabets holding some byte of `s`.
fn set_alphabets(s: &ByteSet, with: &[Alphabets]) -> Alphabets {
    if s.meets(&ALNUM) {
        return Alphabets::ALL;
    }
    let mut m = Alphabets::NONE;
    for (i, &c) in COMMON.iter().enumerate() {
        if s.contains(c) {
            m = m.or(&with[i]);
        }
    }
    m
}

/// The alphabets over which `h` matches some string.
fn matchable(h: &Hir, with: &[Alphabets]) -> Alphabets {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Alphabets::ALL,
        HirKind::Literal(l) => {
            let mut m = Alphabets::ALL;
            for &b in l.0.iter() {
                m = m.and(&byte_alphabets(b, with));
            }
            m
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = ByteSet::default();
            for r in c.ranges() {
                s = s.union(ByteSet::range(r.start(), r.end()));
            }
            set_alphabets(&s, with)
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut s = ByteSet::default();
            for r in c.ranges() {
                if (r.start() as u32) < 0x80 {
                    s = s.union(ByteSet::range(
                        r.start() as u8,
                        (r.end() as u32).min(0x7f) as u8,
                    ));
                }
            }
            set_alphabets(&s, with)
        }
        HirKind::Capture(c) => matchable(&c.sub, with),
        HirKind::Repetition(r) if r.min == 0 => Alphabets::ALL,
        HirKind::Repetition(r) => matchable(&r.sub, with),
        HirKind::Concat(parts) => {
            let mut m = Alphabets::ALL;
            for p in parts {
                m = m.and(&matchable(p, with));
                if m == Alphabets::NONE {
                    break;
                }
            }
            m
        }
        HirKind::Alternation(alts) => {
            let mut m = Alphabets::NONE;
            for a in alts {
                m = m.or(&matchable(a, with));
                if m == Alphabets::ALL {
                    break;
                }
            }
            m
        }
    }
}
