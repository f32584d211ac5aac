//! What an option is: its [`Scope`], its [`Kind`] of value (with bounds), the typed [`Value`]
//! it parses into, and the [`OptionDef`] that declares it. The table of options is `options.rs`;
//! looking keys up in it is [`super::registry`].

use serde::{Deserialize, Serialize};

use super::{bytes, duration_ms};
use crate::{Error, Result};

/// Which processes read a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Read by the cluster's processes and clients (JobManager, TaskManagers, the CLI's
    /// targets): addresses, slots, providers, heartbeats, restart strategies, high availability.
    Cluster,
    /// Read by a job: every process accepts it, a cluster process as the default for the jobs it
    /// runs, and a job's own value travels with the job (as a [`super::JobConfig`]).
    Job,
}

impl Scope {
    /// The scope's name in the reference.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::Job => "job",
        }
    }
}

/// How a key relates to Flink's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flink {
    /// Flink has the same key with the same meaning: a Flink configuration file's line works.
    Same,
    /// Flink's closest key is another one (named here); weir's key differs because the
    /// mechanism differs.
    Like(&'static str),
    /// weir's own: Flink has no such setting.
    None,
}

/// One allowed value of a [`Kind::Choice`], with the other spellings that mean it.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    /// The canonical value, as the typed configuration receives it.
    pub value: &'static str,
    /// Other accepted spellings (compared ignoring case, `-` and `_`).
    pub aliases: &'static [&'static str],
}

/// A key's type, with the bounds its values must keep.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A whole number within `min..=max`.
    Int {
        /// The smallest value.
        min: u64,
        /// The largest value.
        max: u64,
    },
    /// A number of at least `min`.
    Float {
        /// The smallest value.
        min: f64,
    },
    /// A duration in Flink's notation (`500`, `500ms`, `10 s`, `2min`, `1h`, `1d`), kept in
    /// milliseconds, within `min_ms..=max_ms`.
    Duration {
        /// The shortest.
        min_ms: u64,
        /// The longest.
        max_ms: u64,
    },
    /// A size in Flink's notation (`1024`, `64kb`, `512 mb`, `1g`), kept in bytes.
    Size,
    /// Non-empty single-line text (an address, a directory, a URL, a name).
    Text,
    /// An absolute path like `/weir` (a root in a coordination service), without a trailing `/`.
    Root,
    /// One of a fixed set of values.
    Choice(&'static [Choice]),
}

/// A value parsed and checked against its key's [`Kind`]: what the typed configurations take and
/// what a job's configuration carries between processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A [`Kind::Bool`].
    Bool(bool),
    /// A [`Kind::Int`].
    Int(u64),
    /// A [`Kind::Float`].
    Float(f64),
    /// A [`Kind::Duration`], in milliseconds.
    Millis(u64),
    /// A [`Kind::Size`], in bytes.
    Bytes(u64),
    /// A [`Kind::Text`], [`Kind::Root`] or (canonical) [`Kind::Choice`].
    Text(String),
}

impl Value {
    fn wrong(&self, key: &str, want: &str) -> Error {
        Error::internal(format!("the value of {key} is {self:?}, not {want}: the registry and its reader disagree"))
    }

    /// The flag of a [`Value::Bool`].
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self {
            Value::Bool(b) => Ok(*b),
            other => Err(other.wrong(key, "a flag")),
        }
    }

    /// The number of a [`Value::Int`], [`Value::Millis`] or [`Value::Bytes`].
    pub fn number(&self, key: &str) -> Result<u64> {
        match self {
            Value::Int(n) | Value::Millis(n) | Value::Bytes(n) => Ok(*n),
            other => Err(other.wrong(key, "a number")),
        }
    }

    /// A number that fits `T` (the registry's bounds make it fit).
    pub fn int<T: TryFrom<u64>>(&self, key: &str) -> Result<T> {
        let n = self.number(key)?;
        T::try_from(n)
            .map_err(|_| Error::internal(format!("{key}: {n} is out of range; the registry's bounds are wrong")))
    }

    /// The number of a [`Value::Float`].
    pub fn float(&self, key: &str) -> Result<f64> {
        match self {
            Value::Float(f) => Ok(*f),
            Value::Int(n) => Ok(*n as f64),
            other => Err(other.wrong(key, "a number")),
        }
    }

    /// The text of a [`Value::Text`].
    pub fn text(&self, key: &str) -> Result<&str> {
        match self {
            Value::Text(t) => Ok(t),
            other => Err(other.wrong(key, "text")),
        }
    }

    /// The value as a configuration file or `-D` would write it; parsing it gives it back.
    pub fn render(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Millis(ms) => format!("{ms}ms"),
            Value::Bytes(b) => format!("{b}b"),
            Value::Text(t) => t.clone(),
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct OptionDef {
    /// The key, as written in `config.yaml` or after `-D`.
    pub key: &'static str,
    /// Its type and bounds.
    pub kind: Kind,
    /// The default, as the reference shows it.
    pub default: &'static str,
    /// Which processes read it.
    pub scope: Scope,
    /// How it relates to Flink's keys.
    pub flink: Flink,
    /// What it does.
    pub doc: &'static str,
    /// Older names (Flink's earlier keys) that mean the same key.
    pub aliases: &'static [&'static str],
    /// A valid value other than the default, for the test that walks the registry.
    pub example: &'static str,
    /// Values that are refused with a message of their own (a Flink value weir does not have).
    pub refused: &'static [(&'static str, &'static str)],
}

/// Squashes case, `-` and `_` for comparing choices.
fn squash(s: &str) -> String {
    s.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

impl OptionDef {
    /// Parses `text` as this key's value, with an error that names the key and says what to
    /// write instead.
    pub fn parse(&self, text: &str) -> Result<Value> {
        let key = self.key;
        let v = text.trim();
        for (bad, why) in self.refused {
            if squash(v) == squash(bad) {
                return Err(Error::Config(format!("{key}: '{v}' is not available: {why}")));
            }
        }
        match self.kind {
            Kind::Bool => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(Error::Config(format!("{key}: '{v}' is not true or false"))),
            },
            Kind::Int { min, max } => {
                let n: u64 = v.parse().map_err(|_| {
                    Error::Config(format!("{key}: '{v}' is not a whole number (between {min} and {max})"))
                })?;
                if n < min || n > max {
                    return Err(Error::Config(format!("{key} must be between {min} and {max}, not {n}")));
                }
                Ok(Value::Int(n))
            }
            Kind::Float { min } => {
                let f: f64 = v.parse().map_err(|_| Error::Config(format!("{key}: '{v}' is not a number")))?;
                if !(f.is_finite() && f >= min) {
                    return Err(Error::Config(format!("{key} must be a number of at least {min}, not {v}")));
                }
                Ok(Value::Float(f))
            }
            Kind::Duration { min_ms, max_ms } => {
                let ms = duration_ms(key, v)?;
                if ms < min_ms {
                    return Err(Error::Config(format!("{key}: '{v}' is too short; the least is {min_ms} ms")));
                }
                if ms > max_ms {
                    return Err(Error::Config(format!("{key}: '{v}' is too long; the most is {max_ms} ms")));
                }
                Ok(Value::Millis(ms))
            }
            Kind::Size => bytes(key, v).map(Value::Bytes),
            Kind::Text => {
                if v.is_empty() || v.contains(['\n', '\0']) {
                    return Err(Error::Config(format!("{key} must be a non-empty single line of text")));
                }
                Ok(Value::Text(v.to_string()))
            }
            Kind::Root => {
                let r = v.trim_end_matches('/');
                if !r.starts_with('/') || r.len() < 2 {
                    return Err(Error::Config(format!("{key}: '{v}' is not an absolute path like /weir")));
                }
                Ok(Value::Text(r.to_string()))
            }
            Kind::Choice(choices) => {
                let s = squash(v);
                choices
                    .iter()
                    .find(|c| squash(c.value) == s || c.aliases.iter().any(|a| squash(a) == s))
                    .map(|c| Value::Text(c.value.to_string()))
                    .ok_or_else(|| {
                        let names: Vec<&str> = choices.iter().map(|c| c.value).collect();
                        Error::Config(format!("{key}: '{v}' is not one of {} ({})", names.join(", "), self.doc))
                    })
            }
        }
    }

    /// The type as the reference shows it.
    pub fn type_name(&self) -> String {
        match self.kind {
            Kind::Bool => "boolean".into(),
            Kind::Int { min, max } => format!("integer, {min} to {max}"),
            Kind::Float { min } => format!("number, at least {min}"),
            Kind::Duration { min_ms, .. } if min_ms > 0 => format!("duration, at least {min_ms} ms"),
            Kind::Duration { .. } => "duration".into(),
            Kind::Size => "size".into(),
            Kind::Text => "text".into(),
            Kind::Root => "absolute path".into(),
            Kind::Choice(choices) => {
                let names: Vec<&str> = choices.iter().map(|c| c.value).collect();
                format!("one of {}", names.join(", "))
            }
        }
    }
}
