//! `rampart waf ftw`: CRS's own regression suite, end to end. Each test's raw request goes over
//! TCP to a real Rampart listener (CRS loaded as CRS's CI configures it: paranoia 4,
//! detection-only, responses inspected) in front of a built-in reflect upstream; the fired
//! rule ids are read back from Rampart's security event log.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use rampart_waf::ftw::{self, Case, Observed, Overrides};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to run.
pub struct FtwOptions {
    pub crs: PathBuf,
    pub tests: PathBuf,
    pub overrides: Option<PathBuf>,
    /// Only tests whose name (`942100-1`) matches.
    pub include: Option<regex::Regex>,
    pub show_passes: bool,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<(String, String)>,
    pub skipped: usize,
}

/// The reflect upstream: `POST /reflect` with `{"status", "headers", "body"}` answers exactly
/// that (like CRS's albedo backend); anything else gets `200 ok`.
async fn reflect(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let is_reflect = req.uri().path().starts_with("/reflect") && req.method() == http::Method::POST;
    let body = req.into_body().collect().await?.to_bytes();
    if !is_reflect {
        return Ok(http::Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"ok\n")))
            .unwrap_or_default());
    }
    let spec: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let status = spec.get("status").and_then(|s| s.as_u64()).unwrap_or(200) as u16;
    let mut b = http::Response::builder().status(status);
    let has_type = spec
        .get("headers")
        .and_then(|h| h.as_object())
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
    if !has_type {
        b = b.header("content-type", "text/plain");
    }
    if let Some(h) = spec.get("headers").and_then(|h| h.as_object()) {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                b = b.header(k.as_str(), v);
            }
        }
    }
    let content = if let Some(e) = spec.get("encodedBody").and_then(|e| e.as_str()) {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(e)
            .unwrap_or_default()
    } else {
        spec.get("body")
            .and_then(|b| b.as_str())
            .unwrap_or("")
            .as_bytes()
            .to_vec()
    };
    Ok(b.body(Full::new(Bytes::from(content))).unwrap_or_default())
}

async fn start_reflect() -> Result<SocketAddr, String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), service_fn(reflect))
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The CRS CI settings that are not the paranoia level: argument limits and friends.
const HARNESS_RULES: &str = "SecAction \"id:8800100,phase:1,pass,nolog,\
setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,\
setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,\
setvar:tx.combined_file_sizes=65535\"\n";

/// Reads new JSON lines of the security event log, grouped by request id.
struct LogReader {
    file: PathBuf,
    pos: u64,
    partial: String,
    events: HashMap<String, Vec<serde_json::Value>>,
    done: std::collections::HashSet<String>,
}

impl LogReader {
    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.file) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else {
            return;
        };
        self.pos += n as u64;
        self.partial.push_str(&buf);
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let Some(rid) = v
                .get("request_id")
                .and_then(|r| r.as_str())
                .map(str::to_string)
            else {
                continue;
            };
            match v.get("type").and_then(|t| t.as_str()) {
                Some("access") => {
                    self.done.insert(rid);
                }
                Some("security_event") => self.events.entry(rid).or_default().push(v),
                _ => {}
            }
        }
    }

    /// Wait (bounded) for the request's access record, then hand over its events.
    async fn take(&mut self, rid: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            self.poll();
            if self.done.remove(rid) || Instant::now() > deadline {
                return self.events.remove(rid).unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// An event as a ModSecurity-style log line, for `match_regex`.
fn line(e: &serde_json::Value) -> String {
    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let d = |k: &str| {
        e.get("detail")
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut l = format!(
        "[id \"{}\"] [msg \"{}\"] [data \"{}\"] [severity \"{}\"]",
        s("rule"),
        s("message"),
        d("data"),
        d("severity")
    );
    if let Some(tags) = e
        .get("detail")
        .and_then(|d| d.get("tags"))
        .and_then(|t| t.as_array())
    {
        for t in tags {
            l.push_str(&format!(" [tag \"{}\"]", t.as_str().unwrap_or("")));
        }
    }
    l
}

async fn send(addr: SocketAddr, raw: &[u8]) -> Option<u16> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(raw).await.ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // A whole head is enough for the status; keep reading until close for
                // the server to finish (Connection: close).
                if out.len() > 1 << 20 {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&out);
    let first = text.lines().next()?;
    first.split(' ').nth(1)?.parse().ok()
}

/// Run the suite; prints failures (and passes with `show_passes`).
pub async fn run(o: &FtwOptions) -> Result<Summary, String> {
    let cases: Vec<Case> = ftw::load_dir(&o.tests)?;
    let overrides = match &o.overrides {
        Some(p) => Overrides::load(p)?,
        None => Overrides::default(),
    };
    let upstream = start_reflect().await?;
    let dir = std::env::temp_dir().join(format!("rampart-ftw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = dir.join("events.log");
    let _ = std::fs::remove_file(&log);
    let settings = dir.join("ftw-settings.conf");
    std::fs::write(&settings, HARNESS_RULES).map_err(|e| e.to_string())?;
    let crs =
        std::fs::canonicalize(&o.crs).map_err(|e| format!("--crs {}: {e}", o.crs.display()))?;
    let yaml = format!(
        "server:\n  worker_threads: 2\n  trusted_proxies: [\"127.0.0.1/32\"]\nlisteners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nlog:\n  access: {log}\nupstreams:\n  - name: albedo\n    targets: [\"http://{upstream}\"]\nroutes:\n  - name: ftw\n    path_prefix: /\n    upstream: albedo\nguards:\n  limits:\n    mode: monitor\n  waf:\n    crs: {crs}\n    paranoia_level: 4\n    mode: monitor\n    inspect_responses: true\n    max_body_bytes: 16MiB\n    max_response_bytes: 16MiB\n    extra_rules: [{settings}]\n",
        log = serde_json::Value::String(log.display().to_string()),
        crs = serde_json::Value::String(crs.display().to_string()),
        settings = serde_json::Value::String(settings.display().to_string()),
    );
    let lc = crate::load_text(&yaml, "<ftw harness>", &dir).map_err(|e| e.to_string())?;
    let gw = crate::start(lc).await.map_err(|e| e.to_string())?;
    let addr = *gw.listen_addrs().first().ok_or("gateway has no listener")?;
    let mut reader = LogReader {
        file: log,
        pos: 0,
        partial: String::new(),
        events: HashMap::new(),
        done: Default::default(),
    };
    // Send every stage (stages of one test in order, tests 16 at a time), then read the log.
    let mut selected: Vec<(usize, Option<String>)> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if o.include.as_ref().is_some_and(|re| !re.is_match(&c.name)) {
            continue;
        }
        selected.push((i, overrides.reason(&c.name).map(str::to_string)));
    }
    let cases = std::sync::Arc::new(cases);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut handles = Vec::new();
    for (i, skip) in &selected {
        if skip.is_some() {
            continue;
        }
        let (cases, sem, i) = (cases.clone(), sem.clone(), *i);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let mut sent: Vec<Result<(String, Option<u16>), String>> = Vec::new();
            for (si, st) in cases[i].test.stages.iter().enumerate() {
                let rid = format!("ftw-{i}-{si}");
                match ftw::raw_request(&st.input, &[("X-Request-Id".into(), rid.clone())]) {
                    Ok(raw) => sent.push(Ok((rid, send(addr, &raw).await))),
                    Err(e) => sent.push(Err(e)),
                }
            }
            (i, sent)
        }));
    }
    let mut results = HashMap::new();
    for h in handles {
        let (i, sent) = h.await.map_err(|e| e.to_string())?;
        results.insert(i, sent);
    }
    let mut sum = Summary::default();
    for (i, skip) in &selected {
        let c = &cases[*i];
        if let Some(reason) = skip {
            sum.skipped += 1;
            if o.show_passes {
                println!("SKIP {}: {reason}", c.name);
            }
            continue;
        }
        let mut result = Ok(());
        for (si, (st, sent)) in c
            .test
            .stages
            .iter()
            .zip(results.remove(i).unwrap_or_default())
            .enumerate()
        {
            let (rid, status) = match sent {
                Ok(x) => x,
                Err(e) => {
                    result = Err(format!("stage {}: {e}", si + 1));
                    break;
                }
            };
            let events = reader.take(&rid).await;
            let seen = Observed {
                status,
                ids: events
                    .iter()
                    .filter_map(|e| {
                        e.get("rule")
                            .and_then(|r| r.as_str())
                            .and_then(|r| r.parse().ok())
                    })
                    .collect(),
                lines: events.iter().map(line).collect(),
            };
            if let Err(e) = ftw::check(&st.output, &seen) {
                result = Err(format!("stage {}: {e} [status {:?}]", si + 1, seen.status));
                break;
            }
        }
        match result {
            Ok(()) => {
                sum.passed += 1;
                if o.show_passes {
                    println!("PASS {}", c.name);
                }
            }
            Err(e) => {
                println!("FAIL {} ({}): {e}", c.name, short(&c.file));
                sum.failed.push((c.name.clone(), e));
            }
        }
    }
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} passed, {} failed, {} skipped",
        sum.passed,
        sum.failed.len(),
        sum.skipped
    );
    Ok(sum)
}

fn short(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
