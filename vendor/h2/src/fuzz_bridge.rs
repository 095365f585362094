//! Entry points for fuzz targets into h2's private modules; compiled only
//! under `cfg(fuzzing)`, which cargo fuzz sets.

#[cfg(fuzzing)]
/// Functions the fuzz targets call.
pub mod fuzz_logic {
    use crate::hpack;
    use bytes::BytesMut;
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use std::io::Cursor;
    use std::ops::ControlFlow;

    /// Decodes `data_` with an empty table; encodes it as a method if it is one.
    pub fn fuzz_hpack(data_: &[u8]) {
        let mut decoder_ = hpack::Decoder::new(0);
        let mut buf = BytesMut::new();
        buf.extend(data_);
        let _dec_res = decoder_.decode(&mut Cursor::new(&mut buf), |_h| ControlFlow::Continue(()));

        if let Ok(s) = std::str::from_utf8(data_) {
            if let Ok(h) = http::Method::from_bytes(s.as_bytes()) {
                let m_ = hpack::Header::Method(h);
                let mut encoder = hpack::Encoder::new(0, 0);
                let _res = encode(&mut encoder, vec![m_]);
            }
        }
    }

    fn encode(e: &mut hpack::Encoder, hdrs: Vec<hpack::Header<Option<HeaderName>>>) -> BytesMut {
        let mut dst = BytesMut::with_capacity(1024);
        e.encode(&mut hdrs.into_iter(), &mut dst);
        dst
    }

    /// FORK: the HPACK property our encoder change must keep (fuzz/ at the
    /// root of the repository, target `hpack`).
    ///
    /// Decodes `block` as one header block with a 4096-byte dynamic table
    /// (SETTINGS_HEADER_TABLE_SIZE's default), giving up once the decoded
    /// list is larger than `max_header_list_size` (counted as RFC 9113 counts
    /// it, 32 bytes per field plus name and value, as `frame::headers` does),
    /// so that a small block of indexed references to a large entry cannot
    /// expand without bound. When the block decodes, its headers are encoded
    /// again, by the static-only encoder (`Encoder::set_static_only`, what
    /// the proxy sends) and by h2's indexing, Huffman-coding one (what the
    /// backends send), and each encoding is decoded by a fresh decoder: the
    /// headers must come back equal, in order. The static-only encoder keeps
    /// no state, so a second block of the same headers must be the same bytes.
    pub fn hpack_round_trip(block: &[u8], max_header_list_size: usize) {
        let mut decoder = hpack::Decoder::new(4096);
        let mut src = BytesMut::from(block);
        let mut headers = Vec::new();
        let mut size = 0usize;
        let decoded = decoder.decode(&mut Cursor::new(&mut src), |header| {
            size = size.saturating_add(header.len());
            if size > max_header_list_size {
                return ControlFlow::Break(());
            }
            headers.push(header);
            ControlFlow::Continue(())
        });
        if decoded.is_err() || size > max_header_list_size {
            return;
        }

        let mut lean = hpack::Encoder::new(4096, 0);
        lean.set_static_only(true);
        let first = encode_list(&mut lean, &headers);
        assert_eq!(decode_all(&first), headers, "static-only encoding");
        let second = encode_list(&mut lean, &headers);
        assert_eq!(first, second, "the static-only encoder kept state");

        let mut indexing = hpack::Encoder::default();
        let block = encode_list(&mut indexing, &headers);
        assert_eq!(decode_all(&block), headers, "indexing encoding");

        // What frame::headers sends: the pseudo-header fields, then the
        // regular ones read in place from their map (grouped by name there).
        let (pseudo, fields): (Vec<_>, Vec<_>) = headers
            .into_iter()
            .partition(|h| !matches!(h, hpack::Header::Field { .. }));
        let mut map = HeaderMap::new();
        for field in fields {
            if let hpack::Header::Field { name, value } = field {
                map.append(name, value);
            }
        }
        let mut expected = pseudo.clone();
        expected.extend(map.iter().map(|(name, value)| hpack::Header::Field {
            name: name.clone(),
            value: value.clone(),
        }));
        let mut block = BytesMut::new();
        lean.encode_static_only_block(pseudo.clone(), &map, &mut block);
        assert_eq!(decode_all(&block), expected, "static-only block encoding");

        // A request's block encoded from borrowed parts
        // (`SendRequest::send_request_encoded`), a `grpc-timeout` replacing
        // any the block had.
        let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
        for header in &pseudo {
            match header {
                hpack::Header::Method(v) => method = method.or(Some(v.clone())),
                hpack::Header::Scheme(v) => scheme = scheme.or(Some(v.clone())),
                hpack::Header::Authority(v) => authority = authority.or(Some(v.clone())),
                hpack::Header::Path(v) => path = path.or(Some(v.clone())),
                _ => {}
            }
        }
        if let (Some(method), Some(scheme), Some(authority), Some(path)) =
            (method, scheme, authority, path)
        {
            let name = HeaderName::from_static("grpc-timeout");
            let value = HeaderValue::from_static("1S");
            let mut block = BytesMut::new();
            let encoded = hpack::encode_static_only_request(
                &method,
                &scheme,
                &authority,
                &path,
                &map,
                Some((&name, &value)),
                &mut block,
            );
            let forbidden = map
                .iter()
                .any(|(n, v)| *n != name && crate::frame::is_connection_specific(n, v));
            assert_eq!(
                encoded.is_err(),
                forbidden,
                "a request block refuses exactly the fields HTTP/2 forbids"
            );
            if forbidden {
                return;
            }
            let mut expected = vec![
                hpack::Header::Method(method),
                hpack::Header::Scheme(scheme),
                hpack::Header::Authority(authority),
                hpack::Header::Path(path),
            ];
            expected.extend(
                map.iter()
                    .filter(|(n, _)| **n != name)
                    .map(|(name, value)| hpack::Header::Field {
                        name: name.clone(),
                        value: value.clone(),
                    }),
            );
            expected.push(hpack::Header::Field { name, value });
            assert_eq!(
                decode_all(&block),
                expected,
                "request block from borrowed parts"
            );
        }
    }

    /// Encodes as `frame::headers` hands headers to the encoder: a field
    /// with the same name as the one before it comes without its name (the
    /// way `HeaderMap` yields repeated values).
    fn encode_list(encoder: &mut hpack::Encoder, headers: &[hpack::Header]) -> BytesMut {
        let mut list = Vec::with_capacity(headers.len());
        let mut previous: Option<&HeaderName> = None;
        for header in headers {
            list.push(match header.clone() {
                hpack::Header::Field { name, value } => {
                    let repeated = previous == Some(&name);
                    hpack::Header::Field {
                        name: if repeated { None } else { Some(name) },
                        value,
                    }
                }
                hpack::Header::Authority(v) => hpack::Header::Authority(v),
                hpack::Header::Method(v) => hpack::Header::Method(v),
                hpack::Header::Scheme(v) => hpack::Header::Scheme(v),
                hpack::Header::Path(v) => hpack::Header::Path(v),
                hpack::Header::Protocol(v) => hpack::Header::Protocol(v),
                hpack::Header::Status(v) => hpack::Header::Status(v),
            });
            previous = match header {
                hpack::Header::Field { name, .. } => Some(name),
                _ => None,
            };
        }
        let mut dst = BytesMut::new();
        encoder.encode(list, &mut dst);
        dst
    }

    fn decode_all(block: &BytesMut) -> Vec<hpack::Header> {
        let mut decoder = hpack::Decoder::new(4096);
        let mut src = block.clone();
        let mut headers = Vec::new();
        let decoded = decoder.decode(&mut Cursor::new(&mut src), |header| {
            headers.push(header);
            ControlFlow::Continue(())
        });
        if let Err(e) = decoded {
            panic!("our own encoding does not decode: {e:?}");
        }
        headers
    }
}
