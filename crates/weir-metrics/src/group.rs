//! Metric groups and the registry reporters read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use tracing::warn;

use crate::kinds::{Counter, Histogram, Meter, Metric, TimeShare, VIEW_UPDATE_INTERVAL};
use weir_core::metric::GroupSample;

#[derive(Default)]
struct RegistryInner {
    groups: Mutex<Vec<Weak<GroupInner>>>,
    /// Snapshots of other processes' groups, by the key their owner gave.
    remote: Mutex<BTreeMap<String, Vec<GroupSample>>>,
    /// Functions that make groups when asked (for sets that come and go, like a JobManager's
    /// jobs), for as long as their owners keep them.
    collectors: Mutex<Vec<Weak<Collector>>>,
}

/// A function that makes groups when the registry is read ([`Registry::collect`]).
pub type Collector = dyn Fn() -> Vec<GroupSample> + Send + Sync;

/// Where a process's metric groups register, and where reporters read them (Flink's
/// `MetricRegistry`). Cheap to clone; clones are the same registry.
#[derive(Clone)]
pub struct Registry(Arc<RegistryInner>);

/// The process's registry.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::new)
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry, whose rates a thread of its own brings up to date every
    /// [`VIEW_UPDATE_INTERVAL`] until the registry is dropped.
    pub fn new() -> Registry {
        let inner = Arc::new(RegistryInner::default());
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new().name("metric views".into()).spawn(move || {
            loop {
                std::thread::sleep(VIEW_UPDATE_INTERVAL);
                match weak.upgrade() {
                    Some(inner) => Registry(inner).update_views(),
                    None => break,
                }
            }
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the metric view thread: rates stay at 0");
        }
        Registry(inner)
    }

    /// A top-level group: `scope` is its logical scope (`jobmanager`, `taskmanager`), `vars` its
    /// variables (`host`, `tm_id`).
    pub fn group(&self, scope: &str, vars: Vec<(String, String)>) -> MetricGroup {
        self.register(scope.to_string(), vars)
    }

    fn register(&self, scope: String, vars: Vec<(String, String)>) -> MetricGroup {
        let inner = Arc::new(GroupInner {
            registry: Arc::downgrade(&self.0),
            scope,
            vars,
            metrics: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        });
        if let Ok(mut groups) = self.0.groups.lock() {
            groups.retain(|g| g.strong_count() > 0);
            groups.push(Arc::downgrade(&inner));
        }
        MetricGroup(inner)
    }

    fn live(&self) -> Vec<Arc<GroupInner>> {
        self.0.groups.lock().map(|g| g.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default()
    }

    /// Every metric of every live group, then the other processes' snapshots.
    pub fn samples(&self) -> Vec<GroupSample> {
        let mut out: Vec<GroupSample> = self.live().iter().map(|g| MetricGroup(g.clone()).sample()).collect();
        if let Ok(remote) = self.0.remote.lock() {
            out.extend(remote.values().flatten().cloned());
        }
        let collectors: Vec<Arc<Collector>> =
            self.0.collectors.lock().map(|c| c.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default();
        for c in collectors {
            out.extend(c());
        }
        out
    }

    /// Reports what `collector` returns whenever the registry is read, for as long as the
    /// returned handle lives.
    pub fn collect(&self, collector: impl Fn() -> Vec<GroupSample> + Send + Sync + 'static) -> Arc<Collector> {
        let c: Arc<Collector> = Arc::new(collector);
        if let Ok(mut all) = self.0.collectors.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&c));
        }
        c
    }

    /// The samples of this process's groups whose variable `var` is `value` (a job's, by
    /// `job_id`); only those groups are read.
    pub fn samples_where(&self, var: &str, value: &str) -> Vec<GroupSample> {
        self.samples_of(|_, vars| vars.iter().any(|(k, v)| k == var && v == value))
    }

    /// The samples of this process's groups that `wanted` picks by logical scope and variables;
    /// only those groups are read (not the other processes' snapshots or the collectors).
    pub fn samples_of(&self, wanted: impl Fn(&str, &[(String, String)]) -> bool) -> Vec<GroupSample> {
        self.live().into_iter().filter(|g| wanted(&g.scope, &g.vars)).map(|g| MetricGroup(g).sample()).collect()
    }

    /// Stands `samples` (another process's groups) in for the groups under `key` until they are
    /// replaced or removed.
    pub fn set_remote(&self, key: &str, samples: Vec<GroupSample>) {
        if let Ok(mut remote) = self.0.remote.lock() {
            remote.insert(key.to_string(), samples);
        }
    }

    /// Forgets the snapshots under `key`.
    pub fn remove_remote(&self, key: &str) {
        if let Ok(mut remote) = self.0.remote.lock() {
            remote.remove(key);
        }
    }

    /// Brings every rate up to date now (the registry's thread does so every
    /// [`VIEW_UPDATE_INTERVAL`]).
    pub fn update_views(&self) {
        let now = Instant::now();
        for g in self.live() {
            if let Ok(metrics) = g.metrics.lock() {
                for (_, m) in metrics.iter() {
                    m.update_view(now);
                }
            }
        }
    }
}

struct GroupInner {
    registry: Weak<RegistryInner>,
    scope: String,
    vars: Vec<(String, String)>,
    metrics: Mutex<Vec<(String, Metric)>>,
    /// Groups made under this one, kept for as long as it lives.
    children: Mutex<Vec<MetricGroup>>,
}

/// A set of metrics with a logical scope and variables (Flink's `MetricGroup`). Its metrics are
/// reported until the last clone of the group is dropped; so are the groups made under it.
#[derive(Clone)]
pub struct MetricGroup(Arc<GroupInner>);

impl std::fmt::Debug for MetricGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricGroup").field("scope", &self.0.scope).field("vars", &self.0.vars).finish()
    }
}

impl MetricGroup {
    /// A group registered nowhere (its metrics are counted but never reported): for operators
    /// that run outside any cluster, such as in unit tests.
    pub fn detached(scope: &str) -> MetricGroup {
        MetricGroup::unregistered(scope.to_string(), Vec::new())
    }

    fn unregistered(scope: String, vars: Vec<(String, String)>) -> MetricGroup {
        MetricGroup(Arc::new(GroupInner {
            registry: Weak::new(),
            scope,
            vars,
            metrics: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        }))
    }

    /// The logical scope (`taskmanager.job.task`).
    pub fn scope(&self) -> &str {
        &self.0.scope
    }

    /// The variables.
    pub fn vars(&self) -> &[(String, String)] {
        &self.0.vars
    }

    /// Registers `metric` as `name`. A name already taken in this group keeps its first metric,
    /// as in Flink, with a warning.
    pub fn register(&self, name: &str, metric: Metric) {
        let Ok(mut metrics) = self.0.metrics.lock() else { return };
        if metrics.iter().any(|(n, _)| n == name) {
            warn!(scope = %self.0.scope, metric = name, "a metric of this name is already registered in this group; the new one is not reported");
            return;
        }
        metrics.push((name.to_string(), metric));
    }

    /// A new counter, registered as `name`.
    pub fn counter(&self, name: &str) -> Counter {
        let c = Counter::new();
        self.register(name, Metric::Counter(c.clone()));
        c
    }

    /// Registers `counter` as `name`.
    pub fn add_counter(&self, name: &str, counter: &Counter) {
        self.register(name, Metric::Counter(counter.clone()));
    }

    /// Registers a gauge: `read` is called whenever the metric is reported.
    pub fn gauge(&self, name: &str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.register(name, Metric::Gauge(Arc::new(read)));
    }

    /// Registers a meter of `counter`'s rate per second as `name`.
    pub fn meter(&self, name: &str, counter: &Counter) -> Arc<Meter> {
        let m = Arc::new(Meter::of(counter.clone()));
        self.register(name, Metric::Meter(m.clone()));
        m
    }

    /// Registers a meter of the rate of what `count` returns as `name`.
    pub fn meter_fn(&self, name: &str, count: impl Fn() -> u64 + Send + Sync + 'static) -> Arc<Meter> {
        let m = Arc::new(Meter::of_fn(count));
        self.register(name, Metric::Meter(m.clone()));
        m
    }

    /// Registers `share` (milliseconds per second in a condition) as `name`.
    pub fn time_share(&self, name: &str, share: &Arc<TimeShare>) {
        self.register(name, Metric::TimeShare(share.clone()));
    }

    /// A new histogram over the last `window` values, registered as `name`.
    pub fn histogram(&self, name: &str, window: usize) -> Arc<Histogram> {
        let h = Arc::new(Histogram::new(window));
        self.register(name, Metric::Histogram(h.clone()));
        h
    }

    /// A group under this one, one scope level down: `scope` is appended to the logical scope
    /// and `vars` to the variables (`task` with `task_name`, `subtask_index`...). It lives as long
    /// as its own handles, not as long as this group.
    pub fn child(&self, scope: &str, vars: Vec<(String, String)>) -> MetricGroup {
        let scope = format!("{}.{scope}", self.0.scope);
        let mut all = self.0.vars.clone();
        all.extend(vars);
        match self.0.registry.upgrade() {
            Some(r) => Registry(r).register(scope, all),
            None => MetricGroup::unregistered(scope, all),
        }
    }

    /// A group under this one that lives as long as this one.
    fn kept_child(&self, scope: &str, vars: Vec<(String, String)>) -> MetricGroup {
        let group = self.child(scope, vars);
        if let Ok(mut children) = self.0.children.lock() {
            children.push(group.clone());
        }
        group
    }

    /// A user's group named `name` under this one (Flink's `addGroup(name)`): the name becomes
    /// part of the metrics' logical scope. It lives as long as this group.
    pub fn add_group(&self, name: &str) -> MetricGroup {
        self.kept_child(name, Vec::new())
    }

    /// A user's group with a variable (Flink's `addGroup(key, value)`): `key` joins the logical
    /// scope and becomes a variable (a Prometheus label) with `value`. It lives as long as this
    /// group.
    pub fn add_group_with(&self, key: &str, value: &str) -> MetricGroup {
        self.kept_child(key, vec![(key.to_string(), value.to_string())])
    }

    /// Every metric of this group now (not those of the groups under it).
    pub fn sample(&self) -> GroupSample {
        let metrics =
            self.0.metrics.lock().map(|m| m.iter().map(|(n, m)| (n.clone(), m.sample())).collect()).unwrap_or_default();
        GroupSample { scope: self.0.scope.clone(), vars: self.0.vars.clone(), metrics }
    }

    /// This group's and every user group's under it ([`MetricGroup::add_group`]), now.
    pub fn sample_all(&self) -> Vec<GroupSample> {
        let mut out = vec![self.sample()];
        let children: Vec<MetricGroup> = self.0.children.lock().map(|c| c.clone()).unwrap_or_default();
        for c in children {
            out.extend(c.sample_all());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn groups_report_until_dropped_and_children_inherit_scope_and_variables() {
        let r = Registry::new();
        let tm = r.group("taskmanager", vars(&[("host", "h"), ("tm_id", "tm-1")]));
        let job = tm.child("job", vars(&[("job_id", "j1")]));
        let c = job.counter("numRestarts");
        c.add(3);
        job.gauge("answer", || 42.0);
        let samples = r.samples_where("job_id", "j1");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].scope, "taskmanager.job");
        assert_eq!(samples[0].var("tm_id"), Some("tm-1"));
        assert_eq!(samples[0].metric("numRestarts"), Some(&Sample::Number(3.0)));
        assert_eq!(samples[0].metric("answer"), Some(&Sample::Number(42.0)));
        // A user group with a variable.
        let mine = job.add_group_with("region", "eu").counter("hits");
        mine.inc();
        assert!(r.samples().iter().any(|g| g.scope == "taskmanager.job.region" && g.var("region") == Some("eu")));
        // The first metric of a name stays.
        job.gauge("answer", || 7.0);
        assert_eq!(job.sample().metric("answer"), Some(&Sample::Number(42.0)));
        drop(job);
        assert!(r.samples_where("job_id", "j1").is_empty(), "a dropped group and its children are not reported");
        assert_eq!(r.samples().len(), 1);
        drop(tm);
        assert!(r.samples().is_empty());
    }

    #[test]
    fn remote_snapshots_stand_in_until_removed() {
        let r = Registry::new();
        let g = GroupSample { scope: "taskmanager.job.task".into(), vars: vars(&[("job_id", "x")]), metrics: vec![] };
        r.set_remote("worker-1", vec![g.clone()]);
        assert_eq!(r.samples(), vec![g]);
        r.remove_remote("worker-1");
        assert!(r.samples().is_empty());
        let collector = r.collect(|| vec![GroupSample { scope: "jobmanager.job".into(), ..Default::default() }]);
        assert_eq!(r.samples().len(), 1);
        drop(collector);
        assert!(r.samples().is_empty(), "a dropped collector is not asked");
    }

    #[test]
    fn views_update_on_demand() {
        let r = Registry::new();
        let g = r.group("jobmanager", vec![]);
        let c = g.counter("n");
        let m = g.meter("nPerSecond", &c);
        c.add(1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.update_views();
        assert!(m.rate() > 1000.0, "{}", m.rate());
    }
}
