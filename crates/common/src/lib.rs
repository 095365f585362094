//! The few helpers that every binary of the workspace shares, so that each
//! `main.rs` stays a thin shell: shutdown signals, log set-up, durations on the
//! command line and the exit status for bad configuration.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Exit status for bad configuration (`EX_USAGE` from `sysexits.h`).
pub const EXIT_CONFIG: i32 = 64;

/// The tokio runtime for `workers` worker threads; 0 means one per CPU this
/// process may run on (its affinity mask, so `taskset -c 0` counts as one).
///
/// One worker gets the single-threaded runtime. A multi-threaded runtime with
/// one worker runs a woken task before the rest of the queue (its LIFO slot):
/// an HTTP/2 connection task woken by every finished call then writes every
/// response on its own, one write per call instead of one per batch. For the
/// backend pinned to one core that was 10.0 against 6.1 us of CPU per call.
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

/// Runs `main` to completion on [`runtime`]`(workers)`: the body of each
/// binary's `main`. A runtime that cannot start is reported as `binary` and
/// fails the process.
pub fn block_on(
    binary: &str,
    workers: usize,
    main: impl std::future::Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    match runtime(workers) {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("{binary}: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the command line; on a usage error prints clap's message and exits
/// with [`EXIT_CONFIG`] (64) like every other configuration problem. `--help`
/// and `--version` exit 0 as usual.
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let _ = e.print();
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// Starts `tracing` to stderr. `RUST_LOG` overrides `default_filter`.
///
/// Logs go to stderr so that stdout stays free for what is meant to be piped,
/// such as the proxy's access log.
pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment [`ShutdownSignals::install`]
/// returns. Install them before the process binds or serves anything: a
/// signal that arrives while it starts up (its listeners already serving,
/// the rest still being set up) then starts a drain, where without a handler
/// the default action would kill the process and cut its calls.
///
/// Installing the handlers can only fail when the process is out of file
/// descriptors; the failure is then logged and [`ShutdownSignals::recv`]
/// never completes, so the process keeps serving rather than exiting at once.
pub struct ShutdownSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Self {
                    signals: Some((term, int)),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot install signal handlers; shutdown by signal is unavailable");
                    Self { signals: None }
                }
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Completes on the next SIGTERM or SIGINT (counting those that came
    /// since [`ShutdownSignals::install`]) and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            match &mut self.signals {
                Some((term, int)) => tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                },
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Parses a human duration such as `500ms`, `1s` or `2m`, for clap.
///
/// A bare number is read as seconds, the unit most people mean.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("`{s}` is not a valid duration"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 1s or 2m: {e}"))
}

/// Formats a duration for people and logs (`1s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos).
///
/// Returns `None` for anything else; the gRPC spec says such a header is
/// treated as if absent.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value, in the finest unit that
/// fits the spec's 8 digits (rounding up, so a deadline is never shortened
/// by more than the unit allows).
pub fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (size, unit) in units {
        let n = nanos.div_ceil(size);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

/// `GET path` over HTTP/1.1 on `addr` with a deadline; returns the status code.
///
/// For the `healthcheck` subcommands of images built FROM scratch (no curl).
/// An unspecified address (`0.0.0.0`, `::`) means this host.
pub fn http_probe(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = tcp
            .read(&mut head[n..])
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))
}

/// Formats an error with its chain of causes on one line: `error: cause: cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some libraries repeat their source's text in their own; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_is_the_single_threaded_runtime() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |workers| runtime(workers).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let expected = if cpus == 1 {
            RuntimeFlavor::CurrentThread
        } else {
            RuntimeFlavor::MultiThread
        };
        assert_eq!(flavor(0), expected);
        let runtime = runtime(2).unwrap();
        assert_eq!(runtime.metrics().num_workers(), 2);
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn grpc_timeouts_round_trip() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(100_000)), "100000S");
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(7),
            Duration::from_nanos(123_456_789_123),
        ] {
            let back = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).unwrap();
            assert!(
                back >= d && back - d < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {back:?}"
            );
        }
    }
}
