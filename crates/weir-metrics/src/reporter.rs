//! Reporters: the Prometheus endpoint a process serves its metrics on.
//!
//! Configured with Flink's keys (`metrics.reporter.<name>.factory.class`, `.port` with ranges,
//! `.filterLabelValueCharacters`, `.scope.variables.excludes|additional`), so a Flink
//! `config.yaml` section works as it is. Each process takes the first free port of the range,
//! on loopback unless `metrics.reporter.<name>.bind-address` opens it.
//!
//! The endpoint is a small HTTP/1.1 server on threads of its own (it answers `GET /metrics`,
//! and `GET /` as Flink's does), so it works the same in every process, with or without an async
//! runtime, and cannot be slowed by the process's other work beyond the time to render.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};
use weir_core::config::{MetricsSettings, ReporterSettings, ports};
use weir_core::{Error, Result};

use crate::group::Registry;
use weir_core::metric::GroupSample;

/// Scrapes served at once; a scrape beyond them waits in the listen queue.
const MAX_CONCURRENT: usize = 8;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read.
const MAX_REQUEST: usize = 16 * 1024;

/// The reporters a process runs; they stop when this is dropped.
#[derive(Default)]
pub struct Reporters(Vec<PrometheusReporter>);

impl Reporters {
    /// Starts every active reporter of `settings` on `registry`.
    pub fn start(settings: &MetricsSettings, registry: &Registry) -> Result<Reporters> {
        let mut started = Vec::new();
        for (name, r) in settings.active()? {
            started.push(PrometheusReporter::start(name, r, registry.clone())?);
        }
        Ok(Reporters(started))
    }

    /// The addresses the reporters listen on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|r| r.address).collect()
    }
}

/// Flink's Prometheus reporter: every metric of the registry at `/metrics`, in the text
/// exposition format.
pub struct PrometheusReporter {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusReporter {
    /// Listens on the first free port of `settings.port` and serves `registry`.
    pub fn start(name: &str, settings: &ReporterSettings, registry: Registry) -> Result<PrometheusReporter> {
        let key = format!("metrics.reporter.{name}.port");
        let mut listener = None;
        let mut last_error = None;
        'ranges: for range in ports(&key, &settings.port)? {
            for port in range {
                match TcpListener::bind((settings.bind_address.as_str(), port)) {
                    Ok(l) => {
                        listener = Some(l);
                        break 'ranges;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
        }
        let listener = listener.ok_or_else(|| {
            Error::Config(format!(
                "{key}: no port of '{}' is free on {} ({}); give a wider range, or another port",
                settings.port,
                settings.bind_address,
                last_error.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        let address = listener.local_addr().map_err(|e| Error::io("the metric reporter's address", &key, e))?;
        info!(reporter = name, %address, "Prometheus reporter listening");
        let stop = Arc::new(AtomicBool::new(false));
        let view = View { registry, settings: settings.clone() };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("metrics {name}"))
            .spawn(move || serve(listener, view, flag))
            .map_err(|e| Error::internal(format!("cannot start the metric reporter's thread: {e}")))?;
        Ok(PrometheusReporter { address, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for PrometheusReporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a reporter shows: the registry's metrics, with its label settings applied.
#[derive(Clone)]
struct View {
    registry: Registry,
    settings: ReporterSettings,
}

impl View {
    fn render(&self) -> String {
        let groups: Vec<GroupSample> = self
            .registry
            .samples()
            .into_iter()
            .map(|mut g| {
                g.vars.retain(|(k, _)| !self.settings.excludes.contains(k));
                g.vars.extend(self.settings.additional.iter().cloned());
                g
            })
            .collect();
        crate::prometheus::render(&groups, self.settings.filter_label_values)
    }
}

fn serve(listener: TcpListener, view: View, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONCURRENT {
            let _ = respond(&conn, "503 Service Unavailable", "too many scrapes at once; retry\n");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (view, active) = (view.clone(), active.clone());
        let spawned = std::thread::Builder::new().name("metrics scrape".into()).spawn(move || {
            if let Err(e) = answer(conn, &view) {
                debug!(error = %e, "a metric scrape ended early");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread for a metric scrape");
        }
    }
}

fn answer(mut conn: TcpStream, view: &View) -> std::io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return respond(&conn, "431 Request Header Fields Too Large", "request head too large\n");
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics" | "/") => {
            respond_with(&conn, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &view.render())
        }
        ("GET", _) => respond(&conn, "404 Not Found", "metrics are at /metrics\n"),
        _ => respond(&conn, "405 Method Not Allowed", "only GET is served\n"),
    }
}

fn respond(conn: &TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    respond_with(conn, status, "text/plain; charset=utf-8", body)
}

fn respond_with(mut conn: &TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::config::ClusterConfig;

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let url = format!("http://{addr}{path}");
        match ureq::get(&url).config().http_status_as_error(false).build().call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    #[test]
    fn the_endpoint_serves_the_registry_and_takes_the_next_free_port() -> Result<()> {
        let registry = Registry::new();
        let g = registry.group("taskmanager", vec![("tm_id".into(), "tm 1".into()), ("host".into(), "h".into())]);
        g.counter("numThings").add(7);
        // Two processes with one range: the second takes the next port.
        let taken = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", "", e))?;
        let port = taken.local_addr().map_err(|e| Error::io("addr", "", e))?.port();
        let mut c = ClusterConfig::default();
        c.set("metrics.reporter.prom.factory.class", "org.apache.flink.metrics.prometheus.PrometheusReporterFactory")?;
        c.set("metrics.reporter.prom.port", &format!("{port}-{}", port.saturating_add(20)))?;
        c.set("metrics.reporter.prom.scope.variables.excludes", "host")?;
        c.set("metrics.reporter.prom.scope.variables.additional", "env:test")?;
        let reporters = Reporters::start(&c.metrics, &registry)?;
        let addr = reporters.addresses()[0];
        assert!(addr.port() > port && addr.ip().is_loopback(), "{addr}");
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("flink_taskmanager_numThings{tm_id=\"tm_1\",env=\"test\"} 7\n"), "{text}");
        assert_eq!(get(addr, "/nothing").0, 404);
        drop(reporters);
        assert!(TcpStream::connect(addr).is_err(), "a dropped reporter stops listening");
        // A range with nothing free says so.
        c.set("metrics.reporter.prom.port", &port.to_string())?;
        let e = Reporters::start(&c.metrics, &registry).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no port of") && e.contains("give a wider range"), "{e}");
        Ok(())
    }
}
