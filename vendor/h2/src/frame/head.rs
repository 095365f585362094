use super::StreamId;

use bytes::BufMut;

#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub struct Head {
    kind: Kind,
    flag: u8,
    stream_id: StreamId,
}

#[repr(u8)]
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum Kind {
    Data = 0,
    Headers = 1,
    Priority = 2,
    Reset = 3,
    Settings = 4,
    PushPromise = 5,
    Ping = 6,
    GoAway = 7,
    WindowUpdate = 8,
    Continuation = 9,
    Unknown,
}

// ===== impl Head =====

impl Head {
    pub fn new(kind: Kind, flag: u8, stream_id: StreamId) -> Head {
        Head {
            kind,
            flag,
            stream_id,
        }
    }

    /// Parse an HTTP/2 frame header
    pub fn parse(header: &[u8]) -> Head {
        let (stream_id, _) = StreamId::parse(&header[5..]);

        Head {
            kind: Kind::new(header[3]),
            flag: header[4],
            stream_id,
        }
    }

    pub fn stream_id(&self) -> StreamId {
        self.stream_id
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn flag(&self) -> u8 {
        self.flag
    }

    pub fn encode_len(&self) -> usize {
        super::HEADER_LEN
    }

    pub fn encode<T: BufMut>(&self, payload_len: usize, dst: &mut T) {
        debug_assert!(self.encode_len() <= dst.remaining_mut());

        // FORK: the nine bytes built in place and written with one
        // `put_slice`, where upstream made four writes (`put_uint`, two
        // `put_u8`, `put_u32`), each a `memcpy` through `BufMut`'s chunk
        // loop; every frame sent pays it.
        let len = (payload_len as u32).to_be_bytes();
        let id = u32::from(self.stream_id).to_be_bytes();
        dst.put_slice(&[
            len[1],
            len[2],
            len[3],
            self.kind as u8,
            self.flag,
            id[0],
            id[1],
            id[2],
            id[3],
        ]);
    }
}

// ===== impl Kind =====

impl Kind {
    pub fn new(byte: u8) -> Kind {
        match byte {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::Reset,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::GoAway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            _ => Kind::Unknown,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_head_is_its_nine_bytes_in_network_order() {
        let head = Head::new(Kind::Headers, 0x25, StreamId::from(0x7fff_fffe));
        let mut dst = bytes::BytesMut::new();
        head.encode(0x12_3456, &mut dst);
        assert_eq!(
            &dst[..],
            [0x12, 0x34, 0x56, 1, 0x25, 0x7f, 0xff, 0xff, 0xfe],
            "length (24 bits), type, flags, stream id (31 bits)"
        );
        let mut limited = bytes::BytesMut::new();
        head.encode(
            0x12_3456,
            &mut (&mut limited).limit(super::super::HEADER_LEN),
        );
        assert_eq!(
            limited, dst,
            "the same through a `Limit`, as frames are written"
        );
        assert_eq!(Head::parse(&dst), head);
    }
}
