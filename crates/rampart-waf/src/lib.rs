//! Rampart's WAF: a rule engine for the SecLang subset the OWASP Core Rule Set uses, which
//! loads CRS v4 unmodified, plus Rampart's own SQL-injection and XSS detectors.
//!
//! - [`seclang`] reads rule files into directives; [`rules`] compiles them into a [`RuleSet`].
//! - [`vars`], [`transform`], [`operator`], [`macros`] are the language's parts.
//! - [`body`] holds the request body processors (URL-encoded, multipart, JSON, XML).
//! - [`engine`] runs one [`Transaction`] through phases 1-5; [`prefilter`] lets it skip rules
//!   whose required literals occur nowhere in the request, and values that lack them;
//!   `values` numbers the values rules read and keeps each one's transformed forms, and the
//!   target lists rules share (groups) resolved once.
//! - [`sqli`] and [`xss`] are `@detectSQLi` and `@detectXSS`.
//! - [`guard`] plugs the engine into the proxy; [`build`] turns config into guards.
//! - [`ftw`] reads CRS's go-ftw regression tests; [`explain`] shows why a request fires.

pub mod body;
pub mod build;
pub mod engine;
pub mod explain;
pub mod ftw;
pub mod guard;
pub mod macros;
pub mod operator;
pub mod prefilter;
pub mod rules;
pub mod seclang;
mod spare;
pub mod sqli;
#[cfg(test)]
mod testgen;
pub mod transform;
pub(crate) mod values;
pub mod vars;
pub mod xss;

pub use build::build;
pub use engine::{Interruption, Matched, Transaction};
pub use guard::WafGuard;
pub use rules::{EngineMode, Loader, RuleSet};
pub use seclang::WafError;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The engine base rules (body processors by content type, body-error rules).
pub const BASE_RULES: &str = include_str!("base.conf");

/// How to load CRS.
#[derive(Clone, Debug)]
pub struct CrsOptions {
    /// CRS directory, holding `rules/*.conf`.
    pub crs: PathBuf,
    /// Setup file; default `crs-setup.conf` or `crs-setup.conf.example` in `crs`.
    pub setup: Option<PathBuf>,
    pub paranoia_level: u8,
    pub detection_paranoia_level: Option<u8>,
    pub inbound_threshold: u32,
    pub outbound_threshold: u32,
    pub engine: EngineMode,
    pub response_body_access: bool,
    pub response_mime_types: Vec<String>,
    /// SecLang files loaded after the setup file, before CRS's rules.
    pub before_rules: Vec<PathBuf>,
    /// SecLang files loaded after CRS.
    pub extra_rules: Vec<PathBuf>,
    /// SecLang text loaded after the setup file (before the rules): test harness settings.
    pub extra_setup: Option<String>,
    /// `(rule ids, optional target)` exclusions.
    pub exclusions: Vec<(String, Option<String>)>,
}

impl CrsOptions {
    pub fn new(crs: impl Into<PathBuf>) -> Self {
        CrsOptions {
            crs: crs.into(),
            setup: None,
            paranoia_level: 1,
            detection_paranoia_level: None,
            inbound_threshold: 5,
            outbound_threshold: 4,
            engine: EngineMode::On,
            response_body_access: false,
            response_mime_types: vec![
                "text/plain".into(),
                "text/html".into(),
                "text/xml".into(),
                "application/json".into(),
            ],
            before_rules: Vec::new(),
            extra_rules: Vec::new(),
            extra_setup: None,
            exclusions: Vec::new(),
        }
    }
}

fn text_err(name: &str, e: impl std::fmt::Display) -> WafError {
    WafError::new(
        &seclang::Pos {
            file: Arc::from(name),
            line: 0,
        },
        e.to_string(),
    )
}

/// Load CRS the way its docs say: engine base, setup file, Rampart's settings, then
/// `rules/*.conf` in name order, then extra rules and exclusions.
pub fn load_crs(o: &CrsOptions) -> Result<RuleSet, WafError> {
    let mut l = Loader::new();
    let here = Path::new(".");
    l.text(BASE_RULES, &Arc::from("<rampart base rules>"), here)?;
    let setup = match &o.setup {
        Some(s) => s.clone(),
        None => {
            let a = o.crs.join("crs-setup.conf");
            if a.exists() {
                a
            } else {
                o.crs.join("crs-setup.conf.example")
            }
        }
    };
    l.file(&setup)?;
    let mut settings = format!(
        "SecResponseBodyAccess {}\nSecResponseBodyMimeTypesClear\nSecResponseBodyMimeType {}\n",
        if o.response_body_access { "On" } else { "Off" },
        o.response_mime_types.join(" ")
    );
    settings.push_str(&format!(
        "SecRuleEngine {}\n",
        match o.engine {
            EngineMode::On => "On",
            EngineMode::DetectionOnly => "DetectionOnly",
            EngineMode::Off => "Off",
        }
    ));
    if !(1..=4).contains(&o.paranoia_level) {
        return Err(text_err(
            "<rampart settings>",
            "paranoia_level must be 1 to 4",
        ));
    }
    let mut vars = format!(
        "setvar:tx.blocking_paranoia_level={},setvar:tx.inbound_anomaly_score_threshold={},setvar:tx.outbound_anomaly_score_threshold={}",
        o.paranoia_level, o.inbound_threshold, o.outbound_threshold
    );
    if let Some(d) = o.detection_paranoia_level {
        if !(o.paranoia_level..=4).contains(&d) {
            return Err(text_err(
                "<rampart settings>",
                "detection_paranoia_level must be between paranoia_level and 4",
            ));
        }
        vars.push_str(&format!(",setvar:tx.detection_paranoia_level={d}"));
    }
    settings.push_str(&format!(
        "SecAction \"id:8800001,phase:1,pass,nolog,{vars}\"\n"
    ));
    l.text(&settings, &Arc::from("<rampart settings>"), here)?;
    if let Some(extra) = &o.extra_setup {
        l.text(extra, &Arc::from("<harness settings>"), here)?;
    }
    for f in &o.before_rules {
        l.file(f)?;
    }
    let rules_dir = o.crs.join("rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules_dir)
        .map_err(|e| {
            text_err(
                &rules_dir.display().to_string(),
                format!("cannot list CRS rules: {e}"),
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(text_err(
            &rules_dir.display().to_string(),
            "no *.conf rule files here (is `crs` the CRS directory?)",
        ));
    }
    for f in &files {
        l.file(f)?;
    }
    for f in &o.extra_rules {
        l.file(f)?;
    }
    let mut ex = String::new();
    for (rule, target) in &o.exclusions {
        match target {
            None => ex.push_str(&format!("SecRuleRemoveById {rule}\n")),
            Some(t) => ex.push_str(&format!("SecRuleUpdateTargetById {rule} \"!{t}\"\n")),
        }
    }
    if !ex.is_empty() {
        l.text(&ex, &Arc::from("<waf exclusions>"), here)?;
    }
    l.finish()
}
