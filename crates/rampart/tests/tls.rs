//! TLS 1.3 with certificates generated here (rcgen), SNI, HTTP/2 via ALPN, mTLS required and
//! optional, and the verified client identity handed to guards.

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use rampart_core::guard::{Guard, RequestContext, RequestHead, Step, Verdict};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
    rogue_cert: CertificateDer<'static>,
    rogue_key: PrivateKeyDer<'static>,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(
    names: &[&str],
    cn: &str,
    client: bool,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    (p.signed_by(&key, ca, ca_key).unwrap(), key)
}

fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("rampart-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_cert, ca_key) = ca("Rampart Test CA");
    let (srv, srv_key) = leaf(
        &["localhost", "api.test"],
        "api.test",
        false,
        &ca_cert,
        &ca_key,
    );
    let (other, other_key) = leaf(&["other.test"], "other.test", false, &ca_cert, &ca_key);
    let (cli, cli_key) = leaf(&["client-1.test"], "client-1", true, &ca_cert, &ca_key);
    let (rogue_ca, rogue_ca_key) = ca("Rogue CA");
    let (rogue, rogue_key) = leaf(&["rogue.test"], "rogue", true, &rogue_ca, &rogue_ca_key);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("srv.pem"), srv.pem()).unwrap();
    std::fs::write(dir.join("srv.key"), srv_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("other.pem"), other.pem()).unwrap();
    let (srv2, srv2_key) = leaf(
        &["localhost", "api.test"],
        "api-v2",
        false,
        &ca_cert,
        &ca_key,
    );
    std::fs::write(dir.join("srv2.pem"), srv2.pem()).unwrap();
    std::fs::write(dir.join("srv2.key"), srv2_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("other.key"), other_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        client_cert: cli.der().clone(),
        client_key: PrivateKeyDer::try_from(cli_key.serialize_der()).unwrap(),
        rogue_cert: rogue.der().clone(),
        rogue_key: PrivateKeyDer::try_from(rogue_key.serialize_der()).unwrap(),
        dir,
    }
}

fn tls_config(p: &Pki, upstream: std::net::SocketAddr, client_auth: &str) -> String {
    let d = p.dir.display();
    let ca = if client_auth.is_empty() {
        String::new()
    } else {
        format!("      client_auth:\n        ca: {d}/ca.pem\n        mode: {client_auth}\n")
    };
    format!(
        "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: {d}/srv.pem\n          key: {d}/srv.key\n        - cert: {d}/other.pem\n          key: {d}/other.key\n{ca}admin:\n  address: \"off\"\nlog:\n  access: off\nupstreams:\n  - name: api\n    targets: [\"http://{upstream}\"]\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n"
    )
}

fn connector(
    p: &Pki,
    alpn: &[&[u8]],
    client: Option<(&CertificateDer<'static>, &PrivateKeyDer<'static>)>,
    tls12_only: bool,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(p.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((c, k)) => b
            .with_client_auth_cert(vec![c.clone()], k.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

use rustls::pki_types::pem::PemObject;

/// One request over TLS; returns (status, negotiated protocol, body, peer cert names seen).
async fn tls_get(
    conn: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    sni: &str,
    path: &str,
) -> Result<(u16, String, Bytes, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = conn
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let version = format!("{:?}", session.protocol_version());
    let cert_cn = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| String::from_utf8_lossy(c.as_ref()).into_owned())
        .unwrap_or_default();
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(format!("https://{sni}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if h2 {
        let (mut s, c) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(c);
        s.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(c);
        let mut req = req;
        req.headers_mut().insert("host", sni.parse().unwrap());
        s.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let proto = format!("{:?} {}", resp.version(), version);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, proto, body, cert_cn))
}

#[tokio::test]
async fn tls13_http1_and_http2_with_sni() {
    let p = pki("basic");
    let up = TestUpstream::start().await;
    let gw = gateway(&tls_config(&p, up.addr, "")).await;
    let addr = gw.listen_addrs()[0];
    let (s, proto, _, _) = tls_get(
        &connector(&p, &[b"http/1.1"], None, false),
        addr,
        "api.test",
        "/one",
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert!(
        proto.contains("HTTP/1.1") && proto.contains("TLSv1_3"),
        "{proto}"
    );
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    let (s, proto, _, _) = tls_get(
        &connector(&p, &[b"h2", b"http/1.1"], None, false),
        addr,
        "api.test",
        "/two",
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert!(proto.contains("HTTP/2"), "{proto}");
    assert_eq!(up.last().uri, "/two");
    // SNI picks the second certificate.
    let (_, _, _, other) = tls_get(
        &connector(&p, &[b"http/1.1"], None, false),
        addr,
        "other.test",
        "/three",
    )
    .await
    .unwrap();
    assert!(other.contains("other.test") && !other.contains("api.test"));
    // TLS 1.2 is off by default.
    assert!(tls_get(
        &connector(&p, &[b"http/1.1"], None, true),
        addr,
        "api.test",
        "/"
    )
    .await
    .is_err());
}

#[tokio::test]
async fn hsts_is_sent_on_tls() {
    let p = pki("hsts");
    let up = TestUpstream::start().await;
    let gw = gateway(&tls_config(&p, up.addr, "")).await;
    let conn = connector(&p, &[b"http/1.1"], None, false);
    let tcp = tokio::net::TcpStream::connect(gw.listen_addrs()[0])
        .await
        .unwrap();
    let tls = conn
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(c);
    let resp = s
        .send_request(
            http::Request::get("/")
                .header("host", "api.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

/// A guard written for this test: passes the verified client certificate to the upstream.
struct ShowClientCert;
impl Guard for ShowClientCert {
    fn name(&self) -> &'static str {
        "show_client_cert"
    }
    fn on_request_headers<'a>(
        &'a self,
        req: &'a mut RequestHead,
        ctx: &'a mut RequestContext,
    ) -> Step<'a> {
        if let Some(c) = ctx.conn.tls.as_ref().and_then(|t| t.client_cert.as_ref()) {
            req.headers
                .insert("x-client-subject", c.subject.parse().unwrap());
            req.headers
                .insert("x-client-san", c.sans.join(",").parse().unwrap());
            req.headers
                .insert("x-client-fp", c.fingerprint_sha256.parse().unwrap());
        }
        Verdict::Continue.into()
    }
}

async fn gateway_with_cert_guard(yaml: &str) -> Arc<rampart_core::Gateway> {
    let lc = rampart::load_text(yaml, "tls.yaml", &std::env::temp_dir()).unwrap();
    let builder: Arc<rampart_core::GuardBuilder> = Arc::new(|lc: &rampart_config::LoadedConfig| {
        let mut g = rampart_guards::build(lc)?;
        for chain in &mut g.routes {
            chain.insert(0, Arc::new(ShowClientCert));
        }
        Ok(g)
    });
    rampart_core::Gateway::start(lc, builder, rampart_telemetry::LogSink::off())
        .await
        .unwrap()
}

#[tokio::test]
async fn mtls_required_accepts_known_clients_and_rejects_others() {
    let p = pki("mtls");
    let up = TestUpstream::start().await;
    let gw = gateway_with_cert_guard(&tls_config(&p, up.addr, "required")).await;
    let addr = gw.listen_addrs()[0];
    let good = connector(
        &p,
        &[b"http/1.1"],
        Some((&p.client_cert, &p.client_key)),
        false,
    );
    let (s, _, _, _) = tls_get(&good, addr, "api.test", "/m").await.unwrap();
    assert_eq!(s, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-client-subject"], "CN=client-1");
    assert_eq!(seen.headers["x-client-san"], "DNS:client-1.test");
    assert_eq!(seen.headers["x-client-fp"].len(), 64);
    let before = up.count();
    let none = connector(&p, &[b"http/1.1"], None, false);
    assert!(
        tls_get(&none, addr, "api.test", "/m").await.is_err(),
        "no client certificate"
    );
    let rogue = connector(
        &p,
        &[b"http/1.1"],
        Some((&p.rogue_cert, &p.rogue_key)),
        false,
    );
    assert!(
        tls_get(&rogue, addr, "api.test", "/m").await.is_err(),
        "certificate from an unknown CA"
    );
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn mtls_optional_lets_anonymous_clients_in_without_identity() {
    let p = pki("mtlsopt");
    let up = TestUpstream::start().await;
    let gw = gateway_with_cert_guard(&tls_config(&p, up.addr, "optional")).await;
    let addr = gw.listen_addrs()[0];
    let none = connector(&p, &[b"http/1.1"], None, false);
    let (s, _, _, _) = tls_get(&none, addr, "api.test", "/o").await.unwrap();
    assert_eq!(s, 200);
    assert!(up.last().headers.get("x-client-subject").is_none());
    let good = connector(&p, &[b"h2"], Some((&p.client_cert, &p.client_key)), false);
    let (s, _, _, _) = tls_get(&good, addr, "api.test", "/o2").await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(up.last().headers["x-client-subject"], "CN=client-1");
}

#[tokio::test]
async fn certificates_reload_with_the_config() {
    let p = pki("reload");
    let up = TestUpstream::start().await;
    let yaml = tls_config(&p, up.addr, "");
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let conn = connector(&p, &[b"http/1.1"], None, false);
    let (_, _, _, cert) = tls_get(&conn, addr, "api.test", "/").await.unwrap();
    assert!(!cert.contains("api-v2"));
    // Point the config at a renewed certificate and reload: new handshakes get it.
    let renewed = yaml
        .replace("srv.pem", "srv2.pem")
        .replace("srv.key", "srv2.key");
    assert!(renewed.contains("srv2.pem"), "{renewed}");
    let lc = rampart::load_text(&renewed, "tls.yaml", &p.dir).unwrap();
    assert_eq!(gw.reload(&lc).unwrap(), 2);
    // A fresh client: a resumed session would not show the certificate again.
    let conn = connector(&p, &[b"http/1.1"], None, false);
    let (s, _, _, cert) = tls_get(&conn, addr, "api.test", "/").await.unwrap();
    assert_eq!(s, 200);
    let ascii: String = cert.chars().filter(|c| c.is_ascii_graphic()).collect();
    assert!(
        cert.contains("api-v2"),
        "renewed certificate served after reload: {ascii}"
    );
    // A broken certificate path is refused before it can replace anything.
    let broken = yaml.replace("srv.pem", "missing.pem");
    assert!(rampart::load_text(&broken, "tls.yaml", &p.dir).is_err());
}

/// An HTTPS upstream (rustls + hyper) with a certificate from the test CA.
async fn https_upstream(p: &Pki) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p.dir.join("srv.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(p.dir.join("srv.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(format!("tls upstream {}", req.uri().path())),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_to_upstream_verifies_its_certificate() {
    let p = pki("upstream");
    let up = https_upstream(&p).await;
    let d = p.dir.display();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nlog:\n  access: off\nupstreams:\n  - name: api\n    targets: [\"https://localhost:{port}\"]\n    tls:\n      ca: {d}/ca.pem\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: api\n",
        port = up.port()
    );
    let gw = gateway(&yaml).await;
    let (s, _, body) = get(gw.listen_addrs()[0], "/secure").await;
    assert_eq!(s, 200);
    assert_eq!(body, "tls upstream /secure");
    // Verifying against the wrong name fails closed: 502, never plaintext.
    let wrong = yaml.replace("      ca:", "      server_name: other.test\n      ca:");
    let gw2 = gateway(&wrong).await;
    assert_eq!(get(gw2.listen_addrs()[0], "/secure").await.0, 502);
    // https:// targets without a CA bundle are a config error.
    let no_ca = yaml.replace(&format!("    tls:\n      ca: {d}/ca.pem\n"), "");
    let err = rampart::load_text(&no_ca, "u.yaml", &p.dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("https:// targets"), "{err}");
}

#[tokio::test]
async fn mtls_identity_authenticates_and_rules_allow_by_certificate_subject() {
    let p = pki("mtls-auth");
    let up = TestUpstream::start().await;
    let base = tls_config(&p, up.addr, "optional");
    let yaml = format!(
        "{base}    auth:\n      providers: [certs]\n      forward:\n        subject: x-auth-subject\n        roles: x-auth-roles\n      rules:\n        - path: /internal/**\n          subjects: [client-1.test]\n        - path: /ops/**\n          subjects: [ops.test]\n        - path: /svc/**\n          roles_any: [service]\nidentity:\n  providers:\n    - name: certs\n      mtls:\n        subject_from: san_dns\n        grants:\n          - subject: client-1.test\n            roles: [service]\n"
    );
    let gw = gateway(&yaml).await;
    let addr = gw.listen_addrs()[0];
    let good = connector(
        &p,
        &[b"http/1.1"],
        Some((&p.client_cert, &p.client_key)),
        false,
    );
    let (s, _, _, _) = tls_get(&good, addr, "api.test", "/internal/a")
        .await
        .unwrap();
    assert_eq!(s, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-auth-subject"], "client-1.test");
    assert_eq!(seen.headers["x-auth-roles"], "service");
    let (s, _, _, _) = tls_get(&good, addr, "api.test", "/svc/b").await.unwrap();
    assert_eq!(s, 200, "role granted to the certificate subject");
    let (s, _, _, _) = tls_get(&good, addr, "api.test", "/ops/c").await.unwrap();
    assert_eq!(s, 403, "this certificate is not on the /ops list");
    let anon = connector(&p, &[b"http/1.1"], None, false);
    let (s, _, _, _) = tls_get(&anon, addr, "api.test", "/internal/a")
        .await
        .unwrap();
    assert_eq!(s, 401, "no client certificate, no identity");
    assert_eq!(up.count(), 2);
}
