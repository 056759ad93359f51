//! `hpb config show`: the merged configuration as `section.key = value    # source`
//! lines in a stable order, with secrets masked, unset keys noted, and the warnings.

use std::fmt::Write as _;

use figment::value::Value;

use super::Loaded;
use super::merged::Item;
use super::schema::{BACKEND_KEYS, BACKENDS, Kind, SECTIONS};

/// Column where the `# source` comment starts (longer lines just get two spaces).
const COMMENT_COLUMN: usize = 56;

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn render(item: &Item, kind: Kind) -> String {
    if item.secret {
        return match item.text() {
            Ok(s) if s.is_empty() => "\"\"".to_string(),
            Ok(s) => format!("\"****\" ({} chars)", s.chars().count()),
            Err(_) => "\"****\"".to_string(),
        };
    }
    match kind {
        Kind::List => match item.list() {
            Ok(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|s| quote(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(_) => item.shown(),
        },
        Kind::Bool => item
            .boolean()
            .map_or_else(|_| item.shown(), |b| b.to_string()),
        Kind::UInt => item.uint().map_or_else(|_| item.shown(), |n| n.to_string()),
        Kind::Text | Kind::Secret | Kind::Listen => match &item.value {
            Value::String(_, s) => quote(s),
            _ => item.shown(),
        },
    }
}

fn line(out: &mut String, key: &str, value: &str, source: &str) {
    let left = format!("{key} = {value}");
    let pad = COMMENT_COLUMN.saturating_sub(left.chars().count()).max(2);
    let _ = writeln!(out, "{left}{:pad$}# {source}", "");
}

/// Render the merged configuration of `loaded`.
pub fn show(loaded: &Loaded) -> String {
    let m = &loaded.merged;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# hpb configuration: merged value    # where it came from (later layers win:"
    );
    let _ = writeln!(
        out,
        "# default < hpb.toml / server.conf < HPB_* env < AIO env < command line; generated fills gaps)"
    );
    for sec in SECTIONS {
        for key in sec.keys {
            let name = format!("{}.{}", sec.name, key.name);
            match m.get(sec.name, key.name) {
                Some(item) => line(&mut out, &name, &render(item, key.kind), &item.source),
                None => {
                    let _ = writeln!(out, "# {name} is not set");
                }
            }
        }
    }
    for (id, keys) in &m.backends {
        for key in BACKEND_KEYS {
            if let Some(item) = keys.get(key.name) {
                line(
                    &mut out,
                    &format!("{BACKENDS}.{id}.{}", key.name),
                    &render(item, key.kind),
                    &item.source,
                );
            }
        }
    }
    let _ = writeln!(out, "# effective listen address: {}", loaded.listen);
    let ids: Vec<&str> = loaded
        .signaling
        .backends
        .iter()
        .map(|b| b.id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "# effective backends: {}{}",
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        },
        match &loaded.signaling.common {
            Some(c) if c.allow_all => " + any host with the common secret (allowall)",
            Some(_) => " + the hosts in [backend] allowed with the common secret",
            None => "",
        }
    );
    for w in &loaded.warnings {
        let _ = writeln!(out, "# warning: {w}");
    }
    out
}
