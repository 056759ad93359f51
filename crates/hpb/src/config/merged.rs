//! The merged configuration read back out of figment: every known value with the
//! sentence saying where it came from, and typed readers whose errors name the key, the
//! offending value and its source.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use figment::value::{Dict, Value};
use figment::{Figment, Profile};

use super::layer::LayerKind;
use super::schema::{self, BACKEND_KEYS, BACKENDS, SECTIONS};

/// One merged value.
#[derive(Debug, Clone)]
pub struct Item {
    pub value: Value,
    /// Where it came from: `default`, `generated`, `env HPB_HTTP_LISTEN`,
    /// `/etc/signaling/server.conf line 12`, …
    pub source: String,
    /// The kind of layer that supplied it (`None` only if figment lost track).
    pub layer: Option<LayerKind>,
    /// How to name the key in a message: `[sessions] blockkey`, `[backends.b] urls`, or
    /// `[b] urls` when it came from a server.conf.
    pub label: String,
    pub secret: bool,
}

/// All known values of the merged configuration, in schema order.
#[derive(Debug, Default)]
pub struct Merged {
    pub sections: BTreeMap<&'static str, BTreeMap<&'static str, Item>>,
    /// Backend id → its keys. A backend with an empty table has an empty map.
    pub backends: BTreeMap<String, BTreeMap<&'static str, Item>>,
    /// Backend id → where its table was defined (for messages about the whole backend).
    pub backend_sources: BTreeMap<String, (String, Option<LayerKind>)>,
}

fn describe(fig: &Figment, value: &Value, path: &[&str]) -> (String, Option<LayerKind>) {
    match fig.get_metadata(value.tag()) {
        Some(meta) => (
            meta.interpolate(&Profile::Default, path),
            LayerKind::from_name(&meta.name),
        ),
        None => ("unknown source".to_string(), None),
    }
}

fn dict_at(fig: &Figment, key: &str) -> Option<Dict> {
    match fig.find_value(key) {
        Ok(Value::Dict(_, d)) => Some(d),
        _ => None,
    }
}

impl Merged {
    pub fn from_figment(fig: &Figment) -> Self {
        let mut m = Merged::default();
        for sec in SECTIONS {
            let Some(dict) = dict_at(fig, sec.name) else {
                continue;
            };
            let mut items = BTreeMap::new();
            for key in sec.keys {
                if let Some(value) = dict.get(key.name) {
                    let (source, layer) = describe(fig, value, &[sec.name, key.name]);
                    items.insert(
                        key.name,
                        Item {
                            value: value.clone(),
                            source,
                            layer,
                            label: format!("[{}] {}", sec.name, key.name),
                            secret: schema::is_secret(key.name),
                        },
                    );
                }
            }
            m.sections.insert(sec.name, items);
        }
        if let Some(backends) = dict_at(fig, BACKENDS) {
            for (id, table) in backends {
                let table_src = describe(fig, &table, &[BACKENDS, &id]);
                let mut items = BTreeMap::new();
                if let Value::Dict(_, dict) = &table {
                    for key in BACKEND_KEYS {
                        if let Some(value) = dict.get(key.name) {
                            let (source, layer) = describe(fig, value, &[BACKENDS, &id, key.name]);
                            let label = if layer == Some(LayerKind::IniFile) {
                                format!("[{id}] {}", key.name)
                            } else {
                                format!("[backends.{id}] {}", key.name)
                            };
                            items.insert(
                                key.name,
                                Item {
                                    value: value.clone(),
                                    source,
                                    layer,
                                    label,
                                    secret: schema::is_secret(key.name),
                                },
                            );
                        }
                    }
                }
                m.backend_sources.insert(id.clone(), table_src);
                m.backends.insert(id, items);
            }
        }
        m
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&Item> {
        self.sections.get(section)?.get(key)
    }
}

const TRUE: &[&str] = &["1", "t", "true", "y", "yes", "on"];
const FALSE: &[&str] = &["0", "f", "false", "n", "no", "off"];

impl Item {
    /// The value as written, for messages; secrets are described, not shown.
    pub fn shown(&self) -> String {
        if self.secret {
            return match &self.value {
                Value::String(_, s) => format!("a secret of {} characters", s.len()),
                _ => "a secret".to_string(),
            };
        }
        match &self.value {
            Value::String(_, s) => format!("{s:?}"),
            Value::Bool(_, b) => b.to_string(),
            Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
                (Some(u), _, _) => u.to_string(),
                (_, Some(i), _) => i.to_string(),
                (_, _, Some(f)) => f.to_string(),
                _ => "a number".to_string(),
            },
            Value::Char(_, c) => format!("{c:?}"),
            Value::Array(..) => "a list".to_string(),
            Value::Dict(..) => "a table".to_string(),
            Value::Empty(..) => "empty".to_string(),
        }
    }

    fn wrong(&self, expected: &str) -> anyhow::Error {
        anyhow!(
            "{} must be {expected}, it is {} (from {})",
            self.label,
            self.shown(),
            self.source
        )
    }

    /// A message about this value, ending with its source.
    pub fn error(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{} {msg} (from {})", self.label, self.source)
    }

    /// A string (numbers and booleans from TOML are accepted as their text).
    pub fn text(&self) -> Result<String> {
        match &self.value {
            Value::String(_, s) => Ok(s.clone()),
            Value::Char(_, c) => Ok(c.to_string()),
            Value::Bool(_, b) => Ok(b.to_string()),
            Value::Num(_, n) => match (n.to_u128(), n.to_i128()) {
                (Some(u), _) => Ok(u.to_string()),
                (_, Some(i)) => Ok(i.to_string()),
                _ => Err(self.wrong("a string")),
            },
            _ => Err(self.wrong("a string")),
        }
    }

    pub fn boolean(&self) -> Result<bool> {
        match &self.value {
            Value::Bool(_, b) => Ok(*b),
            Value::String(_, s) => {
                let s = s.trim().to_ascii_lowercase();
                if TRUE.contains(&s.as_str()) {
                    Ok(true)
                } else if FALSE.contains(&s.as_str()) {
                    Ok(false)
                } else {
                    Err(self.wrong("true or false"))
                }
            }
            _ => Err(self.wrong("true or false")),
        }
    }

    pub fn uint(&self) -> Result<u64> {
        let parsed = match &self.value {
            Value::Num(_, n) => n.to_u128().and_then(|u| u64::try_from(u).ok()),
            Value::String(_, s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| self.wrong("a whole number ≥ 0"))
    }

    /// A list: a TOML array of strings, or a string split at commas and whitespace.
    pub fn list(&self) -> Result<Vec<String>> {
        match &self.value {
            Value::Array(_, items) => {
                let mut out = Vec::new();
                for v in items {
                    match v {
                        Value::String(_, s) => out.extend(split_list(s)),
                        Value::Num(_, n) if n.to_u128().is_some() => {
                            out.extend(n.to_u128().map(|u| u.to_string()));
                        }
                        _ => return Err(self.wrong("a list of strings")),
                    }
                }
                Ok(out)
            }
            Value::String(_, s) => Ok(split_list(s)),
            _ => Err(self.wrong("a list of strings or a comma-separated string")),
        }
    }
}

/// Split a comma- or whitespace-separated list, dropping empty entries.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
