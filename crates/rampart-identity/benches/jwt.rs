//! JWT validation cost: a full ES256 verification (what a new token costs), a token served from
//! the verified-token cache (what a reused token costs), and the bare ring signature check.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rampart_identity::jwt::{Family, JwtVerifier, Key, KeySet, Keys};
use rampart_identity::ClaimPaths;
use ring::signature::KeyPair;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let pk = kp.public_key().as_ref().to_vec();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let key = DecodingKey::from_ec_components(&b64(&pk[1..33]), &b64(&pk[33..65])).unwrap();
    let v = JwtVerifier::new(
        Keys::Static(Arc::new(KeySet {
            keys: vec![Key {
                kid: Some("k".into()),
                alg: None,
                family: Family::Ec,
                key,
            }],
        })),
        &[Algorithm::ES256],
        Some("https://issuer"),
        &["api".to_string()],
        Duration::from_secs(30),
        vec![],
        8192,
        ClaimPaths {
            subject: "sub".into(),
            scopes: "scope".into(),
            roles: "roles".into(),
        },
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k".into());
    let claims = serde_json::json!({"sub": "user-1", "iss": "https://issuer", "aud": "api", "exp": exp, "scope": "read write", "roles": ["user"]});
    let token =
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("jwt_es256_full_verification", |b| {
        b.iter(|| rt.block_on(v.verify_uncached(black_box(&token))).unwrap())
    });
    rt.block_on(v.verify(&token)).unwrap();
    c.bench_function("jwt_es256_cached", |b| {
        b.iter(|| v.cached(black_box(&token)).unwrap())
    });
    let (msg, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    let pubkey = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        pk.clone(),
    );
    c.bench_function("ring_p256_verify_only", |b| {
        b.iter(|| {
            pubkey
                .verify(black_box(msg.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
