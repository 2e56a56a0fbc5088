//! `ip_filter`: allow and deny CIDR lists, globally (checked once per connection, on the peer
//! address) and per route (checked per request, on the client address after trusted proxies).

use http::StatusCode;
use ipnet::IpNet;
use rampart_config::validate::parse_cidr;
use rampart_config::{ConfigError, IpFilter, LoadedConfig, Mode, Spanned};
use rampart_core::guard::{ConnInfo, Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;
use std::net::IpAddr;

pub struct IpFilterGuard {
    mode: Mode,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpFilterGuard {
    pub fn new(lc: &LoadedConfig, cfg: &Spanned<IpFilter>) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut parse = |list: &[Spanned<String>]| {
            list.iter()
                .filter_map(|c| match parse_cidr(&c.value) {
                    Ok(n) => Some(n),
                    Err(m) => {
                        errors.push(lc.error_at(c, m));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let allow = parse(&cfg.value.allow);
        let deny = parse(&cfg.value.deny);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(IpFilterGuard {
            mode: cfg.value.mode,
            allow,
            deny,
        })
    }

    /// `None` if the address may pass, else the reason.
    pub fn check(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Some("ip_denied");
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Some("ip_not_allowed");
        }
        None
    }

    fn block(&self, ip: IpAddr, rule: &'static str) -> Block {
        Block::new(
            StatusCode::FORBIDDEN,
            rule,
            format!("client address {ip} is not allowed"),
        )
        .detail(serde_json::json!({ "ip": ip.to_string() }))
    }
}

impl Guard for IpFilterGuard {
    fn name(&self) -> &'static str {
        "ip_filter"
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn on_connection(&self, conn: &ConnInfo) -> Verdict {
        match self.check(conn.peer.ip()) {
            Some(rule) => Verdict::Block(self.block(conn.peer.ip(), rule)),
            None => Verdict::Continue,
        }
    }
    fn on_request_headers<'a>(
        &'a self,
        _req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        match self.check(ctx.client_ip) {
            Some(rule) => Verdict::Block(self.block(ctx.client_ip, rule)).into(),
            None => Verdict::Continue.into(),
        }
    }
}
