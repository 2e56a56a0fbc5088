//! JWT validation with keys from a JWKS URL (cached, refetched on an unknown `kid` at most once
//! per interval, last good set kept when the issuer is down), a JWKS file, a PEM public key, or
//! an HMAC secret.
//!
//! Safety rules: `alg` must be one of the configured algorithms (so `none` never passes); a key is
//! only used with algorithms of its own family (no public key as an HMAC secret); symmetric keys
//! are never taken from a JWKS; `jku`, `x5u` and `x5c` in a token header are ignored, never fetched.

use crate::fetch::{self, Endpoint};
use crate::{AuthFailure, ClaimPaths};
use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key is then used with that algorithm only.
    pub alg: Option<Algorithm>,
    pub family: Family,
    pub key: DecodingKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

pub fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

/// A parsed key set.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Parse a JWKS document. Keys that are not for signatures, symmetric, or of an unsupported
/// type are skipped (and named in the returned notes).
pub fn parse_jwks(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no `keys` array")?;
    let mut set = KeySet::default();
    let mut notes = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let kid = k.get("kid").and_then(|v| v.as_str()).map(str::to_string);
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        if let Some(u) = k.get("use").and_then(|v| v.as_str()) {
            if u != "sig" {
                notes.push(format!("key {name}: use `{u}` skipped"));
                continue;
            }
        }
        let kty = k.get("kty").and_then(|v| v.as_str()).unwrap_or("");
        let fam = match kty {
            "RSA" => Family::Rsa,
            "EC" => Family::Ec,
            "OKP" => Family::Ed,
            other => {
                notes.push(format!(
                    "key {name}: key type `{other}` not accepted from a JWKS"
                ));
                continue;
            }
        };
        let alg = match k.get("alg").and_then(|v| v.as_str()) {
            Some(a) => match a.parse::<Algorithm>() {
                Ok(a) if family(a) == fam => Some(a),
                _ => {
                    notes.push(format!("key {name}: alg `{a}` does not fit key type {kty}"));
                    continue;
                }
            },
            None => None,
        };
        let jwk: jsonwebtoken::jwk::Jwk = match serde_json::from_value(k.clone()) {
            Ok(j) => j,
            Err(e) => {
                notes.push(format!("key {name}: {e}"));
                continue;
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => set.keys.push(Key {
                kid,
                alg,
                family: fam,
                key,
            }),
            Err(e) => notes.push(format!("key {name}: {e}")),
        }
    }
    Ok((set, notes))
}

/// A JWKS fetched from a URL, shared by every config generation that names the same URL.
pub struct JwksCache {
    endpoint: Endpoint,
    current: ArcSwap<KeySet>,
    /// When the current set stops being fresh.
    fresh_until: Mutex<Option<Instant>>,
    /// The last fetch attempt (successful or not).
    last_attempt: Mutex<Option<Instant>>,
    refetch_interval: Duration,
    default_max_age: Duration,
    fetch_lock: tokio::sync::Mutex<()>,
    /// Fetch attempts so far (observable in tests and logs).
    pub fetches: AtomicU64,
    generation: std::sync::atomic::AtomicUsize,
}

impl JwksCache {
    pub fn new(endpoint: Endpoint, refetch_interval: Duration, default_max_age: Duration) -> Self {
        JwksCache {
            endpoint,
            current: ArcSwap::from_pointee(KeySet::default()),
            fresh_until: Mutex::new(None),
            last_attempt: Mutex::new(None),
            refetch_interval,
            default_max_age,
            fetch_lock: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            generation: std::sync::atomic::AtomicUsize::new(1),
        }
    }

    /// Changes whenever a new key set is installed.
    pub fn generation(&self) -> usize {
        self.generation.load(Ordering::Acquire)
    }

    pub fn url(&self) -> String {
        self.endpoint.uri.to_string()
    }

    fn may_attempt(&self, now: Instant) -> bool {
        match *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(t) => now.duration_since(t) >= self.refetch_interval,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        matches!(*self.fresh_until.lock().unwrap_or_else(|e| e.into_inner()), Some(t) if now < t)
    }

    /// Fetch now unless another task just did or the interval has not passed.
    pub async fn refresh(&self) {
        let seen = self.generation();
        let _g = self.fetch_lock.lock().await;
        if self.generation() != seen {
            return; // someone else refreshed while we waited
        }
        let now = Instant::now();
        if !self.may_attempt(now) {
            return;
        }
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let res = self
            .endpoint
            .call(
                http::Method::GET,
                &[(http::header::ACCEPT, "application/json".into())],
                bytes::Bytes::new(),
            )
            .await;
        match res {
            Ok(r) if r.status.is_success() => match parse_jwks(&r.body) {
                Ok((set, notes)) => {
                    for n in notes {
                        tracing::warn!(jwks = %self.endpoint.uri, "{n}");
                    }
                    let age = fetch::max_age(&r.headers).unwrap_or(self.default_max_age);
                    *self.fresh_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + age);
                    self.current.store(Arc::new(set));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::warn!(jwks = %self.endpoint.uri, "JWKS rejected, keeping the last good keys: {e}")
                }
            },
            Ok(r) => {
                tracing::warn!(jwks = %self.endpoint.uri, status = r.status.as_u16(), "JWKS fetch failed, keeping the last good keys")
            }
            Err(e) => {
                tracing::warn!(jwks = %self.endpoint.uri, "JWKS fetch failed, keeping the last good keys: {e}")
            }
        }
    }

    /// The key set to verify a token with `kid`. Stale sets are refreshed in the background;
    /// an unknown `kid` waits for one refetch (at most once per interval).
    pub async fn keys(self: &Arc<Self>, kid: Option<&str>) -> Arc<KeySet> {
        let now = Instant::now();
        let set = self.current.load_full();
        let known = match kid {
            Some(k) => set.keys.iter().any(|x| x.kid.as_deref() == Some(k)),
            None => !set.keys.is_empty(),
        };
        if known {
            if !self.is_fresh(now) && self.may_attempt(now) {
                let me = self.clone();
                tokio::spawn(async move { me.refresh().await });
            }
            return set;
        }
        // Waits for a fetch already under way (e.g. the one at startup); fetches itself only
        // if the refetch interval allows.
        self.refresh().await;
        self.current.load_full()
    }
}

/// Where keys come from.
pub enum Keys {
    Static(Arc<KeySet>),
    Jwks(Arc<JwksCache>),
}

type Claims = Arc<serde_json::Map<String, serde_json::Value>>;

/// Verified tokens, so a token used again is not verified again (ES256/RS256 verification costs
/// tens of microseconds). An entry lives at most [`CACHE_TTL`] and never past the token's `exp`;
/// it is dropped when the key set changes.
struct VerifyCache {
    shards: Vec<Shard>,
}

/// Token → (valid until, claims, key-set generation).
type Shard = Mutex<HashMap<Box<str>, (Instant, Claims, usize)>>;

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_SHARD_MAX: usize = 4096;

impl VerifyCache {
    fn new() -> Self {
        VerifyCache {
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
    fn shard(&self, token: &str) -> &Shard {
        // The signature's last bytes are random enough to spread tokens over shards.
        let b = token.as_bytes();
        let i = b.last().copied().unwrap_or(0) as usize ^ b.len();
        &self.shards[i % self.shards.len()]
    }
    fn get(&self, token: &str, gen: usize, now: Instant) -> Option<Claims> {
        let m = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        match m.get(token) {
            Some((until, c, g)) if *until > now && *g == gen => Some(c.clone()),
            _ => None,
        }
    }
    fn put(&self, token: &str, claims: Claims, gen: usize, now: Instant) {
        let exp = claims.get("exp").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let left = Duration::from_secs_f64((exp - unix).clamp(0.0, CACHE_TTL.as_secs_f64()));
        if left.is_zero() {
            return;
        }
        let mut m = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_SHARD_MAX {
            m.retain(|_, (until, _, _)| *until > now);
            if m.len() >= CACHE_SHARD_MAX {
                m.clear();
            }
        }
        m.insert(token.into(), (now + left, claims, gen));
    }
}

/// A configured JWT provider.
pub struct JwtVerifier {
    pub keys: Keys,
    cache: VerifyCache,
    /// One validation per accepted algorithm (jsonwebtoken wants one key family per check).
    validations: HashMap<Algorithm, Validation>,
    required: Vec<String>,
    pub max_token_bytes: usize,
    pub claims: ClaimPaths,
}

impl JwtVerifier {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Keys,
        algorithms: &[Algorithm],
        issuer: Option<&str>,
        audiences: &[String],
        leeway: Duration,
        required: Vec<String>,
        max_token_bytes: usize,
        claims: ClaimPaths,
    ) -> Self {
        let mut validations = HashMap::new();
        for &alg in algorithms {
            let mut v = Validation::new(alg);
            v.leeway = leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            let mut spec = vec!["exp"];
            if let Some(iss) = issuer {
                v.set_issuer(&[iss]);
                spec.push("iss");
            }
            if audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(audiences);
                spec.push("aud");
            }
            for r in &required {
                if matches!(r.as_str(), "nbf" | "sub") {
                    spec.push(if r == "nbf" { "nbf" } else { "sub" });
                }
            }
            v.set_required_spec_claims(&spec);
            validations.insert(alg, v);
        }
        JwtVerifier {
            keys,
            cache: VerifyCache::new(),
            validations,
            required,
            max_token_bytes,
            claims,
        }
    }

    fn generation(&self) -> usize {
        match &self.keys {
            Keys::Static(_) => 0,
            Keys::Jwks(c) => c.generation(),
        }
    }

    /// A token verified recently with the current keys.
    pub fn cached(&self, token: &str) -> Option<Claims> {
        self.cache.get(token, self.generation(), Instant::now())
    }

    /// Verify a token; on success, its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthFailure> {
        if let Some(c) = self.cached(token) {
            return Ok(c);
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        self.cache
            .put(token, claims.clone(), self.generation(), Instant::now());
        Ok(claims)
    }

    /// Verify without the cache (benchmarks; the guard uses [`JwtVerifier::verify`]).
    pub async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::invalid(
                "token_too_large",
                format!("token of {} bytes is over the limit", token.len()),
            ));
        }
        // The header is parsed by jsonwebtoken: `alg: none` or an unknown alg fails here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthFailure::invalid("malformed_token", format!("bad JWT header: {e}")))?;
        let validation = self.validations.get(&header.alg).ok_or_else(|| {
            AuthFailure::invalid(
                "algorithm_not_allowed",
                format!("alg {:?} is not accepted", header.alg),
            )
        })?;
        let fam = family(header.alg);
        let set = match &self.keys {
            Keys::Static(s) => s.clone(),
            Keys::Jwks(c) => c.keys(header.kid.as_deref()).await,
        };
        let mut candidates = set.keys.iter().filter(|k| {
            k.family == fam
                && (k.alg.is_none() || k.alg == Some(header.alg))
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => matches!(self.keys, Keys::Static(_)),
                    (None, _) => true,
                }
        });
        let mut last = None;
        for k in candidates.by_ref().take(4) {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &k.key, validation,
            ) {
                Ok(data) => {
                    for r in &self.required {
                        if !data.claims.contains_key(r) {
                            return Err(AuthFailure::invalid(
                                "missing_claim",
                                format!("required claim `{r}` is missing"),
                            ));
                        }
                    }
                    return Ok(data.claims);
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind::*;
                    let (code, keep_trying) = match e.kind() {
                        InvalidSignature => ("bad_signature", true),
                        ExpiredSignature => ("expired", false),
                        ImmatureSignature => ("not_yet_valid", false),
                        InvalidIssuer => ("wrong_issuer", false),
                        InvalidAudience => ("wrong_audience", false),
                        MissingRequiredClaim(_) => ("missing_claim", false),
                        InvalidAlgorithm => ("algorithm_mismatch", true),
                        _ => ("invalid_token", false),
                    };
                    let f = AuthFailure::invalid(code, format!("JWT rejected: {e}"));
                    if !keep_trying {
                        return Err(f);
                    }
                    last = Some(f);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            AuthFailure::invalid(
                "unknown_key",
                match &header.kid {
                    Some(k) => {
                        format!("no key with kid `{}` for alg {:?}", truncate(k), header.alg)
                    }
                    None => format!("no key for alg {:?}", header.alg),
                },
            )
        }))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
