//! A transaction reuses the buffers the previous one on its thread left behind (see
//! `Values::take`): nothing of one request may leak into the next. Every request of CRS's
//! regression suite (read from ../shared/crs) runs twice, once after the request before it in
//! the suite and once after the request after it, and must fire the same rules each time.

use rampart_waf::{explain, ftw, load_crs, CrsOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn a_request_fires_the_same_rules_whatever_ran_before_it() {
    let crs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let mut o = CrsOptions::new(&crs);
    o.paranoia_level = 4;
    let rs = Arc::new(load_crs(&o).unwrap_or_else(|e| panic!("{e}")));
    let cases = ftw::load_dir(&crs.join("tests/regression/tests")).expect("CRS tests");
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
    let fired = |req| {
        explain::run(rs.clone(), req)
            .matched
            .iter()
            .map(|m| (m.id, m.var.clone(), m.value.clone()))
            .collect::<Vec<_>>()
    };
    let forward: Vec<_> = requests.iter().map(|(_, r)| fired(r)).collect();
    let mut backward: Vec<_> = requests.iter().rev().map(|(_, r)| fired(r)).collect();
    backward.reverse();
    let mut fired_any = 0;
    for (((name, _), f), b) in requests.iter().zip(&forward).zip(&backward) {
        assert_eq!(f, b, "{name}");
        fired_any += !f.is_empty() as usize;
    }
    assert!(fired_any > 4000, "{fired_any} requests fired rules");
}
