//! The periodic room ping to Nextcloud (reference §2.2 `ping`): every interval, the
//! Talk session ids of all local sessions in each room, one request per room and
//! backend URL, or batched across rooms when Talk announces `session-ping-limit`.

use std::collections::HashMap;
use std::sync::Arc;

use hpb_proto::backend::{PingEntry, PingRequest, VERSION};
use url::Url;

use crate::backends::Backend;
use crate::hub::Hub;
use crate::session::ClientKind;

/// The pings for one backend URL: the backend and, per room id, its entries.
type PingBatch = (Arc<Backend>, Vec<(String, Vec<PingEntry>)>);

impl Hub {
    /// Send one round of pings.
    pub async fn ping_rooms(self: &Arc<Self>) {
        // (backend id, url) -> room id -> entries
        let mut by_url: HashMap<(String, Url), PingBatch> = HashMap::new();
        let rooms: Vec<_> = self.rooms.lock().values().cloned().collect();
        for room in rooms {
            let mut per_url: HashMap<Url, Vec<PingEntry>> = HashMap::new();
            for s in room.members() {
                let entry = match s.kind {
                    ClientKind::Client | ClientKind::Federation => {
                        let Some(rs) = s.state.lock().room_session_id.clone() else {
                            continue;
                        };
                        PingEntry {
                            sessionid: rs.to_string(),
                            userid: s.auth_user_id.to_string(),
                        }
                    }
                    ClientKind::Virtual => PingEntry {
                        sessionid: s.public_id.to_string(),
                        userid: s.user_id().to_string(),
                    },
                    ClientKind::Internal => continue,
                };
                per_url
                    .entry(s.backend_url.clone())
                    .or_default()
                    .push(entry);
            }
            for (url, entries) in per_url {
                by_url
                    .entry((room.backend.id.clone(), url))
                    .or_insert_with(|| (room.backend.clone(), Vec::new()))
                    .1
                    .push((room.id.clone(), entries));
            }
        }
        for ((_, url), (backend, rooms)) in by_url {
            let hub = self.clone();
            tokio::spawn(async move {
                let limit = hub
                    .nextcloud
                    .capabilities(&url)
                    .await
                    .map(|c| c.session_ping_limit)
                    .unwrap_or(0) as usize;
                let mut requests: Vec<(String, Vec<PingEntry>)> = Vec::new();
                if limit > 0 {
                    let all: Vec<PingEntry> = rooms.into_iter().flat_map(|(_, e)| e).collect();
                    for chunk in all.chunks(limit) {
                        requests.push((String::new(), chunk.to_vec()));
                    }
                } else {
                    requests = rooms;
                }
                for (room_id, entries) in requests {
                    let body = PingRequest {
                        version: VERSION,
                        roomid: &room_id,
                        entries: &entries,
                    };
                    if let Err(e) = hub.nextcloud.request(&backend, &url, "ping", &body).await {
                        tracing::warn!(backend = %backend.id, room = %room_id, error = %e, "room ping failed");
                    }
                }
            });
        }
    }

    /// Ping every `[limits] room_ping_interval` until the hub is dropped.
    pub fn spawn_room_pings(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.cfg.limits.room_ping_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { break };
                hub.ping_rooms().await;
            }
        });
    }
}
