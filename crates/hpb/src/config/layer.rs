//! One configuration layer as a figment provider: a tree of values plus, for every value,
//! a sentence saying where it came from (file and line, environment variable, `default`,
//! `generated`), which figment's metadata interpolater hands back after merging.

use std::collections::HashMap;
use std::sync::Arc;

use figment::value::{Dict, Map, Num, Tag, Value};
use figment::{Metadata, Profile, Provider};

/// Which kind of source a layer is. Its name is the figment metadata name, so a merged
/// value's tag leads back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Built-in defaults.
    Default,
    /// Defaults of the Nextcloud AIO talk container, used when `NC_DOMAIN` is set.
    AioDefault,
    /// Settings of the development sandbox (no configuration at all).
    DevSandbox,
    /// Random secrets made at start.
    Generated,
    /// An `hpb.toml`.
    TomlFile,
    /// An upstream `server.conf`.
    IniFile,
    /// `HPB_*` environment variables.
    Env,
    /// The AIO container's environment variable names.
    AioEnv,
    /// Command-line flags.
    CommandLine,
}

const KINDS: [LayerKind; 9] = [
    LayerKind::Default,
    LayerKind::AioDefault,
    LayerKind::DevSandbox,
    LayerKind::Generated,
    LayerKind::TomlFile,
    LayerKind::IniFile,
    LayerKind::Env,
    LayerKind::AioEnv,
    LayerKind::CommandLine,
];

impl LayerKind {
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Default => "default",
            LayerKind::AioDefault => "AIO default",
            LayerKind::DevSandbox => "dev sandbox",
            LayerKind::Generated => "generated",
            LayerKind::TomlFile => "hpb.toml",
            LayerKind::IniFile => "server.conf",
            LayerKind::Env => "environment",
            LayerKind::AioEnv => "AIO environment",
            LayerKind::CommandLine => "command line",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.name() == name)
    }
}

/// A finished layer, ready to merge into a figment.
pub struct Layer {
    meta: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.meta.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Collects the values of one layer and where each came from.
pub struct LayerBuilder {
    kind: LayerKind,
    fallback: String,
    dict: Dict,
    origins: HashMap<Vec<String>, String>,
}

impl LayerBuilder {
    /// `fallback` describes values whose key has no origin of its own.
    pub fn new(kind: LayerKind, fallback: impl Into<String>) -> Self {
        Self {
            kind,
            fallback: fallback.into(),
            dict: Dict::new(),
            origins: HashMap::new(),
        }
    }

    /// Set `path` (e.g. `["http", "listen"]` or `["backends", id, "urls"]`) to `value`.
    pub fn set(&mut self, path: &[&str], value: Value, origin: impl Into<String>) {
        insert(&mut self.dict, path, value);
        self.origins.insert(
            path.iter().map(|s| (*s).to_string()).collect(),
            origin.into(),
        );
    }

    /// Make sure the table at `path` exists (an empty `[backends.x]` still defines x).
    pub fn touch(&mut self, path: &[&str], origin: impl Into<String>) {
        let mut dict = &mut self.dict;
        for p in path {
            let entry = dict
                .entry((*p).to_string())
                .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::Dict(Tag::Default, Dict::new());
            }
            let Value::Dict(_, d) = entry else { return };
            dict = d;
        }
        self.origins.insert(
            path.iter().map(|s| (*s).to_string()).collect(),
            origin.into(),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }

    pub fn build(self) -> Layer {
        let origins = Arc::new(self.origins);
        let fallback = self.fallback;
        let meta =
            Metadata::named(self.kind.name()).interpolater(move |_: &Profile, keys: &[&str]| {
                let key: Vec<String> = keys.iter().map(|s| (*s).to_string()).collect();
                origins
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| fallback.clone())
            });
        Layer {
            meta,
            dict: self.dict,
        }
    }
}

fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_string())
                .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::Dict(Tag::Default, Dict::new());
            }
            if let Value::Dict(_, d) = entry {
                insert(d, rest, value);
            }
        }
    }
}

pub fn text(s: impl Into<String>) -> Value {
    Value::String(Tag::Default, s.into())
}

pub fn uint(n: u64) -> Value {
    Value::Num(Tag::Default, Num::U64(n))
}

pub fn boolean(b: bool) -> Value {
    Value::Bool(Tag::Default, b)
}

pub fn list<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(Tag::Default, items.into_iter().map(text).collect())
}
