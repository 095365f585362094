//! `backend`: parse the command line, start logging, bind, serve until a signal.

use std::process::ExitCode;

use backend::config::{Cli, Command, Config};
use tonic_health::pb::health_check_response::ServingStatus;

fn main() -> ExitCode {
    let cli: Cli = common::parse_args();
    common::init_tracing("info,h2=warn,tower=warn,hyper=warn");
    common::block_on("backend", cli.serve.workers, serve(cli))
}

async fn serve(cli: Cli) -> ExitCode {
    if let Some(Command::Healthcheck(args)) = cli.command {
        let addr = args
            .addr
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", cli.serve.listen.port()));
        return match backend::healthcheck::check(&addr, &args.service, args.timeout).await {
            Ok(ServingStatus::Serving) => {
                println!("SERVING");
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("{}", status.as_str_name());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("backend healthcheck: {}", common::error_chain(&e));
                ExitCode::from(1)
            }
        };
    }

    let config = match Config::from_args(&cli.serve) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("backend: {e}");
            return ExitCode::from(common::EXIT_CONFIG as u8);
        }
    };
    // Caught from here on: a SIGTERM while starting drains instead of killing.
    let mut signals = common::ShutdownSignals::install();
    let listener = match tokio::net::TcpListener::bind(cli.serve.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("backend: cannot listen on {}: {e}", cli.serve.listen);
            return ExitCode::from(common::EXIT_CONFIG as u8);
        }
    };
    let shutdown = async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "signal received");
    };
    match backend::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %common::error_chain(&e), "backend failed");
            ExitCode::FAILURE
        }
    }
}
