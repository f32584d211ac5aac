//! The etcd implementation of [`HaServices`], through etcd's HTTP/JSON gateway (`/v3/...`), which
//! every etcd v3 server serves on its client URLs. Going through the gateway keeps a protobuf
//! compiler and a gRPC stack out of weir's build; HA traffic is a few small requests a second.
//!
//! Layout under `{high-availability.etcd.path.root}/{cluster-id}/`:
//!
//! - `leader`: the leader's [`LeaderInfo`], attached to its lease. A contender creates it only if
//!   it does not exist (a transaction on its create revision), so at most one leads; the key's
//!   create revision is the leader's epoch, and every write a leader makes is a transaction that
//!   compares that create revision with its epoch (fencing).
//! - `kv/...`: the stores' keys.
//!
//! The leader renews its lease every sixth of the TTL. It counts its lease from the moment it
//! *sent* the last request that etcd answered with a live lease, and gives up its leadership two
//! thirds of a TTL after that: etcd cannot have expired the lease before then, so the loss is
//! reported before any other contender can be elected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};
use weir_core::config::HaSettings;
use weir_core::{Error, Result};

use crate::{BoxFuture, HaServices, Leader, LeaderInfo, Leadership};

/// etcd as the coordination service.
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    /// Client URLs (`http://host:port`).
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    agent: ureq::Agent,
    /// `{root}/{cluster}/`.
    base: String,
    ttl: Duration,
    /// Leaderships held, by epoch: their lease and their loss signal.
    held: Mutex<Vec<Held>>,
}

struct Held {
    epoch: u64,
    lease: i64,
    lost: watch::Sender<bool>,
}

impl Etcd {
    /// Connects to the members the settings name and checks that one answers.
    pub async fn connect(settings: &HaSettings) -> Result<Etcd> {
        let endpoints: Vec<String> = settings
            .etcd_endpoints
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| if e.contains("://") { e.trim_end_matches('/').to_string() } else { format!("http://{e}") })
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("high-availability.etcd.endpoints names no server".into()));
        }
        let ttl = Duration::from_millis(settings.etcd_lease_ttl_ms);
        // Requests end well within a third of the lease, so a hung one cannot hold up the loss.
        let timeout = (ttl / 4).clamp(Duration::from_millis(300), Duration::from_secs(5));
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        let inner = Arc::new(Inner {
            endpoints,
            current: AtomicUsize::new(0),
            agent,
            base: format!("{}/{}/", settings.etcd_root, settings.cluster_id),
            ttl,
            held: Mutex::new(Vec::new()),
        });
        let etcd = Etcd { inner };
        // One round trip, so that a wrong address is reported now rather than at the first use.
        etcd.call("/v3/maintenance/status", json!({})).await.map_err(|e| match e {
            Error::Coordination { service, message, .. } => Error::Coordination {
                context: "cannot reach etcd".into(),
                service,
                message: format!("{message}; is etcd running there? check high-availability.etcd.endpoints"),
                retryable: true,
            },
            other => other,
        })?;
        Ok(etcd)
    }

    fn leader_key(&self) -> String {
        format!("{}leader", self.inner.base)
    }

    fn key(&self, key: &str) -> String {
        format!("{}kv/{}", self.inner.base, key.trim_matches('/'))
    }

    /// One gateway request, tried on each endpoint in turn (starting with the one that answered
    /// last) until one answers.
    async fn call(&self, path: &'static str, body: Value) -> Result<Value> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.call(path, &body))
            .await
            .map_err(|e| Error::internal(format!("etcd request task failed: {e}")))?
    }

    async fn range(&self, key: &str, prefix: bool) -> Result<Vec<Value>> {
        let mut body = json!({ "key": B64.encode(key) });
        if prefix {
            body["range_end"] = json!(B64.encode(prefix_end(key.as_bytes())));
        }
        let answer = self.call("/v3/kv/range", body).await?;
        Ok(answer.get("kvs").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// A transaction that runs `ops` only while the leader key's create revision is `epoch`.
    async fn fenced(&self, epoch: u64, ops: Vec<Value>) -> Result<()> {
        let compare = json!([{
            "target": "CREATE",
            "key": B64.encode(self.leader_key()),
            "result": "EQUAL",
            "create_revision": epoch.to_string(),
        }]);
        let answer = self.call("/v3/kv/txn", json!({ "compare": compare, "success": ops })).await?;
        if answer.get("succeeded").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(Error::NotLeader(format!(
                "epoch {epoch} no longer leads cluster {} on {}; the write was refused",
                self.inner.base.trim_end_matches('/'),
                self.describe()
            )))
        }
    }

    async fn grant(&self) -> Result<i64> {
        let ttl = self.inner.ttl.as_secs().max(1);
        let answer = self.call("/v3/lease/grant", json!({ "TTL": ttl.to_string() })).await?;
        int(answer.get("ID")).ok_or_else(|| self.unexpected("grant a lease", &answer))
    }

    async fn revoke(&self, lease: i64) -> Result<()> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() })).await.map(|_| ())
    }

    /// The remaining TTL of `lease` after renewing it (0: it expired).
    async fn keep_alive(&self, lease: i64) -> Result<i64> {
        let answer = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() })).await?;
        Ok(answer.get("result").and_then(|r| int(r.get("TTL"))).unwrap_or(0))
    }

    fn unexpected(&self, what: &str, answer: &Value) -> Error {
        Error::Coordination {
            context: format!("cannot {what}"),
            service: self.describe(),
            message: format!("unexpected answer {answer}"),
            retryable: true,
        }
    }

    /// Keeps the lease of a leadership alive until it is lost or resigned.
    fn keep(&self, epoch: u64, lease: i64, granted: Instant, lost: watch::Sender<bool>) {
        let etcd = Etcd { inner: self.inner.clone() };
        let ttl = self.inner.ttl;
        tokio::spawn(async move {
            let deadline_after = ttl * 2 / 3;
            let mut renewed = granted;
            loop {
                tokio::time::sleep(ttl / 6).await;
                if lost.is_closed() || *lost.borrow() {
                    return;
                }
                let sent = Instant::now();
                let left = (renewed + deadline_after).saturating_duration_since(sent);
                match tokio::time::timeout(left, etcd.keep_alive(lease)).await {
                    Ok(Ok(remaining)) if remaining > 0 => renewed = sent,
                    Ok(Ok(_)) => {
                        warn!(epoch, "the leader lease expired in etcd");
                        break;
                    }
                    Ok(Err(e)) => warn!(epoch, error = %e, "cannot renew the leader lease"),
                    Err(_) => warn!(epoch, "renewing the leader lease timed out"),
                }
                if renewed.elapsed() >= deadline_after {
                    warn!(epoch, "the leader lease could not be renewed in time");
                    break;
                }
            }
            let _ = lost.send(true);
            etcd.inner.held.lock().unwrap_or_else(|p| p.into_inner()).retain(|h| h.epoch != epoch);
        });
    }
}

impl Inner {
    /// Opens a watch of `key` through the gateway's streaming `/v3/watch` on the endpoint that
    /// answered last, bounded by [`crate::WATCH_BOUND`]; the stream of its events once etcd said
    /// the watch is created (one JSON object per line).
    fn watch(&self, key: &str) -> Result<std::io::BufReader<ureq::BodyReader<'static>>> {
        let at = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        let url = format!("{}/v3/watch", self.endpoints[at]);
        let failed = |message: String| Error::Coordination {
            context: "cannot watch the leader".into(),
            service: format!("etcd at {}", self.endpoints[at]),
            message,
            retryable: true,
        };
        let response = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(crate::WATCH_BOUND))
            .build()
            .send_json(json!({ "create_request": { "key": B64.encode(key) } }))
            .map_err(|e| failed(e.to_string()))?;
        let mut events = std::io::BufReader::new(response.into_body().into_reader());
        let mut created = String::new();
        std::io::BufRead::read_line(&mut events, &mut created).map_err(|e| failed(e.to_string()))?;
        if !created.contains("\"created\":true") {
            return Err(failed(format!("etcd did not create the watch: {}", created.trim())));
        }
        Ok(events)
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            match self.agent.post(&url).send_json(body) {
                Ok(mut response) => {
                    self.current.store(at, Ordering::Relaxed);
                    let status = response.status();
                    let value: Value = response.body_mut().read_json().map_err(|e| Error::Coordination {
                        context: format!("cannot read etcd's answer to {path}"),
                        service: format!("etcd at {}", self.endpoints[at]),
                        message: e.to_string(),
                        retryable: true,
                    })?;
                    if !status.is_success() {
                        let message = value.get("message").or_else(|| value.get("error")).unwrap_or(&value);
                        return Err(Error::Coordination {
                            context: format!("etcd refused {path}"),
                            service: format!("etcd at {}", self.endpoints[at]),
                            message: format!("HTTP {status}: {message}"),
                            retryable: status.is_server_error(),
                        });
                    }
                    return Ok(value);
                }
                Err(e) => last = format!("{}: {e}", self.endpoints[at]),
            }
        }
        Err(Error::Coordination {
            context: format!("no etcd member answered {path}"),
            service: format!("etcd at {}", self.endpoints.join(",")),
            message: last,
            retryable: true,
        })
    }
}

impl HaServices for Etcd {
    fn describe(&self) -> String {
        format!("etcd at {}", self.inner.endpoints.join(","))
    }

    fn campaign(&self, me: LeaderInfo) -> BoxFuture<'_, Result<Leadership>> {
        Box::pin(async move {
            let key = B64.encode(self.leader_key());
            let value = B64.encode(serde_json::to_vec(&me).map_err(|e| Error::internal(e.to_string()))?);
            let mut failing = false;
            loop {
                let attempt: Result<Option<Leadership>> = async {
                    if !self.range(&self.leader_key(), false).await?.is_empty() {
                        return Ok(None);
                    }
                    let granted = Instant::now();
                    let lease = self.grant().await?;
                    let put = json!({ "request_put": { "key": key, "value": value, "lease": lease.to_string() } });
                    let compare =
                        json!([{ "target": "CREATE", "key": key, "result": "EQUAL", "create_revision": "0" }]);
                    let answer = self.call("/v3/kv/txn", json!({ "compare": compare, "success": [put] })).await?;
                    if answer.get("succeeded").and_then(Value::as_bool) != Some(true) {
                        let _ = self.revoke(lease).await;
                        return Ok(None);
                    }
                    let epoch = answer
                        .get("header")
                        .and_then(|h| int(h.get("revision")))
                        .ok_or_else(|| self.unexpected("read the election's revision", &answer))?
                        as u64;
                    let (tx, rx) = watch::channel(false);
                    self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).push(Held {
                        epoch,
                        lease,
                        lost: tx.clone(),
                    });
                    self.keep(epoch, lease, granted, tx);
                    Ok(Some(Leadership::new(epoch, rx)))
                }
                .await;
                match attempt {
                    Ok(Some(leadership)) => {
                        info!(id = %me.id, epoch = leadership.epoch, service = %self.describe(), "elected leader");
                        return Ok(leadership);
                    }
                    Ok(None) => failing = false,
                    Err(e) => {
                        if !failing {
                            warn!(id = %me.id, error = %e, "cannot campaign for leadership; trying again");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(crate::RETRIEVAL_INTERVAL).await;
            }
        })
    }

    fn resign(&self, leadership: &Leadership) -> BoxFuture<'_, Result<()>> {
        let epoch = leadership.epoch;
        Box::pin(async move {
            let held = {
                let mut all = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
                all.iter().position(|h| h.epoch == epoch).map(|i| all.remove(i))
            };
            if let Some(h) = held {
                let _ = h.lost.send(true);
                self.revoke(h.lease).await?;
                info!(epoch, "resigned leadership");
            }
            Ok(())
        })
    }

    fn watch_leader(&self) -> BoxFuture<'_, Result<BoxFuture<'static, ()>>> {
        Box::pin(async move {
            let (inner, key) = (self.inner.clone(), self.leader_key());
            let mut events = tokio::task::spawn_blocking(move || inner.watch(&key))
                .await
                .map_err(|e| Error::internal(format!("etcd watch task failed: {e}")))??;
            Ok(Box::pin(async move {
                // The next event (a put or delete of the leader key), or the end of the request's
                // time bound, or of the connection.
                let _ = tokio::task::spawn_blocking(move || {
                    let mut line = String::new();
                    let _ = std::io::BufRead::read_line(&mut events, &mut line);
                })
                .await;
            }) as BoxFuture<'static, ()>)
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Leader>>> {
        Box::pin(async move {
            let kvs = self.range(&self.leader_key(), false).await?;
            let Some(kv) = kvs.first() else { return Ok(None) };
            let epoch = int(kv.get("create_revision")).unwrap_or(0) as u64;
            let info: LeaderInfo =
                serde_json::from_slice(&bytes(kv.get("value"))).map_err(|e| Error::Coordination {
                    context: "cannot read the leader's address".into(),
                    service: self.describe(),
                    message: format!("{e}; another program writes {}", self.leader_key()),
                    retryable: false,
                })?;
            Ok(Some(Leader { info, epoch }))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { Ok(self.range(&self.key(key), false).await?.first().map(|kv| bytes(kv.get("value")))) })
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<(String, Vec<u8>)>>> {
        Box::pin(async move {
            let prefix = format!("{}/", self.key(dir));
            let mut out: Vec<(String, Vec<u8>)> = self
                .range(&prefix, true)
                .await?
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8(bytes(kv.get("key"))).ok()?;
                    let name = key.strip_prefix(&prefix)?;
                    (!name.contains('/')).then(|| (name.to_string(), bytes(kv.get("value"))))
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    fn put<'a>(&'a self, epoch: u64, key: &'a str, value: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let op = json!({ "request_put": { "key": B64.encode(self.key(key)), "value": B64.encode(value) } });
            self.fenced(epoch, vec![op]).await
        })
    }

    fn delete<'a>(&'a self, epoch: u64, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let exact = self.key(key);
            let dir = format!("{exact}/");
            let ops = vec![
                json!({ "request_delete_range": { "key": B64.encode(&exact) } }),
                json!({ "request_delete_range": {
                    "key": B64.encode(&dir),
                    "range_end": B64.encode(prefix_end(dir.as_bytes())),
                } }),
            ];
            self.fenced(epoch, ops).await
        })
    }
}

/// The end of the key range of everything that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: to the end of the key space.
    vec![0]
}

/// An int64 field: the gateway writes them as strings.
fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A bytes field (base64; absent when empty).
fn bytes(v: Option<&Value>) -> Vec<u8> {
    v.and_then(Value::as_str).and_then(|s| B64.decode(s).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_cover_exactly_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_integers_are_strings_or_numbers() {
        assert_eq!(int(Some(&json!("42"))), Some(42));
        assert_eq!(int(Some(&json!(7))), Some(7));
        assert_eq!(int(None), None);
        assert_eq!(bytes(Some(&json!(B64.encode("hi")))), b"hi".to_vec());
        assert!(bytes(None).is_empty());
    }
}
