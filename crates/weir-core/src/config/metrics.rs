//! The `metrics.*` settings: which reporters a process starts, configured with Flink's keys.

use std::collections::BTreeMap;

use super::registry::Value;
use crate::{Error, Result};

/// The factory class names that select the Prometheus reporter: Flink's, and weir's short name.
pub const PROMETHEUS_FACTORIES: [&str; 2] =
    ["org.apache.flink.metrics.prometheus.PrometheusReporterFactory", "prometheus"];

/// The `metrics.*` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSettings {
    /// `metrics.reporters`: the reporters to start (`None`: every configured one).
    pub enabled: Option<Vec<String>>,
    /// `metrics.reporter.<name>.*`, by name.
    pub reporters: BTreeMap<String, ReporterSettings>,
}

/// One reporter's `metrics.reporter.<name>.*` settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReporterSettings {
    /// `factory.class`: which reporter it is.
    pub factory: Option<String>,
    /// `port`: ports to try, as written (`9249`, `9249-9259`, `9249,9300-9310`).
    pub port: String,
    /// `bind-address`: where it listens.
    pub bind_address: String,
    /// `filterLabelValueCharacters`.
    pub filter_label_values: bool,
    /// `scope.variables.excludes`: variables left out of the labels (without angle brackets).
    pub excludes: Vec<String>,
    /// `scope.variables.additional`: labels added to every metric.
    pub additional: Vec<(String, String)>,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        ReporterSettings {
            factory: None,
            port: "9249".into(),
            bind_address: "127.0.0.1".into(),
            filter_label_values: true,
            excludes: Vec::new(),
            additional: Vec::new(),
        }
    }
}

impl MetricsSettings {
    /// Sets the key declared as `declared` (`metrics.reporter.<name>.port`) for reporter `name`.
    pub(super) fn set(&mut self, declared: &str, name: Option<&str>, value: &Value) -> Result<()> {
        if declared == "metrics.reporters" {
            let names = value.text(declared)?.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
            self.enabled = Some(names.collect());
            return Ok(());
        }
        let name = name.ok_or_else(|| Error::internal(format!("{declared} set without a reporter name")))?;
        let r = self.reporters.entry(name.to_string()).or_default();
        let key = format!("metrics.reporter.{name}.");
        match declared.strip_prefix("metrics.reporter.<name>.") {
            Some("factory.class") => r.factory = Some(value.text(declared)?.to_string()),
            Some("port") => {
                let text = value.text(declared)?.to_string();
                ports(&format!("{key}port"), &text)?;
                r.port = text;
            }
            Some("bind-address") => r.bind_address = value.text(declared)?.to_string(),
            Some("filterLabelValueCharacters") => r.filter_label_values = value.flag(declared)?,
            Some("scope.variables.excludes") => {
                r.excludes = value
                    .text(declared)?
                    .split(';')
                    .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>').to_string())
                    .filter(|v| !v.is_empty())
                    .collect()
            }
            Some("scope.variables.additional") => {
                let mut pairs = Vec::new();
                for pair in value.text(declared)?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once(':').ok_or_else(|| {
                        Error::Config(format!(
                            "{key}scope.variables.additional: '{pair}' is not key:value (write region:eu,env:prod)"
                        ))
                    })?;
                    pairs.push((k.trim().to_string(), v.trim().to_string()));
                }
                r.additional = pairs;
            }
            _ => return Err(Error::internal(format!("the registry declares {declared} but nothing reads it"))),
        }
        Ok(())
    }

    /// The reporters to start, by name; an error for a reporter named in `metrics.reporters` but
    /// not configured, or one whose factory weir does not have.
    pub fn active(&self) -> Result<Vec<(&str, &ReporterSettings)>> {
        if let Some(enabled) = &self.enabled {
            for n in enabled {
                if !self.reporters.contains_key(n) {
                    return Err(Error::Config(format!(
                        "metrics.reporters names '{n}', but no metrics.reporter.{n}.factory.class is set"
                    )));
                }
            }
        }
        let mut out = Vec::new();
        for (name, r) in &self.reporters {
            if self.enabled.as_ref().is_some_and(|e| !e.contains(name)) {
                continue;
            }
            match r.factory.as_deref() {
                Some(f) if PROMETHEUS_FACTORIES.contains(&f) => out.push((name.as_str(), r)),
                Some(f) => {
                    return Err(Error::Config(format!(
                        "metrics.reporter.{name}.factory.class: weir has no reporter '{f}'; it has the \
                         Prometheus reporter ({}), which Prometheus and the tools that read it scrape",
                        PROMETHEUS_FACTORIES[0]
                    )));
                }
                None => {
                    return Err(Error::Config(format!(
                        "metrics.reporter.{name} is configured without metrics.reporter.{name}.factory.class \
                         (for Prometheus: {})",
                        PROMETHEUS_FACTORIES[0]
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// The ports `text` names, in order: ports, ranges (`9249-9259`) and lists of both, as Flink
/// writes them; an error that shows the notation for anything else.
pub fn ports(key: &str, text: &str) -> Result<Vec<std::ops::RangeInclusive<u16>>> {
    let bad = |why: &str| {
        Error::Config(format!(
            "{key}: '{text}' {why} (write a port, a range like 9249-9259, or a list like 9249,9300-9310)"
        ))
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.trim().parse().map_err(|_| bad("is not a port"))?;
        let b: u16 = b.trim().parse().map_err(|_| bad("is not a port"))?;
        if a > b {
            return Err(bad("has a range that ends before it starts"));
        }
        out.push(a..=b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    #[test]
    fn a_flink_prometheus_section_configures_the_reporter() -> Result<()> {
        let mut c = ClusterConfig::default();
        c.set("metrics.reporter.prom.factory.class", PROMETHEUS_FACTORIES[0])?;
        c.set("metrics.reporter.prom.port", "9250-9260")?;
        c.set("metrics.reporter.prom.scope.variables.excludes", "<task_attempt_id>;tm_id")?;
        c.set("metrics.reporter.prom.scope.variables.additional", "region:eu, env:prod")?;
        let active = c.metrics.active()?;
        assert_eq!(active.len(), 1);
        let (name, r) = active[0];
        assert_eq!(name, "prom");
        assert_eq!(ports("p", &r.port)?, vec![9250..=9260]);
        assert_eq!(r.excludes, vec!["task_attempt_id", "tm_id"]);
        assert_eq!(r.additional, vec![("region".into(), "eu".into()), ("env".into(), "prod".into())]);
        assert_eq!(r.bind_address, "127.0.0.1", "loopback unless configured");
        Ok(())
    }

    #[test]
    fn bad_reporter_settings_say_what_to_write() -> Result<()> {
        let e = |r: Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let mut c = ClusterConfig::default();
        assert!(e(c.set("metrics.reporter.p.port", "92a9")).contains("write a port, a range like 9249-9259"));
        assert!(e(c.set("metrics.reporter.p.port", "9300-9200")).contains("ends before it starts"));
        assert!(e(c.set("metrics.reporter.p.scope.variables.additional", "eu")).contains("not key:value"));
        c.set("metrics.reporter.jmx.factory.class", "org.apache.flink.metrics.jmx.JMXReporterFactory")?;
        let active = c.metrics.active().map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(active.contains("weir has no reporter 'org.apache.flink.metrics.jmx.JMXReporterFactory'"), "{active}");
        // Only the enabled ones start, and an enabled one must be configured.
        c.set("metrics.reporters", "prom")?;
        let missing = c.metrics.active().map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("names 'prom', but no metrics.reporter.prom.factory.class"), "{missing}");
        c.set("metrics.reporter.prom.factory.class", "prometheus")?;
        assert_eq!(c.metrics.active()?.len(), 1, "jmx is configured but not enabled");
        Ok(())
    }
}
