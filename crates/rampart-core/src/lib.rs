//! Rampart's proxy core. It listens, terminates TLS, hardens HTTP parsing, routes, and runs the
//! guard pipeline around each upstream call. It knows nothing about what the guards protect
//! against: protections live in their own crates and plug in through [`guard::Guard`].
//!
//! Start here: [`Gateway::start`] binds listeners for a loaded config; [`proxy`] is the request
//! path; [`guard`] is the contract every protection implements.

pub mod admin;
pub mod alloc;
pub mod body;
pub mod clock;
pub mod guard;
pub mod h1client;
pub mod h1scan;
pub mod h1server;
pub mod h2watch;
mod hmap;
pub mod json;
pub mod path;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use guard::{
    Answer, Block, ConnInfo, Guard, Mode, Phase, RequestContext, Step, TypedInputs, Verdict,
};
pub use snapshot::{BuiltGuards, GuardBuilder, Snapshot};

use proxy::Shared;
use rampart_config::{ConfigError, ConfigErrors, LoadedConfig, Loc};
use rampart_telemetry::metrics::ReloadResult;
use rampart_telemetry::{LogSink, Metrics};
use server::ConnCounter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A running gateway: its listeners, its current config snapshot, and the means to reload and
/// stop it.
pub struct Gateway {
    shared: Arc<Shared>,
    guards: Arc<GuardBuilder>,
    counter: Arc<ConnCounter>,
    shutdown_tx: watch::Sender<bool>,
    generation: AtomicU64,
    listen_addrs: Vec<SocketAddr>,
    listener_cfg: Vec<String>,
    admin_addr: Option<SocketAddr>,
}

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigErrors),
    Bind(ConfigError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

impl Gateway {
    /// Compile the config, bind every listener and the admin listener, and start serving.
    pub async fn start(
        lc: LoadedConfig,
        guards: Arc<GuardBuilder>,
        log: LogSink,
    ) -> Result<Arc<Gateway>, StartError> {
        Self::start_with_metrics(lc, guards, log, Metrics::new(), Vec::new()).await
    }

    /// Like [`Gateway::start`], with a metrics registry the caller also hands to its guards.
    pub async fn start_with_metrics(
        lc: LoadedConfig,
        guards: Arc<GuardBuilder>,
        log: LogSink,
        metrics: Arc<Metrics>,
        admin_extensions: Vec<Arc<dyn admin::AdminExtension>>,
    ) -> Result<Arc<Gateway>, StartError> {
        let snap =
            Snapshot::build(&lc, guards.as_ref(), 1, &metrics).map_err(StartError::Config)?;
        let shared = Arc::new(Shared::new(snap, metrics, log));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let counter = Arc::new(ConnCounter {
            open: Default::default(),
        });
        let mut listen_addrs = Vec::new();
        let mut bound = Vec::new();
        for l in &lc.config.listeners {
            let lst = bind(&l.value.address.value).map_err(|e| {
                StartError::Bind(lc.error_at(
                    &l.value.address,
                    format!("cannot listen on {}: {e}", l.value.address.value),
                ))
            })?;
            listen_addrs.push(
                lst.local_addr()
                    .map_err(|e| StartError::Bind(lc.error_at(&l.value.address, e.to_string())))?,
            );
            bound.push(lst);
        }
        let admin_addr = if lc.config.admin.address.value == "off" {
            None
        } else {
            let a = &lc.config.admin.address;
            let lst = bind(&a.value).map_err(|e| {
                StartError::Bind(lc.error_at(
                    a,
                    format!("cannot listen on admin address {}: {e}", a.value),
                ))
            })?;
            let addr = lst
                .local_addr()
                .map_err(|e| StartError::Bind(lc.error_at(a, e.to_string())))?;
            tokio::spawn(admin::serve(
                lst,
                shared.clone(),
                shutdown_rx.clone(),
                Arc::new(admin_extensions),
            ));
            Some(addr)
        };
        for (i, lst) in bound.into_iter().enumerate() {
            tokio::spawn(server::accept_loop(
                lst,
                i,
                shared.clone(),
                counter.clone(),
                shutdown_rx.clone(),
            ));
        }
        for (l, a) in lc.config.listeners.iter().zip(&listen_addrs) {
            tracing::info!(address = %a, tls = l.value.tls.is_some(), "listening");
        }
        Ok(Arc::new(Gateway {
            shared,
            guards,
            counter,
            shutdown_tx,
            generation: AtomicU64::new(1),
            listen_addrs,
            listener_cfg: lc
                .config
                .listeners
                .iter()
                .map(|l| l.value.address.value.clone())
                .collect(),
            admin_addr,
        }))
    }

    /// Bound addresses of the traffic listeners, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.counter.open.load(Ordering::Relaxed)
    }

    /// Swap in a new config. New requests use it; requests in flight finish on the old one;
    /// connections stay open. On error nothing changes.
    pub fn reload(&self, lc: &LoadedConfig) -> Result<u64, ConfigErrors> {
        let result = self.try_reload(lc);
        let m = &self.shared.metrics;
        match &result {
            Ok(g) => {
                m.config_reloads
                    .get_or_create(&ReloadResult { result: "ok" })
                    .inc();
                tracing::info!(generation = g, "config reloaded");
            }
            Err(e) => {
                m.config_reloads
                    .get_or_create(&ReloadResult { result: "failed" })
                    .inc();
                tracing::error!(errors = %e, "config reload refused; the previous config keeps serving");
            }
        }
        result
    }

    fn try_reload(&self, lc: &LoadedConfig) -> Result<u64, ConfigErrors> {
        let now: Vec<String> = lc
            .config
            .listeners
            .iter()
            .map(|l| l.value.address.value.clone())
            .collect();
        if now != self.listener_cfg {
            let at = lc
                .config
                .listeners
                .first()
                .map(|l| lc.loc(&l.value.address))
                .unwrap_or(Loc {
                    file: lc.source.clone(),
                    line: 1,
                    col: 1,
                });
            return Err(ConfigErrors(vec![ConfigError {
                loc: at,
                message: "listener addresses changed; a restart is needed to apply that".into(),
            }]));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snap = Snapshot::build(lc, self.guards.as_ref(), generation, &self.shared.metrics)?;
        self.shared.snapshot.store(Arc::new(snap));
        Ok(generation)
    }

    /// Load a config file and reload from it.
    pub fn reload_file(&self, path: &Path) -> Result<u64, ConfigErrors> {
        match rampart_config::load_file(path) {
            Ok(lc) => self.reload(&lc),
            Err(e) => {
                self.shared
                    .metrics
                    .config_reloads
                    .get_or_create(&ReloadResult { result: "failed" })
                    .inc();
                tracing::error!(errors = %e, "config reload refused; the previous config keeps serving");
                Err(e)
            }
        }
    }

    /// The current snapshot's generation (1 at start, +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Stop accepting, let in-flight requests finish (up to the shutdown timeout), then return.
    pub async fn shutdown(&self) {
        let timeout = self.shared.snapshot.load().shutdown_timeout;
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.open_connections();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown timeout reached with connections still open"
            );
        }
    }

    /// Serve until SIGTERM/SIGINT; reload on SIGHUP and (if enabled) when the file changes.
    pub async fn run_until_signal(
        self: &Arc<Self>,
        config_path: Option<PathBuf>,
        watch_file: bool,
    ) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut last_stamp = config_path.as_deref().and_then(file_stamp);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if let Some(p) = &config_path {
                        tracing::info!("SIGHUP: reloading config");
                        let _ = self.reload_file(p);
                        last_stamp = file_stamp(p);
                    }
                }
                _ = tick.tick(), if watch_file && config_path.is_some() => {
                    if let Some(p) = &config_path {
                        let stamp = file_stamp(p);
                        if stamp.is_some() && stamp != last_stamp {
                            last_stamp = stamp;
                            tracing::info!("config file changed: reloading");
                            let _ = self.reload_file(p);
                        }
                    }
                }
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
        Ok(())
    }
}

/// Modification time and size, to notice a changed config file.
fn file_stamp(p: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
