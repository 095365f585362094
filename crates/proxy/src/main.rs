//! `proxy`: parse flags, load and validate the configuration, bind, serve
//! until SIGTERM or SIGINT, drain.

use std::process::ExitCode;

use proxy::config::{Cli, Command, Config};

/// mimalloc instead of the C library's allocator: every call allocates its
/// header maps and stream state, and glibc's malloc and free were about 8% of
/// the proxy's instructions per call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli: Cli = common::parse_args();
    common::init_tracing("info,h2=error,hickory_proto=warn,hickory_resolver=warn");
    let config = Config::load(&cli);
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        let Some(admin) = admin_address(&cli, config.as_ref().ok()) else {
            eprintln!("proxy healthcheck: the admin interface is off; nothing to ask");
            return ExitCode::from(1);
        };
        return match common::http_probe(admin, "/ready", timeout) {
            Ok(200) => {
                println!("LIVE");
                ExitCode::SUCCESS
            }
            Ok(code) => {
                println!("not ready (HTTP {code})");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("proxy healthcheck: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("proxy: {e}");
            return ExitCode::from(common::EXIT_CONFIG as u8);
        }
    };
    if cli.validate {
        print!("configuration OK\n{}", config.summary());
        return ExitCode::SUCCESS;
    }

    common::block_on("proxy", config.workers, async {
        // Caught from here on: a SIGTERM that comes while the proxy starts
        // (its listeners serving before the rest is set up) drains it, where
        // the default action would kill it and cut the calls it has taken.
        let mut signals = common::ShutdownSignals::install();
        let listeners = match proxy::Listeners::bind(&config).await {
            Ok(listeners) => listeners,
            Err(e) => {
                eprintln!("proxy: {}", common::error_chain(&e));
                return ExitCode::from(common::EXIT_CONFIG as u8);
            }
        };
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            let signal = signals.recv().await;
            tracing::info!(signal, "signal received; a second one exits at once");
            let _ = first_tx.send(signals);
        };
        // An operator who signals twice wants out now, drain or not.
        let impatient = async {
            let Ok(mut signals) = first_rx.await else {
                return std::future::pending::<()>().await;
            };
            let signal = signals.recv().await;
            tracing::warn!(signal, "second signal: exiting without finishing the drain");
        };
        tokio::select! {
            result = proxy::run(config, listeners, shutdown) => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %common::error_chain(&e), "proxy failed");
                    ExitCode::FAILURE
                }
            },
            () = impatient => ExitCode::from(1),
        }
    })
}

/// The admin address a healthcheck should ask: the configuration's, or, when
/// the rest of the configuration is not valid here (a health check needs no
/// upstreams), `--admin` / `PROXY_ADMIN`, or the default.
fn admin_address(cli: &Cli, config: Option<&Config>) -> Option<std::net::SocketAddr> {
    if let Some(config) = config {
        return config.admin;
    }
    match cli.admin.as_deref().map(str::trim) {
        Some("off") => None,
        Some(text) => text.parse().ok(),
        None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8001))),
    }
}
