//! The `rampart` binary's wiring: it loads the config, hands the core its guards, and runs.
//! Each command lives in its own module under `cmd`; the sample API of `rampart demo` in `demo`.

pub mod audit;
pub mod demo;
pub mod keys;
pub mod waf;

use rampart_config::LoadedConfig;
use rampart_core::{Gateway, GuardBuilder, StartError};
use rampart_telemetry::{LogSink, Metrics};
use std::sync::Arc;

/// The guard builder for this build of Rampart: every built-in guard plus identity, OpenAPI,
/// WAF and rate limits, in this order per route: ip_filter, geo, bans, limits, auth, openapi,
/// waf, rate limits (and auto_bans, which act in the log phase), cors, security_headers. (`openapi` runs before the WAF so it can skip strictly
/// typed inputs, and before rate limits so they can key on the operation; it lets CORS
/// preflights through to `cors`.) Rate-limit counters, lockouts, JWKS and API key caches live in state that
/// survives reloads.
pub fn guards(metrics: Arc<Metrics>) -> Arc<GuardBuilder> {
    guards_with(
        rampart_ratelimit::State::new(metrics),
        rampart_identity::State::new(),
    )
}

fn guards_with(
    rl: Arc<rampart_ratelimit::State>,
    id: Arc<rampart_identity::State>,
) -> Arc<GuardBuilder> {
    Arc::new(move |lc: &LoadedConfig| {
        let mut built = rampart_guards::build(lc)?;
        let auth = rampart_identity::build(lc, &id);
        let spec = rampart_openapi::build(lc);
        let waf = rampart_waf::build(lc);
        let limits = rampart_ratelimit::build(lc, &rl);
        let (auth, spec, waf, limits) = match (auth, spec, waf, limits) {
            (Ok(a), Ok(s), Ok(w), Ok(l)) => (a, s, w, l),
            (a, s, w, l) => {
                let mut errors = a.err().unwrap_or_default();
                errors.extend(s.err().unwrap_or_default());
                errors.extend(w.err().unwrap_or_default());
                errors.extend(l.err().unwrap_or_default());
                return Err(errors);
            }
        };
        for ((((chain, extra), auth), spec), waf) in built
            .routes
            .iter_mut()
            .zip(limits)
            .zip(auth)
            .zip(spec)
            .zip(waf)
        {
            // The ban list goes before everything but the IP filter: a banned client costs
            // nothing more.
            let (bans, extra): (Vec<_>, Vec<_>) =
                extra.into_iter().partition(|g| g.name() == "bans");
            let limits_at = chain.iter().position(|g| g.name() == "limits").unwrap_or(0);
            for (i, g) in bans.into_iter().enumerate() {
                chain.insert(limits_at + i, g);
            }
            let mut at = chain
                .iter()
                .position(|g| g.name() == "limits")
                .map(|i| i + 1)
                .unwrap_or(0);
            if let Some(a) = auth {
                chain.insert(at, a);
                at += 1;
            }
            if let Some(s) = spec {
                chain.insert(at, s);
                at += 1;
            }
            if let Some(w) = waf {
                chain.insert(at, w);
                at += 1;
            }
            for (i, g) in extra.into_iter().enumerate() {
                chain.insert(at + i, g);
            }
        }
        Ok(built)
    })
}

/// Start a gateway for a loaded config on the current tokio runtime.
pub async fn start(lc: LoadedConfig) -> Result<Arc<Gateway>, StartError> {
    let log = LogSink::open(&lc.config.log.access).map_err(|e| {
        StartError::Bind(rampart_config::ConfigError {
            loc: rampart_config::Loc {
                file: lc.source.clone(),
                line: 1,
                col: 1,
            },
            message: format!("cannot open access log `{}`: {e}", lc.config.log.access),
        })
    })?;
    let metrics = Metrics::new();
    let rl = rampart_ratelimit::State::new(metrics.clone());
    let id = rampart_identity::State::new();
    let admin = vec![rl.admin(), id.admin()];
    Gateway::start_with_metrics(lc, guards_with(rl, id), log, metrics, admin).await
}

/// Load a config from text (tests and generated configs), resolving relative paths against `dir`.
pub fn load_text(
    text: &str,
    name: &str,
    dir: &std::path::Path,
) -> Result<LoadedConfig, rampart_config::ConfigErrors> {
    rampart_config::load_str(text, Arc::from(name), dir.to_path_buf(), &|k| {
        std::env::var(k).ok()
    })
}
