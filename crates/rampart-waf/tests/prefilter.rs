//! The prefilters never change a verdict: every request of CRS's regression suite (5,003
//! tests, read from ../shared/crs) runs through the request phases with the literal prefilter,
//! the regexes' needed-byte and alphabet checks and the shared target-list groups, and without any of
//! them (each rule resolving its own targets and trying every value), at paranoia level 4,
//! and must fire exactly the same rules with the same values.

use rampart_waf::{explain, ftw, load_crs, CrsOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn prefilters_fire_the_same_rules_on_the_whole_crs_suite() {
    let crs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let mut o = CrsOptions::new(&crs);
    o.paranoia_level = 4;
    let with = Arc::new(load_crs(&o).unwrap_or_else(|e| panic!("{e}")));
    assert!(
        with.prefilter.is_some() && with.rules.iter().filter(|r| r.pf.is_some()).count() > 100,
        "the prefilter covers most rules"
    );
    let links = |rs: &rampart_waf::RuleSet| {
        rs.rules
            .iter()
            .flat_map(|r| r.links())
            .filter(|l| l.need.is_some())
            .count()
    };
    assert!(links(&with) > 60, "byte checks on {} links", links(&with));
    let alphabets = |rs: &rampart_waf::RuleSet| {
        rs.rules
            .iter()
            .flat_map(|r| r.links())
            .filter(|l| l.unmatchable.is_some())
            .count()
    };
    assert!(
        alphabets(&with) > 100,
        "alphabet checks on {} links",
        alphabets(&with)
    );
    let grouped = with
        .rules
        .iter()
        .flat_map(|r| r.links())
        .filter(|l| l.group.is_some())
        .count();
    assert!(grouped > 200, "{grouped} links in groups");
    let mut plain = (*with).clone();
    plain.prefilter = None;
    for r in &mut plain.rules {
        let mut link = Some(r);
        while let Some(l) = link {
            l.need = None;
            l.unmatchable = None;
            l.group = None;
            link = l.chain.as_deref_mut();
        }
    }
    assert_eq!(links(&plain) + alphabets(&plain), 0);
    let without = Arc::new(plain);
    let cases = ftw::load_dir(&crs.join("tests/regression/tests")).expect("CRS tests");
    let mut compared = 0;
    for case in &cases {
        for stage in &case.test.stages {
            let Ok(raw) = ftw::raw_request(&stage.input, &[]) else {
                continue;
            };
            let Ok(req) = explain::parse_raw(&raw) else {
                continue;
            };
            let fired = |rs: &Arc<rampart_waf::RuleSet>| {
                explain::run(rs.clone(), &req)
                    .matched
                    .iter()
                    .map(|m| (m.id, m.var.clone(), m.value.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(fired(&with), fired(&without), "{}", case.name);
            compared += 1;
        }
    }
    assert!(compared > 4500, "only {compared} requests compared");
}
