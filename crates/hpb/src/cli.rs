//! Command-line interface of the `hpb` binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The Nextcloud Talk High Performance Backend in one binary.
///
/// Without arguments hpb serves a development sandbox on 127.0.0.1:8080 with generated
/// secrets, printed at start together with the values to paste into Talk's settings.
#[derive(Debug, Parser)]
#[command(name = "hpb", version, about)]
pub struct Cli {
    /// Configuration file: hpb.toml, or an upstream server.conf (read unchanged).
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// Listen address for HTTP/WebSocket (overrides [http] listen).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Log level (overrides [log] level; RUST_LOG wins over both).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check that the hpb configured here answers on [http] listen (for a container's
    /// HEALTHCHECK): exits 0 on a 2xx answer, 1 otherwise.
    Healthcheck {
        /// The path to GET (over loopback, which [stats] allowed_ips admits by default).
        #[arg(long, default_value = "/api/v1/stats")]
        path: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the merged configuration with secrets masked and where each value came from.
    Show,
}

impl Cli {
    /// `section.key = value` overrides from flags, the last configuration layer.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(l) = &self.listen {
            o.push(("http.listen".to_string(), l.clone()));
        }
        if let Some(l) = &self.log_level {
            o.push(("log.level".to_string(), l.clone()));
        }
        o
    }
}
