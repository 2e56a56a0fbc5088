//! From config to guards: each route's `waf` block (or the global `guards.waf`) becomes a
//! [`WafGuard`]; identical rule sets are loaded once and shared.

use crate::guard::{Settings, WafGuard};
use crate::{load_crs, CrsOptions, EngineMode, RuleSet};
use rampart_config::{ConfigError, LoadedConfig, Waf};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::sync::Arc;

/// One guard per route (`None` where the WAF is off), in route order.
pub fn build(lc: &LoadedConfig) -> Result<Vec<Option<Arc<WafGuard>>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut cache: HashMap<String, Option<Arc<RuleSet>>> = HashMap::new();
    let mut out = Vec::new();
    for r in &lc.config.routes {
        let block: Option<&Spanned<Waf>> = r.value.waf.as_ref().or(lc.config.guards.waf.as_ref());
        let Some(block) = block.filter(|b| b.value.enabled) else {
            out.push(None);
            continue;
        };
        let w = &block.value;
        let Some(crs) = &w.crs else {
            errors.push(ConfigError {
                loc: lc.loc(block),
                message: "waf: `crs` (the OWASP CRS directory) is required".into(),
            });
            out.push(None);
            continue;
        };
        let mut o = CrsOptions::new(lc.resolve_path(&crs.value));
        o.setup = w.setup.as_ref().map(|s| lc.resolve_path(&s.value));
        o.paranoia_level = w.paranoia_level.value;
        o.detection_paranoia_level = w.detection_paranoia_level.as_ref().map(|d| d.value);
        o.inbound_threshold = w.anomaly_thresholds.inbound;
        o.outbound_threshold = w.anomaly_thresholds.outbound;
        // Monitor mode runs CRS detection-only: a denial is logged and rules go on.
        o.engine = if w.mode == rampart_config::Mode::Monitor {
            EngineMode::DetectionOnly
        } else {
            EngineMode::On
        };
        o.response_body_access = w.inspect_responses;
        o.response_mime_types = w.response_mime_types.clone();
        o.extra_rules = w
            .extra_rules
            .iter()
            .map(|f| lc.resolve_path(&f.value))
            .collect();
        let mut bad = false;
        for e in &w.exclusions {
            let ev = &e.value;
            if crate::rules::id_ranges(&ev.rule.value).is_err() || ev.rule.value.trim().is_empty() {
                errors.push(ConfigError {
                    loc: lc.loc(&ev.rule),
                    message: format!(
                        "waf.exclusions: `{}` is not a rule id or id range",
                        ev.rule.value
                    ),
                });
                bad = true;
                continue;
            }
            if let Some(t) = &ev.target {
                if let Err(m) = crate::rules::parse_targets(&t.value) {
                    errors.push(ConfigError {
                        loc: lc.loc(t),
                        message: format!("waf.exclusions: target `{}`: {m}", t.value),
                    });
                    bad = true;
                    continue;
                }
            }
            o.exclusions.push((
                ev.rule.value.clone(),
                ev.target.as_ref().map(|t| t.value.clone()),
            ));
        }
        if w.paranoia_level.value == 0 || w.paranoia_level.value > 4 {
            errors.push(ConfigError {
                loc: lc.loc(&w.paranoia_level),
                message: "waf.paranoia_level must be 1 to 4".into(),
            });
            bad = true;
        }
        if bad {
            out.push(None);
            continue;
        }
        let key = format!("{o:?}");
        let rs = match cache.get(&key) {
            Some(rs) => rs.clone(),
            None => {
                let loaded = match load_crs(&o) {
                    Ok(rs) => Some(Arc::new(rs)),
                    Err(e) => {
                        errors.push(ConfigError {
                            loc: lc.loc(crs),
                            message: format!("waf: {e}"),
                        });
                        None
                    }
                };
                cache.insert(key, loaded.clone());
                loaded
            }
        };
        out.push(rs.map(|rules| {
            Arc::new(WafGuard {
                rules,
                s: Settings {
                    mode: w.mode,
                    max_body: w.max_body_bytes.0 as usize,
                    max_response: w.max_response_bytes.0 as usize,
                    skip_typed_inputs: w.skip_typed_inputs,
                },
            })
        }));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
