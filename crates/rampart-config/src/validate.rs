//! Checks the type system cannot express. Every problem is collected, none stops the others.

/// Names of the guards that can block a request (what `auto_bans.guards` may name).
pub const BLOCKING_GUARDS: &[&str] = &[
    "ip_filter",
    "geo",
    "limits",
    "auth",
    "openapi",
    "waf",
    "rate_limit",
    "concurrency_limit",
    "quota",
    "cors",
];

use crate::model::*;
use crate::{ConfigError, LoadedConfig};
use serde_saphyr::Spanned;
use std::collections::HashSet;
use std::net::SocketAddr;

pub(crate) fn validate(lc: &LoadedConfig) -> Vec<ConfigError> {
    let mut v = Validator {
        lc,
        errors: Vec::new(),
    };
    v.run();
    v.errors
}

struct Validator<'a> {
    lc: &'a LoadedConfig,
    errors: Vec<ConfigError>,
}

/// Parse a CIDR or a bare IP address (as a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    Err(format!(
        "invalid CIDR `{s}` (expected an address or address/prefix such as 10.0.0.0/8 or 2001:db8::/32)"
    ))
}

impl Validator<'_> {
    fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        self.errors.push(self.lc.error_at(at, msg));
    }

    fn run(&mut self) {
        let c = &self.lc.config;
        if c.listeners.is_empty() {
            self.errors.push(ConfigError {
                loc: crate::Loc {
                    file: self.lc.source.clone(),
                    line: 1,
                    col: 1,
                },
                message: "at least one listener is required".into(),
            });
        }
        self.server(&c.server);
        let mut listen_names = HashSet::new();
        let mut addrs = HashSet::new();
        for l in &c.listeners {
            if let Some(n) = &l.value.name {
                if !listen_names.insert(n.value.clone()) {
                    self.err(n, format!("duplicate listener name `{}`", n.value));
                }
            }
            match l.value.address.value.parse::<SocketAddr>() {
                Ok(a) => {
                    if a.port() != 0 && !addrs.insert(a) {
                        self.err(
                            &l.value.address,
                            format!("duplicate listener address `{a}`"),
                        );
                    }
                }
                Err(_) => self.err(
                    &l.value.address,
                    format!(
                        "invalid listen address `{}` (expected IP:PORT such as 127.0.0.1:8080)",
                        l.value.address.value
                    ),
                ),
            }
            if let Some(tls) = &l.value.tls {
                self.tls(tls);
            }
        }
        if c.admin.address.value != "off" && c.admin.address.value.parse::<SocketAddr>().is_err() {
            self.err(
                &c.admin.address,
                format!(
                    "invalid admin address `{}` (expected IP:PORT or `off`)",
                    c.admin.address.value
                ),
            );
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&c.log.level.value.as_str()) {
            self.err(
                &c.log.level,
                format!(
                    "unknown log level `{}` (error, warn, info, debug, trace)",
                    c.log.level.value
                ),
            );
        }

        let mut upstream_names = HashSet::new();
        for u in &c.upstreams {
            let u = &u.value;
            if !upstream_names.insert(u.name.value.as_str()) {
                self.err(
                    &u.name,
                    format!("duplicate upstream name `{}`", u.name.value),
                );
            }
            if u.targets.is_empty() {
                self.err(
                    &u.name,
                    format!("upstream `{}` has no targets", u.name.value),
                );
            }
            let mut https = false;
            for t in &u.targets {
                if let Err(m) = check_target(&t.value) {
                    self.err(t, m);
                }
                https |= t.value.starts_with("https://");
            }
            match (&u.tls, https) {
                (Some(tls), true) => self.file(&tls.value.ca, "upstream CA bundle"),
                (Some(tls), false) => self.err(tls, "upstream `tls` is set but no target is https://"),
                (None, true) => self.err(&u.name, format!("upstream `{}` has https:// targets: add `tls: {{ ca: FILE }}` with the CA that signs their certificates", u.name.value)),
                (None, false) => {}
            }
            if https && u.targets.iter().any(|t| t.value.starts_with("http://")) {
                self.err(
                    &u.name,
                    "mixing http:// and https:// targets in one upstream is not allowed",
                );
            }
            if u.max_in_flight == 0 {
                self.err(&u.name, "max_in_flight must be at least 1");
            }
        }

        // Global limit names, which route limits may not reuse (the name is part of the
        // counter key: a route limit with a global limit's name would share its counters).
        let names_of = |ls: Option<Vec<&Spanned<String>>>| -> HashSet<String> {
            ls.unwrap_or_default()
                .into_iter()
                .map(|n| n.value.clone())
                .collect()
        };
        let g = &c.guards;
        let global_rl = names_of(
            g.rate_limits
                .as_ref()
                .map(|l| l.value.iter().map(|x| &x.value.name).collect()),
        );
        let global_cc = names_of(
            g.concurrency_limits
                .as_ref()
                .map(|l| l.value.iter().map(|x| &x.value.name).collect()),
        );
        let global_q = names_of(
            g.quotas
                .as_ref()
                .map(|l| l.value.iter().map(|x| &x.value.name).collect()),
        );
        let mut route_names = HashSet::new();
        let mut any_quota = c.guards.quotas.is_some();
        for r in &c.routes {
            let r = &r.value;
            if !route_names.insert(r.name.value.as_str()) {
                self.err(&r.name, format!("duplicate route name `{}`", r.name.value));
            }
            if !r.path_prefix.value.starts_with('/') {
                self.err(
                    &r.path_prefix,
                    format!(
                        "path_prefix must start with `/` (got `{}`)",
                        r.path_prefix.value
                    ),
                );
            }
            if let Some(h) = &r.host {
                let host = h.value.strip_prefix("*.").unwrap_or(&h.value);
                if host.is_empty()
                    || !host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    self.err(h, format!("invalid host `{}` (expected a host name such as api.example.com or *.example.com)", h.value));
                }
            }
            if let Some(ms) = &r.methods {
                for m in ms {
                    self.method(m);
                }
            }
            if !upstream_names.contains(r.upstream.value.as_str()) {
                self.err(
                    &r.upstream,
                    format!(
                        "route `{}` names upstream `{}`, which is not defined under `upstreams`",
                        r.name.value, r.upstream.value
                    ),
                );
            }
            if r.websocket
                && c.upstreams
                    .iter()
                    .any(|u| u.value.name.value == r.upstream.value && u.value.http2)
            {
                self.err(
                    &r.name,
                    format!(
                        "route `{}` passes WebSocket upgrades (`websocket: true`), but upstream `{}` speaks HTTP/2 (`http2: true`): upgrades need an HTTP/1.1 upstream",
                        r.name.value, r.upstream.value
                    ),
                );
            }
            self.guard_blocks(&r.limits, &r.cors, &r.ip_filter);
            self.rate_limits(&r.rate_limits, &global_rl);
            self.concurrency_limits(&r.concurrency_limits, &global_cc);
            self.quotas(&r.quotas, &global_q);
            any_quota |= r.quotas.is_some();
        }
        let g = &c.guards;
        self.guard_blocks(&g.limits, &g.cors, &g.ip_filter);
        self.rate_limits(&g.rate_limits, &HashSet::new());
        self.concurrency_limits(&g.concurrency_limits, &HashSet::new());
        self.quotas(&g.quotas, &HashSet::new());
        if any_quota && c.ratelimit.store == StoreKind::Memory && c.ratelimit.quota_file.is_none() {
            let at = c.guards.quotas.as_ref().map(|q| self.lc.loc(q));
            self.errors.push(ConfigError {
                loc: at.unwrap_or(crate::Loc { file: self.lc.source.clone(), line: 1, col: 1 }),
                message: "quotas with ratelimit.store: memory need ratelimit.quota_file, so a restart does not reset them".into(),
            });
        }
        let geos = c
            .routes
            .iter()
            .filter_map(|r| r.value.geo.as_ref())
            .chain(c.guards.geo.as_ref());
        for g in geos {
            if c.geoip.database.is_none() {
                self.err(
                    g,
                    "`geo` needs a country database: set geoip.database to a .mmdb file",
                );
            }
            for code in g
                .value
                .allow_countries
                .iter()
                .chain(&g.value.deny_countries)
            {
                let v = code.value.as_bytes();
                if v.len() != 2 || !v.iter().all(u8::is_ascii_alphabetic) {
                    self.err(
                        code,
                        format!(
                            "`{}` is not a two-letter ISO 3166 country code (such as US, FR)",
                            code.value
                        ),
                    );
                }
            }
        }
        let mut ban_names = HashSet::new();
        for b in &c.ratelimit.auto_bans {
            let v = &b.value;
            if !ban_names.insert(v.name.value.as_str()) {
                self.err(
                    &v.name,
                    format!("auto_bans name `{}` is used twice", v.name.value),
                );
            }
            if v.guards.is_empty() {
                self.err(
                    b,
                    "auto_bans entry needs `guards` (such as [waf] or [auth])",
                );
            }
            for g in &v.guards {
                if !BLOCKING_GUARDS.contains(&g.value.as_str()) {
                    self.err(
                        g,
                        format!(
                            "unknown guard `{}` in auto_bans (known: {})",
                            g.value,
                            BLOCKING_GUARDS.join(", ")
                        ),
                    );
                }
            }
            if v.after.value == 0 {
                self.err(&v.after, "`after` must be at least 1");
            }
            if v.within.0.is_zero() || v.ban_for.0.is_zero() {
                self.err(b, "`within` and `ban_for` must be longer than zero");
            }
        }
        let rl = &c.ratelimit;
        match (&rl.store, &rl.redis_url) {
            (StoreKind::Redis, None) => self.errors.push(ConfigError {
                loc: crate::Loc {
                    file: self.lc.source.clone(),
                    line: 1,
                    col: 1,
                },
                message: "ratelimit.store is redis but ratelimit.redis_url is not set".into(),
            }),
            (_, Some(u))
                if !(u.value.starts_with("redis://") || u.value.starts_with("rediss://")) =>
            {
                self.err(
                    u,
                    format!("redis_url `{}` must start with redis://", u.value),
                )
            }
            _ => {}
        }
    }

    fn rate_limits(
        &mut self,
        limits: &Option<Spanned<Vec<Spanned<RateLimit>>>>,
        global: &HashSet<String>,
    ) {
        let Some(limits) = limits else { return };
        let mut names = HashSet::new();
        for l in &limits.value {
            let l = &l.value;
            self.limit_name("rate limit", &l.name, &mut names, global);
            if l.rate.value == 0 {
                self.err(&l.rate, "rate must be at least 1");
            }
            if l.period.0.is_zero() {
                self.err(&l.name, "period must be greater than zero");
            }
            if l.burst == Some(0) {
                self.err(&l.name, "burst must be at least 1");
            }
            self.key_parts(&l.name, &l.key, l.ipv6_prefix, true);
        }
    }

    fn concurrency_limits(
        &mut self,
        limits: &Option<Spanned<Vec<Spanned<ConcurrencyLimit>>>>,
        global: &HashSet<String>,
    ) {
        let Some(limits) = limits else { return };
        let mut names = HashSet::new();
        for l in &limits.value {
            let l = &l.value;
            self.limit_name("concurrency limit", &l.name, &mut names, global);
            if l.max.value == 0 {
                self.err(&l.max, "max must be at least 1");
            }
            self.key_parts(&l.name, &l.key, l.ipv6_prefix, false);
        }
    }

    fn quotas(&mut self, limits: &Option<Spanned<Vec<Spanned<Quota>>>>, global: &HashSet<String>) {
        let Some(limits) = limits else { return };
        let mut names = HashSet::new();
        for l in &limits.value {
            let l = &l.value;
            self.limit_name("quota", &l.name, &mut names, global);
            if l.limit.value == 0 {
                self.err(&l.limit, "limit must be at least 1");
            }
            self.key_parts(&l.name, &l.key, l.ipv6_prefix, false);
        }
    }

    /// A limit's name: unique in its list, and not a global limit's name when in a route.
    fn limit_name(
        &mut self,
        kind: &str,
        name: &Spanned<String>,
        seen: &mut HashSet<String>,
        global: &HashSet<String>,
    ) {
        if !seen.insert(name.value.clone()) {
            self.err(name, format!("duplicate {kind} name `{}`", name.value));
        } else if global.contains(&name.value) {
            self.err(name, format!("{kind} `{}` has the name of a global {kind}; the name keys its counters, so pick another", name.value));
        }
    }

    /// Key parts of a rate limit, concurrency limit or quota. `json:` needs the request body,
    /// which only rate limits read.
    fn key_parts(
        &mut self,
        name: &Spanned<String>,
        keys: &[Spanned<String>],
        ipv6_prefix: u8,
        allow_json: bool,
    ) {
        if ipv6_prefix > 128 {
            self.err(name, "ipv6_prefix must be between 0 and 128");
        }
        let parts = if allow_json {
            "client_ip, route, method, operation, header:NAME, json:FIELD, subject, api_key"
        } else {
            "client_ip, route, method, operation, header:NAME, subject, api_key"
        };
        if keys.is_empty() {
            self.err(name, format!("key needs at least one part ({parts})"));
        }
        for k in keys {
            let ok = match k.value.split_once(':') {
                Some(("header", h)) => http_token(h).is_ok(),
                Some(("json", path)) => {
                    allow_json && !path.is_empty() && path.split('.').all(|s| !s.is_empty())
                }
                Some(_) => false,
                None => [
                    "client_ip",
                    "route",
                    "method",
                    "operation",
                    "subject",
                    "api_key",
                ]
                .contains(&k.value.as_str()),
            };
            if !ok {
                self.err(k, format!("unknown key part `{}` ({parts})", k.value));
            }
        }
    }

    fn server(&mut self, s: &Server) {
        for p in &s.trusted_proxies {
            if let Err(m) = parse_cidr(&p.value) {
                self.err(p, m);
            }
        }
        let h = &s.request_id_header.value;
        if http_token(h).is_err() {
            self.err(&s.request_id_header, format!("invalid header name `{h}`"));
        }
    }

    fn tls(&mut self, tls: &Spanned<Tls>) {
        if tls.value.certificates.is_empty() {
            self.err(tls, "tls needs at least one entry under `certificates`");
        }
        for c in &tls.value.certificates {
            self.file(&c.value.cert, "certificate");
            self.file(&c.value.key, "private key");
        }
        if let Some(v) = &tls.value.min_version {
            if v.value != "1.2" && v.value != "1.3" {
                self.err(
                    v,
                    format!(
                        "unsupported TLS min_version `{}` (use \"1.3\" or \"1.2\")",
                        v.value
                    ),
                );
            }
        }
        if let Some(ca) = &tls.value.client_auth {
            self.file(&ca.ca, "client CA bundle");
        }
    }

    fn file(&mut self, p: &Spanned<String>, what: &str) {
        let path = self.lc.resolve_path(&p.value);
        if !path.is_file() {
            self.err(p, format!("{what} file `{}` not found", path.display()));
        }
    }

    fn method(&mut self, m: &Spanned<String>) {
        if m.value.is_empty() || !m.value.bytes().all(|b| b.is_ascii_uppercase()) {
            self.err(
                m,
                format!(
                    "invalid HTTP method `{}` (use upper case, e.g. GET)",
                    m.value
                ),
            );
        }
    }

    fn guard_blocks(
        &mut self,
        limits: &Option<Spanned<Limits>>,
        cors: &Option<Spanned<Cors>>,
        ip: &Option<Spanned<IpFilter>>,
    ) {
        if let Some(l) = limits {
            for m in &l.value.allowed_methods {
                self.method(m);
            }
            if l.value.max_uri_length.0 == 0 || l.value.max_header_bytes.0 == 0 {
                self.err(l, "limits must be greater than zero");
            }
        }
        if let Some(c) = cors {
            let wildcard = c.value.allow_origins.iter().any(|o| o.value == "*");
            if wildcard && c.value.allow_credentials {
                self.err(
                    c,
                    "cors: allow_origins `*` with allow_credentials: true is not allowed (browsers reject it and it would expose credentials to every site); list the origins",
                );
            }
            if c.value.allow_origins.is_empty() {
                self.err(c, "cors: allow_origins must list at least one origin");
            }
            for o in &c.value.allow_origins {
                if o.value != "*"
                    && !(o.value.starts_with("https://") || o.value.starts_with("http://"))
                {
                    self.err(
                        o,
                        format!(
                            "cors origin `{}` must be `*` or a scheme://host[:port] origin",
                            o.value
                        ),
                    );
                } else if o.value != "*" && o.value.trim_end_matches('/') != o.value {
                    self.err(
                        o,
                        format!("cors origin `{}` must not end with `/`", o.value),
                    );
                }
            }
            for m in &c.value.allow_methods {
                self.method(m);
            }
            for h in c.value.allow_headers.iter().chain(&c.value.expose_headers) {
                if h.value != "*" && http_token(&h.value).is_err() {
                    self.err(h, format!("invalid header name `{}`", h.value));
                }
            }
        }
        if let Some(f) = ip {
            for c in f.value.allow.iter().chain(&f.value.deny) {
                if let Err(m) = parse_cidr(&c.value) {
                    self.err(c, m);
                }
            }
        }
    }
}

fn http_token(s: &str) -> Result<(), ()> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Ok(())
    } else {
        Err(())
    }
}

/// An upstream target must be `http://host:port` or `https://host:port` (no path, query or
/// credentials).
pub fn check_target(t: &str) -> Result<(), String> {
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| format!("upstream target `{t}` must start with http:// or https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "upstream target `{t}` must be http(s)://host:port with no path, query or credentials"
        ));
    }
    Ok(())
}
