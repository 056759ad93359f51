//! Liveness and readiness for container engines, load balancers and Kubernetes:
//! `GET /api/v1/health/live` is 200 while the process runs; `GET /api/v1/health/ready` is
//! 200 once every configured listener is up and 503 while starting or shutting down. Open
//! to everyone (unlike `/api/v1/stats`), so the bodies carry no secrets and no counters.
//! Also under `/standalone-signaling/`, as the rest of the API.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::lifecycle::{Lifecycle, Phase};

const LIVE: &str = "/api/v1/health/live";
const READY: &str = "/api/v1/health/ready";
const PREFIX: &str = "/standalone-signaling";

/// Whether `path` is one of the health endpoints (with or without the prefix).
pub fn is_health_path(path: &str) -> bool {
    let p = path.strip_prefix(PREFIX).unwrap_or(path);
    p == LIVE || p == READY
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn live() -> Response {
    json(StatusCode::OK, "{\"status\":\"alive\"}\n")
}

/// The readiness status and body for a phase.
fn ready_response(phase: Phase) -> (StatusCode, &'static str) {
    match phase {
        Phase::Ready => (StatusCode::OK, "{\"status\":\"ready\"}\n"),
        Phase::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"starting\"}\n",
        ),
        Phase::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"shutting down\"}\n",
        ),
    }
}

async fn ready(State(life): State<Lifecycle>) -> Response {
    let (status, body) = ready_response(life.phase());
    json(status, body)
}

/// The health routes.
pub fn router(life: Lifecycle) -> Router {
    let routes = Router::new()
        .route(LIVE, get(live))
        .route(READY, get(ready));
    Router::new()
        .merge(routes.clone())
        .nest(PREFIX, routes)
        .with_state(life)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_health_path("/api/v1/health/live"));
        assert!(is_health_path("/standalone-signaling/api/v1/health/ready"));
        assert!(!is_health_path("/api/v1/stats"));
        assert!(!is_health_path("/spreed"));
        assert!(!is_health_path("/api/v1/health/live/x"));
    }

    #[test]
    fn readiness_by_phase() {
        assert_eq!(ready_response(Phase::Ready).0, StatusCode::OK);
        assert_eq!(
            ready_response(Phase::Starting).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ready_response(Phase::Draining).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
