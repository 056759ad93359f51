//! Relaying `message` and `control` between clients (reference §1.8, §1.9): to a
//! session (same backend only; virtual targets go to their internal owner), to all
//! sessions of a user, to the room, or to the sessions in the call.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use hpb_proto::client::{Recipient, RelayMessage};
use hpb_proto::server::{self, RecipientOut, Relayed, Sender};

use crate::hub::Hub;
use crate::session::{ClientKind, PERM_CONTROL, PERM_HIDE_DISPLAYNAMES, Session};

/// Whether relayed `data` is a `nickChanged` message (not delivered to sessions that must
/// not see display names, like upstream's filterMessage).
fn is_nick_changed(data: &serde_json::value::RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(default, rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    data.get().contains("nickChanged")
        && serde_json::from_str::<Typed<'_>>(data.get())
            .ok()
            .and_then(|t| t.kind)
            .is_some_and(|k| k == "nickChanged")
}

impl Hub {
    /// Handle a client `message`: with an MCU its media messages are taken first
    /// (`media.rs`), everything else is relayed.
    pub async fn handle_message(
        self: &Arc<Self>,
        s: &Arc<Session>,
        id: Option<&str>,
        m: RelayMessage,
    ) {
        if self.media.is_some() && !self.media_message(s, id, &m).await {
            return;
        }
        self.handle_relay(s, "message", m);
    }

    /// Handle `message` (`kind` = "message") or `control` (`kind` = "control").
    pub fn handle_relay(self: &Arc<Self>, s: &Arc<Session>, kind: &'static str, m: RelayMessage) {
        if kind == "control" && !s.is_internal() && !s.has_permission(PERM_CONTROL) {
            // Upstream ignores these silently; say why in the log.
            tracing::warn!(session = %s.public_id, backend = %s.backend.id, "control message ignored: the session lacks the \"control\" permission");
            return;
        }
        let user = s.user_id();
        let (recipient_kind, target) = match &m.recipient {
            Recipient::Session(id) => ("session", id.as_str()),
            Recipient::User(id) => ("user", id.as_str()),
            Recipient::Room => ("room", ""),
            Recipient::Call => ("call", ""),
        };
        let _ = target;
        let nick_changed = kind == "message" && is_nick_changed(&m.data);
        // Receivers that may see this frame.
        let allowed = |r: &Session| !(nick_changed && r.has_permission(PERM_HIDE_DISPLAYNAMES));
        let sender = Sender {
            kind: recipient_kind,
            sessionid: &s.public_id,
            userid: &user,
        };
        match &m.recipient {
            Recipient::Session(id) => {
                let Some(t) = self.session(id) else {
                    tracing::debug!(session = %s.public_id, target = %id, "message to unknown session dropped");
                    return;
                };
                if Arc::ptr_eq(&t, s) || t.backend.id != s.backend.id {
                    return;
                }
                if t.kind != ClientKind::Virtual && !allowed(&t) {
                    return;
                }
                if t.kind == ClientKind::Virtual {
                    let (Some(owner), Some(vid)) = (&t.owner, &t.virtual_id) else {
                        return;
                    };
                    let frame = server::frame(
                        None,
                        kind,
                        Some(&Relayed {
                            sender,
                            recipient: Some(RecipientOut {
                                kind: "session",
                                sessionid: vid,
                                userid: "",
                            }),
                            data: &m.data,
                        }),
                    );
                    self.deliver(owner, &frame.into());
                    return;
                }
                let frame = server::frame(
                    None,
                    kind,
                    Some(&Relayed {
                        sender,
                        recipient: None,
                        data: &m.data,
                    }),
                );
                self.deliver(&t, &frame.into());
            }
            Recipient::User(uid) => {
                if **uid == *user {
                    return;
                }
                let targets = self.user_sessions(&s.backend.id, uid);
                if targets.is_empty() {
                    return;
                }
                let frame: Utf8Bytes = server::frame(
                    None,
                    kind,
                    Some(&Relayed {
                        sender,
                        recipient: None,
                        data: &m.data,
                    }),
                )
                .into();
                for t in targets.iter().filter(|t| !Arc::ptr_eq(t, s) && allowed(t)) {
                    self.deliver(t, &frame);
                }
            }
            Recipient::Room | Recipient::Call => {
                let Some(room) = s.room() else {
                    return;
                };
                let frame: Utf8Bytes = server::frame(
                    None,
                    kind,
                    Some(&Relayed {
                        sender,
                        recipient: None,
                        data: &m.data,
                    }),
                )
                .into();
                let call_only = matches!(m.recipient, Recipient::Call);
                self.deliver_room(&room, &frame, Some(&s.public_id), |r| {
                    r.kind != ClientKind::Virtual
                        && allowed(r)
                        && (!call_only || r.state.lock().in_call & 1 != 0)
                });
            }
        }
    }
}
