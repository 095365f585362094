//! Error codes (RFC 9113 section 7) and the error a stream or connection
//! ends with, classified the way a proxy decides on retries: who ended it
//! (the peer or us), and whether a stream was reset or the connection lost.

use std::fmt;
use std::sync::Arc;

/// An HTTP/2 error code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The code's name, or `None` for a code RFC 9113 does not define.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl From<u32> for Reason {
    fn from(code: u32) -> Self {
        Reason(code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Who ended a stream or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// The peer: it reset the stream or sent GOAWAY.
    Remote,
    /// This end, because the peer broke the protocol (or the caller asked).
    Local,
}

/// Why a stream or connection ended.
#[derive(Clone, Debug)]
pub enum Error {
    /// The stream was reset (RST_STREAM).
    Reset(Reason, Initiator),
    /// The connection was closed with GOAWAY; for a stream, it was above the
    /// last stream id the GOAWAY let finish (so the peer never processed it).
    GoAway(Reason, Initiator),
    /// The connection failed: an I/O error, or it closed without GOAWAY.
    Io(Arc<str>),
    /// The caller used the stream or connection in a way it does not allow
    /// (sent after the end, opened a stream on a closed connection).
    User(&'static str),
}

impl Error {
    /// The error code, when a frame carried one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Reset(r, _) | Error::GoAway(r, _) => Some(*r),
            _ => None,
        }
    }

    /// Whether the peer ended it (RST_STREAM or GOAWAY from the other side).
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Error::Reset(_, Initiator::Remote) | Error::GoAway(_, Initiator::Remote)
        )
    }

    /// Whether this end closed it, because the peer broke the protocol.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Error::Reset(_, Initiator::Local) | Error::GoAway(_, Initiator::Local)
        )
    }

    pub fn is_reset(&self) -> bool {
        matches!(self, Error::Reset(..))
    }

    pub fn is_go_away(&self) -> bool {
        matches!(self, Error::GoAway(..))
    }

    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io(_))
    }

    pub(crate) fn io(e: &std::io::Error) -> Self {
        Error::Io(e.to_string().into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reset(r, Initiator::Remote) => write!(f, "stream reset by peer: {r}"),
            Error::Reset(r, Initiator::Local) => write!(f, "stream reset: {r}"),
            Error::GoAway(r, Initiator::Remote) => write!(f, "connection closed by peer: {r}"),
            Error::GoAway(r, Initiator::Local) => write!(f, "connection closed: {r}"),
            Error::Io(e) => write!(f, "connection failed: {e}"),
            Error::User(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}
