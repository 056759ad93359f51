//! The signaling server: WebSocket hub, sessions, rooms, the client of Nextcloud's
//! backend API and the server for Nextcloud's room requests. Compatible on the wire
//! with nextcloud-spreed-signaling 2.x.

pub mod backend_api;
pub mod backends;
pub mod client_ip;
pub mod config;
pub mod dialout;
pub mod federation;
pub mod hello;
pub mod http_api;
pub mod hub;
mod insecure_tls;
pub mod internal;
pub mod jwt;
pub mod mcu;
pub mod media;
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
use tokio::sync::mpsc::UnboundedReceiver;

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
    /// No media plane: WebRTC signaling is relayed peer to peer.
    pub fn start(cfg: SignalingConfig) -> Result<Self, StartError> {
        Self::start_inner(cfg, None)
    }

    /// Like [`Signaling::start`] with a media plane: media messages go to `mcu`, its
    /// `events` are delivered to the clients, and `mcu`, `simulcast`, `update-sdp` are
    /// advertised.
    pub fn start_with_mcu(
        cfg: SignalingConfig,
        mcu: Arc<dyn mcu::Mcu>,
        events: UnboundedReceiver<mcu::McuEvent>,
    ) -> Result<Self, StartError> {
        Self::start_inner(cfg, Some((mcu, events)))
    }

    fn start_inner(
        cfg: SignalingConfig,
        mcu: Option<(Arc<dyn mcu::Mcu>, UnboundedReceiver<mcu::McuEvent>)>,
    ) -> Result<Self, StartError> {
        use hpb_proto::features::{self, MCU_FEATURES, merged};
        let codec = hpb_proto::session_id::SessionIdCodec::new(&cfg.hash_key, &cfg.block_key)?;
        let extra: &[&'static str] = if mcu.is_some() { MCU_FEATURES } else { &[] };
        let header = features::header_value(&merged(features::CLIENT_FEATURES, extra));
        let nextcloud = nextcloud::Nextcloud::new(&cfg, header)?;
        let mut hub = Hub::new(cfg, codec, nextcloud);
        let events = match mcu {
            Some((mcu, events)) => {
                hub.media = Some(Arc::new(media::Media::new(mcu)));
                hub.client_features = merged(&hub.client_features, MCU_FEATURES);
                hub.internal_features = merged(&hub.internal_features, MCU_FEATURES);
                hub.welcome_features = merged(&hub.welcome_features, MCU_FEATURES);
                Some(events)
            }
            None => None,
        };
        let hub = Arc::new(hub);
        hub.spawn_housekeeping();
        hub.spawn_room_pings();
        if let Some(events) = events {
            hub.spawn_media_events(events);
        }
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
