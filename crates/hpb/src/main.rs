//! The `hpb` binary: parses the command line, loads the layered configuration,
//! composes the servers and serves them until SIGTERM/SIGINT.

mod cli;
mod config;
mod metrics;
mod public_port;
mod tls;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use hpb_signaling::Signaling;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let sources = config::Sources {
        config_file: cli.config.clone(),
        env: std::env::vars().collect(),
        overrides: cli.overrides(),
    };
    let loaded = config::load(&sources)?;
    if let Some(Command::Config {
        action: ConfigAction::Show,
    }) = cli.command
    {
        print!("{}", config::show(&loaded));
        return Ok(());
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&loaded.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(loaded))
}

async fn serve(loaded: config::Loaded) -> anyhow::Result<()> {
    let signaling =
        Signaling::start(loaded.signaling).context("invalid signaling configuration")?;
    let listener = tokio::net::TcpListener::bind(loaded.listen)
        .await
        .with_context(|| format!("could not listen on {} (in use by another program? change [http] listen or --listen)", loaded.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;
    println!("listening: http://{addr}");
    if let Some(g) = &loaded.generated_secrets {
        print_sandbox_instructions(addr, g);
    }
    tracing::info!(%addr, "hpb serving signaling");
    // Kept alive for the life of the process; its listeners run on their own threads.
    let _turn = match loaded.turn {
        Some(t) => {
            let server = hpb_turn::TurnServer::start(t.config)
                .await
                .context("the built-in TURN server could not start")?;
            for a in &server.udp {
                println!("turn: udp+tcp {a}");
            }
            if let Some(a) = server.tls {
                println!("turn: tls {a}");
            }
            Some(server)
        }
        None => None,
    };
    let hub = signaling.hub.clone();
    let metrics_state = metrics::MetricsState {
        hub: hub.clone(),
        turn: _turn.as_ref().map(|t| t.server.clone()),
    };
    let app = signaling.router().merge(
        axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::metrics))
            .with_state(metrics_state),
    );
    if let Some(h) = &loaded.https {
        let cert = tls::ReloadingCert::new(h.certificate.clone(), h.key.clone())
            .context("the [https] certificate could not be loaded")?;
        cert.spawn_watcher();
        let public = tokio::net::TcpListener::bind(h.listen).await.with_context(|| {
            format!(
                "could not listen on {} ([https] listen; in use by another program, or port 443 without the capability to bind it?)",
                h.listen
            )
        })?;
        let bound = public.local_addr().context("listener has no address")?;
        println!("listening: https://{bound}");
        tokio::spawn(public_port::serve(
            public,
            public_port::Services {
                router: app.clone(),
                tls: tls::server_config(cert),
                turn: _turn.as_ref().map(|t| t.server.clone()),
            },
        ));
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: telling clients to reconnect");
        hub.close_all().await;
    })
    .await
    .context("HTTP server failed")?;
    Ok(())
}

fn print_sandbox_instructions(addr: SocketAddr, g: &config::GeneratedSecrets) {
    println!();
    println!("No configuration given: serving a development sandbox with generated secrets.");
    println!("In Nextcloud, Administration settings → Talk → High-performance backend, enter:");
    println!("  High-performance backend URL: http://{addr}");
    println!("  Shared secret:                {}", g.signaling_secret);
    println!("  (untick \"Validate SSL certificate\"; any Nextcloud URL is accepted in this mode)");
    println!("Or from the command line:");
    println!(
        "  occ talk:signaling:add http://{addr} {}",
        g.signaling_secret
    );
    if let Some(internal) = &g.internal_secret {
        println!("Internal client secret (recording server, SIP bridge): {internal}");
    }
    println!("For production, write an hpb.toml (see README) and run: hpb --config hpb.toml");
    println!();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
