//! h2fwd against the h2 crate (an independent implementation) over
//! in-memory pipes: each end of ours with h2 at the other.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

use std::future::poll_fn;

use bytes::Bytes;
use h2fwd::{Config, Head};

fn call(path: &str) -> Head {
    let mut head = Head::request(b"POST", b"http", b"host", path.as_bytes());
    head.append(b"te", b"trailers");
    head
}

#[tokio::test]
async fn a_waiting_stream_dropped_before_its_slot_never_reaches_the_host() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("h2fwd=trace,h2=debug")
        .with_test_writer()
        .try_init();
    let (near, far) = tokio::io::duplex(64 * 1024);
    let host = tokio::spawn(async move {
        let mut server = h2::server::Builder::new();
        server.max_concurrent_streams(1);
        let mut conn = server.handshake::<_, Bytes>(far).await.unwrap();
        let mut seen = Vec::new();
        // Each request is served by a task of its own: the connection is
        // driven by `accept` only.
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            seen.push((
                request.uri().path().to_owned(),
                u32::from(respond.stream_id()),
            ));
            tokio::spawn(async move {
                let mut body = request.into_body();
                while let Some(chunk) = body.data().await {
                    let _ = chunk.map(|c| body.flow_control().release_capacity(c.len()));
                }
                respond
                    .send_response(http::Response::new(()), true)
                    .unwrap();
            });
        }
        seen
    });
    let (sender, connection) = h2fwd::client::handshake(near, Config::default());
    let driver = tokio::spawn(connection);
    let first = sender.send_request(&call("/first"), None, false).unwrap();
    let ping = sender.ping_pong();
    ping.ping().await.unwrap();
    let cancelled = sender
        .send_request(&call("/cancelled"), None, true)
        .unwrap();
    assert!(
        cancelled.is_pending_open(),
        "over the host's limit: it waits"
    );
    drop(cancelled);
    first.send_data(Bytes::from_static(b"x"), true).unwrap();
    poll_fn(|cx| first.poll_response(cx)).await.unwrap();
    drop(first);
    let next = sender.send_request(&call("/next"), None, true).unwrap();
    poll_fn(|cx| next.poll_response(cx)).await.unwrap();
    drop(next);
    drop(sender);
    drop(ping);
    driver.await.unwrap().unwrap();
    assert_eq!(
        host.await.unwrap(),
        [("/first".to_owned(), 1), ("/next".to_owned(), 3)]
    );
}

/// Reads a whole body from an h2 `RecvStream`, releasing its window as it goes.
async fn h2_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Sends `data` on one of our streams no faster than the peer's windows allow.
async fn send_all(stream: &h2fwd::StreamRef, mut data: Bytes) {
    while !data.is_empty() {
        let room = poll_fn(|cx| stream.poll_capacity(cx)).await.unwrap();
        let chunk = data.split_to(room.min(data.len()).min(7000));
        stream.send_data(chunk, false).unwrap();
    }
}

/// Reads a whole body from one of our streams.
async fn our_body(stream: &h2fwd::StreamRef) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = poll_fn(|cx| stream.poll_data(cx)).await {
        out.extend_from_slice(&chunk.unwrap().0);
    }
    out
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// An h2 client with 1 KiB windows (stream and connection) sends 100 KB to
/// our server, which echoes it back with trailers: both levels of flow
/// control hold both ways, every byte arrives in order, the trailers last.
#[tokio::test]
async fn an_h2_client_and_our_server_echo_100_kb_through_1_kib_windows() {
    let (near, far) = tokio::io::duplex(4096);
    let config = Config {
        initial_window_size: 1024,
        connection_window_size: 65_535,
        ..Config::default()
    };
    let server = tokio::spawn(async move {
        let mut conn = h2fwd::server::handshake(far, config);
        let (head, stream) = conn.accept().await.unwrap().unwrap();
        assert_eq!(head.path(), "/echo");
        let serve = async {
            let body = our_body(&stream).await;
            assert!(
                poll_fn(|cx| stream.poll_trailers(cx))
                    .await
                    .unwrap()
                    .is_none()
            );
            let mut response = Head::response(200);
            response.append(b"content-type", b"application/octet-stream");
            stream.send_response(&response, false).unwrap();
            send_all(&stream, Bytes::from(body)).await;
            let mut trailers = Head::trailers();
            trailers.append(b"x-done", b"yes");
            stream.send_trailers(&trailers).unwrap();
        };
        // The connection is driven by `accept` while the stream is served.
        tokio::select! {
            () = serve => {}
            _ = conn.accept() => panic!("the connection ended first"),
        }
        while conn.accept().await.is_some() {}
    });
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .initial_connection_window_size(1024)
        .handshake::<_, Bytes>(near)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("http://host/echo").body(()).unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let sent = pattern(100_000);
    let mut left = sent.clone();
    while !left.is_empty() {
        send.reserve_capacity(left.len().min(8192));
        let room = poll_fn(|cx| send.poll_capacity(cx)).await.unwrap().unwrap();
        send.send_data(left.split_to(room.min(left.len())), false)
            .unwrap();
    }
    send.send_data(Bytes::new(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    assert_eq!(h2_body(&mut body).await, sent);
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["x-done"], "yes");
    // Once the client lets go of everything, h2 closes the connection and
    // ours ends with it.
    drop((body, send, client));
    server.await.unwrap();
}

/// Our client with 1 KiB windows sends 100 KB to an h2 server that echoes
/// it back: the same, the other way round.
#[tokio::test]
async fn our_client_and_an_h2_server_echo_100_kb_through_1_kib_windows() {
    let (near, far) = tokio::io::duplex(4096);
    let host = tokio::spawn(async move {
        let mut conn = h2::server::Builder::new()
            .initial_window_size(1024)
            .initial_connection_window_size(1024)
            .handshake::<_, Bytes>(far)
            .await
            .unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move {
            let mut body = request.into_body();
            let data = h2_body(&mut body).await;
            let mut send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let mut left = Bytes::from(data);
            while !left.is_empty() {
                send.reserve_capacity(left.len().min(8192));
                let room = poll_fn(|cx| send.poll_capacity(cx)).await.unwrap().unwrap();
                send.send_data(left.split_to(room.min(left.len())), false)
                    .unwrap();
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            send.send_trailers(trailers).unwrap();
        });
        while conn.accept().await.is_some() {}
    });
    let config = Config {
        initial_window_size: 1024,
        connection_window_size: 65_535,
        ..Config::default()
    };
    let (sender, connection) = h2fwd::client::handshake(near, config);
    let driver = tokio::spawn(connection);
    let stream = sender.send_request(&call("/echo"), None, false).unwrap();
    let sent = pattern(100_000);
    let upload = async {
        send_all(&stream, sent.clone()).await;
        stream.send_data(Bytes::new(), true).unwrap();
    };
    let download = async {
        let head = poll_fn(|cx| stream.poll_response(cx)).await.unwrap();
        assert_eq!(head.status(), 200);
        let body = our_body(&stream).await;
        let trailers = poll_fn(|cx| stream.poll_trailers(cx))
            .await
            .unwrap()
            .unwrap();
        (body, trailers)
    };
    let ((), (body, trailers)) = tokio::join!(upload, download);
    assert_eq!(body, sent);
    assert_eq!(trailers.get(b"grpc-status"), Some(&b"0"[..]));
    drop(stream);
    drop(sender);
    driver.await.unwrap().unwrap();
    host.abort();
}

/// An h2 server that answers before reading the request ends its answer,
/// then resets the stream with NO_ERROR (RFC 9113 section 8.1): our client
/// keeps the whole answer, and learns that the host wants no more of the
/// request.
#[tokio::test]
async fn a_reset_with_no_error_after_a_complete_answer_keeps_the_answer() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let host = tokio::spawn(async move {
        let mut conn = h2::server::handshake(far).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        let response = http::Response::builder()
            .header("grpc-status", "14")
            .body(())
            .unwrap();
        respond.send_response(response, true).unwrap();
        // Let go of the stream with its request still open: h2 resets it
        // with NO_ERROR.
        drop((request, respond));
        while conn.accept().await.is_some() {}
    });
    let (sender, connection) = h2fwd::client::handshake(near, Config::default());
    tokio::spawn(connection);
    let stream = sender.send_request(&call("/early"), None, false).unwrap();
    // The host's RST_STREAM(NO_ERROR) follows its answer.
    let reason = poll_fn(|cx| stream.poll_reset(cx)).await.unwrap();
    assert_eq!(reason, h2fwd::Reason::NO_ERROR);
    let head = poll_fn(|cx| stream.poll_response(cx)).await.unwrap();
    assert_eq!(head.get(b"grpc-status"), Some(&b"14"[..]));
    assert!(stream.is_end_stream(), "a trailers-only answer");
    assert!(
        stream.send_data(Bytes::from_static(b"more"), true).is_err(),
        "the host asked for no more of the request"
    );
    host.abort();
}

/// After an h2 host's graceful GOAWAY, a new stream is refused at once, as
/// one the host provably never saw (remote GOAWAY: safe to send elsewhere),
/// while the stream it had accepted completes.
#[tokio::test]
async fn after_the_hosts_goaway_new_streams_are_refused_and_old_ones_finish() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let host = tokio::spawn(async move {
        let mut conn = h2::server::handshake(far).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        conn.graceful_shutdown();
        let _ = accepted_tx.send(());
        tokio::spawn(async move {
            let mut body = request.into_body();
            let _ = h2_body(&mut body).await;
            respond
                .send_response(http::Response::new(()), true)
                .unwrap();
        });
        while conn.accept().await.is_some() {}
    });
    let (sender, connection) = h2fwd::client::handshake(near, Config::default());
    let driver = tokio::spawn(connection);
    let first = sender.send_request(&call("/first"), None, false).unwrap();
    accepted_rx.await.unwrap();
    // The GOAWAY (and the PING h2 sends with it) arrives: a ping round trip
    // of our own orders after it.
    sender.ping_pong().ping().await.unwrap();
    let refused = sender
        .send_request(&call("/second"), None, true)
        .unwrap_err();
    assert!(refused.is_go_away() && refused.is_remote(), "{refused}");
    assert!(!sender.is_ready());
    first.send_data(Bytes::from_static(b"x"), true).unwrap();
    let head = poll_fn(|cx| first.poll_response(cx)).await.unwrap();
    assert_eq!(head.status(), 200);
    drop(first);
    drop(sender);
    let _ = driver.await.unwrap();
    host.await.unwrap();
}

/// A client that sends a request and never reads: once the connection's
/// output budget is written and unread, a stream gets no more capacity,
/// whatever the client's windows say, so the answer waits with the caller
/// (where the proxy charges and times it) and not in the connection.
#[tokio::test]
async fn a_client_that_does_not_read_gets_no_more_than_the_output_budget() {
    use tokio::io::AsyncWriteExt;
    let (mut near, far) = tokio::io::duplex(1024);
    let mut conn = h2fwd::server::handshake(far, Config::default());
    // The preface, SETTINGS with the largest windows, a WINDOW_UPDATE for
    // the connection, and one request; then nothing is ever read.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff]);
    bytes.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0, 0]);
    let block = [0x83, 0x86, 0x84, 0x41, 0x01, b'h']; // POST http / host h
    bytes.extend_from_slice(&[0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    near.write_all(&bytes).await.unwrap();
    let (_head, stream) = conn.accept().await.unwrap().unwrap();
    stream.send_response(&Head::response(200), false).unwrap();
    let mut sent = 0usize;
    let stalled = loop {
        let room = tokio::select! {
            room = poll_fn(|cx| stream.poll_capacity(cx)) => room.unwrap(),
            _ = conn.accept() => unreachable!("the connection stays open"),
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => break sent,
        };
        let n = room.min(16_384);
        stream.send_data(pattern(n), false).unwrap();
        sent += n;
        assert!(
            sent < 4 << 20,
            "capacity without end for a client that reads nothing"
        );
    };
    // The budget (64 KiB) plus what the pipe and the writer took.
    assert!(
        stalled < 200_000,
        "{stalled} bytes taken for a client that reads nothing"
    );
    drop(near);
}
