//! From config to guards: providers are checked and compiled once per config generation
//! (JWKS caches and API key caches are kept across generations in [`State`]).

use crate::apikey::{KeyCache, KeyStore};
use crate::bruteforce::Policy;
use crate::fetch::Endpoint;
use crate::guard::{AuthGuard, Forward, Kind, Login, Provider, TokenSource, UsernameAt};
use crate::introspect::Introspector;
use crate::jwt::{self, JwksCache, JwtVerifier, KeySet, Keys};
use crate::rules::{IdSource, Owner, Rule, Template};
use crate::{ClaimPaths, State};
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};
use rampart_config::{Auth, ConfigError, LoadedConfig, Spanned, Unmatched};
use std::collections::HashMap;
use std::sync::Arc;

type Errors = Vec<ConfigError>;

/// Exactly one of a set of mutually exclusive options is given.
fn exactly_one(set: &[bool]) -> bool {
    set.iter().filter(|x| **x).count() == 1
}

fn header_name(lc: &LoadedConfig, s: &Spanned<String>, errors: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.value.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            errors.push(lc.error_at(s, format!("invalid header name `{}`", s.value)));
            None
        }
    }
}

fn method(lc: &LoadedConfig, s: &Spanned<String>, errors: &mut Errors) -> Option<http::Method> {
    if s.value.is_empty() || !s.value.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(lc.error_at(
            s,
            format!(
                "invalid HTTP method `{}` (use upper case, e.g. GET)",
                s.value
            ),
        ));
        return None;
    }
    http::Method::from_bytes(s.value.as_bytes()).ok()
}

fn token_source(
    lc: &LoadedConfig,
    t: &rampart_config::TokenSource,
    errors: &mut Errors,
) -> TokenSource {
    for c in t.cookie.iter().chain(&t.query) {
        if c.value.is_empty() || c.value.contains(['=', ';', '&', ' ']) {
            errors.push(lc.error_at(c, format!("invalid name `{}`", c.value)));
        }
    }
    TokenSource {
        header: t.header,
        cookie: t.cookie.as_ref().map(|c| c.value.clone()),
        query: t.query.as_ref().map(|q| q.value.clone()),
    }
}

fn claim_paths(c: &rampart_config::ClaimNames) -> ClaimPaths {
    ClaimPaths {
        subject: c.subject.clone(),
        scopes: c.scopes.clone(),
        roles: c.roles.clone(),
    }
}

fn jwt_provider(
    lc: &LoadedConfig,
    name: &Spanned<String>,
    j: &Spanned<rampart_config::JwtProvider>,
    state: &State,
    errors: &mut Errors,
) -> Option<Kind> {
    let jv = &j.value;
    let before = errors.len();
    let mut algs = Vec::new();
    for a in &jv.algorithms {
        match a.value.parse::<Algorithm>() {
            Ok(alg) => algs.push(alg),
            Err(_) => errors.push(lc.error_at(a, format!(
                "unknown JWT algorithm `{}` (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512; `none` is never accepted)",
                a.value
            ))),
        }
    }
    if jv.algorithms.is_empty() {
        errors.push(lc.error_at(j, "jwt: `algorithms` must list at least one algorithm"));
    }
    let hmac = algs.iter().any(|a| jwt::family(*a) == jwt::Family::Hmac);
    let public = algs.iter().any(|a| jwt::family(*a) != jwt::Family::Hmac);
    if !exactly_one(&[
        jv.jwks_url.is_some(),
        jv.jwks_file.is_some(),
        jv.public_key_file.is_some(),
        jv.hmac_secret.is_some(),
    ]) {
        errors.push(lc.error_at(
            j,
            format!("jwt provider `{}`: set exactly one of jwks_url, jwks_file, public_key_file, hmac_secret", name.value),
        ));
    }
    if hmac && jv.hmac_secret.is_none() {
        errors.push(lc.error_at(
            j,
            "HS256/384/512 need `hmac_secret` (a public key is never used as an HMAC secret)",
        ));
    }
    if public && jv.hmac_secret.is_some() {
        errors.push(lc.error_at(
            j,
            "with `hmac_secret`, only HS256/384/512 may be listed in `algorithms`",
        ));
    }
    if let Some(s) = &jv.hmac_secret {
        if s.value.len() < 32 {
            errors.push(lc.error_at(s, "hmac_secret must be at least 32 bytes"));
        }
    }
    let keys = if let Some(u) = &jv.jwks_url {
        let tls = if u.value.starts_with("https://") {
            match rampart_core::tls::client_connector(lc, jv.jwks_ca.as_ref(), u) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        } else {
            None
        };
        match Endpoint::new(
            &u.value,
            tls,
            jv.jwks_timeout.0,
            jv.jwks_max_bytes.0 as usize,
        ) {
            Ok(ep) => {
                let mut caches = state.jwks.lock().unwrap_or_else(|e| e.into_inner());
                let cache = caches
                    .entry(u.value.clone())
                    .or_insert_with(|| {
                        Arc::new(JwksCache::new(
                            ep,
                            jv.jwks_refetch_interval.0,
                            jv.jwks_max_age.0,
                        ))
                    })
                    .clone();
                Some(Keys::Jwks(cache))
            }
            Err(e) => {
                errors.push(lc.error_at(u, e));
                None
            }
        }
    } else if let Some(f) = &jv.jwks_file {
        let path = lc.resolve_path(&f.value);
        match std::fs::read(&path) {
            Ok(b) => match jwt::parse_jwks(&b) {
                Ok((set, notes)) => {
                    for n in notes {
                        tracing::warn!(file = %path.display(), "{n}");
                    }
                    if set.keys.is_empty() {
                        errors.push(lc.error_at(
                            f,
                            format!("JWKS file `{}` has no usable signing key", path.display()),
                        ));
                    }
                    Some(Keys::Static(Arc::new(set)))
                }
                Err(e) => {
                    errors.push(lc.error_at(f, format!("JWKS file `{}`: {e}", path.display())));
                    None
                }
            },
            Err(e) => {
                errors.push(lc.error_at(
                    f,
                    format!("cannot read JWKS file `{}`: {e}", path.display()),
                ));
                None
            }
        }
    } else if let Some(f) = &jv.public_key_file {
        let path = lc.resolve_path(&f.value);
        let fams: std::collections::HashSet<_> = algs.iter().map(|a| jwt::family(*a)).collect();
        match (std::fs::read(&path), fams.len()) {
            (Err(e), _) => {
                errors.push(lc.error_at(
                    f,
                    format!("cannot read public key `{}`: {e}", path.display()),
                ));
                None
            }
            (Ok(_), n) if n != 1 => {
                errors.push(lc.error_at(
                    f,
                    "a single public_key_file needs algorithms of one family (RS/PS, ES or EdDSA)",
                ));
                None
            }
            (Ok(pem), _) => {
                let fam = algs
                    .first()
                    .map(|a| jwt::family(*a))
                    .unwrap_or(jwt::Family::Rsa);
                let key = match fam {
                    jwt::Family::Rsa => DecodingKey::from_rsa_pem(&pem),
                    jwt::Family::Ec => DecodingKey::from_ec_pem(&pem),
                    jwt::Family::Ed => DecodingKey::from_ed_pem(&pem),
                    jwt::Family::Hmac => DecodingKey::from_rsa_pem(b""),
                };
                match key {
                    Ok(key) => Some(Keys::Static(Arc::new(KeySet {
                        keys: vec![jwt::Key {
                            kid: None,
                            alg: None,
                            family: fam,
                            key,
                        }],
                    }))),
                    Err(e) => {
                        errors.push(lc.error_at(
                            f,
                            format!(
                                "public key `{}` is not a {fam:?} PEM public key: {e}",
                                path.display()
                            ),
                        ));
                        None
                    }
                }
            }
        }
    } else {
        jv.hmac_secret.as_ref().map(|s| {
            Keys::Static(Arc::new(KeySet {
                keys: vec![jwt::Key {
                    kid: None,
                    alg: None,
                    family: jwt::Family::Hmac,
                    key: DecodingKey::from_secret(s.value.as_bytes()),
                }],
            }))
        })
    };
    let src = token_source(lc, &jv.token, errors);
    if errors.len() > before {
        return None;
    }
    let keys = keys?;
    if let Keys::Jwks(c) = &keys {
        // Fetch the keys now so the first request does not wait (failures are logged).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let c = c.clone();
            rt.spawn(async move {
                c.refresh().await;
            });
        }
    }
    let audiences: Vec<String> = jv.audiences.iter().map(|a| a.value.clone()).collect();
    Some(Kind::Jwt(
        Box::new(JwtVerifier::new(
            keys,
            &algs,
            jv.issuer.as_ref().map(|i| i.value.as_str()),
            &audiences,
            jv.leeway.0,
            jv.required_claims.iter().map(|c| c.value.clone()).collect(),
            jv.max_token_bytes.0 as usize,
            claim_paths(&jv.claims),
        )),
        src,
    ))
}

fn providers(
    lc: &LoadedConfig,
    state: &State,
    errors: &mut Errors,
) -> HashMap<String, Arc<Provider>> {
    let mut out = HashMap::new();
    let mut keys_now = HashMap::new();
    for p in &lc.config.identity.providers {
        let pv = &p.value;
        if out.contains_key(&pv.name.value) {
            errors.push(lc.error_at(
                &pv.name,
                format!("duplicate provider name `{}`", pv.name.value),
            ));
            continue;
        }
        if !exactly_one(&[
            pv.jwt.is_some(),
            pv.introspection.is_some(),
            pv.api_key.is_some(),
            pv.mtls.is_some(),
        ]) {
            errors.push(lc.error_at(
                &pv.name,
                format!(
                    "provider `{}` must have exactly one of jwt, introspection, api_key, mtls",
                    pv.name.value
                ),
            ));
            continue;
        }
        let kind = if let Some(j) = &pv.jwt {
            jwt_provider(lc, &pv.name, j, state, errors)
        } else if let Some(i) = &pv.introspection {
            let iv = &i.value;
            let tls = if iv.url.value.starts_with("https://") {
                match rampart_core::tls::client_connector(lc, iv.ca.as_ref(), &iv.url) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            } else {
                None
            };
            let src = token_source(lc, &iv.token, errors);
            match Endpoint::new(&iv.url.value, tls, iv.timeout.0, 64 * 1024) {
                Ok(ep) => Some(Kind::Introspection(
                    Box::new(Introspector::new(
                        ep,
                        &iv.client_id.value,
                        &iv.client_secret.value,
                        iv.cache_ttl.0,
                        iv.issuer.as_ref().map(|i| i.value.clone()),
                        iv.audiences.iter().map(|a| a.value.clone()).collect(),
                        iv.max_token_bytes.0 as usize,
                    )),
                    src,
                    claim_paths(&iv.claims),
                )),
                Err(e) => {
                    errors.push(lc.error_at(&iv.url, e));
                    None
                }
            }
        } else if let Some(k) = &pv.api_key {
            let kv = &k.value;
            if kv.hash_secret.value.len() < 32 {
                errors.push(lc.error_at(&kv.hash_secret, "hash_secret must be at least 32 characters (use ${ENV} to keep it out of the file)"));
                None
            } else {
                let header = header_name(lc, &kv.header, errors);
                let path = lc.resolve_path(&kv.store.value);
                let ck = (
                    path.clone(),
                    ring::digest::digest(&ring::digest::SHA256, kv.hash_secret.value.as_bytes())
                        .as_ref()
                        .to_vec(),
                );
                let existing = state
                    .key_caches
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&ck)
                    .cloned();
                let cache = match existing {
                    Some(c) => Ok(c),
                    None => KeyStore::open(&path, &kv.hash_secret.value)
                        .and_then(|s| KeyCache::new(Arc::new(s)))
                        .inspect(|c| {
                            c.spawn_refresh(kv.refresh.0);
                            state
                                .key_caches
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(ck, c.clone());
                        }),
                };
                match (cache, header) {
                    (Ok(cache), Some(header)) => {
                        keys_now.insert(
                            pv.name.value.clone(),
                            (cache.clone(), kv.rotation_grace.0.as_secs() as i64),
                        );
                        Some(Kind::ApiKey {
                            cache,
                            header,
                            query: kv.query.as_ref().map(|q| q.value.clone()),
                        })
                    }
                    (Err(e), _) => {
                        errors.push(lc.error_at(&kv.store, e));
                        None
                    }
                    _ => None,
                }
            }
        } else if let Some(m) = &pv.mtls {
            let mut grants = HashMap::new();
            for g in &m.value.grants {
                if grants
                    .insert(
                        g.value.subject.value.clone(),
                        (g.value.roles.clone(), g.value.scopes.clone()),
                    )
                    .is_some()
                {
                    errors.push(lc.error_at(
                        &g.value.subject,
                        format!("duplicate grant for `{}`", g.value.subject.value),
                    ));
                }
            }
            Some(Kind::Mtls {
                from: m.value.subject_from,
                grants,
            })
        } else {
            None
        };
        if let Some(kind) = kind {
            out.insert(
                pv.name.value.clone(),
                Arc::new(Provider {
                    name: Arc::from(pv.name.value.as_str()),
                    kind,
                }),
            );
        }
    }
    state.current_keys.store(Arc::new(keys_now));
    out
}

fn rule(
    lc: &LoadedConfig,
    r: &Spanned<rampart_config::AuthRule>,
    errors: &mut Errors,
) -> Option<Rule> {
    let rv = &r.value;
    let template = match Template::parse(&rv.path.value) {
        Ok(t) => t,
        Err(e) => {
            errors.push(lc.error_at(&rv.path, e));
            return None;
        }
    };
    let methods = rv
        .methods
        .as_ref()
        .map(|ms| ms.iter().filter_map(|m| method(lc, m, errors)).collect());
    let mut owner = Vec::new();
    for o in &rv.owner {
        match IdSource::parse(&o.value.from.value) {
            Ok(src) => {
                if let IdSource::Path(p) = &src {
                    if !template.params().any(|x| x == p) {
                        errors.push(lc.error_at(
                            &o.value.from,
                            format!(
                                "`path:{p}` names no `{{{p}}}` segment of `{}`",
                                rv.path.value
                            ),
                        ));
                    }
                }
                owner.push(Owner {
                    from: src,
                    claim: o.value.claim.value.clone(),
                    unless_roles: o.value.unless_roles.clone(),
                });
            }
            Err(e) => errors.push(lc.error_at(&o.value.from, e)),
        }
    }
    if rv.public
        && (!rv.owner.is_empty()
            || !rv.scopes_all.is_empty()
            || !rv.scopes_any.is_empty()
            || !rv.roles_all.is_empty()
            || !rv.roles_any.is_empty()
            || !rv.subjects.is_empty())
    {
        errors.push(lc.error_at(
            &rv.path,
            "a `public` rule cannot also require scopes, roles, subjects or ownership",
        ));
    }
    Some(Rule {
        template,
        methods,
        public: rv.public,
        scopes_all: rv.scopes_all.clone(),
        scopes_any: rv.scopes_any.clone(),
        roles_all: rv.roles_all.clone(),
        roles_any: rv.roles_any.clone(),
        subjects: rv.subjects.clone(),
        owner,
    })
}

fn login(
    lc: &LoadedConfig,
    l: &Spanned<rampart_config::Login>,
    errors: &mut Errors,
) -> Option<Login> {
    let lv = &l.value;
    let template = Template::parse(&lv.path.value)
        .map_err(|e| errors.push(lc.error_at(&lv.path, e)))
        .ok()?;
    let username = match lv.username.value.split_once(':') {
        Some(("json", p)) if p.starts_with('/') => UsernameAt::Json(p.to_string()),
        Some(("form", f)) if !f.is_empty() => UsernameAt::Form(f.to_string()),
        _ => {
            errors.push(lc.error_at(
                &lv.username,
                format!(
                    "unknown username location `{}` (use json:/pointer or form:FIELD)",
                    lv.username.value
                ),
            ));
            return None;
        }
    };
    for s in &lv.failure_status {
        if !(100..=599).contains(s) {
            errors.push(lc.error_at(l, format!("failure_status {s} is not an HTTP status")));
        }
    }
    Some(Login {
        template,
        methods: lv
            .methods
            .iter()
            .filter_map(|m| method(lc, m, errors))
            .collect(),
        username,
        failure_status: lv.failure_status.clone(),
        max_body: lv.max_body_bytes.0 as usize,
    })
}

fn auth_guard(
    lc: &LoadedConfig,
    auth: Option<&Spanned<Auth>>,
    login_cfg: Option<&Spanned<rampart_config::Login>>,
    provs: &HashMap<String, Arc<Provider>>,
    policy: Option<Policy>,
    state: &Arc<State>,
    errors: &mut Errors,
) -> Option<AuthGuard> {
    let login = login_cfg.and_then(|l| login(lc, l, errors));
    let Some(a) = auth else {
        return login.map(|login| AuthGuard {
            mode: rampart_config::Mode::Block,
            providers: Vec::new(),
            authenticate: false,
            optional: true,
            strip: false,
            forward: Forward::default(),
            rules: Vec::new(),
            unmatched_deny: false,
            realm: String::new(),
            login: Some(login),
            brute_force: policy,
            state: state.clone(),
        });
    };
    let av = &a.value;
    let mut providers = Vec::new();
    if av.providers.is_empty() {
        errors.push(lc.error_at(
            a,
            "auth: `providers` must name at least one provider from identity.providers",
        ));
    }
    for p in &av.providers {
        match provs.get(&p.value) {
            Some(pr) => providers.push(pr.clone()),
            None => {
                if !lc
                    .config
                    .identity
                    .providers
                    .iter()
                    .any(|x| x.value.name.value == p.value)
                {
                    errors.push(lc.error_at(
                        p,
                        format!(
                            "unknown provider `{}` (define it under identity.providers)",
                            p.value
                        ),
                    ));
                }
            }
        }
    }
    let f = &av.forward;
    let mut forward = Forward {
        subject: f.subject.as_ref().and_then(|h| header_name(lc, h, errors)),
        scopes: f.scopes.as_ref().and_then(|h| header_name(lc, h, errors)),
        roles: f.roles.as_ref().and_then(|h| header_name(lc, h, errors)),
        claims: Vec::new(),
    };
    for c in &f.claims {
        if let Some(h) = header_name(lc, &c.value.header, errors) {
            forward.claims.push((c.value.claim.value.clone(), h));
        }
    }
    for h in forward
        .subject
        .iter()
        .chain(&forward.scopes)
        .chain(&forward.roles)
        .chain(forward.claims.iter().map(|(_, h)| h))
    {
        if h == http::header::AUTHORIZATION || h == http::header::COOKIE || h == http::header::HOST
        {
            errors.push(lc.error_at(a, format!("auth.forward may not use header `{h}`")));
        }
    }
    let rules = av
        .rules
        .iter()
        .filter_map(|r| rule(lc, r, errors))
        .collect();
    if av.realm.contains(['"', '\\']) || av.realm.bytes().any(|b| b.is_ascii_control()) {
        errors.push(lc.error_at(
            a,
            "auth.realm may not contain quotes, backslashes or control characters",
        ));
    }
    Some(AuthGuard {
        mode: av.mode,
        providers,
        authenticate: true,
        optional: av.optional,
        strip: av.strip_credentials,
        forward,
        rules,
        unmatched_deny: av.unmatched == Unmatched::Deny,
        realm: av.realm.clone(),
        login,
        brute_force: policy,
        state: state.clone(),
    })
}

/// One `auth` guard per route (None where the route has neither `auth` nor `login`).
#[allow(clippy::type_complexity)]
pub fn build(lc: &LoadedConfig, state: &Arc<State>) -> Result<Vec<Option<Arc<AuthGuard>>>, Errors> {
    let mut errors = Vec::new();
    let provs = providers(lc, state, &mut errors);
    let bf = &lc.config.identity.brute_force;
    if bf.enabled && bf.max_failures == 0 {
        errors.push(ConfigError {
            loc: rampart_config::Loc {
                file: lc.source.clone(),
                line: 1,
                col: 1,
            },
            message: "identity.brute_force.max_failures must be at least 1".into(),
        });
    }
    let policy = bf.enabled.then_some(Policy {
        max_failures: bf.max_failures.max(1),
        window: bf.window.0,
        lockout: bf.lockout.0,
        max_lockout: bf.max_lockout.0.max(bf.lockout.0),
    });
    let mut out = Vec::new();
    for r in &lc.config.routes {
        let rv = &r.value;
        let auth = rv.auth.as_ref().or(lc.config.guards.auth.as_ref());
        out.push(
            auth_guard(
                lc,
                auth,
                rv.login.as_ref(),
                &provs,
                policy,
                state,
                &mut errors,
            )
            .map(Arc::new),
        );
    }
    if let Some(a) = &lc.config.guards.auth {
        if lc.config.routes.is_empty() {
            let _ = auth_guard(lc, Some(a), None, &provs, policy, state, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
