//! The access log: one line per request on stdout, in Envoy's default format.
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
//! %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
//! "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//! ```
//! (one line in the log). Calls format their line and hand it to a writer
//! thread through a bounded queue, so a slow stdout never stalls a call. If the
//! queue is full the line is dropped and counted (`access_log.dropped` in
//! `/stats`) rather than blocking traffic.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use h2fwd::Head;
use http::HeaderMap;
use http::request::Parts;

use crate::cluster::Stat;
use crate::config::AccessLogFormat;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// One request, as the access log describes it.
#[derive(Debug)]
pub struct Entry {
    pub start: SystemTime,
    pub method: String,
    pub path: String,
    /// `%PROTOCOL%`: `HTTP/2`, or `HTTP/1.1` for the gRPC-Web side's own answers.
    pub protocol: &'static str,
    pub response_code: u16,
    /// Envoy's response flags (`UH`, `UF`, `UT`, `UR`, `DC`, ...), or empty.
    pub flags: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream: Option<SocketAddr>,
    /// The W3C `traceparent` of the request, for the `envoy_trace` format.
    pub traceparent: Option<String>,
}

/// A field's first value as text, if the request has it.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Entry {
    /// The request's side of the entry, for a request of the call path.
    pub fn new(start: SystemTime, head: &Head) -> Self {
        let path = match head.path() {
            "" => "/",
            path => path,
        };
        Entry::request(
            start,
            (text(head.method()), path.to_owned(), "HTTP/2"),
            head.authority().map(text),
            &|name| head.get(name.as_bytes()).map(text),
        )
    }

    /// The request's side of the entry, for a request held as `http` parts
    /// (the gRPC-Web side's own answers, over HTTP/1.1 too).
    pub fn from_parts(start: SystemTime, parts: &Parts) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let protocol = match parts.version {
            http::Version::HTTP_11 => "HTTP/1.1",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/2",
        };
        let headers: &HeaderMap = &parts.headers;
        Entry::request(
            start,
            (parts.method.as_str().to_owned(), path, protocol),
            parts.uri.authority().map(|a| a.as_str().to_owned()),
            &|name| headers.get(name).map(|v| text(v.as_bytes())),
        )
    }

    /// An entry with the request's side filled in.
    fn request(
        start: SystemTime,
        (method, path, protocol): (String, String, &'static str),
        authority: Option<String>,
        field: Lookup<'_>,
    ) -> Self {
        Entry {
            start,
            method,
            path,
            protocol,
            response_code: 0,
            flags: "",
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            upstream_service_time_ms: None,
            forwarded_for: field("x-forwarded-for"),
            user_agent: field("user-agent"),
            request_id: field("x-request-id"),
            authority,
            upstream: None,
            traceparent: field("traceparent"),
        }
    }

    /// The line in `format`, with its newline.
    pub fn format_as(&self, format: AccessLogFormat) -> String {
        let mut line = self.format();
        if format == AccessLogFormat::EnvoyTrace {
            line.pop();
            let _ = writeln!(line, " \"{}\"", self.traceparent.as_deref().unwrap_or("-"));
        }
        line
    }

    /// The line in Envoy's default format, with its newline.
    pub fn format(&self) -> String {
        fn opt(s: &Option<String>) -> &str {
            s.as_deref().unwrap_or("-")
        }
        let mut line = String::with_capacity(256);
        let _ = write!(
            line,
            "[{}] \"{} {} {}\" {} {} {} {} {} ",
            humantime::format_rfc3339_millis(self.start),
            self.method,
            self.path,
            self.protocol,
            self.response_code,
            if self.flags.is_empty() {
                "-"
            } else {
                self.flags
            },
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
        );
        match self.upstream_service_time_ms {
            Some(ms) => {
                let _ = write!(line, "{ms}");
            }
            None => line.push('-'),
        }
        let _ = writeln!(
            line,
            " \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
            opt(&self.forwarded_for),
            opt(&self.user_agent),
            opt(&self.request_id),
            opt(&self.authority),
            self.upstream
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        );
        line
    }
}

/// Where calls send their entries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    format: AccessLogFormat,
    pub dropped: Arc<Stat>,
}

impl AccessLog {
    /// An access log that writes nothing.
    pub fn off() -> Self {
        AccessLog {
            tx: None,
            format: AccessLogFormat::Envoy,
            dropped: Arc::new(Stat::default()),
        }
    }

    /// Starts the writer thread on `out` (stdout in production). The thread
    /// ends, after writing everything queued, when every clone is dropped.
    pub fn start(
        out: Box<dyn std::io::Write + Send>,
        format: AccessLogFormat,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))
            .expect("spawning a thread at start-up");
        (
            AccessLog {
                tx: Some(tx),
                format,
                dropped: Arc::new(Stat::default()),
            },
            handle,
        )
    }

    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one entry.
    pub fn log(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(entry.format_as(self.format)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_lines(rx: Receiver<String>, out: Box<dyn std::io::Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        // Batch whatever else is queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            // stdout is gone (closed pipe); keep draining so calls never block.
            while rx.recv().is_ok() {}
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_follow_envoys_default_format() {
        // As the HTTP/2 layer hands a request over.
        let mut head = Head::request(
            b"POST",
            b"http",
            b"front-proxy:8000",
            b"/gateway.AliveService/GetStatus",
        );
        head.append(b"user-agent", b"grpc-go/1.13.0");
        head.append(b"x-request-id", b"abc");
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_530_061_279_585);
        let mut entry = Entry::new(start, &head);
        entry.response_code = 200;
        entry.bytes_received = 5;
        entry.bytes_sent = 7;
        entry.duration_ms = 11;
        entry.upstream_service_time_ms = Some(8);
        entry.upstream = Some("172.18.0.4:8080".parse().unwrap());
        assert_eq!(
            entry.format(),
            "[2018-06-27T01:01:19.585Z] \"POST /gateway.AliveService/GetStatus HTTP/2\" 200 - 5 7 11 8 \"-\" \"grpc-go/1.13.0\" \"abc\" \"front-proxy:8000\" \"172.18.0.4:8080\"\n"
        );
        entry.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        assert!(entry.format_as(AccessLogFormat::EnvoyTrace).ends_with(
            "\"172.18.0.4:8080\" \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"\n"
        ));
        assert_eq!(entry.format_as(AccessLogFormat::Envoy), entry.format());
    }

    #[test]
    fn the_writer_writes_every_line_and_stops_when_dropped() {
        #[derive(Clone, Default)]
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (log, thread) = AccessLog::start(Box::new(sink.clone()), AccessLogFormat::Envoy);
        let (parts, ()) = http::Request::get("/x").body(()).unwrap().into_parts();
        for _ in 0..100 {
            log.log(&Entry::from_parts(SystemTime::now(), &parts));
        }
        drop(log);
        thread.join().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 100);
    }
}
