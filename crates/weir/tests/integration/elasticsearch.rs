//! The Elasticsearch sink against noida-db's reimplementation of Elasticsearch 8's REST API (see
//! `weir_kafka::testing`): documents in once with ids across a replay, a mapping conflict failing
//! with the document and reason, and requests refused for load (429, from a proxy in front of the
//! server) sent again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use weir::{Job, Registry, Result, StreamEnv};
use weir_connectors::elasticsearch::ElasticsearchSink;
use weir_kafka::testing::Broker;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Doc {
    n: Value,
    word: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    url: String,
    index: String,
    count: u64,
    /// Write `n` as text, which an integer mapping refuses.
    n_as_text: bool,
}

fn index_docs(env: &mut StreamEnv, a: Args) -> Result<()> {
    let as_text = a.n_as_text;
    env.datagen(Some(a.count), None, |i| i)
        .map(move |i| Doc {
            n: if as_text { Value::String(format!("n{i}")) } else { Value::from(i) },
            word: format!("w{}", i % 7),
        })
        .add_sink(
            ElasticsearchSink::new(&a.url, &a.index)
                .id(|d: &Doc| d.n.to_string())
                .bulk_flush_max_actions(300)
                .bulk_flush_backoff(5, Duration::from_millis(20)),
        );
    Ok(())
}

static INDEX_DOCS: Job<Args> = Job::new("index-docs", index_docs);

fn driver() -> weir::Driver {
    let mut d = crate::driver(Registry::new().register(&INDEX_DOCS), 2);
    if let Err(e) = d.set("execution.checkpointing.interval", "100ms") {
        panic!("{e}");
    }
    d
}

fn http(method: &str, url: &str, body: Option<&str>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let answer = match body {
        Some(b) => agent.put(url).header("content-type", "application/json").send(b),
        None if method == "POST" => agent.post(url).send_empty(),
        None => agent.get(url).call(),
    };
    match answer {
        Ok(mut r) => r.body_mut().read_json().unwrap_or(Value::Null),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn count(url: &str, index: &str) -> u64 {
    http("POST", &format!("{url}/{index}/_refresh"), None);
    http("GET", &format!("{url}/{index}/_count"), None)["count"].as_u64().unwrap_or(0)
}

fn args(url: &str, index: &str, count: u64) -> Args {
    Args { url: url.into(), index: index.into(), count, n_as_text: false }
}

#[test]
fn documents_reach_the_index_once_each_even_when_written_again() -> Result<()> {
    let b = Broker::start();
    let url = b.elasticsearch_url();
    driver().execute(&INDEX_DOCS, args(&url, "docs", 5000))?;
    assert_eq!(count(&url, "docs"), 5000);
    // A replay (here, the whole job again) overwrites documents with the same ids.
    driver().execute(&INDEX_DOCS, args(&url, "docs", 5000))?;
    assert_eq!(count(&url, "docs"), 5000);
    let doc = http("GET", &format!("{url}/docs/_doc/4242"), None);
    assert_eq!(doc["_source"]["word"], "w0", "{doc}");
    Ok(())
}

#[test]
fn a_document_the_mapping_refuses_fails_the_job_with_the_document_and_the_reason() {
    let b = Broker::start();
    let url = b.elasticsearch_url();
    http("PUT", &format!("{url}/typed"), Some(r#"{"mappings":{"properties":{"n":{"type":"integer"}}}}"#));
    let mut a = args(&url, "typed", 10);
    a.n_as_text = true;
    let e = driver().execute(&INDEX_DOCS, a).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("index 'typed' refused document"), "{e}");
    assert!(e.contains("parsing") && e.contains("fix the index's mapping"), "{e}");
    let bad = driver().execute(&INDEX_DOCS, args(&url, "Not An Index", 1)).err().map(|e| e.to_string());
    assert!(bad.unwrap_or_default().contains("is not an Elasticsearch index name"));
}

/// A proxy in front of `upstream` that answers the first `refuse` bulk requests with 429 and
/// passes everything else through; it counts the bulk requests it saw.
fn overloaded_proxy(upstream: String, refuse: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().map(|a| format!("http://{a}")).unwrap_or_default();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().take(10_000).flatten() {
            let (upstream, counter) = (upstream.clone(), counter.clone());
            std::thread::spawn(move || {
                let _ = serve(client, &upstream, &counter, refuse);
            });
        }
    });
    (address, seen)
}

/// One HTTP/1.1 message (head and a Content-Length body) from `r`; `None` at the end.
fn read_message(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    head.extend(body);
    Ok(Some(head))
}

fn serve(client: TcpStream, upstream: &str, seen: &AtomicUsize, refuse: usize) -> std::io::Result<()> {
    let mut out = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let server = TcpStream::connect(upstream.trim_start_matches("http://"))?;
    let mut to_server = server.try_clone()?;
    let mut from_server = BufReader::new(server);
    for _ in 0..10_000 {
        let Some(request) = read_message(&mut from_client)? else { return Ok(()) };
        if request.starts_with(b"POST /_bulk") && seen.fetch_add(1, Ordering::SeqCst) < refuse {
            out.write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        }
        to_server.write_all(&request)?;
        let Some(response) = read_message(&mut from_server)? else { return Ok(()) };
        out.write_all(&response)?;
    }
    Ok(())
}

#[test]
fn bulk_requests_refused_for_load_are_sent_again() -> Result<()> {
    let b = Broker::start();
    let (proxy, seen) = overloaded_proxy(b.elasticsearch_url(), 3);
    driver().execute(&INDEX_DOCS, args(&proxy, "busy", 1000))?;
    assert_eq!(count(&b.elasticsearch_url(), "busy"), 1000);
    assert!(seen.load(Ordering::SeqCst) > 3, "the refused requests were sent again");
    Ok(())
}
