//! A small HTTP/1.1 client for Rampart's own outbound calls (JWKS, token introspection):
//! one connection per call, an overall timeout, a response size limit, http or https.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where and how to call.
#[derive(Clone)]
pub struct Endpoint {
    pub uri: Uri,
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub timeout: Duration,
    pub max_bytes: usize,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Endpoint {
    /// Parse `url` (http:// or https://). `tls` is required for https.
    pub fn new(
        url: &str,
        tls: Option<tokio_rustls::TlsConnector>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("URL `{url}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL `{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let conn = tls.ok_or_else(|| format!("https URL `{url}` needs a TLS setup"))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("invalid TLS server name `{host}`: {e}"))?;
            Some((conn, name))
        } else {
            None
        };
        Ok(Endpoint {
            uri,
            host,
            port,
            tls,
            timeout,
            max_bytes,
        })
    }

    /// One request; errors are short sentences for the log.
    pub async fn call(
        &self,
        method: Method,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
    ) -> Result<Reply, String> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} did not answer within {:?}",
                self.uri, self.timeout
            )),
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.uri))?;
        let _ = tcp.set_nodelay(true);
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "rampart");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("cannot build request: {e}"))?;
        let resp = match &self.tls {
            Some((conn, name)) => {
                let s = conn
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS to {} failed: {e}", self.uri))?;
                send(TokioIo::new(s), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        let (parts, body) = resp.into_parts();
        if let Some(len) = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.max_bytes as u64 {
                return Err(format!(
                    "{} answered {len} bytes, more than the limit of {}",
                    self.uri, self.max_bytes
                ));
            }
        }
        let body = Limited::new(body, self.max_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {} failed: {e}", self.uri))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn send<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))
}

/// `max-age` from a Cache-Control header, if any.
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let cc = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',').find_map(|d| {
        let d = d.trim();
        let v = d.strip_prefix("max-age=")?;
        v.trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}
