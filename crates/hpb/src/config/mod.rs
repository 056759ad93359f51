//! hpb's configuration: loads the layers (built-in defaults ← hpb.toml ← upstream
//! server.conf ← `HPB_*` env ← AIO env ← command line) with figment, validates them into
//! a `SignalingConfig` plus listen address and log level, and renders `config show`.

mod defaults;
mod env;
mod https;
pub mod ini;
mod ini_file;
mod layer;
mod merged;
mod resolve;
mod schema;
mod sfu;
mod show;
mod toml_file;
mod turn;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use figment::Figment;
use hpb_signaling::SignalingConfig;

use self::layer::LayerBuilder;
use self::merged::Merged;

pub use self::https::{AcmeSettings, CertSource, LETS_ENCRYPT};
pub use self::show::show;

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`: `*.toml` is an hpb.toml, anything else an upstream server.conf.
    pub config_file: Option<PathBuf>,
    /// The process environment (`HPB_*`, the AIO names, and `$(VAR)` in server.conf).
    pub env: BTreeMap<String, String>,
    /// `section.key` → value from command-line flags (`backends.<id>.<key>` for a backend).
    pub overrides: Vec<(String, String)>,
}

/// Secrets made up for the development sandbox, to print at start.
#[derive(Debug, Clone)]
pub struct GeneratedSecrets {
    /// The common backend secret to paste into Talk's admin settings.
    pub signaling_secret: String,
    /// `[clients] internalsecret`, for a recording server or SIP bridge.
    pub internal_secret: Option<String>,
}

/// The loaded, validated configuration.
#[derive(Debug)]
pub struct Loaded {
    /// `[http] listen`.
    pub listen: SocketAddr,
    /// `[http] shutdown_timeout`: on SIGTERM, how long to wait for clients to go.
    pub shutdown_timeout: std::time::Duration,
    pub signaling: SignalingConfig,
    /// `[log] level`: a tracing filter.
    pub log_level: String,
    /// The built-in TURN server, if a TURN secret is configured.
    pub turn: Option<turn::TurnSettings>,
    /// The built-in SFU, if `[sfu] listen` is set.
    pub sfu: Option<sfu::SfuSettings>,
    /// The public TLS port, if `[https] listen` is set.
    pub https: Option<https::HttpsSettings>,
    /// Set in the development sandbox (no configuration at all).
    pub generated_secrets: Option<GeneratedSecrets>,
    /// Things to log at warn: ignored upstream settings, weak keys, deprecated keys, …
    pub warnings: Vec<String>,
    merged: Merged,
}

/// Load and validate the configuration from `sources`.
pub fn load(sources: &Sources) -> Result<Loaded> {
    let file = match &sources.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "could not read the configuration file {} (check the path given to --config)",
                    path.display()
                )
            })?;
            Some((path.clone(), text))
        }
        None => None,
    };
    load_from(
        file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
        &sources.env,
        &sources.overrides,
    )
}

fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// `load` with the file's contents already read (`(path, text)`).
fn load_from(
    file: Option<(&Path, &str)>,
    env: &BTreeMap<String, String>,
    overrides: &[(String, String)],
) -> Result<Loaded> {
    let mut warnings = Vec::new();
    let aio = env::aio_configures_backend(env);
    let cli_backend = overrides
        .iter()
        .any(|(k, _)| k.starts_with("backend.") || k.starts_with("backends."));
    let dev = file.is_none() && !aio && !env::hpb_configures_backend(env) && !cli_backend;

    let merge = |fig: Figment, b: LayerBuilder| {
        if b.is_empty() {
            fig
        } else {
            fig.merge(b.build())
        }
    };
    let mut fig = merge(Figment::new(), defaults::defaults_layer());
    if let Some(b) = env::aio_defaults_layer(env) {
        fig = merge(fig, b);
    }
    if dev {
        fig = merge(fig, defaults::dev_layer());
    }
    if dev || aio {
        fig = merge(fig, defaults::generated_layer(dev));
    }
    if let Some((path, text)) = file {
        let name = path.display().to_string();
        let b = if is_toml(path) {
            toml_file::layer(&name, text)?
        } else {
            let (b, w) = ini_file::layer(&name, text, env)?;
            warnings.extend(w);
            b
        };
        fig = merge(fig, b);
    }
    let b = env::hpb_layer(env, &fig, &mut warnings);
    fig = merge(fig, b);
    let b = env::aio_layer(env, &fig)?;
    fig = merge(fig, b);
    fig = merge(fig, env::overrides_layer(overrides)?);

    let merged = Merged::from_figment(&fig);
    let resolved = resolve::resolve(&merged, dev, &mut warnings)?;
    let generated_secrets = if dev {
        resolved
            .signaling
            .common
            .as_ref()
            .map(|c| GeneratedSecrets {
                signaling_secret: String::from_utf8_lossy(&c.secret).into_owned(),
                internal_secret: resolved
                    .signaling
                    .internal_secret
                    .as_ref()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
            })
    } else {
        None
    };
    Ok(Loaded {
        listen: resolved.listen,
        shutdown_timeout: resolved.shutdown_timeout,
        signaling: resolved.signaling,
        log_level: resolved.log_level,
        turn: resolved.turn,
        sfu: resolved.sfu,
        https: resolved.https,
        generated_secrets,
        warnings,
        merged,
    })
}

/// Entry points for the fuzz targets in `fuzz/` (through `hpb::fuzzing`): the parsers of
/// the two file formats, and the whole load from a file's text with no environment.
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::BTreeMap;
    use std::path::Path;

    pub use super::ini::{Ini, IniError, parse_ini};

    /// Every setting hpb reads as `(section, key)`; a backend's keys under `BACKENDS`.
    pub fn settings() -> Vec<(&'static str, &'static str)> {
        let backend = super::schema::BACKEND_KEYS
            .iter()
            .map(|k| (super::schema::BACKENDS, k.name));
        super::schema::SECTIONS
            .iter()
            .flat_map(|s| s.keys.iter().map(move |k| (s.name, k.name)))
            .chain(backend)
            .collect()
    }

    /// Load `text` as the configuration file `name` (`*.toml` is an hpb.toml, anything
    /// else a server.conf), without environment or command line; the error as text.
    pub fn load_file_text(name: &str, text: &str) -> Result<(), String> {
        super::load_from(Some((Path::new(name), text)), &BTreeMap::new(), &[])
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests;
