//! JSON lines for the access log and security events, written off the request path.

use crate::event::SecurityEvent;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// One access-log line.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub upstream: Option<&'a str>,
    pub verdict: &'a str,
    pub guard: Option<&'a str>,
    pub protocol: &'a str,
    /// The authenticated subject and how it was established (`jwt`, `api_key`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<&'a str>,
    /// The API operation (OpenAPI `operationId`) the request matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'a str>,
}

/// A security event as logged: the event plus its request.
#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    #[serde(flatten)]
    pub event: &'a SecurityEvent,
}

/// Where JSON lines go. Cloning is cheap; all clones feed one writer thread.
#[derive(Clone)]
pub struct LogSink {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl LogSink {
    /// A sink that discards everything.
    pub fn off() -> Self {
        LogSink { inner: None }
    }

    /// `stdout`, `stderr`, `off`, or a file path (appended to).
    pub fn open(target: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            "off" => return Ok(Self::off()),
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(65_536);
        std::thread::Builder::new()
            .name("rampart-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(LogSink {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queue one JSON line. If the writer is far behind the line is dropped and counted.
    pub fn write<T: Serialize>(&self, record: &T) {
        let Some(inner) = &self.inner else { return };
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        match inner.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map(|i| i.dropped.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

fn writer(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        // Drain what is queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// RFC 3339 UTC timestamp with milliseconds, without a date library.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let ms = now.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
        assert!(t.starts_with("20"));
    }
}
