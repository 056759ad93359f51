//! The commands the signaling server sends to the media plane (the SFU) and what comes back:
//! serde types, so the same command travels in-process on one node and over NATS between
//! nodes. Sessions are named by their public signaling id; a stream is one
//! (publisher session, [`StreamType`]) pair, as in Janus' videoroom that Talk expects.

use serde::{Deserialize, Serialize};

/// What a publisher publishes: the camera/microphone stream or a screen share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    Video,
    Screen,
}

impl StreamType {
    /// The `roomType` value of Talk's signaling messages (`"video"`, `"screen"`).
    pub fn from_room_type(s: &str) -> Option<StreamType> {
        match s {
            "video" => Some(StreamType::Video),
            "screen" => Some(StreamType::Screen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Video => "video",
            StreamType::Screen => "screen",
        }
    }
}

/// A trickled ICE candidate in Talk's shape (`candidate`, `sdpMid`, `sdpMLineIndex`); an
/// empty `candidate` is the end-of-candidates marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u32>,
}

/// Simulcast layer and media selection of a subscriber (`selectStream`, `requestoffer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Spatial layer 0 (lowest) to 2; `None` = the best the subscriber can take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substream: Option<u8>,
    /// Temporal layer 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<bool>,
}

/// A request to the media plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum McuCommand {
    /// A client's offer to its own session: publish (or renegotiate, same `sid`) a stream.
    Publish {
        session: String,
        stream: StreamType,
        sid: String,
        sdp: String,
        /// Bits/s cap for this stream (client value capped by backend and SFU limits).
        max_bitrate: u64,
    },
    /// `requestoffer`/`sendoffer`: make (or renegotiate, same `sid`) a subscription of
    /// `subscriber` to the stream of `publisher`; the SFU is the offerer.
    Subscribe {
        subscriber: String,
        publisher: String,
        stream: StreamType,
        /// The subscriber's current sid; empty or different = a fresh subscription.
        sid: String,
        selection: Selection,
    },
    /// The subscriber's answer to the SFU's offer.
    SubscriberAnswer {
        subscriber: String,
        publisher: String,
        stream: StreamType,
        sid: String,
        sdp: String,
    },
    /// A trickled candidate from a client: for its own publisher (`publisher` == `session`)
    /// or for its subscription to `publisher`.
    Candidate {
        session: String,
        publisher: String,
        stream: StreamType,
        sid: String,
        candidate: IceCandidate,
    },
    SelectStream {
        subscriber: String,
        publisher: String,
        stream: StreamType,
        selection: Selection,
    },
    /// Close one published stream (its subscribers are told with [`McuEvent::PublisherClosed`]).
    Unpublish { session: String, stream: StreamType },
    /// The session left the call or the room: close everything it publishes or subscribes.
    CloseSession { session: String },
}

/// Why the media plane refused a command; `code` is the client error code to send
/// (`client_not_found`, `processing_failed`, `invalid_sdp`, `not_allowed`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McuError {
    pub code: String,
    pub message: String,
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum McuReply {
    /// The SDP answer for a publisher.
    Answer {
        sdp: String,
    },
    /// The SFU's SDP offer for a subscriber, with the subscription's sid.
    Offer {
        sdp: String,
        sid: String,
    },
    Done,
    Error(McuError),
}

/// Things the media plane tells the signaling server on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum McuEvent {
    /// A server-side candidate for the connection of `session` (its publisher when
    /// `publisher` == `session`, else its subscription to `publisher`).
    Candidate {
        session: String,
        publisher: String,
        stream: StreamType,
        sid: String,
        candidate: IceCandidate,
    },
    /// A renegotiation offer for a subscriber (`update-sdp`), to be answered.
    Offer {
        subscriber: String,
        publisher: String,
        stream: StreamType,
        sid: String,
        sdp: String,
    },
    /// A publisher's connection is up (Janus' `webrtcup`): waiting subscribers may proceed.
    PublisherUp { session: String, stream: StreamType },
    /// A published stream ended (unpublished, failed or timed out).
    PublisherClosed { session: String, stream: StreamType },
    /// A subscription ended on the SFU's side.
    SubscriberClosed {
        subscriber: String,
        publisher: String,
        stream: StreamType,
    },
    /// Janus' `media` event: a publisher's audio or video started or stopped arriving
    /// (stopped: nothing for a second, e.g. a muted camera or a stalled uplink).
    MediaReceiving {
        session: String,
        stream: StreamType,
        kind: MediaKind,
        receiving: bool,
    },
    /// Janus' `slowlink` event: the connection of `session` (its publisher when `publisher`
    /// == `session`, else its subscription to `publisher`) is losing packets: `nacks`
    /// retransmission requests in the last second, on the client's uplink (`uplink`:
    /// packets from it get lost) or downlink.
    SlowLink {
        session: String,
        publisher: String,
        stream: StreamType,
        uplink: bool,
        nacks: u64,
    },
}

/// The kind of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_json() {
        let c = McuCommand::Subscribe {
            subscriber: "s".into(),
            publisher: "p".into(),
            stream: StreamType::Screen,
            sid: String::new(),
            selection: Selection {
                substream: Some(1),
                ..Selection::default()
            },
        };
        let json = serde_json::to_string(&c).expect("serializes");
        assert!(json.contains(r#""type":"subscribe""#), "{json}");
        assert!(json.contains(r#""stream":"screen""#), "{json}");
        assert_eq!(
            serde_json::from_str::<McuCommand>(&json).expect("parses"),
            c
        );
        let cand: IceCandidate = serde_json::from_str(
            r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
        )
        .expect("Talk's candidate shape");
        assert_eq!(cand.sdp_mline_index, Some(0));
        assert_eq!(
            StreamType::from_room_type("screen"),
            Some(StreamType::Screen)
        );
        assert_eq!(StreamType::from_room_type("audio"), None);
    }
}
