//! WebSocket close reasons: the close code and text a client is sent, and the label
//! `/metrics` counts them under. One list, used by the connection threads, the
//! dispatcher and the outbox alike. Knows nothing about sockets.

/// Why a connection ended, as counted in `natter_closes_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (close frame or EOF).
    Client,
    /// Server shutdown (1001).
    Shutdown,
    /// Protocol violation by the client (1002).
    Protocol,
    /// Invalid UTF-8 in a text frame (1007).
    InvalidUtf8,
    /// A frame or message over the size limit (1009).
    TooBig,
    /// The client stopped reading (1008 `slow consumer`).
    SlowConsumer,
    /// The client kept flooding (1008 `rate limit`).
    RateLimit,
    /// The token's `exp` passed (1008 `token expired`).
    TokenExpired,
    /// Nothing arrived for the heartbeat timeout.
    HeartbeatTimeout,
    /// The socket failed (reset, broken pipe).
    SocketError,
    /// A server fault (1011).
    Internal,
    /// A backend asked for it through the server API (1008 `disconnected`).
    Disconnected,
    /// The user was banned from the server (1008 `banned`).
    Banned,
}

impl CloseReason {
    pub const ALL: [CloseReason; 13] = [
        CloseReason::Client,
        CloseReason::Shutdown,
        CloseReason::Protocol,
        CloseReason::InvalidUtf8,
        CloseReason::TooBig,
        CloseReason::SlowConsumer,
        CloseReason::RateLimit,
        CloseReason::TokenExpired,
        CloseReason::HeartbeatTimeout,
        CloseReason::SocketError,
        CloseReason::Internal,
        CloseReason::Disconnected,
        CloseReason::Banned,
    ];
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Protocol => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::TooBig => "too_big",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateLimit => "rate_limit",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::SocketError => "socket_error",
            CloseReason::Internal => "internal",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Banned => "banned",
        }
    }
    /// The close code and reason text the client is sent, when one is sent at all.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseReason::Client | CloseReason::SocketError => None,
            CloseReason::Shutdown => Some((1001, "server shutting down")),
            CloseReason::Protocol => Some((1002, "protocol error")),
            CloseReason::InvalidUtf8 => Some((1007, "invalid utf-8")),
            CloseReason::TooBig => Some((1009, "message too big")),
            CloseReason::SlowConsumer => Some((1008, "slow consumer")),
            CloseReason::RateLimit => Some((1008, "rate limit")),
            CloseReason::TokenExpired => Some((1008, "token expired")),
            CloseReason::HeartbeatTimeout => Some((1008, "heartbeat timeout")),
            CloseReason::Internal => Some((1011, "internal error")),
            CloseReason::Disconnected => Some((1008, "disconnected by the server")),
            CloseReason::Banned => Some((1008, "banned from this server")),
        }
    }
}
