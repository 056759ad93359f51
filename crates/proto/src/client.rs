//! Messages a client sends on `/spreed` (reference §1.2–§1.12), and their validation.
//! `parse` turns one text frame into a checked [`ClientMessage`] or a [`ParseError`]
//! carrying the upstream error code and a message that says what was wrong.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::backend_url;
use crate::error_code::ErrorCode;

/// One parsed, validated client frame.
#[derive(Debug)]
pub struct ClientMessage {
    pub id: Option<String>,
    pub body: ClientBody,
}

/// The payload of a client frame, by `type`.
#[derive(Debug)]
pub enum ClientBody {
    Hello(Hello),
    Bye,
    Room(RoomRequest),
    Message(RelayMessage),
    Control(RelayMessage),
    Internal(InternalMessage),
    Transient(TransientMessage),
    /// A `type` we do not know: ignored after hello, like upstream.
    Unknown(String),
}

impl ClientBody {
    pub fn kind(&self) -> &str {
        match self {
            ClientBody::Hello(_) => "hello",
            ClientBody::Bye => "bye",
            ClientBody::Room(_) => "room",
            ClientBody::Message(_) => "message",
            ClientBody::Control(_) => "control",
            ClientBody::Internal(_) => "internal",
            ClientBody::Transient(_) => "transient",
            ClientBody::Unknown(k) => k,
        }
    }
}

/// A frame that was refused, with the request id when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl ParseError {
    fn new(id: &Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id: id.clone(),
            code,
            message: message.into(),
        }
    }
}

/// The two hello versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloVersion {
    V1,
    V2,
}

impl HelloVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HelloVersion::V1 => "1.0",
            HelloVersion::V2 => "2.0",
        }
    }
}

/// A validated hello.
#[derive(Debug)]
pub struct Hello {
    pub version: HelloVersion,
    pub features: Vec<String>,
    pub kind: HelloKind,
}

/// What the hello asks for.
#[derive(Debug)]
pub enum HelloKind {
    Resume {
        resume_id: String,
    },
    /// A Talk client; `url` is the canonical Nextcloud base URL, `params` verbatim.
    Client {
        url: url::Url,
        params: Box<RawValue>,
    },
    /// A federated client (`auth.type: federation`).
    Federation {
        url: url::Url,
        params: Box<RawValue>,
    },
    Internal(InternalAuth),
}

/// Parameters of an internal-client hello.
#[derive(Debug, Deserialize)]
pub struct InternalAuth {
    #[serde(default)]
    pub random: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub backend: String,
}

/// Parameters of a v2 (JWT) hello.
#[derive(Debug, Deserialize)]
pub struct TokenParams {
    #[serde(default)]
    pub token: String,
}

/// A `room` request: join (`roomid` set) or leave (`roomid` empty).
#[derive(Debug, Deserialize)]
pub struct RoomRequest {
    #[serde(default)]
    pub roomid: String,
    #[serde(default)]
    pub sessionid: String,
    #[serde(default)]
    pub federation: Option<FederationJoin>,
}

/// The `federation` part of a room join.
#[derive(Debug, Deserialize, Clone)]
pub struct FederationJoin {
    #[serde(default)]
    pub signaling: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub roomid: String,
    #[serde(default)]
    pub token: String,
}

/// Who a relayed message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Session(String),
    User(String),
    Room,
    Call,
}

/// `message` and `control` bodies.
#[derive(Debug)]
pub struct RelayMessage {
    pub recipient: Recipient,
    pub data: Box<RawValue>,
}

/// `internal` messages (internal clients only).
#[derive(Debug)]
pub enum InternalMessage {
    AddSession(AddSession),
    UpdateSession(UpdateSession),
    RemoveSession(RemoveSession),
    InCall {
        incall: i64,
    },
    /// A SIP bridge's dial-out reply or call status (reference §1.12).
    Dialout(Dialout),
    /// Other internal types; ignored.
    Other(String),
}

/// `internal.dialout` from a SIP bridge: `type` `status` (with `status`), `error` (with
/// `error`) or another type, passed on to the room as it came.
#[derive(Debug)]
pub struct Dialout {
    pub kind: String,
    /// The room the call is for (stripped before anything goes to the room).
    pub roomid: String,
    /// The call's status object (`callid`, `status`, `cause`, `code`, `message`).
    pub status: Option<DialoutStatus>,
    /// The `dialout` object without `roomid`.
    pub rest: Box<RawValue>,
}

/// The fields of a dial-out status that the server looks at; `raw` is all of it.
#[derive(Debug)]
pub struct DialoutStatus {
    pub callid: String,
    pub status: String,
    pub raw: Box<RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct AddSession {
    pub sessionid: String,
    pub roomid: String,
    #[serde(default)]
    pub userid: String,
    #[serde(default)]
    pub user: Option<Box<RawValue>>,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub incall: Option<i64>,
    #[serde(default)]
    pub options: Option<AddSessionOptions>,
}

#[derive(Debug, Deserialize, Clone, Default)]
pub struct AddSessionOptions {
    #[serde(default, rename = "actorId")]
    pub actor_id: String,
    #[serde(default, rename = "actorType")]
    pub actor_type: String,
}

#[derive(Debug, Deserialize)]
pub struct UpdateSession {
    pub sessionid: String,
    pub roomid: String,
    #[serde(default)]
    pub flags: Option<u32>,
    #[serde(default)]
    pub incall: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct RemoveSession {
    pub sessionid: String,
    pub roomid: String,
    #[serde(default)]
    pub userid: String,
}

/// `transient` requests.
#[derive(Debug)]
pub enum TransientMessage {
    Set {
        key: String,
        value: Box<RawValue>,
        /// Time to live in nanoseconds (0 = forever).
        ttl_ns: i64,
    },
    Remove {
        key: String,
    },
    Other(String),
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, borrow)]
    hello: Option<&'a RawValue>,
    #[serde(default, borrow)]
    bye: Option<&'a RawValue>,
    #[serde(default, borrow)]
    room: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    control: Option<&'a RawValue>,
    #[serde(default, borrow)]
    internal: Option<&'a RawValue>,
    #[serde(default, borrow)]
    transient: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawHello<'a> {
    #[serde(default)]
    version: String,
    #[serde(default)]
    resumeid: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default, borrow)]
    auth: Option<RawAuth<'a>>,
}

#[derive(Deserialize)]
struct RawAuth<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawRelay<'a> {
    #[serde(default)]
    recipient: Option<RawRecipient>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawRecipient {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    sessionid: String,
    #[serde(default)]
    userid: String,
}

#[derive(Deserialize)]
struct RawInternal<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    addsession: Option<&'a RawValue>,
    #[serde(default, borrow)]
    updatesession: Option<&'a RawValue>,
    #[serde(default, borrow)]
    removesession: Option<&'a RawValue>,
    #[serde(default, borrow)]
    incall: Option<&'a RawValue>,
    #[serde(default, borrow)]
    dialout: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawDialoutStatus {
    #[serde(default)]
    callid: String,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct RawInCall {
    #[serde(default)]
    incall: i64,
}

#[derive(Deserialize)]
struct RawTransient<'a> {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    key: String,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
    #[serde(default)]
    ttl: i64,
}

fn is_null_or_empty(v: Option<&RawValue>) -> bool {
    match v {
        None => true,
        Some(v) => matches!(v.get().trim(), "null" | "{}" | "\"\"" | "[]"),
    }
}

fn body<'a, T: Deserialize<'a>>(
    id: &Option<String>,
    kind: &str,
    raw: &'a RawValue,
) -> Result<T, ParseError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        ParseError::new(
            id,
            ErrorCode::InvalidFormat,
            format!("the \"{kind}\" body is malformed: {e}"),
        )
    })
}

/// Parse and validate one client text frame.
pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    let frame: RawFrame<'_> = serde_json::from_str(text).map_err(|e| ParseError {
        id: None,
        code: ErrorCode::InvalidFormat,
        message: format!("the message is not a valid JSON object: {e}"),
    })?;
    let id = frame.id;
    let Some(kind) = frame.kind.filter(|k| !k.is_empty()) else {
        return Err(ParseError::new(
            &id,
            ErrorCode::InvalidFormat,
            "the message has no \"type\"",
        ));
    };
    let missing = |k: &str| {
        ParseError::new(
            &id,
            ErrorCode::InvalidFormat,
            format!("a message of type \"{k}\" needs a \"{k}\" object"),
        )
    };
    let body = match kind.as_str() {
        "hello" => ClientBody::Hello(parse_hello(
            &id,
            frame.hello.ok_or_else(|| missing("hello"))?,
        )?),
        "bye" => {
            let _ = frame.bye;
            ClientBody::Bye
        }
        "room" => ClientBody::Room(body(
            &id,
            "room",
            frame.room.ok_or_else(|| missing("room"))?,
        )?),
        "message" => ClientBody::Message(parse_relay(
            &id,
            "message",
            frame.message.ok_or_else(|| missing("message"))?,
        )?),
        "control" => ClientBody::Control(parse_relay(
            &id,
            "control",
            frame.control.ok_or_else(|| missing("control"))?,
        )?),
        "internal" => ClientBody::Internal(parse_internal(
            &id,
            frame.internal.ok_or_else(|| missing("internal"))?,
        )?),
        "transient" => ClientBody::Transient(parse_transient(
            &id,
            frame.transient.ok_or_else(|| missing("transient"))?,
        )?),
        other => ClientBody::Unknown(other.to_string()),
    };
    Ok(ClientMessage { id, body })
}

fn parse_hello(id: &Option<String>, raw: &RawValue) -> Result<Hello, ParseError> {
    let h: RawHello<'_> = body(id, "hello", raw)?;
    let version = match h.version.as_str() {
        "1.0" => HelloVersion::V1,
        "2.0" => HelloVersion::V2,
        other => {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidHelloVersion,
                format!("hello version \"{other}\" is not supported; use \"1.0\" or \"2.0\""),
            ));
        }
    };
    if !h.resumeid.is_empty() {
        return Ok(Hello {
            version,
            features: h.features,
            kind: HelloKind::Resume {
                resume_id: h.resumeid,
            },
        });
    }
    let Some(auth) = h.auth else {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidFormat,
            "hello needs \"auth\" (or a \"resumeid\" to resume a session)",
        ));
    };
    if is_null_or_empty(auth.params) {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidFormat,
            "hello \"auth.params\" is missing or empty",
        ));
    }
    let params = auth
        .params
        .map(RawValue::to_owned)
        .unwrap_or_else(empty_object);
    let auth_kind = if auth.kind.is_empty() {
        "client"
    } else {
        auth.kind.as_str()
    };
    let canonical_url = |u: &str| {
        if u.is_empty() {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                "hello \"auth.url\" is missing",
            ));
        }
        backend_url::canonical(u).map_err(|e| {
            ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("hello \"auth.url\" is invalid: {e}"),
            )
        })
    };
    // Upstream validates the v2 token parameter with the message: a missing token is a
    // malformed hello (`invalid_format`), not an invalid token.
    let check_v2_params = |params: &RawValue| {
        if version != HelloVersion::V2 {
            return Ok(());
        }
        let p: TokenParams = body(id, "hello.auth.params", params)?;
        if p.token.is_empty() {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                "hello v2 needs \"auth.params.token\" (the JWT from Talk's signaling settings)",
            ));
        }
        Ok(())
    };
    let kind = match auth_kind {
        "client" => {
            let url = canonical_url(&auth.url)?;
            check_v2_params(&params)?;
            HelloKind::Client { url, params }
        }
        "federation" => {
            let url = canonical_url(&auth.url)?;
            check_v2_params(&params)?;
            HelloKind::Federation { url, params }
        }
        "internal" => {
            let p: InternalAuth = body(id, "hello.auth.params", &params)?;
            if p.backend.is_empty() {
                return Err(ParseError::new(
                    id,
                    ErrorCode::InvalidFormat,
                    "internal hello needs \"auth.params.backend\"",
                ));
            }
            HelloKind::Internal(p)
        }
        other => {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("unsupported auth type \"{other}\"; use client, internal or federation"),
            ));
        }
    };
    Ok(Hello {
        version,
        features: h.features,
        kind,
    })
}

fn empty_object() -> Box<RawValue> {
    match RawValue::from_string("{}".to_string()) {
        Ok(v) => v,
        Err(_) => unreachable!("{{}} is valid JSON"),
    }
}

fn parse_relay(
    id: &Option<String>,
    kind: &str,
    raw: &RawValue,
) -> Result<RelayMessage, ParseError> {
    let m: RawRelay<'_> = body(id, kind, raw)?;
    let Some(r) = m.recipient else {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidFormat,
            format!("{kind} needs a \"recipient\""),
        ));
    };
    let Some(data) = m.data.filter(|d| d.get().trim() != "null") else {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidFormat,
            format!("{kind} needs \"data\""),
        ));
    };
    let recipient = match r.kind.as_str() {
        "session" if r.sessionid.is_empty() => {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                "recipient type \"session\" needs a \"sessionid\"",
            ));
        }
        "session" => Recipient::Session(r.sessionid),
        "user" if r.userid.is_empty() => {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                "recipient type \"user\" needs a \"userid\"",
            ));
        }
        "user" => Recipient::User(r.userid),
        "room" => Recipient::Room,
        "call" => Recipient::Call,
        other => {
            return Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("unsupported recipient type \"{other}\"; use session, user, room or call"),
            ));
        }
    };
    Ok(RelayMessage {
        recipient,
        data: data.to_owned(),
    })
}

fn parse_internal(id: &Option<String>, raw: &RawValue) -> Result<InternalMessage, ParseError> {
    let m: RawInternal<'_> = body(id, "internal", raw)?;
    fn need<'v>(
        id: &Option<String>,
        v: Option<&'v RawValue>,
        k: &str,
    ) -> Result<&'v RawValue, ParseError> {
        v.ok_or_else(|| {
            ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("internal message of type \"{k}\" needs a \"{k}\" object"),
            )
        })
    }
    let check_ids = |sid: &str, rid: &str, k: &str| {
        if sid.is_empty() || rid.is_empty() {
            Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("internal {k} needs \"sessionid\" and \"roomid\""),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match m.kind.as_str() {
        "addsession" => {
            let a: AddSession = body(id, "addsession", need(id, m.addsession, "addsession")?)?;
            check_ids(&a.sessionid, &a.roomid, "addsession")?;
            InternalMessage::AddSession(a)
        }
        "updatesession" => {
            let u: UpdateSession = body(
                id,
                "updatesession",
                need(id, m.updatesession, "updatesession")?,
            )?;
            check_ids(&u.sessionid, &u.roomid, "updatesession")?;
            InternalMessage::UpdateSession(u)
        }
        "removesession" => {
            let r: RemoveSession = body(
                id,
                "removesession",
                need(id, m.removesession, "removesession")?,
            )?;
            check_ids(&r.sessionid, &r.roomid, "removesession")?;
            InternalMessage::RemoveSession(r)
        }
        "incall" => {
            let c: RawInCall = body(id, "incall", need(id, m.incall, "incall")?)?;
            InternalMessage::InCall { incall: c.incall }
        }
        "dialout" => InternalMessage::Dialout(parse_dialout(id, need(id, m.dialout, "dialout")?)?),
        other => InternalMessage::Other(other.to_string()),
    })
}

fn parse_dialout(id: &Option<String>, raw: &RawValue) -> Result<Dialout, ParseError> {
    let invalid = |msg: String| ParseError::new(id, ErrorCode::InvalidFormat, msg);
    let mut fields: serde_json::Map<String, serde_json::Value> = body(id, "dialout", raw)?;
    let kind = match fields.get("type") {
        Some(serde_json::Value::String(k)) if !k.is_empty() => k.clone(),
        _ => {
            return Err(invalid(
                "internal dialout needs a \"type\" (status or error)".into(),
            ));
        }
    };
    let roomid = match fields.remove("roomid") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(r)) => r,
        Some(other) => {
            return Err(invalid(format!(
                "dialout \"roomid\" must be a string, not {other}"
            )));
        }
    };
    let need_object = |k: &str| match fields.get(k) {
        Some(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(invalid(format!(
            "internal dialout of type \"{k}\" needs a \"{k}\" object"
        ))),
    };
    let status = match kind.as_str() {
        "status" => {
            let v = need_object("status")?;
            let s: RawDialoutStatus = serde_json::from_value(v.clone())
                .map_err(|e| invalid(format!("dialout \"status\" is malformed: {e}")))?;
            if s.callid.is_empty() || s.status.is_empty() {
                return Err(invalid(
                    "dialout \"status\" needs a \"callid\" and a \"status\"".into(),
                ));
            }
            let raw = serde_json::value::to_raw_value(v)
                .map_err(|e| invalid(format!("dialout \"status\": {e}")))?;
            Some(DialoutStatus {
                callid: s.callid,
                status: s.status,
                raw,
            })
        }
        "error" => {
            need_object("error")?;
            None
        }
        _ => None,
    };
    let rest =
        serde_json::value::to_raw_value(&fields).map_err(|e| invalid(format!("dialout: {e}")))?;
    Ok(Dialout {
        kind,
        roomid,
        status,
        rest,
    })
}

fn parse_transient(id: &Option<String>, raw: &RawValue) -> Result<TransientMessage, ParseError> {
    let t: RawTransient<'_> = body(id, "transient", raw)?;
    let need_key = || {
        if t.key.is_empty() {
            Err(ParseError::new(
                id,
                ErrorCode::InvalidFormat,
                format!("transient \"{}\" needs a \"key\"", t.kind),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match t.kind.as_str() {
        "set" => {
            need_key()?;
            match t.value {
                Some(v) if v.get().trim() != "null" => TransientMessage::Set {
                    key: t.key.clone(),
                    value: v.to_owned(),
                    ttl_ns: t.ttl.max(0),
                },
                _ => TransientMessage::Remove { key: t.key.clone() },
            }
        }
        "remove" => {
            need_key()?;
            TransientMessage::Remove { key: t.key.clone() }
        }
        other => TransientMessage::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Err(e) => e,
            Ok(m) => panic!("expected an error for {text}, got {m:?}"),
        }
    }

    #[test]
    fn garbage_is_invalid_format() {
        assert_eq!(err("not json").code, ErrorCode::InvalidFormat);
        assert_eq!(err("[1,2]").code, ErrorCode::InvalidFormat);
        assert_eq!(err("{}").code, ErrorCode::InvalidFormat);
        let e = err(r#"{"id":"7","type":"hello"}"#);
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::InvalidFormat, Some("7"))
        );
    }

    #[test]
    fn hello_versions_and_auth() {
        assert_eq!(
            err(r#"{"type":"hello","hello":{"version":"3.0","resumeid":"x"}}"#).code,
            ErrorCode::InvalidHelloVersion
        );
        assert_eq!(
            err(r#"{"type":"hello","hello":{"version":"1.0","auth":{"url":"https://c/"}}}"#).code,
            ErrorCode::InvalidFormat
        );
        let m = parse(
            r#"{"id":"1","type":"hello","hello":{"version":"1.0","auth":{"url":"https://C.example/ocs/v2.php/apps/spreed/api/v3/signaling/backend","params":{"userid":"a","ticket":"t"}}}}"#,
        )
        .expect("valid");
        match m.body {
            ClientBody::Hello(Hello {
                kind: HelloKind::Client { url, .. },
                ..
            }) => {
                assert_eq!(url.as_str(), "https://c.example/")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err(r#"{"type":"hello","hello":{"version":"1.0","auth":{"type":"magic","url":"https://c/","params":{"a":1}}}}"#).code,
            ErrorCode::InvalidFormat
        );
    }

    #[test]
    fn hello_v2_needs_a_token() {
        for auth_type in ["client", "federation"] {
            let no_token = format!(
                r#"{{"id":"2","type":"hello","hello":{{"version":"2.0","auth":{{"type":"{auth_type}","url":"https://c/","params":{{"userid":"a","ticket":"t"}}}}}}}}"#
            );
            let e = err(&no_token);
            assert_eq!(
                (e.code, e.id.as_deref()),
                (ErrorCode::InvalidFormat, Some("2"))
            );
            assert!(e.message.contains("auth.params.token"), "{}", e.message);
            let bad_type = format!(
                r#"{{"type":"hello","hello":{{"version":"2.0","auth":{{"type":"{auth_type}","url":"https://c/","params":{{"token":7}}}}}}}}"#
            );
            assert_eq!(err(&bad_type).code, ErrorCode::InvalidFormat);
        }
        // v1 params are Talk's business, passed on verbatim.
        assert!(
            parse(r#"{"type":"hello","hello":{"version":"1.0","auth":{"url":"https://c/","params":{"x":1}}}}"#)
                .is_ok()
        );
    }

    #[test]
    fn relay_recipients_are_checked() {
        assert_eq!(
            err(r#"{"type":"message","message":{"recipient":{"type":"session"},"data":{}}}"#).code,
            ErrorCode::InvalidFormat
        );
        assert_eq!(
            err(r#"{"type":"message","message":{"recipient":{"type":"planet"},"data":{}}}"#).code,
            ErrorCode::InvalidFormat
        );
        let m =
            parse(r#"{"type":"message","message":{"recipient":{"type":"room"},"data":{"x":1}}}"#)
                .expect("valid");
        assert!(matches!(
            m.body,
            ClientBody::Message(RelayMessage {
                recipient: Recipient::Room,
                ..
            })
        ));
    }

    #[test]
    fn dialout_status_keeps_everything_but_the_room_id() {
        let m = parse(
            r#"{"id":"r1","type":"internal","internal":{"type":"dialout","dialout":{"type":"status","roomid":"12","status":{"callid":"c1","status":"ringing","code":180}}}}"#,
        )
        .expect("valid");
        assert_eq!(m.id.as_deref(), Some("r1"));
        let ClientBody::Internal(InternalMessage::Dialout(d)) = m.body else {
            panic!("a dialout: {:?}", m.body);
        };
        assert_eq!((d.kind.as_str(), d.roomid.as_str()), ("status", "12"));
        let st = d.status.expect("a status");
        assert_eq!((st.callid.as_str(), st.status.as_str()), ("c1", "ringing"));
        let raw: serde_json::Value = serde_json::from_str(st.raw.get()).expect("json");
        assert_eq!(raw["code"], 180);
        let rest: serde_json::Value = serde_json::from_str(d.rest.get()).expect("json");
        assert!(rest.get("roomid").is_none(), "{rest}");
        assert_eq!(rest["type"], "status");
    }

    #[test]
    fn malformed_dialouts_say_what_is_wrong() {
        for (dialout, says) in [
            (r#"{"roomid":"12"}"#, "\"type\""),
            (r#"{"type":"status","roomid":"12"}"#, "\"status\" object"),
            (
                r#"{"type":"status","status":{"callid":"c1"}}"#,
                "\"callid\" and a \"status\"",
            ),
            (r#"{"type":"error"}"#, "\"error\" object"),
            (r#"{"type":"x","roomid":12}"#, "must be a string"),
            (r#"[1]"#, "malformed"),
        ] {
            let text = format!(
                r#"{{"type":"internal","internal":{{"type":"dialout","dialout":{dialout}}}}}"#
            );
            let e = err(&text);
            assert_eq!(e.code, ErrorCode::InvalidFormat, "{dialout}");
            assert!(e.message.contains(says), "{dialout}: {}", e.message);
        }
        let e = err(r#"{"type":"internal","internal":{"type":"dialout"}}"#);
        assert!(e.message.contains("\"dialout\" object"), "{}", e.message);
    }

    #[test]
    fn transient_null_value_removes() {
        let m = parse(r#"{"type":"transient","transient":{"type":"set","key":"k","value":null}}"#)
            .expect("valid");
        assert!(matches!(
            m.body,
            ClientBody::Transient(TransientMessage::Remove { .. })
        ));
    }
}
