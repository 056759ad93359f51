//! The backend API between Nextcloud and the signaling server (reference §2): requests we
//! send to Talk's `signaling/backend` OCS endpoint and its replies, and the room requests
//! Talk posts to `/api/v1/room/{id}`, with a parser that says precisely what is wrong.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Version string of every backend request body.
pub const VERSION: &str = "1.0";

/// Maximum size of a room request body from Nextcloud.
pub const MAX_ROOM_REQUEST_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
pub struct AuthRequest<'a> {
    pub version: &'a str,
    pub params: &'a RawValue,
}

#[derive(Serialize, Default)]
pub struct RoomBackendRequest<'a> {
    pub version: &'a str,
    pub roomid: &'a str,
    pub userid: &'a str,
    pub sessionid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub actorid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub actortype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incall: Option<i64>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PingEntry {
    pub sessionid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub userid: String,
}

#[derive(Serialize)]
pub struct PingRequest<'a> {
    pub version: &'a str,
    pub roomid: &'a str,
    pub entries: &'a [PingEntry],
}

#[derive(Serialize)]
pub struct SessionRequest<'a> {
    pub version: &'a str,
    pub roomid: &'a str,
    pub action: &'a str,
    pub sessionid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub userid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a RawValue>,
}

/// The OCS envelope Nextcloud wraps every reply in.
#[derive(Deserialize)]
pub struct Ocs {
    pub ocs: OcsBody,
}

#[derive(Deserialize)]
pub struct OcsBody {
    pub meta: OcsMeta,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

#[derive(Deserialize, Debug)]
pub struct OcsMeta {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub statuscode: i64,
    #[serde(default)]
    pub message: Option<String>,
}

/// A reply of Talk's signaling backend endpoint.
#[derive(Deserialize, Debug)]
pub struct BackendReply {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub auth: Option<AuthReply>,
    #[serde(default)]
    pub room: Option<RoomReplyIn>,
    #[serde(default)]
    pub error: Option<BackendError>,
}

#[derive(Deserialize, Debug)]
pub struct AuthReply {
    #[serde(default)]
    pub userid: String,
    #[serde(default)]
    pub user: Option<Box<RawValue>>,
}

#[derive(Deserialize, Debug)]
pub struct RoomReplyIn {
    #[serde(default)]
    pub roomid: String,
    #[serde(default)]
    pub properties: Option<Box<RawValue>>,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub session: Option<RoomSessionInfo>,
}

#[derive(Deserialize, Debug)]
pub struct RoomSessionInfo {
    #[serde(default)]
    pub userid: String,
}

#[derive(Deserialize, Serialize, Debug, Clone)]
pub struct BackendError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<RawValue>>,
}

/// A request Talk posts to `/api/v1/room/{roomid}`.
#[derive(Debug)]
pub enum RoomRequest {
    Invite(Invite),
    Disinvite(Disinvite),
    Update(Update),
    Delete(Delete),
    Participants(Participants),
    InCall(InCall),
    Message(RoomMessage),
    SwitchTo(SwitchTo),
    Dialout(Box<RawValue>),
}

impl RoomRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            RoomRequest::Invite(_) => "invite",
            RoomRequest::Disinvite(_) => "disinvite",
            RoomRequest::Update(_) => "update",
            RoomRequest::Delete(_) => "delete",
            RoomRequest::Participants(_) => "participants",
            RoomRequest::InCall(_) => "incall",
            RoomRequest::Message(_) => "message",
            RoomRequest::SwitchTo(_) => "switchto",
            RoomRequest::Dialout(_) => "dialout",
        }
    }
}

#[derive(Deserialize, Debug, Default)]
pub struct Invite {
    #[serde(default)]
    pub userids: Vec<String>,
    #[serde(default)]
    pub alluserids: Vec<String>,
    #[serde(default)]
    pub properties: Option<Box<RawValue>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Disinvite {
    #[serde(default)]
    pub userids: Vec<String>,
    #[serde(default)]
    pub sessionids: Vec<String>,
    #[serde(default)]
    pub alluserids: Vec<String>,
    #[serde(default)]
    pub properties: Option<Box<RawValue>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Update {
    #[serde(default)]
    pub userids: Vec<String>,
    #[serde(default)]
    pub properties: Option<Box<RawValue>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Delete {
    #[serde(default)]
    pub userids: Vec<String>,
}

/// A Talk participant entry, kept as a JSON object (only a few fields are interpreted).
pub type ParticipantEntry = Map<String, Value>;

#[derive(Deserialize, Debug, Default)]
pub struct Participants {
    #[serde(default)]
    pub changed: Vec<ParticipantEntry>,
    #[serde(default)]
    pub users: Vec<ParticipantEntry>,
}

#[derive(Deserialize, Debug, Default)]
pub struct InCall {
    #[serde(default)]
    pub incall: Value,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub changed: Vec<ParticipantEntry>,
    #[serde(default)]
    pub users: Vec<ParticipantEntry>,
}

#[derive(Deserialize, Debug)]
pub struct RoomMessage {
    pub data: Box<RawValue>,
}

#[derive(Deserialize, Debug)]
pub struct SwitchTo {
    pub roomid: String,
    /// A list of Talk session ids, or a map from Talk session id to details (or null).
    #[serde(default)]
    pub sessions: Value,
}

/// `inCall` from Talk may be a bool or an int.
pub fn in_call_flags(v: &Value) -> i64 {
    match v {
        Value::Bool(true) => 1,
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The Talk session id of a participant entry (`sessionId` or `sessionid`).
pub fn entry_session_id(e: &ParticipantEntry) -> Option<&str> {
    e.get("sessionId")
        .or_else(|| e.get("sessionid"))
        .and_then(Value::as_str)
}

#[derive(Deserialize)]
struct RawRoomRequest<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    invite: Option<&'a RawValue>,
    #[serde(default, borrow)]
    disinvite: Option<&'a RawValue>,
    #[serde(default, borrow)]
    update: Option<&'a RawValue>,
    #[serde(default, borrow)]
    delete: Option<&'a RawValue>,
    #[serde(default, borrow)]
    participants: Option<&'a RawValue>,
    #[serde(default, borrow)]
    incall: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    switchto: Option<&'a RawValue>,
    #[serde(default, borrow)]
    dialout: Option<&'a RawValue>,
}

/// Why a room request was refused (HTTP 400 with this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomRequestError {
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    #[error("the request has no \"type\"")]
    NoType,
    #[error("Unsupported request type: {0}")]
    Unsupported(String),
    #[error("a request of type \"{0}\" needs a \"{0}\" object")]
    MissingBody(String),
    #[error("the \"{kind}\" object is malformed: {reason}")]
    Malformed { kind: String, reason: String },
}

/// Parse a room request body from Nextcloud.
pub fn parse_room_request(body: &[u8]) -> Result<RoomRequest, RoomRequestError> {
    let raw: RawRoomRequest<'_> =
        serde_json::from_slice(body).map_err(|e| RoomRequestError::NotJson(e.to_string()))?;
    if raw.kind.is_empty() {
        return Err(RoomRequestError::NoType);
    }
    let kind = raw.kind.as_str();
    let inner = match kind {
        "invite" => raw.invite,
        "disinvite" => raw.disinvite,
        "update" => raw.update,
        "delete" => raw.delete,
        "participants" => raw.participants,
        "incall" => raw.incall,
        "message" => raw.message,
        "switchto" => raw.switchto,
        "dialout" => raw.dialout,
        _ => return Err(RoomRequestError::Unsupported(raw.kind.clone())),
    };
    let inner = inner
        .filter(|v| v.get().trim() != "null")
        .ok_or_else(|| RoomRequestError::MissingBody(kind.to_string()))?;
    fn de<'a, T: Deserialize<'a>>(kind: &str, v: &'a RawValue) -> Result<T, RoomRequestError> {
        serde_json::from_str(v.get()).map_err(|e| RoomRequestError::Malformed {
            kind: kind.to_string(),
            reason: e.to_string(),
        })
    }
    Ok(match kind {
        "invite" => RoomRequest::Invite(de(kind, inner)?),
        "disinvite" => RoomRequest::Disinvite(de(kind, inner)?),
        "update" => RoomRequest::Update(de(kind, inner)?),
        "delete" => RoomRequest::Delete(de(kind, inner)?),
        "participants" => RoomRequest::Participants(de(kind, inner)?),
        "incall" => RoomRequest::InCall(de(kind, inner)?),
        "message" => RoomRequest::Message(de(kind, inner)?),
        "switchto" => RoomRequest::SwitchTo(de(kind, inner)?),
        _ => RoomRequest::Dialout(inner.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_types_and_refuses_others() {
        let r = parse_room_request(br#"{"type":"invite","invite":{"userids":["a"],"alluserids":["a","b"],"properties":{"name":"x"}}}"#)
            .expect("valid");
        assert!(matches!(r, RoomRequest::Invite(ref i) if i.userids == ["a"]));
        assert_eq!(
            parse_room_request(br#"{"type":"transient","transient":{}}"#).err(),
            Some(RoomRequestError::Unsupported("transient".into()))
        );
        assert_eq!(
            parse_room_request(br#"{"type":"update"}"#).err(),
            Some(RoomRequestError::MissingBody("update".into()))
        );
        assert!(matches!(
            parse_room_request(b"\xff"),
            Err(RoomRequestError::NotJson(_))
        ));
        assert!(matches!(
            parse_room_request(br#"{"type":"incall","incall":{"all":"yes"}}"#),
            Err(RoomRequestError::Malformed { .. })
        ));
    }

    #[test]
    fn in_call_accepts_bool_and_int() {
        assert_eq!(in_call_flags(&Value::Bool(true)), 1);
        assert_eq!(in_call_flags(&serde_json::json!(7)), 7);
        assert_eq!(in_call_flags(&Value::Null), 0);
    }
}
