//! `GET /metrics`: the Prometheus text of the signaling hub's counters and those of the
//! built-in TURN server and SFU, for the addresses in `[stats] allowed_ips` (like upstream's `/metrics`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use hpb_signaling::Hub;

#[derive(Clone)]
pub struct MetricsState {
    pub hub: Arc<Hub>,
    pub turn: Option<Arc<hpb_turn::server::Server>>,
    pub sfu: Option<Arc<hpb_sfu::Sfu>>,
}

fn signaling(hub: &Hub) -> String {
    let mut s = String::new();
    let c = &hub.counters;
    let gauges = [
        (
            "signaling_hub_sessions",
            "Current sessions.",
            hub.session_count() as u64,
        ),
        (
            "signaling_hub_rooms",
            "Current rooms.",
            hub.room_count() as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let counters = [
        (
            "signaling_hub_sessions_total",
            "Sessions created.",
            &c.sessions_total,
        ),
        (
            "signaling_hub_sessions_resume_total",
            "Sessions resumed.",
            &c.resumes_total,
        ),
        (
            "signaling_hub_sessions_resume_failed_total",
            "Failed resumes.",
            &c.resume_failed_total,
        ),
        (
            "signaling_client_messages_in_total",
            "Messages received from clients.",
            &c.messages_in,
        ),
        (
            "signaling_client_frames_out_total",
            "Frames queued to clients.",
            &c.frames_out,
        ),
        (
            "signaling_slow_client_disconnects_total",
            "Clients disconnected for not reading.",
            &c.slow_client_disconnects,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    s
}

pub async fn metrics(
    State(st): State<MetricsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = hpb_signaling::http_api::stats_allowed(&st.hub, peer, &headers) {
        return *refused;
    }
    let mut body = signaling(&st.hub);
    if let Some(t) = &st.turn {
        body.push_str(&t.metrics.render());
    }
    if let Some(s) = &st.sfu {
        body.push_str(&s.metrics());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
