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

/// CRS settings given in `before_rules` (between setup and rules) or `extra_rules` (after) both
/// reach the phase-2 rules that read them: 920360 (argument name too long) with the limit 100.
#[test]
fn settings_files_reach_the_rules_before_or_after_crs() {
    use rampart_waf::explain;
    let f = std::env::temp_dir().join(format!("rampart-settings-{}.conf", std::process::id()));
    std::fs::write(
        &f,
        "SecAction \"id:8800100,phase:1,pass,nolog,setvar:tx.arg_name_length=100\"\n",
    )
    .unwrap();
    let raw = format!(
        "GET /?{}=foo HTTP/1.1\r\nHost: localhost\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
        "1".repeat(101)
    );
    for before in [true, false] {
        let mut o = CrsOptions::new(crs_dir());
        if before {
            o.before_rules = vec![f.clone()];
        } else {
            o.extra_rules = vec![f.clone()];
        }
        let rs = std::sync::Arc::new(load_crs(&o).unwrap());
        let tx = explain::run(rs, &explain::parse_raw(raw.as_bytes()).unwrap());
        let ids: Vec<u32> = tx.matched.iter().map(|m| m.id).collect();
        assert!(ids.contains(&920360), "before={before}: {ids:?}");
    }
}
