//! Messages the server sends on `/spreed` (reference §1.3–§1.12). Each frame is built
//! once as a JSON string (fan-out sends the same bytes to every receiver).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::error_code::ErrorCode;

/// `{"id":..,"type":kind,kind:body}`: the envelope of every server frame.
pub struct Envelope<'a, B: ?Sized> {
    pub id: Option<&'a str>,
    pub kind: &'a str,
    pub body: Option<&'a B>,
}

impl<B: Serialize + ?Sized> Serialize for Envelope<'_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(id) = self.id {
            m.serialize_entry("id", id)?;
        }
        m.serialize_entry("type", self.kind)?;
        if let Some(b) = self.body {
            m.serialize_entry(self.kind, b)?;
        }
        m.end()
    }
}

/// Serialize a frame to JSON text.
pub fn frame<B: Serialize + ?Sized>(id: Option<&str>, kind: &str, body: Option<&B>) -> String {
    let env = Envelope { id, kind, body };
    // Serializing these plain structs into a String cannot fail.
    serde_json::to_string(&env).unwrap_or_else(|e| {
        format!(
            r#"{{"type":"error","error":{{"code":"internal_error","message":"serialize: {e}"}}}}"#
        )
    })
}

#[derive(Serialize)]
pub struct Welcome<'a> {
    pub version: &'a str,
    pub features: &'a [&'a str],
}

#[derive(Serialize)]
pub struct ServerInfo<'a> {
    pub version: &'a str,
    pub features: &'a [&'a str],
}

#[derive(Serialize)]
pub struct HelloReply<'a> {
    pub version: &'a str,
    pub sessionid: &'a str,
    pub resumeid: &'a str,
    pub userid: &'a str,
    pub server: ServerInfo<'a>,
}

#[derive(Serialize)]
pub struct Bye<'a> {
    pub reason: &'a str,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a RawValue>,
}

/// Build an error frame.
pub fn error(
    id: Option<&str>,
    code: ErrorCode,
    message: &str,
    details: Option<&RawValue>,
) -> String {
    frame(
        id,
        "error",
        Some(&ErrorBody {
            code,
            message,
            details,
        }),
    )
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    pub maxstreambitrate: u64,
    pub maxscreenbitrate: u64,
}

#[derive(Serialize)]
pub struct RoomReply<'a> {
    pub roomid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

/// `{"target":..,"type":kind,kind:payload}` plus optional extra fields.
pub struct Event<'a, P: ?Sized> {
    pub target: &'a str,
    pub kind: &'a str,
    pub payload: &'a P,
}

impl<P: Serialize + ?Sized> Serialize for Event<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("target", self.target)?;
        m.serialize_entry("type", self.kind)?;
        m.serialize_entry(self.kind, self.payload)?;
        m.end()
    }
}

/// Build an event frame.
pub fn event<P: Serialize + ?Sized>(target: &str, kind: &str, payload: &P) -> String {
    frame(
        None,
        "event",
        Some(&Event {
            target,
            kind,
            payload,
        }),
    )
}

/// Room events without a payload object (`federation_interrupted`).
#[derive(Serialize)]
pub struct BareEvent<'a> {
    pub target: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// An entry of a `join` event.
#[derive(Serialize, Clone)]
pub struct JoinEntry<'a> {
    pub sessionid: &'a str,
    pub userid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roomsessionid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub federated: bool,
}

/// The sender of a relayed message.
#[derive(Serialize, Clone, Copy)]
pub struct Sender<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub sessionid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub userid: &'a str,
}

/// The recipient echoed in some relayed messages.
#[derive(Serialize, Clone, Copy)]
pub struct RecipientOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub sessionid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub userid: &'a str,
}

#[derive(Serialize)]
pub struct Relayed<'a> {
    pub sender: Sender<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<RecipientOut<'a>>,
    pub data: &'a RawValue,
}

#[derive(Serialize)]
pub struct TransientOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldvalue: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_upstream_shape() {
        assert_eq!(
            frame::<()>(Some("3"), "bye", None),
            r#"{"id":"3","type":"bye"}"#
        );
        assert_eq!(
            frame(
                None,
                "bye",
                Some(&Bye {
                    reason: "hello_timeout"
                })
            ),
            r#"{"type":"bye","bye":{"reason":"hello_timeout"}}"#
        );
        assert_eq!(
            error(Some("1"), ErrorCode::HelloExpected, "x", None),
            r#"{"id":"1","type":"error","error":{"code":"hello_expected","message":"x"}}"#
        );
        let leave = event("room", "leave", &["a"]);
        assert_eq!(
            leave,
            r#"{"type":"event","event":{"target":"room","type":"leave","leave":["a"]}}"#
        );
    }
}
