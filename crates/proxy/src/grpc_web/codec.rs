//! The bytes of gRPC-Web (PROTOCOL-WEB.md in grpc/grpc): length-prefixed
//! frames, the trailers frame (flag 0x80) that carries what HTTP/2 sends as
//! trailers, and the base64 of the `-text` variants. Every decoder here is
//! bounded by the caller's limit and says what is wrong with its input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// A frame's flag: the message is compressed (`grpc-encoding`).
const COMPRESSED: u8 = 0x01;
/// A frame's flag: the frame holds trailers, not a message.
pub const TRAILERS: u8 = 0x80;
/// Flag byte and 32-bit length.
pub const HEADER_LEN: usize = 5;

/// Why a request body cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not gRPC-Web: the reason, for `grpc-message`.
    Malformed(String),
    /// More than `max_request_bytes` once decoded.
    TooLarge(usize),
    /// More than one message: a client- or bidirectional-streaming call.
    Streaming,
}

/// Reads a request body as it arrives: decodes the base64 of the text
/// variants, holds at most `limit` decoded bytes (while decoding, at most
/// one chunk of the transport more, freed at once if over), and checks the
/// frames at the end.
#[derive(Debug)]
pub struct RequestBody {
    text: Option<Base64Decoder>,
    decoded: BytesMut,
    limit: usize,
}

impl RequestBody {
    pub fn new(text: bool, limit: usize) -> Self {
        RequestBody {
            text: text.then(Base64Decoder::default),
            decoded: BytesMut::new(),
            limit,
        }
    }

    /// Takes the next chunk of the body as received.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let pushed = match &mut self.text {
            Some(decoder) => decoder.push(chunk, &mut self.decoded),
            None if self.decoded.len() + chunk.len() <= self.limit => {
                self.decoded.extend_from_slice(chunk);
                Ok(())
            }
            None => Err(BodyError::TooLarge(self.limit)),
        };
        let pushed = pushed.and_then(|()| {
            if self.decoded.len() > self.limit {
                Err(BodyError::TooLarge(self.limit))
            } else {
                Ok(())
            }
        });
        if pushed.is_err() {
            // Over by at most the chunk just decoded (one read of the
            // transport), or refused: let go of it all at once.
            self.decoded = BytesMut::new();
        }
        pushed
    }

    /// The whole body, decoded: one message frame (or none), checked.
    pub fn finish(mut self) -> Result<Bytes, BodyError> {
        if let Some(decoder) = &self.text {
            decoder.finish()?;
        }
        let body = std::mem::take(&mut self.decoded).freeze();
        match count_frames(&body)? {
            0 | 1 => Ok(body),
            _ => Err(BodyError::Streaming),
        }
    }
}

/// How many message frames `body` holds, each checked: a whole header, a
/// known flag, no trailers, no length beyond the body.
fn count_frames(body: &[u8]) -> Result<usize, BodyError> {
    let mut rest = body;
    let mut frames = 0;
    while !rest.is_empty() {
        let Some(header) = rest.get(..HEADER_LEN) else {
            return Err(BodyError::Malformed(format!(
                "a frame header is {HEADER_LEN} bytes, the body ends {} bytes into one",
                rest.len()
            )));
        };
        let flag = header[0];
        if flag & TRAILERS != 0 {
            return Err(BodyError::Malformed(
                "a trailers frame (flag 0x80) in a request".into(),
            ));
        }
        if flag & !COMPRESSED != 0 {
            return Err(BodyError::Malformed(format!(
                "unknown frame flags 0x{flag:02x}"
            )));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let left = rest.len() - HEADER_LEN;
        if len > left {
            return Err(BodyError::Malformed(format!(
                "a frame declares {len} bytes and only {left} follow"
            )));
        }
        rest = &rest[HEADER_LEN + len..];
        frames += 1;
    }
    Ok(frames)
}

/// The trailers frame: flag 0x80, length, then `name: value\r\n` lines.
pub fn trailers_frame(trailers: &HeaderMap) -> Bytes {
    let len: usize = trailers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.put_u8(TRAILERS);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.freeze()
}

/// Decodes base64 that may arrive in any chunks, with padding where a
/// sender flushed (the spec allows padding inside the stream): every
/// 4-character group stands alone, so a group ending in `=` ends a run and
/// the next group starts a new one.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    /// Characters of a group not yet complete (fewer than 4).
    partial: [u8; 4],
    held: usize,
    /// Characters read so far, for the error's position.
    offset: usize,
}

impl Base64Decoder {
    pub fn push(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), BodyError> {
        let mut chunk = chunk;
        if self.held > 0 {
            let take = (4 - self.held).min(chunk.len());
            self.partial[self.held..self.held + take].copy_from_slice(&chunk[..take]);
            self.held += take;
            chunk = &chunk[take..];
            if self.held < 4 {
                return Ok(());
            }
            let group = self.partial;
            self.held = 0;
            self.decode_groups(&group, out)?;
        }
        let whole = chunk.len() / 4 * 4;
        self.decode_groups(&chunk[..whole], out)?;
        let rest = &chunk[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
        Ok(())
    }

    /// Whether the input ended on a group boundary.
    pub fn finish(&self) -> Result<(), BodyError> {
        if self.held == 0 {
            Ok(())
        } else {
            Err(BodyError::Malformed(format!(
                "bad base64: the body ends {} characters into a 4-character group",
                self.held
            )))
        }
    }

    /// Decodes whole groups: runs that end at a padded group, each at once.
    fn decode_groups(&mut self, groups: &[u8], out: &mut BytesMut) -> Result<(), BodyError> {
        let mut start = 0;
        for end in (4..=groups.len()).step_by(4) {
            if groups[end - 1] == b'=' || end == groups.len() {
                self.decode_run(&groups[start..end], out)?;
                start = end;
            }
        }
        Ok(())
    }

    fn decode_run(&mut self, run: &[u8], out: &mut BytesMut) -> Result<(), BodyError> {
        let at = out.len();
        out.resize(at + run.len() / 4 * 3, 0);
        match STANDARD.decode_slice(run, &mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                self.offset += run.len();
                Ok(())
            }
            Err(e) => {
                out.truncate(at);
                Err(BodyError::Malformed(format!(
                    "bad base64 after {} characters: {e}",
                    self.offset
                )))
            }
        }
    }
}

/// Encodes a response as base64 in the chunks it comes in, holding back up
/// to 2 bytes so that padding is only ever at the very end.
#[derive(Debug, Default)]
pub struct Base64Encoder {
    carry: [u8; 2],
    held: usize,
}

impl Base64Encoder {
    /// The text for `data`; with `last`, everything held is flushed (padded).
    pub fn encode(&mut self, data: &[u8], last: bool) -> Bytes {
        let mut input = Vec::with_capacity(self.held + data.len());
        input.extend_from_slice(&self.carry[..self.held]);
        input.extend_from_slice(data);
        let whole = if last {
            input.len()
        } else {
            input.len() / 3 * 3
        };
        let rest = &input[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
        Bytes::from(STANDARD.encode(&input[..whole]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn one_message_passes_and_two_are_streaming() {
        let one = frame(0, b"\x0a\x05hello");
        let mut body = RequestBody::new(false, 1024);
        body.push(&one[..3]).unwrap();
        body.push(&one[3..]).unwrap();
        assert_eq!(&body.finish().unwrap()[..], &one[..]);

        let mut two = one.clone();
        two.extend_from_slice(&frame(0, b""));
        let mut body = RequestBody::new(false, 1024);
        body.push(&two).unwrap();
        assert_eq!(body.finish(), Err(BodyError::Streaming));

        assert!(RequestBody::new(false, 8).finish().unwrap().is_empty());
    }

    #[test]
    fn bad_frames_are_named() {
        let check = |bytes: &[u8]| {
            let mut body = RequestBody::new(false, 1024);
            body.push(bytes).unwrap();
            match body.finish() {
                Err(BodyError::Malformed(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(check(b"\0\0\0").contains("ends 3 bytes into one"));
        assert!(check(&[0, 0, 0, 0, 9, 1, 2]).contains("declares 9 bytes and only 2 follow"));
        assert!(check(&frame(0x80, b"grpc-status: 0\r\n")).contains("trailers frame"));
        assert!(check(&frame(0x02, b"")).contains("unknown frame flags 0x02"));
        assert_eq!(count_frames(&frame(COMPRESSED, b"zz")), Ok(1));
    }

    #[test]
    fn the_limit_holds_before_the_body_is_read_in_full() {
        let mut body = RequestBody::new(false, 10);
        body.push(&[0; 10]).unwrap();
        assert_eq!(body.push(&[0]), Err(BodyError::TooLarge(10)));
        let mut text = RequestBody::new(true, 3);
        text.push(b"AAAA").unwrap();
        assert_eq!(text.push(b"AAAA"), Err(BodyError::TooLarge(3)));
    }

    #[test]
    fn base64_in_any_chunks_with_padding_inside() {
        let message = frame(0, b"\x0a\x07browser");
        let mut encoded = STANDARD.encode(&message[..4]); // padded: "AAAAAA=="
        encoded.push_str(&STANDARD.encode(&message[4..]));
        assert!(encoded[..8].ends_with("=="));
        for split in 0..encoded.len() {
            let mut body = RequestBody::new(true, 1024);
            body.push(&encoded.as_bytes()[..split]).unwrap();
            body.push(&encoded.as_bytes()[split..]).unwrap();
            assert_eq!(
                &body.finish().unwrap()[..],
                &message[..],
                "split at {split}"
            );
        }
    }

    #[test]
    fn bad_base64_is_named() {
        let bad = |text: &[u8]| {
            let mut body = RequestBody::new(true, 1024);
            let pushed = body.push(text);
            match pushed.and_then(|()| body.finish().map(drop)) {
                Err(BodyError::Malformed(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(b"AA!A").contains("bad base64"));
        assert!(
            bad(b"A=AA").contains("bad base64"),
            "padding inside a group"
        );
        assert!(bad(b"AAAAA").contains("1 characters into a 4-character group"));
        assert!(
            bad(b"AAB=").contains("bad base64"),
            "non-canonical trailing bits"
        );
    }

    #[test]
    fn encoding_in_chunks_pads_only_at_the_end() {
        let data: Vec<u8> = (0..=255).collect();
        for split in [0, 1, 2, 3, 100, 255] {
            let mut encoder = Base64Encoder::default();
            let mut text = Vec::new();
            text.extend_from_slice(&encoder.encode(&data[..split], false));
            text.extend_from_slice(&encoder.encode(&data[split..], false));
            text.extend_from_slice(&encoder.encode(b"", true));
            assert_eq!(
                text,
                STANDARD.encode(&data).into_bytes(),
                "split at {split}"
            );
        }
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frame = trailers_frame(&trailers);
        assert_eq!(frame[0], TRAILERS);
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, frame.len() - HEADER_LEN);
        assert_eq!(&frame[5..], b"grpc-status: 0\r\ngrpc-message: ok\r\n");
    }

    /// Random bodies in random chunks, binary and text: the reader never
    /// panics, never holds more than its limit, and gives back exactly
    /// what was encoded whenever the input was a valid one-message body.
    #[test]
    fn any_input_in_any_chunks_is_bounded_and_round_trips_when_valid() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!";
        for round in 0..20_000 {
            let limit = rng.random_range(0..300);
            let text = rng.random_bool(0.5);
            let valid = rng.random_bool(0.5);
            let message: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            let input: Vec<u8> = match (valid, text) {
                (true, false) => frame(0, &message),
                (true, true) => {
                    // Padded pieces, as a sender that flushes may send them.
                    let raw = frame(0, &message);
                    let cut = rng.random_range(0..=raw.len());
                    [STANDARD.encode(&raw[..cut]), STANDARD.encode(&raw[cut..])]
                        .concat()
                        .into_bytes()
                }
                (false, false) => (0..rng.random_range(0..300))
                    .map(|_| rng.random())
                    .collect(),
                (false, true) => (0..rng.random_range(0..300))
                    .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                    .collect(),
            };
            let mut body = RequestBody::new(text, limit);
            let mut rest = &input[..];
            let mut pushed = Ok(());
            while !rest.is_empty() && pushed.is_ok() {
                let n = rng.random_range(1..=rest.len());
                pushed = body.push(&rest[..n]);
                assert!(
                    body.decoded.len() <= limit,
                    "round {round}: over the limit, kept"
                );
                rest = &rest[n..];
            }
            let result = pushed.and_then(|()| body.finish());
            if valid {
                let raw = frame(0, &message);
                match result {
                    Ok(got) => assert_eq!(&got[..], &raw[..], "round {round}"),
                    Err(BodyError::TooLarge(n)) => {
                        assert_eq!(n, limit);
                        assert!(raw.len() > limit, "round {round}: refused below its limit");
                    }
                    Err(other) => panic!("round {round}: a valid body refused: {other:?}"),
                }
            }
        }
    }
}
