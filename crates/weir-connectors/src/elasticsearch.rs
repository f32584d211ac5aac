//! An Elasticsearch sink, with the semantics of Flink's Elasticsearch connector: bulk requests,
//! flushed at every checkpoint barrier (at-least-once; idempotent when documents have ids).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_core::{Blame, Error, Result};
use weir_runtime::context::TaskEnv;
use weir_runtime::output::{Batch, Control, Output};
use weir_runtime::source::Sink;

/// Makes a document's id from a record (`None`: Elasticsearch picks one, and a replay after a
/// recovery writes the document again).
type IdFn<T> = Arc<dyn Fn(&T) -> Option<String> + Send + Sync>;

/// Writes records as JSON documents into an Elasticsearch index (Flink's `Elasticsearch8Sink`).
///
/// Documents go out in bulk requests of at most `bulk_flush_max_actions` documents (Flink's
/// `sink.bulk-flush.max-actions`, default 1000) or `bulk_flush_max_size` bytes (`sink.bulk-flush.
/// max-size`, default 2 MiB), and at least every `bulk_flush_interval` (`sink.bulk-flush.
/// interval`, default 1 s); every checkpoint barrier flushes what is buffered and waits for it, so
/// nothing before a completed checkpoint is lost (at-least-once). With document ids
/// ([`ElasticsearchSink::id`]) a replay overwrites rather than duplicates: the index ends up as
/// if each record were written once.
///
/// A request refused as a whole with 429 (too many requests) or 5xx, or documents refused with
/// 429, are sent again after a backoff (`sink.bulk-flush.backoff.max-retries`, default 8, from
/// `sink.bulk-flush.backoff.delay`, default 50 ms, doubling). A document refused for what it is (a
/// mapping conflict, a parse error) fails the job with the document, index and reason.
pub struct ElasticsearchSink<T> {
    hosts: Vec<String>,
    index: String,
    id: Option<IdFn<T>>,
    max_actions: usize,
    max_bytes: usize,
    interval: Duration,
    retries: u32,
    delay: Duration,
    auth: Option<(String, String)>,
}

impl<T> Clone for ElasticsearchSink<T> {
    fn clone(&self) -> Self {
        ElasticsearchSink {
            hosts: self.hosts.clone(),
            index: self.index.clone(),
            id: self.id.clone(),
            max_actions: self.max_actions,
            max_bytes: self.max_bytes,
            interval: self.interval,
            retries: self.retries,
            delay: self.delay,
            auth: self.auth.clone(),
        }
    }
}

impl<T> ElasticsearchSink<T> {
    /// A sink writing into `index` on the Elasticsearch nodes `hosts` (comma-separated
    /// `http://host:port`, or `host:port`).
    pub fn new(hosts: &str, index: &str) -> Self {
        let hosts = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| if h.contains("://") { h.trim_end_matches('/').to_string() } else { format!("http://{h}") })
            .collect();
        ElasticsearchSink {
            hosts,
            index: index.to_string(),
            id: None,
            max_actions: 1000,
            max_bytes: 2 << 20,
            interval: Duration::from_secs(1),
            retries: 8,
            delay: Duration::from_millis(50),
            auth: None,
        }
    }

    /// Gives each document an id, so that a replay after a recovery overwrites it.
    pub fn id(mut self, id: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.id = Some(Arc::new(move |r| Some(id(r))));
        self
    }

    /// The most documents in one bulk request.
    pub fn bulk_flush_max_actions(mut self, n: usize) -> Self {
        self.max_actions = n.max(1);
        self
    }

    /// The most bytes in one bulk request.
    pub fn bulk_flush_max_size(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// How long documents may wait in the buffer.
    pub fn bulk_flush_interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// How often, and from what first delay (doubling), a request refused for load is sent again.
    pub fn bulk_flush_backoff(mut self, retries: u32, delay: Duration) -> Self {
        self.retries = retries;
        self.delay = delay;
        self
    }

    /// HTTP basic authentication.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }
}

impl<T: serde::Serialize + 'static> Sink<T> for ElasticsearchSink<T> {
    fn name(&self) -> String {
        format!("Elasticsearch {}", self.index)
    }

    fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(Error::Config("the Elasticsearch sink needs hosts: http://host:port[,...]".into()));
        }
        let index = &self.index;
        let bad = index.is_empty()
            || index.starts_with(['-', '_', '+'])
            || index.chars().any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c));
        if bad {
            return Err(Error::Config(format!(
                "'{index}' is not an Elasticsearch index name: use lower case, without \\ / * ? \" < > | , # : or \
                 spaces, not starting with - _ +"
            )));
        }
        Ok(())
    }

    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        self.validate()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Box::new(BulkWriter {
            sink: self.clone(),
            agent,
            body: Vec::with_capacity(self.max_bytes.min(8 << 20)),
            actions: 0,
            oldest: None,
            host: env.op.subtask as usize,
            cancel: env.op.cancel.clone(),
        }))
    }
}

struct BulkWriter<T> {
    sink: ElasticsearchSink<T>,
    agent: ureq::Agent,
    /// The bulk request being built: an action line and a document line per document.
    body: Vec<u8>,
    actions: usize,
    /// When the oldest buffered document came.
    oldest: Option<Instant>,
    /// Which host to try first (subtasks start on different ones).
    host: usize,
    cancel: weir_runtime::CancelToken,
}

impl<T: serde::Serialize> BulkWriter<T> {
    fn add(&mut self, record: &T) -> Result<()> {
        let mut action = serde_json::json!({ "index": { "_index": self.sink.index } });
        if let Some(id) = self.sink.id.as_ref().and_then(|f| f(record)) {
            action["index"]["_id"] = Value::String(id);
        }
        let before = self.body.len();
        let written = serde_json::to_writer(&mut self.body, &action)
            .and_then(|()| {
                self.body.push(b'\n');
                serde_json::to_writer(&mut self.body, record)
            })
            .map_err(|e| {
                Error::external(
                    format!("a document for Elasticsearch index '{}'", self.sink.index),
                    e.to_string(),
                    false,
                )
            });
        if let Err(e) = written {
            self.body.truncate(before);
            return Err(e);
        }
        self.body.push(b'\n');
        self.actions += 1;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn due(&self) -> bool {
        self.actions >= self.sink.max_actions
            || self.body.len() >= self.sink.max_bytes
            || self.oldest.is_some_and(|t| t.elapsed() >= self.sink.interval)
    }

    /// Sends what is buffered, until every document is in (or one is refused for good).
    fn flush(&mut self) -> Result<()> {
        if self.actions == 0 {
            return Ok(());
        }
        let mut body = std::mem::take(&mut self.body);
        let mut delay = self.sink.delay;
        let mut tries = 0;
        loop {
            match self.send(&body)? {
                Sent::Done => break,
                Sent::Again(rest, why) => {
                    tries += 1;
                    if tries > self.sink.retries {
                        return Err(Error::external(
                            format!("bulk requests to Elasticsearch index '{}'", self.sink.index),
                            format!(
                                "still refused after {} retries ({why}); the cluster is overloaded or failing",
                                self.sink.retries
                            ),
                            true,
                        ));
                    }
                    tracing::warn!("Elasticsearch refused a bulk request ({why}); sending again in {delay:?}");
                    if self.cancel.wait_timeout(delay) {
                        return Ok(());
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                    body = rest;
                }
            }
        }
        body.clear();
        self.body = body;
        self.actions = 0;
        self.oldest = None;
        Ok(())
    }

    /// One bulk request to the first host that answers.
    fn send(&mut self, body: &[u8]) -> Result<Sent> {
        let n = self.sink.hosts.len();
        let mut unreachable = Vec::new();
        for i in 0..n {
            let host = &self.sink.hosts[(self.host + i) % n];
            let mut request = self.agent.post(format!("{host}/_bulk")).header("content-type", "application/x-ndjson");
            if let Some((user, password)) = &self.sink.auth {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request = request.header("authorization", format!("Basic {token}"));
            }
            let mut response = match request.send(body) {
                Ok(r) => r,
                Err(e) => {
                    unreachable.push(format!("{host}: {e}"));
                    continue;
                }
            };
            self.host = (self.host + i) % n;
            let status = response.status().as_u16();
            if status == 429 || status >= 500 {
                return Ok(Sent::Again(body.to_vec(), format!("HTTP {status} from {host}")));
            }
            let text = response.body_mut().read_to_string().unwrap_or_default();
            if status == 401 || status == 403 {
                return Err(Error::Storage {
                    context: "Elasticsearch refused the sink's credentials:".into(),
                    location: host.clone(),
                    message: format!("HTTP {status}: {}; check basic_auth", short(&text)),
                    blame: Blame::User,
                    retryable: false,
                });
            }
            if !(200..300).contains(&status) {
                return Err(Error::external(
                    format!("a bulk request to Elasticsearch at {host}"),
                    format!("HTTP {status}: {}", short(&text)),
                    false,
                ));
            }
            return self.items(body, &text, host);
        }
        Err(Error::external(
            format!("cannot reach any Elasticsearch host of {}", self.sink.hosts.join(",")),
            format!("{}; are they up?", unreachable.join("; ")),
            true,
        ))
    }

    /// Reads a bulk response: documents refused for load are sent again, any other refusal fails.
    fn items(&self, body: &[u8], text: &str, host: &str) -> Result<Sent> {
        let answer: Value = serde_json::from_str(text).map_err(|e| {
            Error::external(format!("the bulk answer of Elasticsearch at {host}"), format!("not JSON: {e}"), false)
        })?;
        if answer["errors"] != Value::Bool(true) {
            return Ok(Sent::Done);
        }
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let mut again = Vec::new();
        let empty = Vec::new();
        for (i, item) in answer["items"].as_array().unwrap_or(&empty).iter().enumerate() {
            let result = item.as_object().and_then(|o| o.values().next()).unwrap_or(&Value::Null);
            let status = result["status"].as_u64().unwrap_or(0);
            if (200..300).contains(&status) {
                continue;
            }
            if status == 429 {
                for line in lines.iter().skip(2 * i).take(2) {
                    again.extend_from_slice(line);
                    again.push(b'\n');
                }
                continue;
            }
            let error = &result["error"];
            let id = result["_id"].as_str().unwrap_or("(no id)");
            return Err(Error::external(
                format!("Elasticsearch index '{}' refused document {id}", self.sink.index),
                format!(
                    "{}: {} (HTTP {status}); fix the index's mapping or the documents",
                    error["type"].as_str().unwrap_or("error"),
                    error["reason"].as_str().unwrap_or("no reason given")
                ),
                false,
            ));
        }
        Ok(if again.is_empty() { Sent::Done } else { Sent::Again(again, "documents refused with 429".into()) })
    }
}

/// What became of a bulk request.
enum Sent {
    /// Every document is in.
    Done,
    /// These lines have to go again, for this reason.
    Again(Vec<u8>, String),
}

fn short(text: &str) -> &str {
    let end = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

impl<T: serde::Serialize> Output<T> for BulkWriter<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        batch.timestamps = None;
        for r in batch.records.drain(..) {
            self.add(&r)?;
            if self.due() {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            // At-least-once: what came before the barrier is in the index before it passes.
            Control::Barrier(_) => self.flush(),
            Control::Tick(_) if self.due() => self.flush(),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}
