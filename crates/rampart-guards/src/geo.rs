//! `geo`: allow and deny clients by country, looked up in a MaxMind-format database
//! (`geoip.database`, e.g. GeoLite2-Country.mmdb) on the client address after trusted proxies.
//! The country is recorded on the request as the tag `country:XX`.

use http::StatusCode;
use maxminddb::{PathElement, Reader};
use rampart_config::{ConfigError, Geo, GeoUnknown, LoadedConfig, Mode, Spanned};
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rampart_core::Block;
use std::net::IpAddr;
use std::sync::Arc;

/// A loaded country database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl GeoDb {
    /// Read `geoip.database`; the error names the file and what is wrong with it.
    pub fn load(lc: &LoadedConfig, at: &Spanned<String>) -> Result<GeoDb, ConfigError> {
        let path = lc.resolve_path(&at.value);
        let bytes = std::fs::read(&path).map_err(|e| {
            lc.error_at(
                at,
                format!("cannot read GeoIP database `{}`: {e}", path.display()),
            )
        })?;
        let reader = Reader::from_source(bytes).map_err(|e| {
            lc.error_at(
                at,
                format!("`{}` is not a MaxMind DB (.mmdb) file: {e}", path.display()),
            )
        })?;
        Ok(GeoDb { reader })
    }

    /// The ISO country code of `ip` (`country`, else `registered_country`), upper-cased.
    pub fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let found = self.reader.lookup(ip).ok()?;
        // Borrowed from the database: no allocation per lookup.
        let code = |field| {
            found
                .decode_path::<&str>(&[PathElement::Key(field), PathElement::Key("iso_code")])
                .ok()
                .flatten()
        };
        let c = code("country").or_else(|| code("registered_country"))?;
        match c.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }
}

pub struct GeoGuard {
    db: Arc<GeoDb>,
    mode: Mode,
    allow: Vec<[u8; 2]>,
    deny: Vec<[u8; 2]>,
    unknown: GeoUnknown,
}

fn code(s: &str) -> [u8; 2] {
    let b = s.as_bytes();
    [
        b.first().copied().unwrap_or(b'?').to_ascii_uppercase(),
        b.get(1).copied().unwrap_or(b'?').to_ascii_uppercase(),
    ]
}

impl GeoGuard {
    pub fn new(db: Arc<GeoDb>, cfg: &Geo) -> Self {
        GeoGuard {
            db,
            mode: cfg.mode,
            allow: cfg.allow_countries.iter().map(|c| code(&c.value)).collect(),
            deny: cfg.deny_countries.iter().map(|c| code(&c.value)).collect(),
            unknown: cfg.unknown,
        }
    }

    /// `None` if a client from `country` may pass, else the reason.
    pub fn check(&self, country: Option<[u8; 2]>) -> Option<&'static str> {
        match country {
            Some(c) if self.deny.contains(&c) => Some("country_denied"),
            Some(c) if !self.allow.is_empty() && !self.allow.contains(&c) => {
                Some("country_not_allowed")
            }
            Some(_) => None,
            None => match self.unknown {
                GeoUnknown::Deny => Some("country_unknown"),
                GeoUnknown::Allow => None,
                GeoUnknown::Default if self.allow.is_empty() => None,
                GeoUnknown::Default => Some("country_unknown"),
            },
        }
    }
}

impl Guard for GeoGuard {
    fn name(&self) -> &'static str {
        "geo"
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn on_request_headers<'a>(
        &'a self,
        _req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        let country = self.db.country(ctx.client_ip);
        let name = country
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_else(|| "unknown".into());
        ctx.tags.push(format!("country:{name}"));
        match self.check(country) {
            None => Verdict::Continue.into(),
            Some(rule) => Verdict::Block(
                Block::new(
                    StatusCode::FORBIDDEN,
                    rule,
                    format!(
                        "client address {} ({name}) is not allowed here",
                        ctx.client_ip
                    ),
                )
                .detail(serde_json::json!({ "ip": ctx.client_ip.to_string(), "country": name })),
            )
            .into(),
        }
    }
}
