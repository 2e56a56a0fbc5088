//! API keys: random, shown once, stored only as a keyed hash (HMAC-SHA-256) in SQLite.
//!
//! A key reads `rk_<id>_<secret>`: `rk_<id>` is the public prefix shown in lists and logs; the
//! secret is 32 random bytes (base64url). The gateway keeps the table in memory (rereading it
//! every `refresh`, so keys made by `rampart keys` show up without a reload) and compares hashes
//! in constant time. "Last used" times are written back in the background.

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One stored key (never the key itself).
#[derive(Clone, Debug, Serialize)]
pub struct KeyRecord {
    /// The public prefix, `rk_<id>`.
    pub id: String,
    #[serde(skip)]
    pub hash: Vec<u8>,
    pub owner: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// Set on a rotated key: the id of its replacement.
    pub rotated_to: Option<String>,
}

impl KeyRecord {
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else if self.rotated_to.is_some() {
            "rotating"
        } else {
            "active"
        }
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The SQLite file plus the hashing secret.
pub struct KeyStore {
    path: PathBuf,
    secret: hmac::Key,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    owner TEXT NOT NULL,
    scopes TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER,
    rotated_to TEXT
)";

fn split(s: String) -> Vec<String> {
    s.split(' ')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse `rk_<id>_<secret>` into its id.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("rk_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 10 || secret.len() != 43 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(&key[..13])
}

impl KeyStore {
    /// Open (creating the file and table if needed).
    pub fn open(path: &Path, secret: &str) -> Result<KeyStore, String> {
        let s = KeyStore {
            path: path.to_path_buf(),
            secret: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        };
        s.conn()?;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<Connection, String> {
        let c = Connection::open(&self.path)
            .map_err(|e| format!("cannot open key store `{}`: {e}", self.path.display()))?;
        c.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        c.execute_batch(SCHEMA)
            .map_err(|e| format!("key store `{}`: {e}", self.path.display()))?;
        Ok(c)
    }

    pub fn hash(&self, key: &str) -> Vec<u8> {
        hmac::sign(&self.secret, key.as_bytes()).as_ref().to_vec()
    }

    /// Constant-time check of `key` against a stored hash.
    pub fn verify(&self, key: &str, hash: &[u8]) -> bool {
        hmac::verify(&self.secret, key.as_bytes(), hash).is_ok()
    }

    /// Make a key. Returns the key (show it once) and its record.
    pub fn create(
        &self,
        owner: &str,
        scopes: &[String],
        roles: &[String],
        expires_at: Option<i64>,
    ) -> Result<(String, KeyRecord), String> {
        if owner.is_empty() {
            return Err("owner must not be empty".into());
        }
        for s in scopes.iter().chain(roles) {
            if s.is_empty() || s.contains(char::is_whitespace) {
                return Err(format!("scope or role `{s}` must be one word"));
            }
        }
        let rng = SystemRandom::new();
        let mut idb = [0u8; 10];
        let mut secret = [0u8; 32];
        rng.fill(&mut idb).map_err(|_| "no randomness")?;
        rng.fill(&mut secret).map_err(|_| "no randomness")?;
        const ALPHA: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let id: String = idb
            .iter()
            .map(|b| ALPHA[(*b as usize) % ALPHA.len()] as char)
            .collect();
        let key = format!(
            "rk_{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let rec = KeyRecord {
            id: format!("rk_{id}"),
            hash: self.hash(&key),
            owner: owner.to_string(),
            scopes: scopes.to_vec(),
            roles: roles.to_vec(),
            created_at: now_secs(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
            rotated_to: None,
        };
        self.conn()?
            .execute(
                "INSERT INTO api_keys (id, hash, owner, scopes, roles, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rec.id,
                    rec.hash,
                    rec.owner,
                    rec.scopes.join(" "),
                    rec.roles.join(" "),
                    rec.created_at,
                    rec.expires_at
                ],
            )
            .map_err(|e| format!("cannot store key: {e}"))?;
        Ok((key, rec))
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>, String> {
        let c = self.conn()?;
        let mut st = c
            .prepare(
                "SELECT id, hash, owner, scopes, roles, created_at, expires_at, revoked_at,
                        last_used_at, rotated_to FROM api_keys ORDER BY created_at, id",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| {
                Ok(KeyRecord {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    owner: r.get(2)?,
                    scopes: split(r.get(3)?),
                    roles: split(r.get(4)?),
                    created_at: r.get(5)?,
                    expires_at: r.get(6)?,
                    revoked_at: r.get(7)?,
                    last_used_at: r.get(8)?,
                    rotated_to: r.get(9)?,
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading key store `{}`: {e}", self.path.display()))
    }

    fn get(&self, c: &Connection, id: &str) -> Result<Option<KeyRecord>, String> {
        c.query_row(
            "SELECT owner, scopes, roles, expires_at, revoked_at, created_at FROM api_keys WHERE id = ?1",
            params![id],
            |r| {
                Ok(KeyRecord {
                    id: id.to_string(),
                    hash: Vec::new(),
                    owner: r.get(0)?,
                    scopes: split(r.get(1)?),
                    roles: split(r.get(2)?),
                    expires_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                    created_at: r.get(5)?,
                    last_used_at: None,
                    rotated_to: None,
                })
            },
        )
        .optional()
        .map_err(|e| e.to_string())
    }

    /// Revoke a key at once. False when there is no such key.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let n = self
            .conn()?
            .execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_secs()],
            )
            .map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// Replace a key: a new key with the same owner, scopes, roles and expiry; the old one keeps
    /// working for `grace_secs`.
    pub fn rotate(&self, id: &str, grace_secs: i64) -> Result<(String, KeyRecord), String> {
        let c = self.conn()?;
        let old = self.get(&c, id)?.ok_or_else(|| format!("no key `{id}`"))?;
        if old.revoked_at.is_some() {
            return Err(format!("key `{id}` is revoked"));
        }
        let now = now_secs();
        if old.expires_at.is_some_and(|e| e <= now) {
            return Err(format!("key `{id}` has expired"));
        }
        let (key, rec) = self.create(&old.owner, &old.scopes, &old.roles, old.expires_at)?;
        let until = now + grace_secs;
        let new_exp = old.expires_at.map_or(until, |e| e.min(until));
        c.execute(
            "UPDATE api_keys SET expires_at = ?2, rotated_to = ?3 WHERE id = ?1",
            params![id, new_exp, rec.id],
        )
        .map_err(|e| e.to_string())?;
        Ok((key, rec))
    }

    pub fn touch(&self, used: &HashMap<String, i64>) -> Result<(), String> {
        let mut c = self.conn()?;
        let tx = c.transaction().map_err(|e| e.to_string())?;
        for (id, t) in used {
            tx.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                params![id, t],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// The in-memory view the gateway checks keys against.
pub struct KeyCache {
    pub store: Arc<KeyStore>,
    keys: arc_swap::ArcSwap<HashMap<String, KeyRecord>>,
    used: Mutex<HashMap<String, i64>>,
}

/// Why a key was refused.
pub enum KeyError {
    Malformed,
    Unknown(String),
    Wrong(String),
    Revoked(String),
    Expired(String),
}

impl KeyCache {
    pub fn new(store: Arc<KeyStore>) -> Result<Arc<KeyCache>, String> {
        let c = Arc::new(KeyCache {
            store,
            keys: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            used: Mutex::new(HashMap::new()),
        });
        c.reload()?;
        Ok(c)
    }

    /// Reread the table (blocking: call from a blocking thread on the request runtime).
    pub fn reload(&self) -> Result<(), String> {
        let list = self.store.list()?;
        self.keys.store(Arc::new(
            list.into_iter().map(|k| (k.id.clone(), k)).collect(),
        ));
        Ok(())
    }

    /// Write "last used" times back (blocking).
    pub fn flush_used(&self) {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()));
        if !used.is_empty() {
            if let Err(e) = self.store.touch(&used) {
                tracing::warn!("cannot record API key use: {e}");
            }
        }
    }

    /// Keep rereading the store and writing back use times every `every`, for as long as
    /// someone holds the cache.
    pub fn spawn_refresh(self: &Arc<Self>, every: std::time::Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || {
                    me.flush_used();
                    if let Err(e) = me.reload() {
                        tracing::warn!("cannot reread the API key store: {e}");
                    }
                })
                .await;
            }
        });
    }

    /// Check a presented key.
    pub fn check(&self, key: &str) -> Result<KeyRecord, KeyError> {
        let id = key_id(key).ok_or(KeyError::Malformed)?;
        let keys = self.keys.load();
        let Some(rec) = keys.get(id) else {
            return Err(KeyError::Unknown(id.to_string()));
        };
        if !self.store.verify(key, &rec.hash) {
            return Err(KeyError::Wrong(id.to_string()));
        }
        let now = now_secs();
        if rec.revoked_at.is_some() {
            return Err(KeyError::Revoked(id.to_string()));
        }
        if rec.expires_at.is_some_and(|e| e <= now) {
            return Err(KeyError::Expired(id.to_string()));
        }
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), now);
        Ok(rec.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let dir = std::env::temp_dir().join(format!("rampart-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(KeyStore::open(&path, "0123456789abcdef0123456789abcdef").unwrap());
        let (key, rec) = store
            .create("alice", &["orders:read".into()], &[], None)
            .unwrap();
        assert!(key.starts_with(&rec.id));
        assert_eq!(key_id(&key), Some(rec.id.as_str()));
        let cache = KeyCache::new(store.clone()).unwrap();
        assert_eq!(cache.check(&key).ok().unwrap().owner, "alice");
        // A wrong secret with a real id.
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(cache.check(&wrong), Err(KeyError::Wrong(_))));
        // Rotation: both work during the grace period.
        let (new_key, _) = store.rotate(&rec.id, 3600).unwrap();
        cache.reload().unwrap();
        assert!(cache.check(&key).is_ok());
        assert!(cache.check(&new_key).is_ok());
        // Grace of zero: the old key stops at once.
        let (newer, _) = store.rotate(key_id(&new_key).unwrap(), 0).unwrap();
        cache.reload().unwrap();
        assert!(matches!(cache.check(&new_key), Err(KeyError::Expired(_))));
        assert!(store.revoke(key_id(&newer).unwrap()).unwrap());
        cache.reload().unwrap();
        assert!(matches!(cache.check(&newer), Err(KeyError::Revoked(_))));
        // Only hashes are stored.
        let raw = std::fs::read(&path).unwrap();
        let secret_part = &newer[14..];
        assert!(!raw
            .windows(secret_part.len())
            .any(|w| w == secret_part.as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
