//! `limits`: request size and method limits per route: header bytes (431), URI length (414),
//! body bytes (413, on Content-Length up front and while streaming), methods (405).

use http::{header, HeaderValue, Method, StatusCode};
use rampart_config::{Limits, Mode};
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;

pub struct LimitsGuard {
    mode: Mode,
    max_header_bytes: usize,
    max_uri: usize,
    max_body: u64,
    methods: Vec<Method>,
    allow_header: HeaderValue,
}

impl LimitsGuard {
    pub fn new(cfg: Limits) -> Self {
        let methods: Vec<Method> = cfg
            .allowed_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.value.as_bytes()).ok())
            .collect();
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        LimitsGuard {
            mode: cfg.mode,
            max_header_bytes: cfg.max_header_bytes.0 as usize,
            max_uri: cfg.max_uri_length.0 as usize,
            max_body: cfg.max_body_bytes.0,
            methods,
            allow_header: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("GET")),
        }
    }
}

impl Guard for LimitsGuard {
    fn name(&self) -> &'static str {
        "limits"
    }
    fn mode(&self) -> Mode {
        self.mode
    }

    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        if !self.methods.contains(&req.method) {
            return Verdict::Block(
                Block::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("method {} is not allowed", req.method),
                )
                .header(header::ALLOW, self.allow_header.clone()),
            )
            .into();
        }
        let uri_len = req
            .uri
            .path_and_query()
            .map(|p| p.as_str().len())
            .unwrap_or(0);
        if uri_len > self.max_uri {
            return Verdict::Block(Block::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("request target is {uri_len} bytes, limit {}", self.max_uri),
            ))
            .into();
        }
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Verdict::Block(Block::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "request headers are {header_bytes} bytes, limit {}",
                    self.max_header_bytes
                ),
            ))
            .into();
        }
        if let Some(cl) = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if cl > self.max_body {
                return Verdict::Block(Block::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("Content-Length {cl} exceeds the limit of {}", self.max_body),
                ))
                .into();
            }
        }
        // Enforced by the core while the body streams (monitor mode only logs).
        if self.mode == Mode::Block {
            ctx.max_request_body = Some(
                ctx.max_request_body
                    .map_or(self.max_body, |m| m.min(self.max_body)),
            );
        }
        Verdict::Continue.into()
    }
}
