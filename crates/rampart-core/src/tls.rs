//! TLS for client listeners (rustls): TLS 1.3 by default, certificates chosen by SNI, optional
//! client certificates (mTLS) whose verified identity is handed to the guards.

use crate::guard::{ClientCert, TlsInfo};
use rampart_config::{ClientAuthMode, ConfigError, LoadedConfig, Spanned, Tls};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

fn name_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        host.len() > suffix.len() + 1
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            && !host[..host.len() - suffix.len() - 1].contains('.')
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            for (names, key) in &self.certs {
                if names.iter().any(|n| name_matches(n, sni)) {
                    return Some(key.clone());
                }
            }
        }
        self.certs.first().map(|(_, k)| k.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(
    lc: &LoadedConfig,
    p: &Spanned<String>,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let path = lc.resolve_path(&p.value);
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| {
            lc.error_at(
                p,
                format!("cannot read certificates from `{}`: {e}", path.display()),
            )
        })?
        .collect();
    let certs =
        certs.map_err(|e| lc.error_at(p, format!("invalid PEM in `{}`: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(lc.error_at(p, format!("no certificate found in `{}`", path.display())));
    }
    Ok(certs)
}

fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) {
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::DNSName(d) = n {
                    names.push(d.to_string());
                }
            }
        }
        if names.is_empty() {
            for cn in cert.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.push(s.to_string());
                }
            }
        }
    }
    names
}

/// Build the rustls config of one listener. Errors point at the offending config entry.
pub fn server_config(
    lc: &LoadedConfig,
    tls: &Spanned<Tls>,
) -> Result<Arc<ServerConfig>, Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    for pair in &tls.value.certificates {
        let chain = match load_certs(lc, &pair.value.cert) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let key_path = lc.resolve_path(&pair.value.key.value);
        let key = match PrivateKeyDer::from_pem_file(&key_path) {
            Ok(k) => k,
            Err(e) => {
                errors.push(lc.error_at(
                    &pair.value.key,
                    format!("cannot read private key from `{}`: {e}", key_path.display()),
                ));
                continue;
            }
        };
        let signing = match provider.key_provider.load_private_key(key) {
            Ok(s) => s,
            Err(e) => {
                errors.push(lc.error_at(
                    &pair.value.key,
                    format!("unsupported private key in `{}`: {e}", key_path.display()),
                ));
                continue;
            }
        };
        let names = cert_names(&chain[0]);
        let ck = CertifiedKey::new(chain, signing);
        if let Err(e) = ck.keys_match() {
            errors.push(lc.error_at(
                &pair.value.key,
                format!("private key does not match the certificate: {e}"),
            ));
            continue;
        }
        certs.push((names, Arc::new(ck)));
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match tls.value.min_version.as_ref().map(|v| v.value.as_str()) {
            Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            _ => &[&rustls::version::TLS13],
        };
    let builder = match ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
    {
        Ok(b) => b,
        Err(e) => {
            errors.push(lc.error_at(tls, format!("TLS setup failed: {e}")));
            return Err(errors);
        }
    };
    let builder = match &tls.value.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            match load_certs(lc, &ca.ca) {
                Ok(cas) => {
                    for c in cas {
                        if let Err(e) = roots.add(c) {
                            errors
                                .push(lc.error_at(&ca.ca, format!("invalid CA certificate: {e}")));
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            let vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let vb = match ca.mode {
                ClientAuthMode::Required => vb,
                ClientAuthMode::Optional => vb.allow_unauthenticated(),
            };
            match vb.build() {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    errors.push(lc.error_at(&ca.ca, format!("client CA bundle unusable: {e}")));
                    return Err(errors);
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = if tls.value.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

/// The client side of TLS to an upstream: its CA bundle and the name to verify.
#[allow(clippy::type_complexity)]
pub fn upstream_connector(
    lc: &LoadedConfig,
    tls: &Spanned<rampart_config::UpstreamTls>,
    http2: bool,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        Option<rustls::pki_types::ServerName<'static>>,
    ),
    ConfigError,
> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(lc, &tls.value.ca)? {
        roots
            .add(c)
            .map_err(|e| lc.error_at(&tls.value.ca, format!("invalid CA certificate: {e}")))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| lc.error_at(tls, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let name = match &tls.value.server_name {
        Some(n) => Some(
            rustls::pki_types::ServerName::try_from(n.value.clone())
                .map_err(|e| lc.error_at(n, format!("invalid server_name `{}`: {e}", n.value)))?,
        ),
        None => None,
    };
    Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
}

/// A TLS client for Rampart's own outbound calls (JWKS, token introspection): verifies the
/// server against `ca` (PEM bundle) or, when absent, the system bundle.
pub fn client_connector(
    lc: &LoadedConfig,
    ca: Option<&Spanned<String>>,
    at: &Spanned<String>,
) -> Result<tokio_rustls::TlsConnector, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for c in load_certs(lc, ca)? {
                roots
                    .add(c)
                    .map_err(|e| lc.error_at(ca, format!("invalid CA certificate: {e}")))?;
            }
        }
        None => {
            const SYSTEM: &str = "/etc/ssl/certs/ca-certificates.crt";
            let certs = CertificateDer::pem_file_iter(SYSTEM).map_err(|e| {
                lc.error_at(
                    at,
                    format!(
                        "no `ca` given and the system CA bundle `{SYSTEM}` cannot be read: {e}"
                    ),
                )
            })?;
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| lc.error_at(at, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// What the handshake established, for the request context.
pub fn session_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    TlsInfo {
        sni: conn.server_name().map(str::to_string),
        version,
        alpn: conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(client_cert),
    }
}

fn client_cert(der: &CertificateDer<'_>) -> ClientCert {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let fingerprint_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut out = ClientCert {
        fingerprint_sha256,
        ..Default::default()
    };
    if let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) {
        out.subject = cert.subject().to_string();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => out.sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => out.sans.push(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => out.sans.push(format!("email:{e}")),
                    GeneralName::IPAddress(ip) => {
                        let s = match ip.len() {
                            4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap_or([0; 4]))
                                .to_string(),
                            16 => {
                                std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap_or([0; 16]))
                                    .to_string()
                            }
                            _ => continue,
                        };
                        out.sans.push(format!("IP:{s}"));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcard_names() {
        assert!(super::name_matches("*.example.com", "api.example.com"));
        assert!(!super::name_matches("*.example.com", "a.b.example.com"));
        assert!(!super::name_matches("*.example.com", "example.com"));
        assert!(super::name_matches("API.example.com", "api.example.com"));
    }
}
