//! TLS on the listener with ALPN h2 (what a Classic ELB could not do for
//! gRPC), refusals for clients that cannot speak it, certificate reload under
//! a running stream, TLS to upstreams, and clear errors for bad files.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proxy::config::{ListenerTls, Mode, UpstreamTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use support::{TestProxy, backends, config, read_body, upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA, and PEM files of a server certificate it signed, in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("proxy-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes `<stem>.pem` and `<stem>.key` for localhost and 127.0.0.1.
    fn server(&self, stem: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client trusting `ca`, offering `alpn`.
fn connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    connector(ca, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An Echo call on an HTTP/2 session: (x-backend-id, grpc-status).
async fn echo(client: &mut h2::client::SendRequest<Bytes>, addr: SocketAddr) -> (String, String) {
    let request = http::Request::post(format!("https://{addr}/gateway.EchoService/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut send) = ready.send_request(request, false).unwrap();
    // Echo { message: "tls" }, gRPC-framed.
    send.send_data(Bytes::from_static(b"\0\0\0\0\x05\x0a\x03tls"), true)
        .unwrap();
    let (head, mut body) = response.await.unwrap().into_parts();
    read_body(&mut body).await;
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let id = head.headers["x-backend-id"].to_str().unwrap().to_owned();
    let status = trailers
        .get("grpc-status")
        .or(head.headers.get("grpc-status"))
        .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
    (id, status)
}

fn tls_config(upstreams: &[String], cert: &Path, key: &Path) -> proxy::Config {
    let mut config = config(upstreams, Mode::L7);
    config.listeners[0].tls = Some(ListenerTls {
        cert: cert.to_owned(),
        key: key.to_owned(),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_is_served_over_tls_and_balanced() {
    let pki = Pki::new("serve");
    let (cert, key) = pki.server("server");
    let backends = backends(3).await;
    let proxy = TestProxy::start(tls_config(&upstreams(&backends), &cert, &key)).await;

    let tls = handshake(proxy.addr, &pki.ca_path(), &[b"h2"])
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN h2 selected"
    );
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client;
    // Calls go first to the hosts whose connection is already open, so the
    // rotation is exact only once all three are: until each has answered.
    let mut warm: HashMap<String, u32> = HashMap::new();
    while warm.len() < 3 {
        let (id, status) = echo(&mut client, proxy.addr).await;
        assert_eq!(status, "0");
        *warm.entry(id).or_default() += 1;
        assert!(warm.values().sum::<u32>() < 100, "{warm:?}");
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let (id, status) = echo(&mut client, proxy.addr).await;
        assert_eq!(status, "0");
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n == 10), "{seen:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn clients_that_cannot_speak_h2_over_tls_are_refused_clearly() {
    let pki = Pki::new("refuse");
    let (cert, key) = pki.server("server");
    let backends = backends(1).await;
    let proxy = TestProxy::start(tls_config(&upstreams(&backends), &cert, &key)).await;

    // Offering only HTTP/1.1: the handshake fails with no_application_protocol.
    let err = handshake(proxy.addr, &pki.ca_path(), &[b"http/1.1"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");

    // Offering no ALPN at all, then speaking HTTP/1.1: a plain 505 that says why.
    let mut tls = handshake(proxy.addr, &pki.ca_path(), &[]).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 505"), "{reply}");

    // A client that does not trust the certificate fails its handshake.
    let stranger = Pki::new("stranger");
    let err = handshake(proxy.addr, &stranger.ca_path(), &[b"h2"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // Cleartext HTTP/2 on a TLS port is not TLS: the connection is closed.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("closed, not left hanging")
        .ok();
    let (_, stats) = proxy.admin_get("/stats").await;
    assert!(
        !stats.contains("downstream_cx_protocol_error: 0\n"),
        "{stats}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_picked_up_while_a_long_stream_keeps_running() {
    let old = Pki::new("old");
    let (cert, key) = old.server("server");
    let backends = backends(1).await;
    let proxy = TestProxy::start(tls_config(&upstreams(&backends), &cert, &key)).await;

    // A server stream of 12 messages, 250 ms apart, on the old certificate.
    let tls = handshake(proxy.addr, &old.ca_path(), &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!("https://{}/gateway.EchoService/Expand", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.ready().await.unwrap();
    let (response, mut send) = ready.send_request(request, false).unwrap();
    // ExpandRequest { message: "s", count: 12, interval_ms: 250 }
    send.send_data(
        Bytes::from_static(b"\0\0\0\0\x08\x0a\x01s\x10\x0c\x18\xfa\x01"),
        true,
    )
    .unwrap();
    let mut body = response.await.unwrap().into_body();
    assert!(body.data().await.unwrap().is_ok(), "the stream started");

    // Replace the files with a certificate from another CA.
    let new = Pki::new("new");
    let (new_cert, new_key) = new.server("server");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    support::eventually(
        "new handshakes get the new certificate",
        Duration::from_secs(10),
        || async {
            handshake(proxy.addr, &new.ca_path(), &[b"h2"])
                .await
                .is_ok()
        },
    )
    .await;
    assert!(
        handshake(proxy.addr, &old.ca_path(), &[b"h2"])
            .await
            .is_err(),
        "the old certificate is no longer served"
    );

    // The stream that began on the old certificate runs to its end.
    let mut frames = 1;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        frames += 1;
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(frames >= 12, "{frames} DATA frames");
    proxy.stop().await;
}

#[tokio::test]
async fn tls_to_upstreams_is_verified() {
    // client -> proxy A (cleartext) -> TLS -> proxy B (TLS listener) -> backend
    let pki = Pki::new("upstream");
    let (cert, key) = pki.server("server");
    let backends = backends(1).await;
    let b = TestProxy::start(tls_config(&upstreams(&backends), &cert, &key)).await;

    let mut a_config = config(&[b.addr.to_string()], Mode::L7);
    a_config.clusters[0].tls = Some(UpstreamTls {
        ca: pki.ca_path(),
        server_name: Some("localhost".into()),
    });
    let a = TestProxy::start(a_config).await;
    let mut client = proto::gateway::echo_service_client::EchoServiceClient::new(a.channel().await);
    assert_eq!(
        support::echo(&mut client, "through TLS").await.unwrap(),
        "b0"
    );

    // Trusting the wrong CA, the upstream connection fails: UNAVAILABLE, with why.
    let stranger = Pki::new("wrong-upstream");
    let mut bad = config(&[b.addr.to_string()], Mode::L7);
    bad.clusters[0].tls = Some(UpstreamTls {
        ca: stranger.ca_path(),
        server_name: Some("localhost".into()),
    });
    let bad = TestProxy::start(bad).await;
    let mut client =
        proto::gateway::echo_service_client::EchoServiceClient::new(bad.channel().await);
    let err = support::echo(&mut client, "x").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("TLS handshake"), "{}", err.message());
    bad.stop().await;
    a.stop().await;
    b.stop().await;
}

#[test]
fn missing_and_mismatched_files_are_clear_errors() {
    let pki = Pki::new("files");
    let (cert, _key) = pki.server("one");
    let (_cert2, key2) = pki.server("two");
    let validate = |cert: &Path, key: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .args(["--validate", "--upstream", "127.0.0.1:1", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let out = validate(&cert, &key2);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );

    let out = validate(&pki.dir.join("nope.pem"), &key2);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read certificate chain"), "{stderr}");

    let out = validate(&key2, &key2);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate chain found"));

    let (cert, key) = pki.server("good");
    let out = validate(&cert, &key);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("TLS with"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_listener_offers_http11_after_h2_by_alpn() {
    let pki = Pki::new("web");
    let (cert, key) = pki.server("server");
    let backends = backends(1).await;
    let mut config = tls_config(&upstreams(&backends), &cert, &key);
    config.listeners[0].grpc_web = Some(proxy::config::GrpcWebConfig::default());
    let proxy = TestProxy::start(config).await;

    // A client that has both gets h2, as every gRPC client does.
    let tls = handshake(proxy.addr, &pki.ca_path(), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);

    // A browser-like client with HTTP/1.1 only gets it, and its gRPC-Web call.
    let mut tls = handshake(proxy.addr, &pki.ca_path(), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Echo { message: "tls" }, one gRPC-Web frame.
    let body = b"\0\0\0\0\x05\x0a\x03tls";
    let head = format!(
        "POST /gateway.EchoService/Echo HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-backend-id: b0"), "{reply}");
    assert!(
        reply.contains("grpc-status: 0"),
        "the trailers frame: {reply}"
    );
    proxy.stop().await;
}
