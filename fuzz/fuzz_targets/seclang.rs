//! The SecLang reader and rule compiler on arbitrary text: an error or a rule set, never a
//! panic or a hang. Inputs that would read other files (`Include`, `*FromFile`) are skipped:
//! the fuzzer would otherwise open whatever path it invents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_waf::Loader;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lower = text.to_ascii_lowercase();
    if lower.contains("include") || lower.contains("fromfile") {
        return;
    }
    let name: Arc<str> = Arc::from("fuzz.conf");
    let mut l = Loader::new();
    if l.text(&text, &name, Path::new("/nonexistent-fuzz-dir")).is_ok() {
        let _ = l.finish();
    }
});
