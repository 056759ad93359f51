//! Reading an `hpb.toml` into a layer: every section and key must be one hpb knows
//! (an unknown key is an error naming it), backends are `[backends.<id>]` tables.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use figment::value::{Num, Tag, Value};
use toml::de::{DeTable, DeValue};

use super::layer::{LayerBuilder, LayerKind};
use super::schema::{self, BACKEND_KEYS, BACKENDS};

fn convert(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(Tag::Default, s.clone()),
        toml::Value::Integer(i) => match u64::try_from(*i) {
            Ok(u) => Value::Num(Tag::Default, Num::U64(u)),
            Err(_) => Value::Num(Tag::Default, Num::I64(*i)),
        },
        toml::Value::Float(f) => Value::Num(Tag::Default, Num::F64(*f)),
        toml::Value::Boolean(b) => Value::Bool(Tag::Default, *b),
        toml::Value::Datetime(d) => Value::String(Tag::Default, d.to_string()),
        toml::Value::Array(a) => Value::Array(Tag::Default, a.iter().map(convert).collect()),
        toml::Value::Table(t) => Value::Dict(
            Tag::Default,
            t.iter().map(|(k, v)| (k.clone(), convert(v))).collect(),
        ),
    }
}

/// The 1-based line of every key (`[section, key]`, `[backends, id, key]`), so messages
/// can point at it like they do for server.conf.
fn key_lines(text: &str) -> HashMap<Vec<String>, usize> {
    fn walk(
        table: &DeTable<'_>,
        path: &mut Vec<String>,
        text: &str,
        out: &mut HashMap<Vec<String>, usize>,
    ) {
        for (key, value) in table {
            path.push(key.get_ref().to_string());
            let start = key.span().start.min(text.len());
            let line = text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            out.insert(path.clone(), line);
            if path.len() < 3
                && let DeValue::Table(inner) = value.get_ref()
            {
                walk(inner, path, text, out);
            }
            path.pop();
        }
    }
    let mut out = HashMap::new();
    if let Ok(root) = DeTable::parse(text) {
        walk(root.get_ref(), &mut Vec::new(), text, &mut out);
    }
    out
}

/// Parse `text` (the file at `path`) into a layer.
pub fn layer(path: &str, text: &str) -> Result<LayerBuilder> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{path} is not valid TOML: {e}"))?;
    let lines = key_lines(text);
    let origin = |keys: &[&str], label: String| {
        let key: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
        match lines.get(&key) {
            Some(line) => format!("{path} line {line}"),
            None => format!("{path}: {label}"),
        }
    };
    let mut b = LayerBuilder::new(LayerKind::TomlFile, path.to_string());
    for (section, value) in &table {
        let toml::Value::Table(keys) = value else {
            bail!(
                "{path}: `{section}` must be a [{section}] table, not a top-level value; hpb.toml has the sections {}",
                schema::section_names()
            );
        };
        if section == BACKENDS {
            for (id, backend) in keys {
                let toml::Value::Table(bkeys) = backend else {
                    bail!(
                        "{path}: [backends] must only hold [backends.<id>] tables, but `{id}` is a value"
                    );
                };
                b.touch(&[BACKENDS, id], format!("{path}: [backends.{id}]"));
                for (key, v) in bkeys {
                    if schema::backend_kind(key).is_none() {
                        bail!(
                            "{path}: unknown key `{key}` in [backends.{id}]; a backend accepts: {}",
                            schema::key_names(BACKEND_KEYS)
                        );
                    }
                    b.set(
                        &[BACKENDS, id, key],
                        convert(v),
                        origin(&[BACKENDS, id, key], format!("[backends.{id}] {key}")),
                    );
                }
            }
            continue;
        }
        let Some(def) = schema::section(section) else {
            let hint = match schema::unimplemented_section_hint(section) {
                Some(h) => format!(" ({h})"),
                None => format!(
                    "; backends are [backends.<id>] tables in hpb.toml, and the sections are: {}",
                    schema::section_names()
                ),
            };
            bail!("{path}: unknown section [{section}]{hint}");
        };
        for (key, v) in keys {
            if schema::kind(section, key).is_none() {
                bail!(
                    "{path}: unknown key `{key}` in [{section}]; [{section}] accepts: {}",
                    schema::key_names(def.keys)
                );
            }
            b.set(
                &[section, key],
                convert(v),
                origin(&[section, key], format!("[{section}] {key}")),
            );
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_line() {
        let text = "# hpb.toml\n[http]\nlisten = \"127.0.0.1:0\"\n\n[backends.nc]\nurls = [\"https://a/\"]\nsecret = \"s\"\n";
        let lines = key_lines(text);
        let at = |p: &[&str]| {
            lines
                .get(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .copied()
        };
        assert_eq!(at(&["http", "listen"]), Some(3));
        assert_eq!(at(&["backends", "nc", "urls"]), Some(6));
        assert_eq!(at(&["backends", "nc", "secret"]), Some(7));
        assert!(layer("x.toml", text).is_ok());
        assert!(key_lines("not = [valid").is_empty());
    }
}
