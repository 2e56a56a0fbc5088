//! Rampart's built-in guards, one module each. [`build`] compiles them from the config for every
//! route; the binary hands that function to the core.

pub mod cors;
pub mod geo;
pub mod ip_filter;
pub mod limits;
pub mod security_headers;

use rampart_config::{ConfigError, LoadedConfig, Spanned};
use rampart_core::{BuiltGuards, Guard};
use std::sync::Arc;

/// The guard chains for a config: the global IP filter at connection time, and for each route,
/// in order: IP filter, geo, limits, CORS, security headers.
pub fn build(lc: &LoadedConfig) -> Result<BuiltGuards, Vec<ConfigError>> {
    let c = &lc.config;
    let mut errors = Vec::new();
    let global_ip = match &c.guards.ip_filter {
        Some(f) => collect(
            &mut errors,
            ip_filter::IpFilterGuard::new(lc, f).map(Arc::new),
        ),
        None => None,
    };
    // The country database, read once per config load (a reload reads it again).
    let geo_db = match &c.geoip.database {
        Some(p) => match geo::GeoDb::load(lc, p) {
            Ok(db) => Some(Arc::new(db)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let mut routes = Vec::new();
    for r in &c.routes {
        let r = &r.value;
        let mut chain: Vec<Arc<dyn Guard>> = Vec::new();
        if let Some(f) = &r.ip_filter {
            if let Some(g) = collect(&mut errors, ip_filter::IpFilterGuard::new(lc, f)) {
                chain.push(Arc::new(g));
            }
        }
        if let (Some(g), Some(db)) = (pick(&r.geo, &c.guards.geo), &geo_db) {
            chain.push(Arc::new(geo::GeoGuard::new(db.clone(), &g.value)));
        }
        let limits = pick(&r.limits, &c.guards.limits);
        chain.push(Arc::new(limits::LimitsGuard::new(
            limits.map(|l| &l.value).cloned().unwrap_or_default(),
        )));
        if let Some(cors) = pick(&r.cors, &c.guards.cors) {
            chain.push(Arc::new(cors::CorsGuard::new(&cors.value)));
        }
        let sh = pick(&r.security_headers, &c.guards.security_headers)
            .map(|s| s.value.clone())
            .unwrap_or_default();
        chain.push(Arc::new(security_headers::SecurityHeadersGuard::new(&sh)));
        routes.push(chain);
    }
    let sh = c
        .guards
        .security_headers
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_default();
    let unrouted: Vec<Arc<dyn Guard>> =
        vec![Arc::new(security_headers::SecurityHeadersGuard::new(&sh))];
    if !errors.is_empty() {
        return Err(errors);
    }
    let connection: Vec<Arc<dyn Guard>> = match global_ip {
        Some(g) => vec![g],
        None => Vec::new(),
    };
    Ok(BuiltGuards {
        connection,
        routes,
        unrouted,
    })
}

fn pick<'a, T>(
    route: &'a Option<Spanned<T>>,
    global: &'a Option<Spanned<T>>,
) -> Option<&'a Spanned<T>> {
    route.as_ref().or(global.as_ref())
}

fn collect<T>(errors: &mut Vec<ConfigError>, r: Result<T, Vec<ConfigError>>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}
