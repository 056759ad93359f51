//! Environment and command-line layers: `HPB_<SECTION>_<KEY>` and
//! `HPB_BACKENDS__<ID>__<KEY>` variables, the Nextcloud AIO talk container's names
//! (`NC_DOMAIN`, `SIGNALING_SECRET`, …), and `section.key` overrides from flags.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use figment::Figment;
use figment::value::Value;

use super::layer::{LayerBuilder, LayerKind, text, uint};
use super::merged::split_list;
use super::schema::{self, BACKENDS};

/// The id of the backend made from `NC_DOMAIN`, as in the AIO container.
pub const AIO_BACKEND_ID: &str = "backend-1";

/// AIO variables and the key each sets (`NC_DOMAIN`/`SIGNALING_SECRET` are handled apart).
const AIO_VARS: &[(&str, &str, &str)] = &[
    ("INTERNAL_SECRET", "clients", "internalsecret"),
    ("SKIP_CERT_VERIFY", "backend", "skipverify"),
    ("TALK_MAX_STREAM_BITRATE", "mcu", "maxstreambitrate"),
    ("TALK_MAX_SCREEN_BITRATE", "mcu", "maxscreenbitrate"),
    ("AIO_LOG_LEVEL", "log", "level"),
    ("TURN_SECRET", "turn", "secret"),
    ("TALK_PORT", "turn", "port"),
    ("TURN_DOMAIN", "turn", "domain"),
    ("TALK_HOST", "turn", "host"),
];

fn non_empty<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Whether the AIO variables define a backend (`NC_DOMAIN` or `SIGNALING_SECRET`).
pub fn aio_configures_backend(env: &BTreeMap<String, String>) -> bool {
    non_empty(env, "NC_DOMAIN").is_some() || non_empty(env, "SIGNALING_SECRET").is_some()
}

/// Whether `HPB_*` variables touch `[backend]` or `[backends.*]`.
pub fn hpb_configures_backend(env: &BTreeMap<String, String>) -> bool {
    env.keys()
        .any(|k| k.starts_with("HPB_BACKEND_") || k.starts_with("HPB_BACKENDS__"))
}

/// The backend ids listed in `[backend] backends` by the layers merged so far, if any.
fn listed_backends(fig: &Figment) -> Option<Vec<String>> {
    match fig.find_value("backend.backends").ok()? {
        Value::String(_, s) => Some(split_list(&s)),
        Value::Array(_, items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::String(_, s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// When lower layers list backends explicitly, a backend newly defined by an
/// environment layer (with urls) is added to that list so it is used.
fn append_new_backends(b: &mut LayerBuilder, fig: &Figment, new: &[(String, String)]) {
    let Some(mut ids) = listed_backends(fig) else {
        return;
    };
    let mut added = Vec::new();
    for (id, var) in new {
        if !ids.iter().any(|x| x == id) {
            ids.push(id.clone());
            added.push(format!("{id} from {var}"));
        }
    }
    if !added.is_empty() {
        b.set(
            &["backend", "backends"],
            text(ids.join(", ")),
            format!("lower layers plus {}", added.join(", ")),
        );
    }
}

/// The `HPB_*` layer. `fig` holds the layers below it.
pub fn hpb_layer(
    env: &BTreeMap<String, String>,
    fig: &Figment,
    warnings: &mut Vec<String>,
) -> LayerBuilder {
    let mut b = LayerBuilder::new(LayerKind::Env, "environment");
    let mut new_backends = Vec::new();
    let mut sets_list = false;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("HPB_") else {
            continue;
        };
        if let Some(backend) = rest.strip_prefix("BACKENDS__") {
            match backend.rsplit_once("__") {
                Some((id, key)) if !id.is_empty() && schema::backend_kind(&key.to_ascii_lowercase()).is_some() => {
                    let id = id.to_ascii_lowercase();
                    let key = key.to_ascii_lowercase();
                    b.set(&[BACKENDS, &id, &key], text(value.clone()), format!("env {name}"));
                    if key == "urls" || key == "url" {
                        new_backends.push((id, name.clone()));
                    }
                }
                _ => warnings.push(format!(
                    "ignoring environment variable {name}: backend settings are named HPB_BACKENDS__<ID>__<KEY> with KEY one of {}",
                    schema::key_names(schema::BACKEND_KEYS).to_ascii_uppercase()
                )),
            }
            continue;
        }
        // A name without a key part (HPB_BIN, …) belongs to some other tool.
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        match schema::section(&section) {
            Some(def) if def.keys.iter().any(|k| k.name == key) => {
                if section == "backend" && key == "backends" {
                    sets_list = true;
                }
                b.set(&[&section, &key], text(value.clone()), format!("env {name}"));
            }
            Some(def) => warnings.push(format!(
                "ignoring environment variable {name}: [{section}] has no key `{key}`; it accepts: {}",
                schema::key_names(def.keys)
            )),
            None => warnings.push(format!(
                "ignoring environment variable {name}: there is no [{section}] section; the sections are: {}",
                schema::section_names()
            )),
        }
    }
    if !sets_list {
        append_new_backends(&mut b, fig, &new_backends);
    }
    b
}

/// Defaults of the AIO talk container that differ from hpb's (it listens on all
/// interfaces on 8081 behind the AIO reverse proxy and allows 32 connections per host).
pub fn aio_defaults_layer(env: &BTreeMap<String, String>) -> Option<LayerBuilder> {
    non_empty(env, "NC_DOMAIN")?;
    let origin = "AIO default (NC_DOMAIN is set)";
    let mut b = LayerBuilder::new(LayerKind::AioDefault, origin);
    b.set(&["http", "listen"], text("[::]:8081"), origin);
    b.set(&["backend", "connectionsperhost"], uint(32), origin);
    Some(b)
}

/// The AIO names layer. `fig` holds the layers below it.
pub fn aio_layer(env: &BTreeMap<String, String>, fig: &Figment) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new(LayerKind::AioEnv, "AIO environment");
    match (
        non_empty(env, "NC_DOMAIN"),
        non_empty(env, "SIGNALING_SECRET"),
    ) {
        (Some(domain), secret) => {
            let url = if domain.contains("://") {
                domain.to_string()
            } else {
                format!("https://{domain}")
            };
            b.set(
                &[BACKENDS, AIO_BACKEND_ID, "urls"],
                text(url),
                "env NC_DOMAIN (AIO)",
            );
            if let Some(secret) = secret {
                b.set(
                    &[BACKENDS, AIO_BACKEND_ID, "secret"],
                    text(secret),
                    "env SIGNALING_SECRET (AIO)",
                );
            }
            append_new_backends(
                &mut b,
                fig,
                &[(AIO_BACKEND_ID.to_string(), "NC_DOMAIN".to_string())],
            );
        }
        (None, Some(_)) => bail!(
            "environment: SIGNALING_SECRET is set but NC_DOMAIN is not; set NC_DOMAIN to the domain of your Nextcloud (as in the AIO talk container), or configure backends in a config file or with HPB_BACKENDS__<ID>__URLS"
        ),
        (None, None) => {}
    }
    for (var, section, key) in AIO_VARS {
        if let Some(v) = non_empty(env, var) {
            b.set(&[section, key], text(v), format!("env {var} (AIO)"));
        }
    }
    Ok(b)
}

/// The flag a `section.key` override comes from, for `config show`.
fn flag_name(key: &str) -> String {
    match key {
        "http.listen" => "--listen".to_string(),
        "log.level" => "--log-level".to_string(),
        other => format!("command line ({other})"),
    }
}

/// The command-line layer from `section.key = value` overrides (`backends.<id>.<key>`
/// for a backend).
pub fn overrides_layer(overrides: &[(String, String)]) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new(LayerKind::CommandLine, "command line");
    for (key, value) in overrides {
        if let Some(rest) = key.strip_prefix("backends.") {
            match rest.rsplit_once('.') {
                Some((id, k)) if !id.is_empty() && schema::backend_kind(k).is_some() => {
                    b.set(&[BACKENDS, id, k], text(value.clone()), flag_name(key));
                    continue;
                }
                _ => bail!(
                    "command line: override `{key}` is not backends.<id>.<key> with key one of {}",
                    schema::key_names(schema::BACKEND_KEYS)
                ),
            }
        }
        match key.split_once('.') {
            Some((section, k)) if schema::kind(section, k).is_some() => {
                b.set(&[section, k], text(value.clone()), flag_name(key));
            }
            _ => bail!(
                "command line: override `{key}` is not a known section.key; the sections are: {}",
                schema::section_names()
            ),
        }
    }
    Ok(b)
}
