//! The process's life after the configuration is loaded: ready once every configured
//! listener is up (`READY=1` to systemd), and on SIGTERM or SIGINT a bounded drain: health
//! says "shutting down" (503), new requests are refused with 503, every client is sent
//! `bye` and close code 1012 (service restart) so it reconnects, and once they are gone, or
//! `[http] shutdown_timeout` has passed, the listeners stop and the process exits 0.
//! SIGHUP never ends the process (certificates are reloaded by `tls`).

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hpb_signaling::hub::Hub;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Listeners are still being opened.
    Starting,
    /// Every configured listener is up.
    Ready,
    /// SIGTERM received: clients are being sent away.
    Draining,
}

/// How long requests still open after the drain may take before the process exits anyway.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Inner {
    phase: AtomicU8,
    /// `true` once the listeners should stop (the drain is over).
    stop: tokio::sync::watch::Sender<bool>,
}

/// Shared view of the phase, for health checks and the request guard.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                phase: AtomicU8::new(0),
                stop: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Every configured listener is up: readiness turns 200 and systemd is told.
    pub fn set_ready(&self, status: &str) {
        // Not after a drain has begun.
        let _ = self
            .inner
            .phase
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
        crate::sd_notify::ready(status);
    }

    fn begin_drain(&self) {
        self.inner.phase.store(2, Ordering::Release);
        crate::sd_notify::stopping();
    }

    fn stop_listeners(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Resolves when the listeners should stop accepting (the drain is over).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stop.subscribe();
        async move {
            if rx.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The signal handlers, installed before any listener opens so a SIGTERM during start is
/// not the default "terminate at once".
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("could not install the {name} handler"))
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next SIGTERM or SIGINT, by name.
    async fn terminate(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Waits for SIGTERM/SIGINT, then drains (see the module documentation) within `timeout`.
/// A second SIGTERM/SIGINT ends the drain at once. `reloads_certificate`: whether SIGHUP
/// reloads a certificate (else it is only logged).
pub async fn drain_on_signal(
    mut signals: Signals,
    life: Lifecycle,
    hub: Arc<Hub>,
    timeout: Duration,
    reloads_certificate: bool,
) {
    let name = loop {
        tokio::select! {
            _ = signals.term.recv() => break "SIGTERM",
            _ = signals.int.recv() => break "SIGINT",
            _ = signals.hup.recv() => {
                if !reloads_certificate {
                    tracing::info!("SIGHUP: nothing to reload (no [https] certificate); the configuration is read at start only");
                }
            }
        }
    };
    let deadline = Instant::now() + timeout;
    life.begin_drain();
    let sessions = hub.session_count();
    let connections = hub.counters.connections.load(Ordering::Relaxed);
    tracing::info!(
        sessions,
        connections,
        "{name}: shutting down; telling clients to reconnect (bye \"shutdown\", close code 1012), waiting up to {} s ([http] shutdown_timeout)",
        timeout.as_secs()
    );
    let drained = async {
        hub.close_all().await;
        while hub.counters.connections.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = drained => tracing::info!("all clients are gone"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!(
            connections = hub.counters.connections.load(Ordering::Relaxed),
            "clients still connected after {} s ([http] shutdown_timeout); exiting anyway",
            timeout.as_secs()
        ),
        name = signals.terminate() => tracing::warn!("{name} again: exiting without waiting for clients"),
    }
    life.stop_listeners();
}

/// Runs `server` (which stops accepting when [`Lifecycle::stopped`] fires) until it ends, or
/// until shortly after the drain if some request is still open.
pub async fn serve<F>(server: F, life: &Lifecycle) -> Result<()>
where
    F: IntoFuture<Output = std::io::Result<()>>,
{
    let server = server.into_future();
    let stopped = life.stopped();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.context("HTTP server failed"),
        () = async { stopped.await; tokio::time::sleep(LINGER).await; } => {
            tracing::debug!("requests still open {} s after the drain; exiting anyway", LINGER.as_secs());
            Ok(())
        }
    }
}

/// Middleware: while draining, everything but the health endpoints gets 503, so no new
/// client arrives on a server that is going away.
pub async fn refuse_while_draining(
    State(life): State<Lifecycle>,
    req: Request,
    next: Next,
) -> Response {
    if life.phase() == Phase::Draining && !crate::health::is_health_path(req.uri().path()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5"), (header::CONNECTION, "close")],
            "hpb is shutting down (service restart); connect again in a moment\n",
        )
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_and_stop() {
        let life = Lifecycle::new();
        assert_eq!(life.phase(), Phase::Starting);
        life.set_ready("test");
        assert_eq!(life.phase(), Phase::Ready);
        let stopped = life.stopped();
        life.begin_drain();
        assert_eq!(life.phase(), Phase::Draining);
        life.set_ready("late");
        assert_eq!(life.phase(), Phase::Draining, "a drain is never undone");
        life.stop_listeners();
        tokio::time::timeout(Duration::from_secs(1), stopped)
            .await
            .expect("stopped fires");
        // Also for a waiter that subscribes after the stop.
        tokio::time::timeout(Duration::from_secs(1), life.stopped())
            .await
            .expect("stopped fires late too");
    }
}
