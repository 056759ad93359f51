//! A room (Talk conversation) on one backend: its members, properties, the transient
//! key/value store, and the participants list last received from Nextcloud.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hpb_proto::backend::ParticipantEntry;
use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::backends::Backend;
use crate::session::Session;

/// Rooms are isolated per backend.
pub type RoomKey = (String, String);

/// One transient value.
#[derive(Debug, Clone)]
pub struct TransientEntry {
    pub value: Arc<RawValue>,
    pub expires: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct RoomState {
    pub properties: Option<Arc<RawValue>>,
    /// Members by public session id (clients, internal and virtual sessions).
    pub members: HashMap<Arc<str>, Arc<Session>>,
    pub transient: HashMap<String, TransientEntry>,
    /// The last `users` list Nextcloud sent (re-sent on resume).
    pub users: Vec<ParticipantEntry>,
    pub closed: bool,
}

#[derive(Debug)]
pub struct Room {
    pub id: String,
    pub backend: Arc<Backend>,
    pub state: Mutex<RoomState>,
}

impl Room {
    pub fn new(id: String, backend: Arc<Backend>) -> Self {
        Self {
            id,
            backend,
            state: Mutex::new(RoomState::default()),
        }
    }

    pub fn key(&self) -> RoomKey {
        (self.backend.id.clone(), self.id.clone())
    }

    /// A snapshot of the members.
    pub fn members(&self) -> Vec<Arc<Session>> {
        self.state.lock().members.values().cloned().collect()
    }
}
