//! `security_headers`: response hardening. HSTS on TLS listeners, `X-Content-Type-Options:
//! nosniff`, `Cache-Control: no-store` unless the upstream chose caching, and removal of headers
//! that reveal the upstream's software (Server, X-Powered-By, ...).

use http::header::{self, HeaderName, HeaderValue};
use rampart_config::SecurityHeaders;
use rampart_core::guard::{Guard, RequestContext, Verdict};

pub struct SecurityHeadersGuard {
    hsts: Option<HeaderValue>,
    nosniff: bool,
    no_store: bool,
    strip: Vec<HeaderName>,
}

impl SecurityHeadersGuard {
    pub fn new(cfg: &SecurityHeaders) -> Self {
        let secs = cfg.hsts_max_age.0.as_secs();
        let hsts = (secs > 0).then(|| {
            let v = if cfg.hsts_include_subdomains {
                format!("max-age={secs}; includeSubDomains")
            } else {
                format!("max-age={secs}")
            };
            HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("max-age=31536000"))
        });
        SecurityHeadersGuard {
            hsts,
            nosniff: cfg.nosniff,
            no_store: cfg.no_store,
            strip: cfg
                .strip
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        }
    }
}

impl Guard for SecurityHeadersGuard {
    fn name(&self) -> &'static str {
        "security_headers"
    }
    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        let h = &mut resp.headers;
        // The listed names that are present (usually one, `Server`): a pass over the few
        // response names costs less than a hashed removal per listed name.
        while let Some(n) = h.keys().find(|k| self.strip.contains(k)).cloned() {
            h.remove(&n);
        }
        if let (Some(v), true) = (&self.hsts, ctx.is_tls()) {
            h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        if self.nosniff {
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        if self.no_store && !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Verdict::Continue
    }
}
