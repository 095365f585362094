//! HTTP/2 frames (RFC 9113 section 6): the 9-byte head, each type's payload
//! checked as the RFC asks (and the error it names when it is wrong), and
//! writers that append frames straight to a connection's output buffer.
//!
//! Parsing borrows the payload from the read buffer: nothing here allocates
//! except what a caller keeps (a DATA payload).

use bytes::{BufMut, BytesMut};

use crate::error::Reason;

/// Length of a frame head.
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's default, and its lowest allowed value.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;
/// The highest SETTINGS_MAX_FRAME_SIZE allowed.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (RFC 9113 section 6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The initial window of a connection and of each stream until SETTINGS say otherwise.
pub const DEFAULT_WINDOW: u32 = 65_535;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (RFC 9113 section 6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// A frame's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads a head from the first 9 bytes of `b` (which has at least 9).
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

/// A frame the peer got wrong, with the error RFC 9113 names for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A connection error: GOAWAY with this code.
    Connection(Reason, &'static str),
    /// A stream error: RST_STREAM on this stream with this code.
    Stream(u32, Reason, &'static str),
}

fn conn(reason: Reason, why: &'static str) -> FrameError {
    FrameError::Connection(reason, why)
}

/// Values of a SETTINGS frame, each present only if the frame set it (the
/// last value wins when one is repeated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    pub enable_connect_protocol: Option<bool>,
}

/// A parsed frame; payloads borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        end_stream: bool,
        /// The data without padding.
        data: &'a [u8],
        /// What the frame counts against flow control: its whole payload,
        /// padding included.
        flow_len: u32,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        /// The header block fragment, without padding and priority.
        fragment: &'a [u8],
        /// The frame makes its stream depend on itself (a stream error
        /// once the block is decoded; it must still be decoded).
        self_dependent: bool,
    },
    /// A valid PRIORITY frame: ignored (RFC 9113 deprecates the scheme).
    Priority,
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings {
        ack: bool,
        settings: Settings,
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: &'a [u8],
    },
    /// A frame of a type this end does not know: ignored (section 5.5).
    Unknown,
}

/// Strips the padding of a PADDED frame (DATA, HEADERS).
fn unpad(head: &Head, payload: &[u8]) -> Result<(usize, usize), FrameError> {
    if !head.has(flag::PADDED) {
        return Ok((0, payload.len()));
    }
    let Some(&pad) = payload.first() else {
        return Err(conn(
            Reason::FRAME_SIZE_ERROR,
            "padded frame without a pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(conn(
            Reason::PROTOCOL_ERROR,
            "padding as long as the frame's payload",
        ));
    }
    Ok((1, payload.len() - pad))
}

/// Parses a frame's payload (`payload.len() == head.len`).
pub fn parse<'a>(head: Head, payload: &'a [u8]) -> Result<Frame<'a>, FrameError> {
    let stream = head.stream;
    match head.kind {
        kind::DATA => {
            if stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
            }
            let (start, end) = unpad(&head, payload)?;
            Ok(Frame::Data {
                stream,
                end_stream: head.has(flag::END_STREAM),
                data: &payload[start..end],
                flow_len: head.len,
            })
        }
        kind::HEADERS => {
            if stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
            }
            let (mut start, end) = unpad(&head, payload)?;
            let mut self_dependent = false;
            if head.has(flag::PRIORITY) {
                if payload.len() < start + 5 {
                    return Err(conn(
                        Reason::FRAME_SIZE_ERROR,
                        "HEADERS too short for its priority",
                    ));
                }
                if end < start + 5 {
                    // Section 6.2: padding may not eat into the priority.
                    return Err(conn(
                        Reason::PROTOCOL_ERROR,
                        "padding longer than the header block",
                    ));
                }
                let p = &payload[start..start + 4];
                let dependency = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & MAX_WINDOW;
                self_dependent = dependency == stream;
                start += 5;
            }
            Ok(Frame::Headers {
                stream,
                end_stream: head.has(flag::END_STREAM),
                end_headers: head.has(flag::END_HEADERS),
                fragment: &payload[start..end],
                self_dependent,
            })
        }
        kind::PRIORITY => {
            if stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
            }
            if head.len != 5 {
                return Err(FrameError::Stream(
                    stream,
                    Reason::FRAME_SIZE_ERROR,
                    "PRIORITY of a length other than 5",
                ));
            }
            let dependency =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if dependency == stream {
                return Err(FrameError::Stream(
                    stream,
                    Reason::PROTOCOL_ERROR,
                    "stream depends on itself",
                ));
            }
            Ok(Frame::Priority)
        }
        kind::RST_STREAM => {
            if stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
            }
            if head.len != 4 {
                return Err(conn(
                    Reason::FRAME_SIZE_ERROR,
                    "RST_STREAM of a length other than 4",
                ));
            }
            Ok(Frame::RstStream {
                stream,
                reason: Reason(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ])),
            })
        }
        kind::SETTINGS => {
            if stream != 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
            }
            let ack = head.has(flag::ACK);
            if ack {
                if head.len != 0 {
                    return Err(conn(
                        Reason::FRAME_SIZE_ERROR,
                        "SETTINGS ACK with a payload",
                    ));
                }
                return Ok(Frame::Settings {
                    ack,
                    settings: Settings::default(),
                });
            }
            if !head.len.is_multiple_of(6) {
                return Err(conn(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS length not a multiple of 6",
                ));
            }
            let mut s = Settings::default();
            for p in payload.chunks_exact(6) {
                let id = u16::from_be_bytes([p[0], p[1]]);
                let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                match id {
                    setting::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                    setting::ENABLE_PUSH => {
                        if value > 1 {
                            return Err(conn(
                                Reason::PROTOCOL_ERROR,
                                "ENABLE_PUSH other than 0 or 1",
                            ));
                        }
                        s.enable_push = Some(value == 1);
                    }
                    setting::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                    setting::INITIAL_WINDOW_SIZE => {
                        if value > MAX_WINDOW {
                            return Err(conn(
                                Reason::FLOW_CONTROL_ERROR,
                                "INITIAL_WINDOW_SIZE above 2^31-1",
                            ));
                        }
                        s.initial_window_size = Some(value);
                    }
                    setting::MAX_FRAME_SIZE => {
                        if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                            return Err(conn(
                                Reason::PROTOCOL_ERROR,
                                "MAX_FRAME_SIZE outside 2^14..2^24-1",
                            ));
                        }
                        s.max_frame_size = Some(value);
                    }
                    setting::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                    setting::ENABLE_CONNECT_PROTOCOL => {
                        if value > 1 {
                            return Err(conn(
                                Reason::PROTOCOL_ERROR,
                                "ENABLE_CONNECT_PROTOCOL other than 0 or 1",
                            ));
                        }
                        s.enable_connect_protocol = Some(value == 1);
                    }
                    // Unknown settings are ignored (section 6.5.2).
                    _ => {}
                }
            }
            Ok(Frame::Settings { ack, settings: s })
        }
        kind::PUSH_PROMISE => Ok(Frame::PushPromise { stream }),
        kind::PING => {
            if stream != 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "PING on a stream"));
            }
            if head.len != 8 {
                return Err(conn(
                    Reason::FRAME_SIZE_ERROR,
                    "PING of a length other than 8",
                ));
            }
            let mut data = [0; 8];
            data.copy_from_slice(payload);
            Ok(Frame::Ping {
                ack: head.has(flag::ACK),
                payload: data,
            })
        }
        kind::GOAWAY => {
            if stream != 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
            }
            if head.len < 8 {
                return Err(conn(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8"));
            }
            Ok(Frame::GoAway {
                last_stream: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & MAX_WINDOW,
                reason: Reason(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ])),
                debug: &payload[8..],
            })
        }
        kind::WINDOW_UPDATE => {
            if head.len != 4 {
                return Err(conn(
                    Reason::FRAME_SIZE_ERROR,
                    "WINDOW_UPDATE of a length other than 4",
                ));
            }
            let increment =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if increment == 0 {
                return Err(if stream == 0 {
                    conn(
                        Reason::PROTOCOL_ERROR,
                        "WINDOW_UPDATE of 0 for the connection",
                    )
                } else {
                    FrameError::Stream(stream, Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                });
            }
            Ok(Frame::WindowUpdate { stream, increment })
        }
        kind::CONTINUATION => {
            if stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "CONTINUATION on stream 0"));
            }
            Ok(Frame::Continuation {
                stream,
                end_headers: head.has(flag::END_HEADERS),
                fragment: payload,
            })
        }
        _ => Ok(Frame::Unknown),
    }
}

/// Appends a frame head.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    let s = stream.to_be_bytes();
    dst.put_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        s[0],
        s[1],
        s[2],
        s[3],
    ]);
}

/// Rewrites the length of the head written at `at`.
pub fn patch_len(dst: &mut BytesMut, at: usize, len: usize) {
    dst[at] = (len >> 16) as u8;
    dst[at + 1] = (len >> 8) as u8;
    dst[at + 2] = len as u8;
}

/// Appends a DATA frame (no padding).
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(dst, data.len(), kind::DATA, flags, stream);
    dst.put_slice(data);
}

/// Appends a SETTINGS frame with these parameters.
pub fn put_settings(dst: &mut BytesMut, params: &[(u16, u32)]) {
    put_head(dst, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in params {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn put_ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&payload);
}

pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u32(reason.0);
    dst.put_slice(debug);
}

pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

pub fn put_rst(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Appends a HEADERS frame whose block `encode` writes straight after its
/// head, split into CONTINUATION frames when it is larger than
/// `max_frame_size`.
pub fn put_headers(
    dst: &mut BytesMut,
    stream: u32,
    end_stream: bool,
    max_frame_size: u32,
    encode: impl FnOnce(&mut BytesMut),
) {
    let at = dst.len();
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(dst, 0, kind::HEADERS, flags | flag::END_HEADERS, stream);
    encode(dst);
    let len = dst.len() - at - HEAD_LEN;
    let max = max_frame_size as usize;
    if len <= max {
        patch_len(dst, at, len);
        return;
    }
    // Rare: a block over one frame. The tail moves behind CONTINUATION heads.
    let tail = dst.split_off(at + HEAD_LEN + max);
    patch_len(dst, at, max);
    dst[at + 4] &= !flag::END_HEADERS;
    let mut chunks = tail.chunks(max).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { flag::END_HEADERS } else { 0 };
        put_head(dst, chunk.len(), kind::CONTINUATION, flags, stream);
        dst.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_head(&mut b, len, kind, flags, stream);
        b.put_slice(payload);
        b.to_vec()
    }

    fn parse_all(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
        let head = Head::parse(bytes);
        parse(head, &bytes[HEAD_LEN..])
    }

    #[test]
    fn heads_round_trip_and_ignore_the_reserved_bit() {
        let mut b = BytesMut::new();
        put_head(&mut b, 0x12_3456, kind::HEADERS, 0x25, 0x8000_0007);
        let head = Head::parse(&b);
        assert_eq!(
            head,
            Head {
                len: 0x12_3456,
                kind: kind::HEADERS,
                flags: 0x25,
                stream: 7
            }
        );
    }

    #[test]
    fn data_padding_is_stripped_and_counted() {
        let bytes = frame(
            8,
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            1,
            &[3, b'a', b'b', b'c', b'd', 0, 0, 0],
        );
        assert_eq!(
            parse_all(&bytes),
            Ok(Frame::Data {
                stream: 1,
                end_stream: true,
                data: b"abcd",
                flow_len: 8
            })
        );
        let bad = frame(3, kind::DATA, flag::PADDED, 1, &[3, 0, 0]);
        assert!(matches!(
            parse_all(&bad),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))
        ));
        let empty = frame(0, kind::DATA, flag::PADDED, 1, &[]);
        assert!(matches!(
            parse_all(&empty),
            Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))
        ));
        let zero = frame(1, kind::DATA, 0, 0, &[1]);
        assert!(matches!(
            parse_all(&zero),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))
        ));
    }

    #[test]
    fn headers_priority_and_padding_are_skipped() {
        let mut payload = vec![2]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 3, 16]); // depends on 3, weight 16
        payload.extend_from_slice(b"blk");
        payload.extend_from_slice(&[0, 0]);
        let bytes = frame(
            payload.len(),
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            5,
            &payload,
        );
        assert_eq!(
            parse_all(&bytes),
            Ok(Frame::Headers {
                stream: 5,
                end_stream: false,
                end_headers: true,
                fragment: b"blk",
                self_dependent: false
            })
        );
        let own = frame(5, kind::HEADERS, flag::PRIORITY, 3, &[0, 0, 0, 3, 0]);
        assert!(matches!(
            parse_all(&own),
            Ok(Frame::Headers {
                self_dependent: true,
                ..
            })
        ));
    }

    #[test]
    fn each_malformed_control_frame_gets_the_error_the_rfc_names() {
        use FrameError::{Connection as C, Stream as S};
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                frame(4, kind::PRIORITY, 0, 1, &[0; 4]),
                S(1, Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(5, kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 0]),
                S(1, Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(5, kind::PRIORITY, 0, 0, &[0; 5]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(3, kind::RST_STREAM, 0, 1, &[0; 3]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(4, kind::RST_STREAM, 0, 0, &[0; 4]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, 0, 1, &[0; 6]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(5, kind::SETTINGS, 0, 0, &[0; 5]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, flag::ACK, 0, &[0; 6]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
                C(Reason::FLOW_CONTROL_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0x3f, 0xff]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(6, kind::SETTINGS, 0, 0, &[0, 5, 1, 0, 0, 0]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(7, kind::PING, 0, 0, &[0; 7]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(8, kind::PING, 0, 1, &[0; 8]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(7, kind::GOAWAY, 0, 0, &[0; 7]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(8, kind::GOAWAY, 0, 1, &[0; 8]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(3, kind::WINDOW_UPDATE, 0, 0, &[0; 3]),
                C(Reason::FRAME_SIZE_ERROR, ""),
            ),
            (
                frame(4, kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(4, kind::WINDOW_UPDATE, 0, 3, &[0; 4]),
                S(3, Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(1, kind::CONTINUATION, 0, 0, &[0]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
            (
                frame(1, kind::HEADERS, 0, 0, &[0]),
                C(Reason::PROTOCOL_ERROR, ""),
            ),
        ];
        for (bytes, expected) in cases {
            let got = parse_all(&bytes);
            let same = match (&got, &expected) {
                (Err(C(a, _)), C(b, _)) => a == b,
                (Err(S(s, a, _)), S(t, b, _)) => s == t && a == b,
                _ => false,
            };
            assert!(
                same,
                "{:?}: got {got:?}, want {expected:?}",
                Head::parse(&bytes)
            );
        }
    }

    #[test]
    fn settings_keep_the_last_value_and_ignore_unknown_ids() {
        let payload = [
            0, 4, 0, 0, 1, 0, 0, 4, 0, 0, 2, 0, 0, 0x99, 0, 0, 0, 1, 0, 3, 0, 0, 0, 100,
        ];
        let bytes = frame(payload.len(), kind::SETTINGS, 0, 0, &payload);
        let Ok(Frame::Settings {
            ack: false,
            settings,
        }) = parse_all(&bytes)
        else {
            panic!("{:?}", parse_all(&bytes));
        };
        assert_eq!(settings.initial_window_size, Some(512));
        assert_eq!(settings.max_concurrent_streams, Some(100));
        assert_eq!(settings.max_frame_size, None);
    }

    #[test]
    fn unknown_frame_types_parse_as_unknown() {
        let bytes = frame(3, 0xfa, 0xff, 9, &[1, 2, 3]);
        assert_eq!(parse_all(&bytes), Ok(Frame::Unknown));
    }

    #[test]
    fn large_header_blocks_are_split_into_continuations() {
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut dst = BytesMut::new();
        put_headers(&mut dst, 3, true, 16_384, |d| d.put_slice(&block));
        let mut at = 0;
        let mut joined = Vec::new();
        let mut kinds = Vec::new();
        while at < dst.len() {
            let head = Head::parse(&dst[at..]);
            kinds.push((head.kind, head.flags));
            joined.extend_from_slice(&dst[at + HEAD_LEN..at + HEAD_LEN + head.len as usize]);
            at += HEAD_LEN + head.len as usize;
        }
        assert_eq!(joined, block);
        assert_eq!(
            kinds,
            [
                (kind::HEADERS, flag::END_STREAM),
                (kind::CONTINUATION, 0),
                (kind::CONTINUATION, flag::END_HEADERS)
            ]
        );
        let mut small = BytesMut::new();
        put_headers(&mut small, 1, false, 16_384, |d| d.put_slice(b"abc"));
        assert_eq!(&small[..], &[0, 0, 3, 1, 4, 0, 0, 0, 1, b'a', b'b', b'c']);
    }
}
