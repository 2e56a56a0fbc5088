//! The `rampart` binary's wiring: it loads the config, hands the core its guards, and runs.
//! Each command lives in its own module under `cmd`; the sample API of `rampart demo` in `demo`.

pub mod demo;

use rampart_config::LoadedConfig;
use rampart_core::{Gateway, GuardBuilder, StartError};
use rampart_telemetry::LogSink;
use std::sync::Arc;

/// The guard builder for this build of Rampart: every built-in guard.
pub fn guards() -> Arc<GuardBuilder> {
    Arc::new(rampart_guards::build)
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
    Gateway::start(lc, guards(), log).await
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
