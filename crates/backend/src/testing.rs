//! A backend in the current process, for the tests of this workspace's crates.
//!
//! It runs the real [`crate::run`] on a listener the caller chooses (usually
//! `127.0.0.1:0`) and stops through the same shutdown path as a signal would.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Config, Error};

/// A running backend; dropping it aborts the server.
#[derive(Debug)]
pub struct TestBackend {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl TestBackend {
    /// Starts a backend named `id` on `127.0.0.1:0`.
    pub async fn start(id: &str) -> std::io::Result<Self> {
        Self::start_with(Config::named(id), "127.0.0.1:0".parse().expect("literal")).await
    }

    /// Starts a backend with `config` on `addr`.
    pub async fn start_with(config: Config, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(config, listener))
    }

    /// Starts a backend with `config` on an already bound `listener`.
    pub fn serve(config: Config, listener: TcpListener) -> Self {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestBackend {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the graceful shutdown, as SIGTERM would, without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has drained and returned.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.begin_shutdown();
        match self.task.take() {
            Some(task) => task.await.expect("backend task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
