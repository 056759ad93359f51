//! The `hpb` binary: parses the command line, loads the layered configuration,
//! composes the servers and serves them until SIGTERM/SIGINT (then drains, see `lifecycle`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use hpb_signaling::Signaling;
use tracing_subscriber::EnvFilter;

use hpb::cli::{Cli, Command, ConfigAction};
use hpb::{
    acme, config, health, healthcheck, http_listener, lifecycle, media, metrics, public_port,
    relay_link, tls,
};

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
    if let Some(Command::Healthcheck { path, timeout }) = &cli.command {
        let ok = healthcheck::check(
            loaded.listen,
            path,
            std::time::Duration::from_secs(*timeout),
        )?;
        println!("{ok}");
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
    let result = runtime.block_on(serve(loaded));
    // Tasks still running (a slow call to Nextcloud) do not hold up the exit.
    runtime.shutdown_background();
    result
}

async fn serve(loaded: config::Loaded) -> anyhow::Result<()> {
    let signals = lifecycle::Signals::install()?;
    let life = lifecycle::Lifecycle::new();
    // The public TLS port is bound first: the SFU announces it as its ICE-TCP candidate.
    let mut public = match &loaded.https {
        Some(h) => Some(tokio::net::TcpListener::bind(h.listen).await.with_context(|| {
            format!(
                "could not listen on {} ([https] listen; in use by another program, or port 443 without the capability to bind it?)",
                h.listen
            )
        })?),
        None => None,
    };
    let public_addr = match &public {
        Some(l) => Some(l.local_addr().context("listener has no address")?),
        None => None,
    };
    // The built-in SFU, when [sfu] listen is set; signaling talks to it through its MCU port.
    let sfu = match &loaded.sfu {
        Some(cfg) => {
            let sfu_cfg = hpb_sfu::SfuConfig {
                listen: cfg.listen,
                external_ip: cfg.external_ip,
                listen_v6: cfg.listen_v6,
                external_ip_v6: cfg.external_ip_v6,
                tcp_listen: cfg.tcp_listen,
                public_tcp: public_addr,
                thin_silent_audio: cfg.thin_silent_audio,
                opus_dtx: cfg.opus_dtx,
                ..hpb_sfu::SfuConfig::default()
            };
            let (sfu, events) = hpb_sfu::Sfu::start(sfu_cfg).await.context(
                "the built-in SFU could not start ([sfu] listen, listen_v6, tcp_listen)",
            )?;
            println!("sfu: udp {}", sfu.local_addr());
            if let Some(a) = sfu.tcp_addr() {
                println!("sfu: ice-tcp {a}");
            }
            if let Some(a) = public_addr {
                println!("sfu: ice-tcp on the public port {a}");
            }
            Some((Arc::new(sfu), events))
        }
        None => None,
    };
    let (signaling, sfu) = match sfu {
        Some((sfu, events)) => (
            Signaling::start_with_mcu(
                loaded.signaling,
                Arc::new(media::BuiltinSfu(sfu.clone())),
                events,
            )
            .context("invalid signaling configuration")?,
            Some(sfu),
        ),
        None => (
            Signaling::start(loaded.signaling).context("invalid signaling configuration")?,
            None,
        ),
    };
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
        Some(mut t) => {
            // Relaying to our own SFU is always allowed (its media ports are this machine).
            if let Some(s) = &sfu {
                let cfg = loaded.sfu.as_ref();
                let sockets = [
                    Some((s.local_addr(), cfg.and_then(|c| c.external_ip))),
                    s.local_addr_v6()
                        .map(|a| (a, cfg.and_then(|c| c.external_ip_v6))),
                ];
                for (bound, external) in sockets.into_iter().flatten() {
                    let port = bound.port();
                    t.config.sfu_addrs.push(bound);
                    if bound.ip().is_unspecified() {
                        // The SFU then announces loopback (or the external IP, below).
                        let lo: IpAddr = if bound.is_ipv4() {
                            Ipv4Addr::LOCALHOST.into()
                        } else {
                            Ipv6Addr::LOCALHOST.into()
                        };
                        t.config.sfu_addrs.push(SocketAddr::new(lo, port));
                    }
                    t.config
                        .sfu_addrs
                        .extend(external.map(|ip| SocketAddr::new(ip, port)));
                }
            }
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
    if let (Some(s), Some(t)) = (&sfu, &_turn) {
        relay_link::connect(s, t);
    }
    let hub = signaling.hub.clone();
    let metrics_state = metrics::MetricsState {
        hub: hub.clone(),
        turn: _turn.as_ref().map(|t| t.server.clone()),
        sfu: sfu.clone(),
    };
    let app = signaling
        .router()
        .merge(
            axum::Router::new()
                .route("/metrics", axum::routing::get(metrics::metrics))
                .with_state(metrics_state),
        )
        .merge(health::router(life.clone()))
        .layer(axum::middleware::from_fn_with_state(
            life.clone(),
            lifecycle::refuse_while_draining,
        ));
    let mut public_task = None;
    if let Some(h) = &loaded.https {
        let (tls_config, acme) = match &h.source {
            config::CertSource::Files { certificate, key } => {
                let cert = tls::ReloadingCert::new(certificate.clone(), key.clone())
                    .context("the [https] certificate could not be loaded")?;
                cert.spawn_watcher();
                (tls::server_config(cert), None)
            }
            config::CertSource::Acme(a) => {
                let acme = acme::Acme::new(a)?;
                (tls::acme_server_config(acme.resolver()), Some(acme))
            }
        };
        let (Some(public), Some(bound)) = (public.take(), public_addr) else {
            anyhow::bail!("the [https] listener was not bound");
        };
        println!("listening: https://{bound}");
        if let Some(acme) = acme {
            acme.spawn();
        }
        public_task = Some(tokio::spawn(public_port::serve(
            public,
            public_port::Services {
                router: app.clone(),
                tls: tls_config,
                turn: _turn.as_ref().map(|t| t.server.clone()),
                sfu: sfu.clone(),
            },
        )));
    }
    tokio::spawn(lifecycle::drain_on_signal(
        signals,
        life.clone(),
        hub,
        loaded.shutdown_timeout,
        loaded
            .https
            .as_ref()
            .is_some_and(|h| matches!(h.source, config::CertSource::Files { .. })),
    ));
    let listener = http_listener::HttpListener::new(listener);
    let server =
        axum::serve(listener, http_listener::serve_app(app)).with_graceful_shutdown(life.stopped());
    // Last of the start-up lines: everything above is bound and serving (scripts and the
    // end-to-end tests wait for it before reading the other lines).
    println!("ready: every listener is up");
    life.set_ready(&format!("serving on {addr}"));
    let served = lifecycle::serve(server, &life).await;
    tracing::info!("stopped: exiting");
    if let Some(t) = public_task {
        t.abort();
    }
    served?;
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
