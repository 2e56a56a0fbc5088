//! The engine's shortcuts never change a verdict, on every request of CRS's regression suite
//! (5,003 tests, read from ../shared/crs), at paranoia level 4:
//! - with the literal prefilter, the regexes' needed-byte and alphabet checks, the multiMatch
//!   links' literal automata and the shared target-list groups, and without any of them
//!   (each rule resolving its own targets and trying every value), the same rules fire with
//!   the same values;
//! - a transaction reuses the buffers earlier ones on its thread left behind (values, TX
//!   slots), and nothing of one request leaks into the next: each request fires the same
//!   rules and ends with the same TX variables whether it runs after the request before it
//!   in the suite (with dozens of others alive at once) or after the one after it.

use rampart_waf::rules::Rule;
use rampart_waf::{explain, ftw, load_crs, CrsOptions, RuleSet};
use std::path::PathBuf;
use std::sync::Arc;

fn crs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

/// CRS at paranoia level 4 (every rule runs).
fn crs_pl4() -> Arc<RuleSet> {
    let mut o = CrsOptions::new(crs_dir());
    o.paranoia_level = 4;
    Arc::new(load_crs(&o).unwrap_or_else(|e| panic!("{e}")))
}

/// Every request of the suite that parses, with its test's name.
fn crs_requests() -> Vec<(String, explain::RawRequest)> {
    let cases = ftw::load_dir(&crs_dir().join("tests/regression/tests")).expect("CRS tests");
    let mut requests = Vec::new();
    for case in &cases {
        for stage in &case.test.stages {
            let Ok(raw) = ftw::raw_request(&stage.input, &[]) else {
                continue;
            };
            if let Ok(req) = explain::parse_raw(&raw) {
                requests.push((case.name.clone(), req));
            }
        }
    }
    assert!(requests.len() > 4500, "only {} requests", requests.len());
    requests
}

/// The rules a request fires, with the variable and value each matched.
fn fired(rs: &Arc<RuleSet>, req: &explain::RawRequest) -> Vec<(u32, String, Vec<u8>)> {
    outcome(rs, req).0
}

/// How many rule links (chain links included) `pick` picks.
fn links(rs: &RuleSet, pick: impl Fn(&Rule) -> bool) -> usize {
    rs.rules
        .iter()
        .flat_map(|r| r.links())
        .filter(|l| pick(l))
        .count()
}

#[test]
fn prefilters_fire_the_same_rules_on_the_whole_crs_suite() {
    let with = crs_pl4();
    assert!(
        with.prefilter.is_some() && with.rules.iter().filter(|r| r.pf.is_some()).count() > 100,
        "the prefilter covers most rules"
    );
    let needs = |rs: &RuleSet| links(rs, |l| l.need.is_some());
    let alphabets = |rs: &RuleSet| links(rs, |l| l.unmatchable.is_some());
    let literal_sets = links(&with, |l| l.literals.is_some());
    assert!(
        literal_sets >= 4,
        "literal automata on {literal_sets} multiMatch links"
    );
    assert!(needs(&with) > 60, "byte checks on {} links", needs(&with));
    assert!(
        alphabets(&with) > 100,
        "alphabet checks on {} links",
        alphabets(&with)
    );
    let grouped = links(&with, |l| l.group.is_some());
    assert!(grouped > 200, "{grouped} links in groups");
    let mut plain = (*with).clone();
    plain.prefilter = None;
    for r in &mut plain.rules {
        let mut link = Some(r);
        while let Some(l) = link {
            l.need = None;
            l.unmatchable = None;
            l.group = None;
            l.literals = None;
            link = l.chain.as_deref_mut();
        }
    }
    assert_eq!(needs(&plain) + alphabets(&plain), 0);
    let without = Arc::new(plain);
    for (name, req) in &crs_requests() {
        assert_eq!(fired(&with, req), fired(&without, req), "{name}");
    }
}

/// The rules a request fires (with the variable and value each matched) and the TX
/// variables it ends with (sorted by name).
type Outcome = (Vec<(u32, String, Vec<u8>)>, Vec<(String, Vec<u8>, Vec<u8>)>);

fn outcome(rs: &Arc<RuleSet>, req: &explain::RawRequest) -> Outcome {
    outcome_of(&explain::run(rs.clone(), req))
}

fn outcome_of(tx: &rampart_waf::Transaction) -> Outcome {
    let fired = tx
        .matched
        .iter()
        .map(|m| (m.id, m.var.clone(), m.value.clone()))
        .collect();
    let mut vars: Vec<_> = tx
        .data
        .tx
        .iter()
        .map(|(k, (name, v))| (k.to_string(), name.clone(), v.clone()))
        .collect();
    vars.sort();
    (fired, vars)
}

#[test]
fn a_request_fires_the_same_rules_whatever_ran_before_it() {
    let rs = crs_pl4();
    let requests = crs_requests();
    // Forwards with up to 40 transactions alive at once, let go out of order, as a busy
    // worker holds them: the thread's pools then hold several spares.
    let mut alive = std::collections::VecDeque::new();
    let mut forward = Vec::new();
    for (i, (_, r)) in requests.iter().enumerate() {
        let tx = explain::run(rs.clone(), r);
        forward.push(outcome_of(&tx));
        alive.push_back(tx);
        if alive.len() > 40 || i % 7 == 0 {
            drop(alive.remove(i % alive.len()));
        }
    }
    drop(alive);
    let mut backward: Vec<_> = requests
        .iter()
        .rev()
        .map(|(_, r)| outcome(&rs, r))
        .collect();
    backward.reverse();
    let mut fired_any = 0;
    for (((name, _), f), b) in requests.iter().zip(&forward).zip(&backward) {
        assert_eq!(f, b, "{name}");
        fired_any += !f.0.is_empty() as usize;
    }
    assert!(fired_any > 4000, "{fired_any} requests fired rules");
}
