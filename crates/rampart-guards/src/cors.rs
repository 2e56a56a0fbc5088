//! `cors`: answers preflight requests itself and adds CORS headers to responses for allowed
//! origins. Origins are matched exactly; `*` is refused with credentials at config load.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use rampart_config::{Cors, Mode};
use rampart_core::guard::{Answer, Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;

pub struct CorsGuard {
    mode: Mode,
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    any_header: bool,
    headers: Vec<String>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// The allowed origin of this request, for the response phase.
#[derive(Clone)]
struct AllowedOrigin(HeaderValue);

fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        None
    } else {
        HeaderValue::from_str(&items.join(", ")).ok()
    }
}

impl CorsGuard {
    pub fn new(cfg: &Cors) -> Self {
        let methods: Vec<Method> = cfg
            .allow_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.value.as_bytes()).ok())
            .collect();
        let mstr: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let headers: Vec<String> = cfg
            .allow_headers
            .iter()
            .map(|h| h.value.to_ascii_lowercase())
            .collect();
        let expose: Vec<String> = cfg.expose_headers.iter().map(|h| h.value.clone()).collect();
        CorsGuard {
            mode: cfg.mode,
            any_origin: cfg.allow_origins.iter().any(|o| o.value == "*"),
            origins: cfg
                .allow_origins
                .iter()
                .filter(|o| o.value != "*")
                .map(|o| o.value.to_ascii_lowercase())
                .collect(),
            methods,
            methods_value: join(&mstr).unwrap_or(HeaderValue::from_static("GET")),
            any_header: headers.iter().any(|h| h == "*"),
            headers_value: join(&headers),
            headers,
            expose_value: join(&expose),
            credentials: cfg.allow_credentials,
            max_age: HeaderValue::from(cfg.max_age.0.as_secs()),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The Access-Control-Allow-Origin value for an allowed origin.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

impl Guard for CorsGuard {
    fn name(&self) -> &'static str {
        "cors"
    }
    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let Some(origin) = req.headers.get(header::ORIGIN).cloned() else {
            return Verdict::Continue.into();
        };
        let allowed = origin
            .to_str()
            .map(|o| self.origin_allowed(o))
            .unwrap_or(false);
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            if allowed {
                ctx.extensions.insert(AllowedOrigin(origin));
            }
            return Verdict::Continue.into();
        }
        let method_ok = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .map(|m| self.methods.contains(&m))
            .unwrap_or(false);
        let headers_ok = self.any_header
            || req
                .headers
                .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .all(|h| self.headers.contains(&h));
        if !(allowed && method_ok && headers_ok) {
            let why = if !allowed {
                "origin not allowed"
            } else if !method_ok {
                "method not allowed"
            } else {
                "request headers not allowed"
            };
            return Verdict::Block(
                Block::new(
                    StatusCode::FORBIDDEN,
                    "cors_preflight_denied",
                    format!("CORS preflight refused: {why}"),
                )
                .detail(
                    serde_json::json!({ "origin": String::from_utf8_lossy(origin.as_bytes()) }),
                ),
            )
            .into();
        }
        let mut h: Vec<(HeaderName, HeaderValue)> = vec![
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin_value(&origin),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                self.methods_value.clone(),
            ),
            (header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()),
            (
                header::VARY,
                HeaderValue::from_static(
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                ),
            ),
        ];
        if self.any_header {
            if let Some(req_h) = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.push((header::ACCESS_CONTROL_ALLOW_HEADERS, req_h.clone()));
            }
        } else if let Some(v) = &self.headers_value {
            h.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone()));
        }
        if self.credentials {
            h.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        Verdict::Respond(Answer {
            status: StatusCode::NO_CONTENT,
            headers: h,
            body: Bytes::new(),
        })
        .into()
    }

    fn on_response_headers(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestContext,
    ) -> Verdict {
        if let Some(AllowedOrigin(origin)) = ctx.extensions.get::<AllowedOrigin>() {
            let h = &mut resp.headers;
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin_value(origin),
            );
            if self.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &self.expose_value {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        Verdict::Continue
    }
}
