//! `rampart`: the command line. See `rampart --help`.

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: rampart_core::alloc::Mimalloc = rampart_core::alloc::Mimalloc;
use rampart::{demo, start};
use rampart_config::validate::check_target;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "rampart", version, about = "Rampart: an API security gateway", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway with a YAML config (reloads on SIGHUP and when the file changes).
    Run {
        /// Path to the config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if valid, else print every error as FILE:LINE:COL: message.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// A one-line reverse proxy with safe defaults (limits, security headers, hardening).
    Proxy {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: SocketAddr,
        /// Upstream URL, e.g. http://127.0.0.1:9000.
        #[arg(long)]
        upstream: String,
        /// Admin address for /metrics, /healthz, /readyz (`off` to disable).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Worker threads (1 = single-threaded runtime; 0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Access log target: stdout, stderr, off, or a file path.
        #[arg(long, default_value = "stdout")]
        access_log: String,
        /// Enforce this OpenAPI 3.0/3.1 spec (YAML or JSON): undeclared endpoints get 404/405,
        /// invalid requests 400/415; responses are checked and violations logged.
        #[arg(long, value_name = "SPEC")]
        openapi: Option<PathBuf>,
        /// Run the OWASP Core Rule Set from this directory (paranoia level 1, blocking at the
        /// CRS anomaly thresholds).
        #[arg(long, value_name = "DIR")]
        crs: Option<PathBuf>,
        /// Pass WebSocket upgrades through to the upstream (the handshake runs the guards;
        /// the connection then becomes a tunnel).
        #[arg(long)]
        websocket: bool,
    },
    /// Audit an OpenAPI spec for security problems; exit 1 when the score is under --fail-under.
    Audit {
        /// The spec (OpenAPI 3.0/3.1, YAML or JSON).
        spec: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: AuditFormat,
        /// Exit with status 1 when the score (0-100) is below this.
        #[arg(long, value_name = "SCORE")]
        fail_under: Option<u8>,
    },
    /// List, add or remove temporary bans on a running Rampart (through its admin listener).
    Bans {
        #[command(subcommand)]
        action: BanCmd,
        /// The admin listener of the running Rampart.
        #[arg(long, default_value = "127.0.0.1:9901", global = true)]
        admin: SocketAddr,
    },
    /// Manage API keys in the key store of the config's api_key provider.
    Keys {
        #[command(subcommand)]
        action: KeyCmd,
        /// The config naming the key store.
        #[arg(short, long, global = true, default_value = "rampart.yaml")]
        config: PathBuf,
        /// The api_key provider (needed when the config has several).
        #[arg(long, global = true)]
        provider: Option<String>,
    },
    /// WAF tools: run CRS's regression suite.
    Waf {
        #[command(subcommand)]
        action: WafCmd,
    },
    /// Start a sample API with Rampart in front of it, using the demo policy (examples/demo.yaml).
    Demo {
        /// Where Rampart listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener (metrics).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuditFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make a key; it is printed once on stdout.
    Create {
        /// Who the key belongs to (becomes the identity's subject).
        #[arg(long)]
        owner: String,
        /// Scopes, comma or space separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Roles, comma or space separated.
        #[arg(long)]
        roles: Option<String>,
        /// Lifetime, e.g. 90d.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List keys (ids, owners, scopes, status, expiry, last use; never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Replace a key; the old one keeps working for the grace period.
    Rotate {
        id: String,
        /// Default: the provider's rotation_grace.
        #[arg(long)]
        grace: Option<String>,
    },
}

#[derive(Subcommand)]
enum WafCmd {
    /// Show which CRS rules fire and the narrowest exclusion for each: for a raw HTTP request
    /// (`--crs DIR FILE`), or for a request Rampart logged (`--log FILE --request-id ID`).
    Explain {
        /// The CRS directory (with a raw request).
        #[arg(long, required_unless_present = "log")]
        crs: Option<PathBuf>,
        /// Paranoia level (1-4).
        #[arg(long, default_value_t = 1)]
        paranoia_level: u8,
        /// A file holding the raw request (`-` for stdin).
        #[arg(required_unless_present = "log", conflicts_with = "log")]
        request: Option<PathBuf>,
        /// Rampart's JSON log (`log.access`, `-` for stdin) to read a logged request's WAF events from.
        #[arg(long, requires = "request_id", conflicts_with = "crs")]
        log: Option<PathBuf>,
        /// The logged request's id (the `request_id` of its log lines, the problem+json
        /// `request_id` the client got).
        #[arg(long, requires = "log")]
        request_id: Option<String>,
    },
    /// Run CRS's go-ftw regression tests against a real Rampart listener; prints each failure
    /// and `N passed, M failed, K skipped`. Exit 1 when any test fails.
    Ftw {
        /// The CRS directory (with rules/ and crs-setup.conf.example).
        #[arg(long)]
        crs: PathBuf,
        /// The test directory (default: CRS/tests/regression/tests).
        #[arg(long)]
        tests: Option<PathBuf>,
        /// YAML file listing tests to skip, each with its reason.
        #[arg(long)]
        overrides: Option<PathBuf>,
        /// Only run tests whose id (e.g. 942100-1) matches this regex.
        #[arg(long)]
        include: Option<String>,
        /// Also print passes and skips.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum BanCmd {
    /// Show current bans.
    List,
    /// Ban an address, e.g. `rampart bans add 203.0.113.9 --ttl 30m`.
    Add {
        ip: std::net::IpAddr,
        #[arg(long, default_value = "10m")]
        ttl: String,
    },
    /// Lift a ban.
    Remove { ip: std::net::IpAddr },
}

/// One request to the admin API; prints the JSON answer, exit 0 on 2xx.
fn admin_call(admin: SocketAddr, method: &str, path: &str, body: Option<String>) -> ExitCode {
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let stream = match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(admin),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                eprintln!(
                    "cannot reach the admin listener at {admin} (is Rampart running? see --admin)"
                );
                return ExitCode::from(1);
            }
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("admin connection failed: {e}");
                    return ExitCode::from(1);
                }
            };
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", admin.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or_default(),
            )));
        let Ok(req) = req else {
            eprintln!("invalid admin request");
            return ExitCode::from(2);
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
            .await
        {
            Ok(Ok(resp)) => {
                let ok = resp.status().is_success();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&body);
                if ok {
                    println!("{text}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("{text}");
                    ExitCode::from(1)
                }
            }
            _ => {
                eprintln!("the admin listener did not answer");
                ExitCode::from(1)
            }
        }
    })
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("rampart={level},rampart_core={level},warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            b.worker_threads(workers);
        }
        b.enable_all().build()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match rampart_config::load_file(&config) {
            Ok(lc) => {
                // Compile too: certificates and keys are parsed, guards are built.
                match rampart_core::Snapshot::build(
                    &lc,
                    rampart::guards(rampart_telemetry::Metrics::new()).as_ref(),
                    0,
                    &rampart_telemetry::Metrics::new(),
                ) {
                    Ok(_) => {
                        println!("{}: ok", config.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(1)
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Cmd::Run { config } => {
            let lc = match rampart_config::load_file(&config) {
                Ok(lc) => lc,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            init_tracing(&lc.config.log.level.value);
            let watch = lc.config.server.watch_config;
            serve(lc, Some(config), watch, None)
        }
        Cmd::Proxy {
            listen,
            upstream,
            admin,
            workers,
            access_log,
            openapi,
            crs,
            websocket,
        } => {
            if let Err(m) = check_target(&upstream) {
                eprintln!("--upstream: {m}");
                return ExitCode::from(2);
            }
            if admin != "off" && admin.parse::<SocketAddr>().is_err() {
                eprintln!("--admin: invalid address `{admin}` (expected IP:PORT or `off`)");
                return ExitCode::from(2);
            }
            let text = format!(
                "server:\n  worker_threads: {workers}\nlisteners:\n  - address: \"{listen}\"\nadmin:\n  address: \"{admin}\"\nlog:\n  access: {access}\nupstreams:\n  - name: upstream\n    targets: [{up}]\nroutes:\n  - name: default\n    path_prefix: /\n    upstream: upstream\n    websocket: {websocket}\n{spec}",
                access = serde_json::Value::String(access_log),
                up = serde_json::Value::String(upstream),
                spec = match &openapi {
                    Some(p) => format!(
                        "    openapi:\n      spec: {}\n",
                        serde_json::Value::String(p.display().to_string())
                    ),
                    None => String::new(),
                } + &match &crs {
                    Some(d) => format!(
                        "    waf:\n      crs: {}\n",
                        serde_json::Value::String(d.display().to_string())
                    ),
                    None => String::new(),
                },
            );
            let lc = match rampart::load_text(
                &text,
                "<rampart proxy flags>",
                &std::env::current_dir().unwrap_or_default(),
            ) {
                Ok(lc) => lc,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing("info");
            serve(lc, None, false, None)
        }
        Cmd::Audit {
            spec,
            format,
            fail_under,
        } => rampart::audit::run(
            &spec,
            match format {
                AuditFormat::Text => rampart::audit::Format::Text,
                AuditFormat::Json => rampart::audit::Format::Json,
                AuditFormat::Sarif => rampart::audit::Format::Sarif,
            },
            fail_under,
        ),
        Cmd::Keys {
            action,
            config,
            provider,
        } => rampart::keys::run(
            &config,
            provider.as_deref(),
            match action {
                KeyCmd::Create {
                    owner,
                    scopes,
                    roles,
                    expires_in,
                } => rampart::keys::Action::Create {
                    owner,
                    scopes,
                    roles,
                    expires_in,
                },
                KeyCmd::List { json } => rampart::keys::Action::List { json },
                KeyCmd::Revoke { id } => rampart::keys::Action::Revoke { id },
                KeyCmd::Rotate { id, grace } => rampart::keys::Action::Rotate { id, grace },
            },
        ),
        Cmd::Bans { action, admin } => match action {
            BanCmd::List => admin_call(admin, "GET", "/bans", None),
            BanCmd::Add { ip, ttl } => admin_call(
                admin,
                "POST",
                "/bans",
                Some(serde_json::json!({ "ip": ip.to_string(), "ttl": ttl }).to_string()),
            ),
            BanCmd::Remove { ip } => admin_call(admin, "DELETE", &format!("/bans?ip={ip}"), None),
        },
        Cmd::Waf {
            action:
                WafCmd::Explain {
                    crs,
                    paranoia_level,
                    request,
                    log,
                    request_id,
                },
        } => {
            if let (Some(log), Some(id)) = (log, request_id) {
                let name = log.display().to_string();
                let report = if log.as_os_str() == "-" {
                    rampart_waf::explain::report_logged(std::io::stdin().lock(), &name, &id)
                } else {
                    match std::fs::File::open(&log) {
                        Ok(f) => rampart_waf::explain::report_logged(
                            std::io::BufReader::new(f),
                            &name,
                            &id,
                        ),
                        Err(e) => Err(format!("{name}: {e}")),
                    }
                };
                return match report {
                    Ok(r) => {
                        print!("{r}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(2)
                    }
                };
            }
            let (Some(crs), Some(request)) = (crs, request) else {
                eprintln!(
                    "waf explain: give --crs DIR and a request file, or --log FILE --request-id ID"
                );
                return ExitCode::from(2);
            };
            let raw = if request.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map(|_| v)
            } else {
                std::fs::read(&request)
            };
            let raw = match raw {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", request.display());
                    return ExitCode::from(2);
                }
            };
            let req = match rampart_waf::explain::parse_raw(&raw) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", request.display());
                    return ExitCode::from(2);
                }
            };
            let mut o = rampart_waf::CrsOptions::new(&crs);
            o.paranoia_level = paranoia_level;
            let rs = match rampart_waf::load_crs(&o) {
                Ok(rs) => std::sync::Arc::new(rs),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let tx = rampart_waf::explain::run(rs, &req);
            print!("{}", rampart_waf::explain::report(&tx));
            ExitCode::SUCCESS
        }
        Cmd::Waf {
            action:
                WafCmd::Ftw {
                    crs,
                    tests,
                    overrides,
                    include,
                    verbose,
                },
        } => {
            let include = match include.map(|i| regex::Regex::new(&i)) {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    eprintln!("--include: {e}");
                    return ExitCode::from(2);
                }
            };
            let o = rampart::waf::FtwOptions {
                tests: tests.unwrap_or_else(|| crs.join("tests/regression/tests")),
                crs,
                overrides,
                include,
                show_passes: verbose,
            };
            let rt = match runtime(2) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(rampart::waf::run(&o)) {
                Ok(s) if s.failed.is_empty() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Demo { listen, admin } => {
            init_tracing("info");
            let rt = match runtime(2) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let api = match rt.block_on(demo::start_sample_api(
                "127.0.0.1:0".parse().unwrap_or(listen),
            )) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("cannot start the sample API: {e}");
                    return ExitCode::from(1);
                }
            };
            let ident = match demo::prepare_identity() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("cannot prepare the demo identities: {e}");
                    return ExitCode::from(1);
                }
            };
            let (demo_dir, key_secret) =
                (ident.dir.display().to_string(), ident.key_secret.clone());
            let vars = move |k: &str| match k {
                "RAMPART_DEMO_DIR" => Some(demo_dir.clone()),
                "RAMPART_DEMO_KEY_SECRET" => Some(key_secret.clone()),
                "RAMPART_DEMO_LISTEN" => Some(listen.to_string()),
                "RAMPART_DEMO_ADMIN" => Some(admin.to_string()),
                "RAMPART_DEMO_UPSTREAM" => Some(api.to_string()),
                _ => std::env::var(k).ok(),
            };
            let lc = match rampart_config::load_str(
                demo::DEMO_POLICY,
                Arc::from("examples/demo.yaml"),
                ident.dir.clone(),
                &vars,
            ) {
                Ok(lc) => lc,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            let (alice, admin_t, key) = (&ident.alice, &ident.admin, &ident.api_key);
            let banner = format!(
                "\nRampart demo: a sample API (users, orders) on http://{api} behind Rampart on http://{listen}\n\
                 Credentials made for this run (ES256 tokens from a generated key; an API key stored hashed in {dir}):\n\
                 \x20 export ALICE='{alice}'   # user 1: orders:read orders:write\n\
                 \x20 export ADMIN='{admin_t}'   # role admin\n\
                 \x20 export KEY='{key}'   # partner acme: orders:read\n\
                 Try:\n\
                 \x20 curl -i http://{listen}/api/users/1 -H \"authorization: Bearer $ALICE\"   # 200: her own record, api_token stripped (not in the spec)\n\
                 \x20 curl -i http://{listen}/api/users/2 -H \"authorization: Bearer $ALICE\"   # 403: not hers (BOLA)\n\
                 \x20 curl -i http://{listen}/api/users -H \"authorization: Bearer $ALICE\"     # 403: listing users is admin-only (BFLA)\n\
                 \x20 curl -i http://{listen}/api/users -H \"authorization: Bearer $ADMIN\"     # 200\n\
                 \x20 curl -i http://{listen}/api/users/1                                    # 401: no credentials\n\
                 \x20 curl -i http://{listen}/api/orders -H \"x-api-key: $KEY\"                # 200: API key with orders:read\n\
                 \x20 curl -i -X POST http://{listen}/api/orders -H \"x-api-key: $KEY\" -H 'content-type: application/json' -d '{{\"item\":\"pen\"}}'   # 403: no orders:write\n\
                 \x20 curl -i -X POST http://{listen}/api/orders -H \"authorization: Bearer $ALICE\" -H 'content-type: application/json' -d '{{\"item\":\"pen\",\"quantity\":3}}'   # 201\n\
                 \x20 curl -i -X POST http://{listen}/api/orders -H \"authorization: Bearer $ALICE\" -H 'content-type: application/json' -d '{{\"item\":\"pen\",\"quantity\":\"3\"}}'   # 400: /quantity must be an integer (OpenAPI)\n\
                 \x20 curl -i -X POST http://{listen}/api/orders -H \"authorization: Bearer $ALICE\" -H 'content-type: application/json' -d '{{\"id\":1,\"item\":\"pen\",\"quantity\":3}}'   # 400: id is readOnly (mass assignment)\n\
                 \x20 curl -i http://{listen}/api/orders/10/export -H \"authorization: Bearer $ALICE\"   # 404: not in the spec\n\
                 \x20 curl -i -X TRACE http://{listen}/api/users               # 405: method not allowed\n\
                 \x20 curl -i http://{listen}/api/users/a%2Fb                   # 400: encoded slash rejected\n\
                 \x20 curl -i http://{listen}/admin                            # 404: no route\n\
                 \x20 for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' -X POST http://{listen}/api/orders -H \"authorization: Bearer $ALICE\" -H 'content-type: application/json' -d '{{\"item\":\"pen\",\"quantity\":1}}'; done   # 429 after 5 POSTs a minute\n\
                 \x20 curl -s http://{admin}/metrics | grep rampart_         # metrics\n\
                 \x20 curl -s http://{admin}/keys                             # API keys (ids, owners, scopes; never the keys)\n\
                 Access log and security events are JSON lines on stdout. Ctrl-C stops.\n",
                dir = ident.dir.display()
            );
            serve(lc, None, false, Some((rt, banner)))
        }
    }
}

fn serve(
    lc: rampart_config::LoadedConfig,
    path: Option<PathBuf>,
    watch: bool,
    rt_banner: Option<(tokio::runtime::Runtime, String)>,
) -> ExitCode {
    let (rt, banner) = match rt_banner {
        Some((rt, b)) => (rt, Some(b)),
        None => match runtime(lc.config.server.worker_threads) {
            Ok(rt) => (rt, None),
            Err(e) => {
                eprintln!("cannot start runtime: {e}");
                return ExitCode::from(1);
            }
        },
    };
    rt.block_on(async move {
        let gw = match start(lc).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        if let Some(b) = banner {
            eprintln!("{b}");
        }
        match gw.run_until_signal(path, watch).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("signal handling failed: {e}");
                ExitCode::from(1)
            }
        }
    })
}
