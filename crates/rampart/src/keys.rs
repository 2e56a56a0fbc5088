//! `rampart keys`: API key management straight on the key store named in the config.
//! A running gateway sees changes within the provider's `refresh` interval.

use rampart_identity::apikey::{now_secs, KeyStore};
use std::path::Path;
use std::process::ExitCode;

/// Which key store: the config's api_key provider (by name, or the only one).
fn open(config: &Path, provider: Option<&str>) -> Result<(KeyStore, i64), String> {
    let lc = rampart_config::load_file(config).map_err(|e| e.to_string())?;
    let keyed: Vec<_> = lc
        .config
        .identity
        .providers
        .iter()
        .filter_map(|p| p.value.api_key.as_ref().map(|k| (&p.value.name.value, k)))
        .collect();
    let (_, k) = match provider {
        Some(n) => keyed
            .iter()
            .find(|(name, _)| name.as_str() == n)
            .ok_or_else(|| format!("{}: no api_key provider named `{n}`", config.display()))?,
        None => match keyed.as_slice() {
            [one] => one,
            [] => {
                return Err(format!(
                    "{}: no api_key provider under identity.providers",
                    config.display()
                ))
            }
            _ => {
                return Err(format!(
                    "{}: several api_key providers; name one with --provider",
                    config.display()
                ))
            }
        },
    };
    let kv = &k.value;
    if kv.hash_secret.value.len() < 32 {
        return Err(format!(
            "{}: {}:{}: hash_secret must be at least 32 characters",
            config.display(),
            kv.hash_secret.referenced.line(),
            kv.hash_secret.referenced.column()
        ));
    }
    let store = KeyStore::open(&lc.resolve_path(&kv.store.value), &kv.hash_secret.value)?;
    Ok((store, kv.rotation_grace.0.as_secs() as i64))
}

fn when(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let d = t - now_secs();
            if d >= 0 {
                format!("in {}", human(d))
            } else {
                format!("{} ago", human(-d))
            }
        }
    }
}

fn human(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn parse_words(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .unwrap_or("")
        .split([',', ' '])
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

pub enum Action {
    Create {
        owner: String,
        scopes: Option<String>,
        roles: Option<String>,
        expires_in: Option<String>,
    },
    List {
        json: bool,
    },
    Revoke {
        id: String,
    },
    Rotate {
        id: String,
        grace: Option<String>,
    },
}

pub fn run(config: &Path, provider: Option<&str>, action: Action) -> ExitCode {
    let (store, default_grace) = match open(config, provider) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let res = match action {
        Action::Create {
            owner,
            scopes,
            roles,
            expires_in,
        } => {
            let exp = match expires_in
                .as_deref()
                .map(rampart_config::units::parse_duration)
            {
                None => None,
                Some(Ok(d)) if !d.is_zero() => Some(now_secs() + d.as_secs() as i64),
                Some(_) => {
                    eprintln!("--expires-in must be a duration such as 30d or 12h");
                    return ExitCode::from(2);
                }
            };
            store
                .create(&owner, &parse_words(&scopes), &parse_words(&roles), exp)
                .map(|(key, rec)| {
                    println!("{key}");
                    eprintln!(
                        "created {} for {} (scopes: {}; expires: {}). The key is shown once: store it now.",
                        rec.id,
                        rec.owner,
                        if rec.scopes.is_empty() { "-".into() } else { rec.scopes.join(" ") },
                        when(rec.expires_at)
                    );
                })
        }
        Action::List { json } => store.list().map(|keys| {
            let now = now_secs();
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(rampart_identity::admin::record_json)
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return;
            }
            println!(
                "{:<14} {:<9} {:<16} {:<24} {:<12} {:<12}",
                "ID", "STATUS", "OWNER", "SCOPES", "EXPIRES", "LAST USED"
            );
            for k in keys {
                println!(
                    "{:<14} {:<9} {:<16} {:<24} {:<12} {:<12}",
                    k.id,
                    k.status(now),
                    k.owner,
                    if k.scopes.is_empty() {
                        "-".into()
                    } else {
                        k.scopes.join(" ")
                    },
                    when(k.expires_at),
                    when(k.last_used_at)
                );
            }
        }),
        Action::Revoke { id } => store.revoke(&id).and_then(|found| {
            if found {
                eprintln!("revoked {id}");
                Ok(())
            } else {
                Err(format!("no active key `{id}`"))
            }
        }),
        Action::Rotate { id, grace } => {
            let grace = match grace.as_deref().map(rampart_config::units::parse_duration) {
                None => default_grace,
                Some(Ok(d)) => d.as_secs() as i64,
                Some(Err(e)) => {
                    eprintln!("--grace: {e}");
                    return ExitCode::from(2);
                }
            };
            store.rotate(&id, grace).map(|(key, rec)| {
                println!("{key}");
                eprintln!(
                    "rotated {id} -> {}; {id} keeps working for {}",
                    rec.id,
                    human(grace)
                );
            })
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
