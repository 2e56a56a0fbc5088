//! Loading real rule sets: CRS v4 from ../shared/crs and Debian's CRS 3.3.4.

use rampart_waf::{load_crs, CrsOptions};
use std::path::PathBuf;

fn crs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

#[test]
fn crs_v4_loads() {
    let t = std::time::Instant::now();
    let rs = load_crs(&CrsOptions::new(crs_dir())).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded {} rules in {:?}", rs.rules.len(), t.elapsed());
    assert!(rs.rules.len() > 600, "{}", rs.rules.len());
    assert!(rs.rule(942100).is_some());
    assert!(rs.signatures.iter().any(|s| s.starts_with("OWASP_CRS/4")));
}

#[test]
fn debian_crs_3_loads() {
    let dir = PathBuf::from("/usr/share/modsecurity-crs");
    let mut o = CrsOptions::new(&dir);
    o.setup = Some(PathBuf::from("/etc/modsecurity/crs/crs-setup.conf"));
    let rs = load_crs(&o).unwrap_or_else(|e| panic!("{e}"));
    assert!(rs.signatures.iter().any(|s| s.contains("3.3")));
}
