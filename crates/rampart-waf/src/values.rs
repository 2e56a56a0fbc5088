//! The values a transaction's rules inspect, numbered, with what was learnt about each.
//!
//! A value from a collection that stays put in memory (arguments, headers, cookies, the path,
//! the body: [`crate::vars::is_stable`]) gets a number the first time a rule reads it. Under
//! that number the transaction keeps the value's *forms*: the value after each transformation
//! pipeline, computed once (running only the transformations whose trigger bytes the value
//! holds), with the bytes it holds and the prefilter's findings on it (which rule slots'
//! literals occur). A value holding none of the bytes that could make a pipeline's steps
//! (other than `lowercase`) change it has one form as it is and one lower-cased, shared by
//! every such pipeline ([`Rule::alters`]); on ordinary requests that is nine
//! forms out of ten. A form that a pipeline left unchanged up to ASCII case shares one scan of
//! the raw value by every pipeline's literals.
//!
//! The phase-level prefilter asks, per pipeline, whether any value of the collections its
//! prefiltered rules read holds a rule's literal ([`Values::universe`]). Each collection is
//! resolved once per transaction, with the OR of its values' raw scans and the bytes they
//! hold; only the values a pipeline changes are transformed and scanned for it, and a
//! collection none of whose values it changes is passed over. A group's union per pipeline
//! is built the same way from the OR of its members' raw scans.
//!
//! Rules whose target lists are identical (most CRS argument rules read the same
//! `REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|REQUEST_COOKIES_NAMES|ARGS_NAMES|ARGS|XML:/*`)
//! share a *group*: the list is resolved once, and per pipeline the group keeps the union of its
//! values' findings: a prefiltered rule none of whose literals occurs in any of its group's
//! values is passed over without visiting a value. Groups that list the same target (most
//! read `ARGS`, `ARGS_NAMES` and the cookies) share its resolution: each distinct target is
//! resolved and numbered once per transaction.
//!
//! Everything here is dropped with [`Values::clear`] when the request body or the response
//! changes the collections.

use crate::prefilter::{ByteSet, Prefilter};
use crate::rules::Rule;
use crate::transform::apply_all;
use crate::vars::{Coll, Data, Fnv, Item};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// "Not computed yet" (form indexes), "not scanned" (prefilter bits).
pub(crate) const NONE: u32 = u32::MAX;

/// Where a value lives in [`Data`] (address, length): hashed as one word, compared in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Addr(usize, usize);

impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64((self.0 as u64) ^ ((self.1 as u64) << 40));
    }
}

/// One value after one pipeline.
#[derive(Clone, Debug)]
struct Form {
    vid: u32,
    /// The transformed value, when the pipeline changed it.
    out: Option<Vec<u8>>,
    /// The bytes the form holds.
    present: ByteSet,
    /// Its [`crate::prefilter::alphabet`].
    alphabet: u16,
    /// Where its prefilter bits start in [`Values::cand`] ([`NONE`]: not scanned yet).
    cand: u32,
}

/// Per pipeline, the union of a group's findings.
#[derive(Clone, Debug)]
struct Union {
    pipeline: u32,
    /// Where the OR of the members' prefilter bits starts in [`Values::ucand`] ([`NONE`]: not
    /// worked out, or the pipeline has no automaton).
    cand: u32,
}

#[derive(Clone, Debug, Default)]
struct Group {
    built: bool,
    /// The numbers of the values the target list resolves to, in order, with the collection
    /// each comes from.
    members: Vec<(u32, Coll)>,
    /// Where the OR of the members' scans as they are starts in `ucand` ([`NONE`]: not
    /// worked out), and the bytes any member holds.
    raw: u32,
    held: ByteSet,
    unions: Vec<Union>,
}

/// What a transaction's buffers are sized by: pipelines (at least one), words of prefilter
/// bits, groups, group targets, prefilter collections.
type Shape = (usize, usize, usize, usize, usize);

fn shape_of(pipelines: usize, slots: u32, groups: usize, targets: usize, colls: usize) -> Shape {
    (
        pipelines.max(1),
        (slots as usize).div_ceil(64),
        groups,
        targets,
        colls,
    )
}

thread_local! {
    /// The values transactions on this thread left behind, emptied.
    static SPARE: std::cell::RefCell<crate::spare::Spares<Values>> =
        const { std::cell::RefCell::new(crate::spare::Spares::new()) };
}

/// The numbered values of one transaction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Values {
    /// The numbered values' bytes.
    arena: Vec<u8>,
    /// Value number -> its bytes in `arena`.
    spans: Vec<(u32, u32)>,
    /// Value number -> the bytes it holds.
    present: Vec<ByteSet>,
    /// Value number -> where its scan by every pipeline's literals starts in `cand` ([`NONE`]:
    /// not scanned yet).
    raw_cand: Vec<u32>,
    /// Value number -> its form as it is and lower-cased, shared by every pipeline that
    /// leaves it so ([`NONE`] until made).
    shared: Vec<[u32; 2]>,
    by_addr: HashMap<Addr, u32, BuildHasherDefault<Fnv>>,
    pipelines: usize,
    /// Value number × pipeline -> its form's index in `forms` ([`NONE`] until computed).
    form_of: Vec<u32>,
    forms: Vec<Form>,
    /// Prefilter bits, `words` per scanned form.
    cand: Vec<u64>,
    /// Group unions' prefilter bits, `words` each.
    ucand: Vec<u64>,
    words: usize,
    seen: Vec<u64>,
    /// By group number (see [`Rule::group`]).
    groups: Vec<Group>,
    /// By target number ([`Rule::target_ids`]): where the target's values start in
    /// `tmembers` and how many there are (start [`NONE`]: not resolved yet).
    tspans: Vec<(u32, u32)>,
    /// The targets' values (numbers) and their collections, target after target.
    tmembers: Vec<(u32, Coll)>,
    /// By prefilter collection ([`Prefilter::colls`]): where its values start in `cmembers`,
    /// how many there are, where the OR of their scans as they are starts in `cbits`, and
    /// the bytes any of them holds (start [`NONE`]: not resolved yet).
    cspans: Vec<(u32, u32, u32, ByteSet)>,
    cmembers: Vec<u32>,
    cbits: Vec<u64>,
    /// An empty buffer for resolving targets, kept for its allocation.
    scratch: Vec<crate::vars::Item<'static>>,
}

impl Values {
    pub fn new(
        pipelines: usize,
        slots: u32,
        groups: usize,
        targets: usize,
        colls: usize,
    ) -> Values {
        // Room for the values of an ordinary request (a few dozen, a few hundred forms).
        const VALUES: usize = 64;
        const FORMS: usize = 512;
        let (pipelines, words, ..) = shape_of(pipelines, slots, groups, targets, colls);
        Values {
            arena: Vec::with_capacity(2048),
            spans: Vec::with_capacity(VALUES),
            present: Vec::with_capacity(VALUES),
            raw_cand: Vec::with_capacity(VALUES),
            shared: Vec::with_capacity(VALUES),
            by_addr: HashMap::with_capacity_and_hasher(VALUES, Default::default()),
            pipelines,
            form_of: Vec::with_capacity(VALUES * pipelines),
            forms: Vec::with_capacity(FORMS),
            cand: Vec::with_capacity(FORMS * words),
            ucand: Vec::new(),
            words,
            seen: Vec::new(),
            groups: vec![
                Group {
                    raw: NONE,
                    ..Group::default()
                };
                groups
            ],
            tspans: vec![(NONE, 0); targets],
            tmembers: Vec::with_capacity(VALUES * 4),
            cspans: vec![(NONE, 0, 0, ByteSet::default()); colls],
            cmembers: Vec::with_capacity(VALUES),
            cbits: Vec::new(),
            scratch: Vec::with_capacity(VALUES),
        }
    }

    /// A transaction's values, empty: ones an earlier transaction on this thread left
    /// behind ([`Values::give_back`]) when they are of the same rule set's shape, so that
    /// their allocations (~80-110 KiB for CRS, and every group's member list) are
    /// reused instead of made again per request.
    pub fn take(
        pipelines: usize,
        slots: u32,
        groups: usize,
        targets: usize,
        colls: usize,
    ) -> Values {
        let shape = shape_of(pipelines, slots, groups, targets, colls);
        SPARE
            .with(|s| s.borrow_mut().take(|v| v.shape() == shape))
            .unwrap_or_else(|| Values::new(pipelines, slots, groups, targets, colls))
    }

    /// Leave these values, emptied, for a later transaction on this thread, unless a large
    /// request made them big: those allocations are let go. A thread keeps up to 64 spares
    /// in 8 MiB (CRS's values for an ordinary request take ~80-110 KiB).
    pub fn give_back(mut self) {
        const MAX_KEPT: usize = 1024 * 1024;
        const SPARES: usize = 64;
        const BUDGET: usize = 8 * 1024 * 1024;
        use std::mem::size_of;
        // spans, present, raw_cand, shared, by_addr
        let per_value = size_of::<(u32, u32)>()
            + size_of::<ByteSet>()
            + size_of::<u32>()
            + size_of::<[u32; 2]>()
            + size_of::<(Addr, u32)>();
        let members: usize = self
            .groups
            .iter()
            .map(|g| g.members.capacity())
            .sum::<usize>()
            + self.tmembers.capacity();
        let big = self.arena.capacity()
            + self.spans.capacity() * per_value
            + self.forms.capacity() * size_of::<Form>()
            + (self.cand.capacity() + self.ucand.capacity() + self.cbits.capacity()) * 8
            + (self.form_of.capacity() + self.cmembers.capacity()) * 4
            + members * size_of::<(u32, Coll)>()
            + self.scratch.capacity() * size_of::<crate::vars::Item>();
        if big > MAX_KEPT {
            return;
        }
        self.clear();
        SPARE.with(|s| s.borrow_mut().put(self, big, SPARES, BUDGET));
    }

    fn shape(&self) -> Shape {
        (
            self.pipelines,
            self.words,
            self.groups.len(),
            self.tspans.len(),
            self.cspans.len(),
        )
    }

    /// Forget everything (the collections changed); allocations are kept.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.spans.clear();
        self.present.clear();
        self.raw_cand.clear();
        self.shared.clear();
        self.by_addr.clear();
        self.form_of.clear();
        self.forms.clear();
        self.cand.clear();
        self.ucand.clear();
        self.tspans.fill((NONE, 0));
        self.tmembers.clear();
        self.cspans.fill((NONE, 0, 0, ByteSet::default()));
        self.cmembers.clear();
        self.cbits.clear();
        for g in &mut self.groups {
            g.built = false;
            g.raw = NONE;
            g.members.clear();
            g.unions.clear();
        }
    }

    /// Room for `n` more values.
    pub fn reserve(&mut self, n: usize) {
        self.by_addr.reserve(n);
        self.spans.reserve(n);
        self.present.reserve(n);
        self.raw_cand.reserve(n);
        self.shared.reserve(n);
        self.form_of.reserve(n * self.pipelines);
    }

    /// The number of the value `v`. A value stored in `Data` (`in_data`) is numbered by where
    /// it lives: the same memory is the same value until [`Values::clear`]. A value computed
    /// on the spot gets a number of its own.
    pub fn number(&mut self, v: &[u8], in_data: bool) -> u32 {
        let addr = Addr(v.as_ptr() as usize, v.len());
        if in_data {
            if let Some(&n) = self.by_addr.get(&addr) {
                return n;
            }
        }
        let n = self.spans.len() as u32;
        let at = self.arena.len() as u32;
        self.arena.extend_from_slice(v);
        self.spans.push((at, v.len() as u32));
        self.present.push(ByteSet::in_value(v));
        self.raw_cand.push(NONE);
        self.shared.push([NONE; 2]);
        self.form_of
            .extend(std::iter::repeat_n(NONE, self.pipelines));
        if in_data {
            self.by_addr.insert(addr, n);
        }
        n
    }

    /// The bytes value `vid` holds.
    pub fn present(&self, vid: u32) -> ByteSet {
        self.present[vid as usize]
    }

    /// Value `vid` as it was read.
    pub fn raw(&self, vid: u32) -> &[u8] {
        let (at, len) = self.spans[vid as usize];
        &self.arena[at as usize..(at + len) as usize]
    }

    /// Value `vid` after `r`'s pipeline, transformed on first use. Returns the form's index.
    #[inline]
    pub fn form(&mut self, vid: u32, r: &Rule) -> u32 {
        let present = self.present[vid as usize];
        if !r.alters.beyond_case(&present) {
            // Most values: no step but `lowercase` would run. One form per value (as it is,
            // or lower-cased) serves every such pipeline.
            let lowered = r.alters.any(&present);
            let f = self.shared[vid as usize][lowered as usize];
            if f != NONE {
                return f;
            }
            return self.shared_form(vid, lowered);
        }
        let at = vid as usize * self.pipelines + r.pipeline as usize;
        let f = self.form_of[at];
        if f != NONE {
            return f;
        }
        self.new_form(vid, r, at)
    }

    #[inline(never)]
    fn new_form(&mut self, vid: u32, r: &Rule, at: usize) -> u32 {
        let out = apply_all(&r.transforms, self.raw(vid), self.present[vid as usize]);
        let f = self.push_form(vid, out);
        self.form_of[at] = f;
        f
    }

    /// Value `vid` as it is, or lower-cased: a form shared by the pipelines that leave it so.
    #[inline(never)]
    fn shared_form(&mut self, vid: u32, lowered: bool) -> u32 {
        let out = lowered.then(|| self.raw(vid).to_ascii_lowercase());
        let f = self.push_form(vid, out);
        self.shared[vid as usize][lowered as usize] = f;
        f
    }

    fn push_form(&mut self, vid: u32, out: Option<Vec<u8>>) -> u32 {
        let present = match &out {
            Some(o) => ByteSet::in_value(o),
            None => self.present[vid as usize],
        };
        let f = self.forms.len() as u32;
        self.forms.push(Form {
            vid,
            out,
            present,
            alphabet: crate::prefilter::alphabet(&present),
            cand: NONE,
        });
        f
    }

    /// Value `vid` after `r`'s pipeline (its form's index), or `None` when the prefilter shows
    /// `r`'s operator cannot match it: none of the rule's literals, none of the bytes every
    /// match contains, or an alphabet it cannot match over. (Inlined into both evaluation
    /// loops: as a call it cost the JSON POST 1.4 % more instructions.)
    #[inline(always)]
    pub fn candidate(&mut self, vid: u32, r: &Rule, pf: Option<&Prefilter>) -> Option<u32> {
        let f = self.form(vid, r);
        if let Some(slot) = r.pf {
            if self.literal(f, r, pf, slot) == Some(false) {
                return None;
            }
        }
        let form = &self.forms[f as usize];
        r.bytes_may_match(&form.present, || form.alphabet)
            .then_some(f)
    }

    /// A form's value.
    pub fn text(&self, f: u32) -> &[u8] {
        let form = &self.forms[f as usize];
        match &form.out {
            Some(o) => o,
            None => self.raw(form.vid),
        }
    }

    /// The prefilter bits of form `f` (of `r`'s pipeline), scanning it on first use. `None`
    /// when the pipeline has no automaton.
    pub fn scan(&mut self, f: u32, r: &Rule, pf: Option<&Prefilter>) -> Option<&[u64]> {
        let mut at = self.forms[f as usize].cand;
        if at == NONE {
            let pf = pf?;
            let ac = pf.automaton(r.pipeline)?;
            let vid = self.forms[f as usize].vid as usize;
            let (a, len) = self.spans[vid];
            let raw = &self.arena[a as usize..(a + len) as usize];
            at = match &self.forms[f as usize].out {
                // The pipeline changed nothing the automata see: the value's scan by every
                // pipeline's literals answers for this one's too (its slots are among them).
                out if out.as_ref().is_none_or(|o| o.eq_ignore_ascii_case(raw)) => {
                    self.raw_scan(vid, pf)
                }
                out => {
                    let text = out.as_deref().unwrap_or(raw);
                    let start = self.cand.len();
                    self.cand.resize(start + self.words, 0);
                    let present = ByteSet::in_value(text);
                    ac.scan(text, present, &mut self.cand[start..], &mut self.seen);
                    start as u32
                }
            };
            self.forms[f as usize].cand = at;
        }
        Some(&self.cand[at as usize..at as usize + self.words])
    }

    /// Where value `vid`'s scan as it is, by every pipeline's literals, starts in `cand`
    /// (scanned on first use).
    fn raw_scan(&mut self, vid: usize, pf: &Prefilter) -> u32 {
        if self.raw_cand[vid] == NONE {
            let (a, len) = self.spans[vid];
            let start = self.cand.len();
            self.cand.resize(start + self.words, 0);
            let raw = &self.arena[a as usize..(a + len) as usize];
            let present = self.present[vid];
            pf.all
                .scan(raw, present, &mut self.cand[start..], &mut self.seen);
            self.raw_cand[vid] = start as u32;
        }
        self.raw_cand[vid]
    }

    /// For the phase-level prefilter: the OR of the prefilter bits of every value in list `l`
    /// (the collections that the prefiltered rules of `r`'s pipeline read), after that
    /// pipeline. Each collection is resolved once per transaction, with the OR of its values'
    /// scans as they are and the bytes they hold; per pipeline, only the values it changes by
    /// more than ASCII case are transformed and scanned again, and a collection none of whose
    /// values it changes is not visited. (A changed value's scan as it is counts too: more
    /// bits than needed, never fewer.)
    pub fn universe(&mut self, l: u32, data: &Data, r: &Rule, pf: &Prefilter) -> Vec<u64> {
        let mut bits = vec![0u64; self.words];
        for &c in &pf.lists[l as usize] {
            let (start, len, at, held) = self.collection(c, data, pf);
            for (b, w) in bits.iter_mut().zip(&self.cbits[at as usize..]) {
                *b |= w;
            }
            if !r.alters.beyond_case_any(&held) {
                continue;
            }
            for k in start..start + len {
                let vid = self.cmembers[k as usize];
                if !r.alters.beyond_case(&self.present[vid as usize]) {
                    continue;
                }
                let f = self.form(vid, r);
                if let Some(c) = self.scan(f, r, Some(pf)) {
                    for (b, w) in bits.iter_mut().zip(c) {
                        *b |= w;
                    }
                }
            }
        }
        bits
    }

    /// Prefilter collection `c` resolved and numbered, its values scanned as they are (on
    /// first use): see [`Values::cspans`].
    fn collection(&mut self, c: u32, data: &Data, pf: &Prefilter) -> (u32, u32, u32, ByteSet) {
        let span = self.cspans[c as usize];
        if span.0 != NONE {
            return span;
        }
        let mut items = crate::vars::recycle(std::mem::take(&mut self.scratch));
        data.resolve(&pf.colls[c as usize], &|_, _| false, &mut items);
        let (start, len) = (self.cmembers.len() as u32, items.len() as u32);
        let at = self.cbits.len();
        self.cbits.resize(at + self.words, 0);
        let mut held = ByteSet::default();
        for it in &items {
            let (vid, _) = self.number_item(it);
            self.cmembers.push(vid);
            held = held.union(self.present[vid as usize]);
            let s = self.raw_scan(vid as usize, pf) as usize;
            for k in 0..self.words {
                self.cbits[at + k] |= self.cand[s + k];
            }
        }
        self.scratch = crate::vars::recycle(items);
        let span = (start, len, at as u32, held);
        self.cspans[c as usize] = span;
        span
    }

    /// Whether form `f` holds one of slot `slot`'s literals (`None`: the pipeline has no
    /// automaton).
    fn literal(&mut self, f: u32, r: &Rule, pf: Option<&Prefilter>, slot: u32) -> Option<bool> {
        self.scan(f, r, pf).map(|c| bit(c, slot))
    }

    /// Resolve group `g` (the target list of link `r`) on first use. `r`'s own `!` exclusions
    /// are part of the list; `ctl` removals are not (the engine passes over the members of a
    /// collection removed whole, see [`Values::member_coll`]; a link that has only some keys
    /// of a collection removed does not use its group).
    pub fn build_group(&mut self, g: u32, data: &Data, r: &Rule) {
        if self.groups[g as usize].built {
            return;
        }
        let mut items = crate::vars::recycle(std::mem::take(&mut self.scratch));
        let mut members = std::mem::take(&mut self.groups[g as usize].members);
        if !r.target_ids.is_empty() {
            // The group is its targets' values one after the other, and groups that share a
            // target resolve it once. A target an exclusion of the link applies to is
            // resolved here, less what is excluded.
            let ex = |c: Coll, k: &[u8]| r.targets.iter().any(|t| t.excludes(c, k));
            for (t, &tid) in r.targets.iter().zip(&r.target_ids) {
                if t.exclude {
                    continue;
                }
                if tid == NONE {
                    items.clear();
                    data.resolve(t, &ex, &mut items);
                    for it in &items {
                        let m = self.number_item(it);
                        members.push(m);
                    }
                    continue;
                }
                let (mut at, mut len) = self.tspans[tid as usize];
                if at == NONE {
                    items.clear();
                    data.resolve(t, &|_, _| false, &mut items);
                    at = self.tmembers.len() as u32;
                    len = items.len() as u32;
                    for it in &items {
                        let m = self.number_item(it);
                        self.tmembers.push(m);
                    }
                    self.tspans[tid as usize] = (at, len);
                }
                members.extend_from_slice(&self.tmembers[at as usize..(at + len) as usize]);
            }
        } else {
            resolve_own(data, r, &mut items);
            for it in &items {
                members.push(self.number_item(it));
            }
        }
        self.scratch = crate::vars::recycle(items);
        let group = &mut self.groups[g as usize];
        group.members = members;
        group.built = true;
    }

    /// An item's value numbered (by where it lives when it is borrowed from `Data`), with
    /// its collection.
    fn number_item(&mut self, it: &Item<'_>) -> (u32, Coll) {
        (
            self.number(&it.value, matches!(it.value, Cow::Borrowed(_))),
            it.coll,
        )
    }

    pub fn group_len(&self, g: u32) -> usize {
        self.groups[g as usize].members.len()
    }

    /// The number of group `g`'s `i`-th value.
    pub fn member(&self, g: u32, i: usize) -> u32 {
        self.groups[g as usize].members[i].0
    }

    /// The collection group `g`'s `i`-th value comes from.
    pub fn member_coll(&self, g: u32, i: usize) -> Coll {
        self.groups[g as usize].members[i].1
    }

    fn union_at(&mut self, g: u32, pipeline: u32) -> usize {
        let us = &mut self.groups[g as usize].unions;
        match us.iter().position(|u| u.pipeline == pipeline) {
            Some(i) => i,
            None => {
                us.push(Union {
                    pipeline,
                    cand: NONE,
                });
                us.len() - 1
            }
        }
    }

    /// Where in `ucand` the OR of group `g`'s members' scans as they are starts, and the bytes
    /// any member holds (worked out on first use).
    fn group_raw(&mut self, g: u32, pf: &Prefilter) -> (usize, ByteSet) {
        let grp = &self.groups[g as usize];
        if grp.raw != NONE {
            return (grp.raw as usize, grp.held);
        }
        let start = self.ucand.len();
        self.ucand.resize(start + self.words, 0);
        let mut held = ByteSet::default();
        for i in 0..self.group_len(g) {
            let vid = self.member(g, i);
            held = held.union(self.present[vid as usize]);
            let s = self.raw_scan(vid as usize, pf) as usize;
            for k in 0..self.words {
                self.ucand[start + k] |= self.cand[s + k];
            }
        }
        let grp = &mut self.groups[g as usize];
        grp.raw = start as u32;
        grp.held = held;
        (start, held)
    }

    /// Could any of group `g`'s values, after `r`'s pipeline, hold one of slot `slot`'s
    /// literals? `None` when the pipeline has no automaton.
    pub fn group_has_literal(
        &mut self,
        g: u32,
        r: &Rule,
        pf: Option<&Prefilter>,
        slot: u32,
    ) -> Option<bool> {
        pf?.automaton(r.pipeline)?;
        let u = self.union_at(g, r.pipeline);
        let mut at = self.groups[g as usize].unions[u].cand;
        if at == NONE {
            // The members' scans as they are (once per group), and then only the members this
            // pipeline changes. (A changed member's scan as it is counts too: more bits than
            // needed, never fewer.)
            let (raw, held) = self.group_raw(g, pf?);
            let start = self.ucand.len();
            self.ucand.extend_from_within(raw..raw + self.words);
            if r.alters.beyond_case_any(&held) {
                for i in 0..self.group_len(g) {
                    let vid = self.member(g, i);
                    if !r.alters.beyond_case(&self.present[vid as usize]) {
                        continue;
                    }
                    let f = self.form(vid, r);
                    self.scan(f, r, pf);
                    let fa = self.forms[f as usize].cand as usize;
                    for k in 0..self.words {
                        self.ucand[start + k] |= self.cand[fa + k];
                    }
                }
            }
            at = start as u32;
            self.groups[g as usize].unions[u].cand = at;
        }
        Some(bit(&self.ucand[at as usize..], slot))
    }
}

/// The values of link `r`'s targets, less its own `!` exclusions (not `ctl` removals), in
/// order: what a group holds.
pub(crate) fn resolve_own<'a>(data: &'a Data, r: &'a Rule, out: &mut Vec<Item<'a>>) {
    let ex = |c: Coll, k: &[u8]| r.targets.iter().any(|t| t.excludes(c, k));
    let none = |_: Coll, _: &[u8]| false;
    let ex: &dyn Fn(Coll, &[u8]) -> bool = if r.targets.iter().any(|t| t.exclude) {
        &ex
    } else {
        &none
    };
    for t in r.targets.iter().filter(|t| !t.exclude) {
        data.resolve(t, ex, out);
    }
}

fn bit(words: &[u64], slot: u32) -> bool {
    words
        .get(slot as usize / 64)
        .is_some_and(|w| w & (1 << (slot % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::Values;

    /// The buffers a transaction leaves behind are taken by the next one of the same shape,
    /// emptied; big ones (a request with thousands of values) are let go, and another shape
    /// gets buffers of its own.
    #[test]
    fn spare_values_are_kept_empty_and_small() {
        let mut v = Values::take(3, 70, 2, 1, 1);
        v.number(b"hello", false);
        let arena = v.arena.capacity();
        v.give_back();
        let v = Values::take(3, 70, 2, 1, 1);
        assert_eq!((v.spans.len(), v.arena.len()), (0, 0), "emptied");
        assert_eq!(v.arena.capacity(), arena, "the same buffers");
        v.give_back();
        let v = Values::take(4, 70, 2, 1, 1);
        assert_eq!(v.pipelines, 4, "another shape: new buffers");
        let mut v = Values::take(3, 70, 2, 1, 1);
        for i in 0..20_000u32 {
            v.number(&i.to_le_bytes().repeat(16), false);
        }
        v.give_back();
        let v = Values::take(3, 70, 2, 1, 1);
        assert!(v.arena.capacity() < 64 * 1024, "a big one is not kept");
    }
}
