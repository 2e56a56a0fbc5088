//! From config to guards: each route's `openapi` block (or its upstream's) becomes an
//! [`OpenApiGuard`]; a spec shared by several routes is loaded and compiled once.

use crate::api::{self, Api};
use crate::guard::{OpenApiGuard, Settings};
use crate::spec::Docs;
use rampart_config::{ConfigError, LoadedConfig, OpenApi};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Load and compile a spec file, errors as text lines (`file: at #/pointer: message`).
pub fn load_api(path: &std::path::Path, base_path: Option<&str>) -> Result<Arc<Api>, Vec<String>> {
    let docs =
        Docs::load(path).map_err(|es| es.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    api::compile(&docs, base_path)
        .map(Arc::new)
        .map_err(|es| es.iter().map(|e| e.to_string()).collect())
}

/// One guard per route (`None` where no spec applies), in route order.
pub fn build(lc: &LoadedConfig) -> Result<Vec<Option<Arc<OpenApiGuard>>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut cache: HashMap<(PathBuf, Option<String>), Option<Arc<Api>>> = HashMap::new();
    let mut out = Vec::new();
    for r in &lc.config.routes {
        let rv = &r.value;
        let upstream_block = lc
            .config
            .upstreams
            .iter()
            .find(|u| u.value.name.value == rv.upstream.value)
            .and_then(|u| u.value.openapi.as_ref());
        let Some(block): Option<&Spanned<OpenApi>> = rv.openapi.as_ref().or(upstream_block) else {
            out.push(None);
            continue;
        };
        let o = &block.value;
        let path = lc.resolve_path(&o.spec.value);
        let base = match &o.base_path {
            Some(b) if !b.value.starts_with('/') => {
                errors.push(ConfigError {
                    loc: lc.loc(b),
                    message: format!("openapi.base_path `{}` must start with `/`", b.value),
                });
                None
            }
            Some(b) => Some(b.value.clone()),
            None => None,
        };
        let key = (path.clone(), base.clone());
        let api = match cache.get(&key) {
            Some(a) => a.clone(),
            None => {
                let loaded = match load_api(&path, base.as_deref()) {
                    Ok(a) => Some(a),
                    Err(es) => {
                        for e in es {
                            errors.push(ConfigError {
                                loc: lc.loc(&o.spec),
                                message: format!("openapi spec: {e}"),
                            });
                        }
                        None
                    }
                };
                cache.insert(key, loaded.clone());
                loaded
            }
        };
        let Some(api) = api else {
            out.push(None);
            continue;
        };
        let settings = Settings {
            mode: o.mode,
            unknown: o.unknown,
            deprecated: o.deprecated,
            read_only: o.read_only,
            unknown_query: o.unknown_query,
            responses: o.responses,
            max_body: o.max_body_bytes.0 as usize,
            max_response: o.max_response_bytes.0 as usize,
            strip_prefix: rv
                .strip_prefix
                .then(|| rv.path_prefix.value.trim_end_matches('/').to_string()),
        };
        out.push(Some(Arc::new(OpenApiGuard::new(api, settings))));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
