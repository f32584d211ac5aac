//! What the key files declare with: shorthands for an option of each scope, and the kinds of
//! value most keys share.

use super::super::def::{Choice, Flink, Kind, OptionDef, Scope};

pub(super) const DAY_MS: u64 = 86_400_000;
pub(super) const FOREVER_MS: u64 = 365 * DAY_MS;
pub(super) const PORT: Kind = Kind::Int { min: 0, max: 65_535 };
pub(super) const DURATION: Kind = Kind::Duration { min_ms: 0, max_ms: FOREVER_MS };
pub(super) const POSITIVE_DURATION: Kind = Kind::Duration { min_ms: 1, max_ms: FOREVER_MS };
pub(super) const COUNT: Kind = Kind::Int { min: 1, max: u32::MAX as u64 };

pub(super) const fn def(
    scope: Scope,
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    OptionDef { key, kind, default, scope, flink, doc, aliases: &[], example, refused: &[] }
}

pub(super) const fn job(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    def(Scope::Job, key, kind, default, flink, example, doc)
}

pub(super) const fn cluster(
    key: &'static str,
    kind: Kind,
    default: &'static str,
    flink: Flink,
    example: &'static str,
    doc: &'static str,
) -> OptionDef {
    def(Scope::Cluster, key, kind, default, flink, example, doc)
}

impl OptionDef {
    pub(super) const fn aka(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    pub(super) const fn refusing(mut self, refused: &'static [(&'static str, &'static str)]) -> Self {
        self.refused = refused;
        self
    }
}

pub(super) const fn choice(value: &'static str, aliases: &'static [&'static str]) -> Choice {
    Choice { value, aliases }
}
