//! The error codes of the client API (reference §1.13). Clients switch on these strings,
//! so they are kept exactly; the explanation for humans goes into the message.

use serde::{Serialize, Serializer};

/// One upstream error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidFormat,
    HelloExpected,
    InvalidHelloVersion,
    InvalidClientType,
    InvalidBackend,
    InvalidToken,
    TokenNotValidYet,
    TokenExpired,
    AuthFailed,
    TooManyRequests,
    NoSuchSession,
    SessionLimitExceeded,
    AlreadyJoined,
    RoomJoinFailed,
    FederationUnsupported,
    FederationError,
    NotAllowed,
    NotInRoom,
    Ignored,
    AddFailed,
    RemoveFailed,
    InternalError,
    ProcessingFailed,
    ClientNotFound,
    // MCU payload validation (reference §1.10).
    NoSdp,
    InvalidSdp,
    NoCandidate,
    InvalidCandidate,
    // Codes Nextcloud answers with, forwarded to the client.
    InvalidRequest,
    InvalidTicket,
    NoSuchUser,
    NoSuchRoom,
    DuplicateSession,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::HelloExpected => "hello_expected",
            ErrorCode::InvalidHelloVersion => "invalid_hello_version",
            ErrorCode::InvalidClientType => "invalid_client_type",
            ErrorCode::InvalidBackend => "invalid_backend",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenNotValidYet => "token_not_valid_yet",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::NoSuchSession => "no_such_session",
            ErrorCode::SessionLimitExceeded => "session_limit_exceeded",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::RoomJoinFailed => "room_join_failed",
            ErrorCode::FederationUnsupported => "federation_unsupported",
            ErrorCode::FederationError => "federation_error",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::Ignored => "ignored",
            ErrorCode::AddFailed => "add_failed",
            ErrorCode::RemoveFailed => "remove_failed",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::ProcessingFailed => "processing_failed",
            ErrorCode::ClientNotFound => "client_not_found",
            ErrorCode::NoSdp => "no_sdp",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoCandidate => "no_candidate",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidTicket => "invalid_ticket",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::NoSuchRoom => "no_such_room",
            ErrorCode::DuplicateSession => "duplicate_session",
        }
    }

    /// The code of a media-plane refusal (`McuError::code`), if clients know it.
    pub fn from_mcu(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "client_not_found" => ErrorCode::ClientNotFound,
            "processing_failed" => ErrorCode::ProcessingFailed,
            "not_allowed" => ErrorCode::NotAllowed,
            "no_sdp" => ErrorCode::NoSdp,
            "invalid_sdp" => ErrorCode::InvalidSdp,
            "no_candidate" => ErrorCode::NoCandidate,
            "invalid_candidate" => ErrorCode::InvalidCandidate,
            "internal_error" => ErrorCode::InternalError,
            _ => return None,
        })
    }

    /// The code for an error Nextcloud answered with, if clients know it.
    pub fn from_backend(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_ticket" => ErrorCode::InvalidTicket,
            "no_such_user" => ErrorCode::NoSuchUser,
            "no_such_room" => ErrorCode::NoSuchRoom,
            "duplicate_session" => ErrorCode::DuplicateSession,
            _ => return None,
        })
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
