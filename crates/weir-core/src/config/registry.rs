//! The option registry: every configuration key weir knows, declared once.
//!
//! Each [`OptionDef`] gives a key's type, default, scope, description and how it relates to
//! Flink's key of the same meaning. From the registry come the known-key checks (a key that is
//! not here is an error that names the closest known key), the parsing of `-D key=value` and of
//! configuration files into typed [`Value`]s, and the generated reference (`docs/config.md`).
//! The typed configurations ([`super::ClusterConfig`], [`super::ExecutionConfig`]) take values
//! only from here, so a key cannot be known to one process and unknown to another.

pub use super::def::{Choice, Flink, Kind, OptionDef, Scope, Value};
use super::options::{OPTIONS, RETIRED};
use crate::{Error, Result};

/// Every key weir knows.
pub fn options() -> &'static [OptionDef] {
    OPTIONS
}

/// The key `key` names (its own name or an older alias), if weir knows it.
pub fn lookup(key: &str) -> Option<&'static OptionDef> {
    OPTIONS
        .iter()
        .find(|o| o.key == key || o.aliases.contains(&key))
        .or_else(|| OPTIONS.iter().find(|o| named(o.key, key).is_some()))
}

/// For a key declared with a `<name>` part (`metrics.reporter.<name>.port`), the name `key` puts
/// in its place (`prom` in `metrics.reporter.prom.port`); `None` when `key` is not one of it.
pub fn named<'k>(declared: &str, key: &'k str) -> Option<&'k str> {
    let (before, after) = declared.split_once("<name>")?;
    let name = key.strip_prefix(before)?.strip_suffix(after)?;
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

/// The key `key` names; an error for a key weir does not know, naming the closest known key or,
/// for a Flink key weir replaces, the key to use.
pub fn known(key: &str) -> Result<&'static OptionDef> {
    if let Some(def) = lookup(key) {
        return Ok(def);
    }
    if let Some((_, why)) = RETIRED.iter().find(|(k, _)| *k == key) {
        return Err(Error::Config(format!("{key}: {why}")));
    }
    let closest = OPTIONS.iter().map(|o| (distance(key, o.key), o.key)).min();
    let hint = match closest {
        Some((d, k)) if d <= 3 || k.starts_with(key) => format!("did you mean '{k}'? "),
        _ => String::new(),
    };
    Err(Error::Config(format!("unknown configuration key '{key}'; {hint}docs/config.md lists every key weir knows")))
}

/// Parses one `key`/`text` pair: the key's definition and its typed value.
pub fn parse(key: &str, text: &str) -> Result<(&'static OptionDef, Value)> {
    let def = known(key)?;
    Ok((def, def.parse(text)?))
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The reference of every key, as Markdown (`docs/config.md` is this text).
pub fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from weir's option registry (`crates/weir-core/src/config/options.rs`); a test \
         fails when this file and the registry differ (`WEIR_UPDATE_DOCS=1 cargo nextest run -p \
         weir-core reference` writes it anew). Keys go in \
         `config.yaml` (in `$WEIR_CONF_DIR`, or the file `--config` names), flat (`a.b: 1`) or \
         nested, or after `-D key=value`. A key weir does not know is an error.\n\n\
         - **scope** `cluster`: read by the cluster's processes and the CLI's targets. `job`: read \
         by jobs; every process accepts it, a cluster process as the default for the jobs it runs, \
         and what a program or `-D` sets travels with its job.\n\
         - **Flink**: `same` means Flink's key of the same name means the same; otherwise the \
         closest Flink key is named, or `weir` marks weir's own.\n\
         - Durations take Flink's notation (`500`, `500ms`, `10 s`, `2min`, `1h`, `1d`; a bare \
         number is milliseconds); sizes too (`1024`, `64kb`, `512 mb`, `1g`).\n\n",
    );
    let mut sections: Vec<&str> = Vec::new();
    for o in OPTIONS {
        let section = o.key.split('.').next().unwrap_or(o.key);
        if !sections.contains(&section) {
            sections.push(section);
        }
    }
    for section in sections {
        out.push_str(&format!(
            "## {section}\n\n| key | type | default | scope | Flink | description |\n|---|---|---|---|---|---|\n"
        ));
        for o in OPTIONS.iter().filter(|o| o.key.split('.').next() == Some(section)) {
            let flink = match o.flink {
                Flink::Same => "same".to_string(),
                Flink::Like(k) => format!("like `{k}`"),
                Flink::None => "weir".to_string(),
            };
            let mut doc = o.doc.replace('|', "\\|");
            if !o.aliases.is_empty() {
                let names: Vec<String> = o.aliases.iter().map(|a| format!("`{a}`")).collect();
                doc.push_str(&format!(" Also accepted as {}.", names.join(", ")));
            }
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                o.key,
                o.type_name(),
                o.default,
                o.scope.name(),
                flink,
                doc
            ));
        }
        out.push('\n');
    }
    out.push_str("## Flink keys weir refuses\n\nThese Flink keys name a mechanism weir does not have; each error says what to use.\n\n| key | why |\n|---|---|\n");
    for (k, why) in RETIRED {
        out.push_str(&format!("| `{k}` | {} |\n", why.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_declared_once_with_valid_examples_and_defaults() -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for o in OPTIONS {
            for name in std::iter::once(&o.key).chain(o.aliases) {
                assert!(seen.insert(*name), "{name} is declared twice");
            }
            let example = o.parse(o.example)?;
            if let Ok(default) = o.parse(o.default.trim_matches('`')) {
                assert_ne!(example, default, "{}: the example must differ from the default", o.key);
            }
            assert_eq!(o.parse(&example.render())?, example, "{}: a rendered value parses back", o.key);
            assert!(!o.doc.is_empty(), "{} has no description", o.key);
        }
        for (k, _) in RETIRED {
            assert!(lookup(k).is_none(), "{k} is both known and refused");
        }
        Ok(())
    }

    #[test]
    fn unknown_keys_name_the_closest_key() {
        let e = |k: &str| known(k).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e("parallelism.defualt").contains("did you mean 'parallelism.default'"),
            "{}",
            e("parallelism.defualt")
        );
        assert!(e("zzz").contains("unknown configuration key 'zzz'; docs/config.md"), "{}", e("zzz"));
        assert!(e("state.backend.rocksdb.timer-service.factory").contains("state.backend.disk.timer-service.factory"));
        // A key with a name in it: any one name, but not none and not a dotted path.
        assert_eq!(lookup("metrics.reporter.prom.port").map(|o| o.key), Some("metrics.reporter.<name>.port"));
        assert_eq!(named("metrics.reporter.<name>.factory.class", "metrics.reporter.p1.factory.class"), Some("p1"));
        assert!(lookup("metrics.reporter..port").is_none());
        assert!(lookup("metrics.reporter.a.b.port").is_none());
    }

    #[test]
    fn values_are_checked_against_their_kind() {
        let e = |k: &str, v: &str| parse(k, v).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e("taskmanager.numberOfTaskSlots", "0").contains("between 1 and 65536"));
        assert!(e("execution.checkpointing.interval", "5ms").contains("too short"));
        assert!(e("state.backend.type", "rocksdb").contains("'disk' is its embedded on-disk backend"));
        assert!(e("execution.checkpointing.mode", "twice").contains("not one of EXACTLY_ONCE, AT_LEAST_ONCE"));
        assert!(e("high-availability.etcd.path.root", "weir").contains("absolute path"));
        assert!(e("rest.address", " ").contains("non-empty"));
        let ok = |k: &str, v: &str| parse(k, v).ok().map(|(_, v)| v);
        assert_eq!(ok("execution.checkpointing.mode", "at-least-once"), Some(Value::Text("AT_LEAST_ONCE".into())));
        assert_eq!(ok("restart-strategy.type", "fixeddelay"), Some(Value::Text("fixed-delay".into())));
        assert_eq!(ok("state.checkpoints.dir", "/c"), Some(Value::Text("/c".into())), "Flink 1.x's key");
        assert_eq!(ok("high-availability.type", "ZOOKEEPER"), Some(Value::Text("zookeeper".into())));
    }
}
