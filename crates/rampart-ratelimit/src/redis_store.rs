//! GCRA shared through Redis: one round trip per check, an atomic Lua script that reads and
//! writes the key's TAT using Redis' own clock (so instances with skewed clocks agree), with a
//! TTL so idle keys disappear.

use crate::gcra::{Decision, Params};
use redis::aio::ConnectionManager;
use std::sync::OnceLock;
use std::time::Duration;

/// KEYS[1] = key; ARGV = interval_ms, tau_ms. Returns {allowed, remaining, retry_after_ms, reset_ms}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tau - interval
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local used = new_tat - now
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(used)))
local remaining = math.floor((tau + interval - used) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, math.ceil(used)}
"#;

/// KEYS[1] = counter; ARGV = limit, expire-at (ms). Returns 1 if counted, 0 if the quota is used up.
const QUOTA_SCRIPT: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
if n == 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
"#;

pub struct RedisStore {
    url: String,
    timeout: Duration,
    /// Created on first use (it needs the runtime), then reconnects by itself.
    conn: OnceLock<Result<ConnectionManager, String>>,
    script: redis::Script,
    quota_script: redis::Script,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        // Validate the URL now so a bad one is a config error, not a runtime surprise.
        redis::Client::open(url).map_err(|e| format!("invalid redis_url `{url}`: {e}"))?;
        Ok(RedisStore {
            url: url.to_string(),
            timeout,
            conn: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            quota_script: redis::Script::new(QUOTA_SCRIPT),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn manager(&self) -> Result<ConnectionManager, String> {
        self.conn
            .get_or_init(|| {
                let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| e.to_string())
            })
            .clone()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, String> {
        let mut conn = self.manager()?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Err(_) => Err(format!("redis did not answer within {:?}", self.timeout)),
            Ok(r) => r.map_err(|e| e.to_string()),
        }
    }

    pub async fn set_px(&self, key: &str, ttl_ms: u64) -> Result<(), String> {
        let mut c = redis::cmd("SET");
        c.arg(key).arg(1).arg("PX").arg(ttl_ms.max(1));
        self.query::<()>(c).await
    }

    pub async fn del(&self, key: &str) -> Result<bool, String> {
        let mut c = redis::cmd("DEL");
        c.arg(key);
        Ok(self.query::<i64>(c).await? > 0)
    }

    /// Milliseconds left on a key, `None` if it does not exist.
    pub async fn pttl(&self, key: &str) -> Result<Option<u64>, String> {
        let mut c = redis::cmd("PTTL");
        c.arg(key);
        let v: i64 = self.query(c).await?;
        Ok((v > 0).then_some(v as u64))
    }

    /// Keys matching `pattern` with their TTLs (bounded: at most 10,000 keys).
    pub async fn scan_ttl(&self, pattern: &str) -> Result<Vec<(String, u64)>, String> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            let (next, keys): (u64, Vec<String>) = self.query(c).await?;
            for k in keys {
                if let Some(ttl) = self.pttl(&k).await? {
                    out.push((k, ttl));
                }
            }
            cursor = next;
            if cursor == 0 || out.len() >= 10_000 {
                return Ok(out);
            }
        }
    }

    /// Count one request against a quota counter; `false` when it is used up.
    pub async fn quota_take(
        &self,
        key: &str,
        limit: u64,
        expire_at_ms: u64,
    ) -> Result<bool, String> {
        let mut conn = self.manager()?;
        let mut inv = self.quota_script.key(key);
        inv.arg(limit).arg(expire_at_ms);
        match tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await {
            Err(_) => Err(format!("redis did not answer within {:?}", self.timeout)),
            Ok(r) => r.map(|v| v == 1).map_err(|e| e.to_string()),
        }
    }

    /// One GCRA check. An error means the store could not answer within the timeout.
    pub async fn check(&self, key: &str, p: &Params) -> Result<Decision, String> {
        let mut conn = self.manager()?;
        let mut inv = self.script.key(key);
        inv.arg(p.interval_ms).arg(p.tau_ms);
        let fut = inv.invoke_async::<Vec<i64>>(&mut conn);
        let v = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => return Err(format!("redis did not answer within {:?}", self.timeout)),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(v)) => v,
        };
        if v.len() != 4 {
            return Err(format!("unexpected script reply {v:?}"));
        }
        Ok(Decision {
            allowed: v[0] == 1,
            remaining: v[1].max(0) as u64,
            retry_after_ms: v[2].max(0) as u64,
            reset_ms: v[3].max(0) as u64,
        })
    }
}
