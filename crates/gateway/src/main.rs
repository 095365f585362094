//! `gateway`: parse the command line, start logging, bind, serve until a signal.

use std::process::ExitCode;

use gateway::config::{Cli, Command, Config};

fn main() -> ExitCode {
    let cli: Cli = common::parse_args();
    common::init_tracing("info,tower_http=info,h2=warn,hyper=warn");
    common::block_on("gateway", cli.workers, serve(cli))
}

async fn serve(cli: Cli) -> ExitCode {
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        return match common::http_probe(cli.listen, "/healthz", timeout) {
            Ok(200) => {
                println!("OK");
                ExitCode::SUCCESS
            }
            Ok(code) => {
                println!("unhealthy (HTTP {code})");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("gateway healthcheck: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = match Config::from_args(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(common::EXIT_CONFIG as u8);
        }
    };
    // Caught from here on: a SIGTERM while starting drains instead of killing.
    let mut signals = common::ShutdownSignals::install();
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("gateway: cannot listen on {}: {e}", cli.listen);
            return ExitCode::from(common::EXIT_CONFIG as u8);
        }
    };
    let shutdown = async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "signal received");
    };
    match gateway::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %common::error_chain(&e), "gateway failed");
            ExitCode::FAILURE
        }
    }
}
