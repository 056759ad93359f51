//! Reading an `hpb.toml` into a layer: every section and key must be one hpb knows
//! (an unknown key is an error naming it), backends are `[backends.<id>]` tables.

use anyhow::{Result, anyhow, bail};
use figment::value::{Num, Tag, Value};

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

/// Parse `text` (the file at `path`) into a layer.
pub fn layer(path: &str, text: &str) -> Result<LayerBuilder> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{path} is not valid TOML: {e}"))?;
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
                        format!("{path}: [backends.{id}] {key}"),
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
                format!("{path}: [{section}] {key}"),
            );
        }
    }
    Ok(b)
}
