//! The signaling server: WebSocket hub, sessions, rooms, the client of Nextcloud's
//! backend API and the server for Nextcloud's room requests. Compatible on the wire
//! with nextcloud-spreed-signaling 2.x.

pub mod backend_api;
pub mod backends;
pub mod client_ip;
pub mod config;
pub mod federation;
pub mod hello;
pub mod http_api;
pub mod hub;
pub mod internal;
pub mod jwt;
pub mod mcu;
pub mod nextcloud;
pub mod outbox;
pub mod participants;
pub mod ping;
pub mod relay;
pub mod room;
pub mod rooms;
pub mod session;
pub mod throttle;
pub mod transient;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use config::SignalingConfig;
pub use hub::Hub;

/// Why the server could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    SessionKeys(#[from] hpb_proto::session_id::CodecKeyError),
    #[error("could not build the HTTP client for Nextcloud: {0}")]
    Http(#[from] reqwest::Error),
}

/// A running signaling server (its background tasks live as long as the hub).
pub struct Signaling {
    pub hub: Arc<Hub>,
}

impl Signaling {
    /// Build the hub and start its housekeeping and room pings (needs a tokio runtime).
    pub fn start(cfg: SignalingConfig) -> Result<Self, StartError> {
        let codec = hpb_proto::session_id::SessionIdCodec::new(&cfg.hash_key, &cfg.block_key)?;
        let features = hpb_proto::features::header_value(&hpb_proto::features::merged(
            hpb_proto::features::CLIENT_FEATURES,
            &[],
        ));
        let nextcloud = nextcloud::Nextcloud::new(&cfg, features)?;
        let hub = Arc::new(Hub::new(cfg, codec, nextcloud));
        hub.spawn_housekeeping();
        hub.spawn_room_pings();
        Ok(Self { hub })
    }

    /// The HTTP routes, also under the `/standalone-signaling` prefix proxies use.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/spreed", get(ws::upgrade))
            .route("/spreed/", get(ws::upgrade))
            .route("/api/v1/welcome", get(http_api::welcome))
            .route("/api/v1/stats", get(http_api::stats))
            .route("/api/v1/serverinfo", get(http_api::serverinfo))
            .route("/api/v1/room/{roomid}", post(backend_api::room_request))
            .route("/turn/credentials", get(http_api::turn_credentials))
            .layer(DefaultBodyLimit::max(
                hpb_proto::backend::MAX_ROOM_REQUEST_BYTES + 1,
            ));
        Router::new()
            .merge(routes.clone())
            .nest("/standalone-signaling", routes)
            .layer(axum::middleware::from_fn_with_state(
                self.hub.clone(),
                http_api::signaling_headers,
            ))
            .with_state(self.hub.clone())
    }
}
