//! The real `proxy` binary's command line: `--validate`, clear errors and
//! exit status 64 on bad configuration.

#![allow(clippy::unwrap_used)] // Tests panic on purpose.

use std::process::{Command, Output};

fn proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("proxy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_accepts_a_good_file_and_summarises_it() {
    let path = write(
        "good.yaml",
        "admin: 0.0.0.0:8001\nlisteners:\n  - address: 0.0.0.0:8000\n    cluster: backend\nclusters:\n  - name: backend\n    upstreams: [backend:8080]\n    lb: least_request\n",
    );
    let out = proxy(&["--validate", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("configuration OK\n"), "{stdout}");
    assert!(
        stdout.contains("cluster backend: backend:8080 (DNS every 5s), lb least_request"),
        "{stdout}"
    );
}

#[test]
fn validate_lists_every_problem_and_exits_64() {
    let path = write(
        "bad.yaml",
        "listeners:\n  - cluster: nowhere\nclusters:\n  - name: backend\n    dns_refresh: 1ms\n",
    );
    let out = proxy(&["--validate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["not defined", "has no upstreams", "dns_refresh"] {
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
}

#[test]
fn a_missing_file_or_no_upstream_is_a_one_line_error() {
    let out = proxy(&["--config", "/nonexistent/proxy.yaml"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/proxy.yaml"),
        "{stderr}"
    );

    let out = proxy(&["--listen", "127.0.0.1:0", "--admin", "off"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream HOST:PORT"));
}

#[test]
fn a_port_in_use_is_reported_with_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = proxy(&[
        "--listen",
        &addr,
        "--admin",
        "off",
        "--upstream",
        "127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn help_names_the_environment_variables() {
    let out = proxy(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PROXY_UPSTREAM",
        "PROXY_LISTEN",
        "PROXY_ADMIN",
        "PROXY_DNS_REFRESH",
        "PROXY_LB",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

#[test]
fn the_shipped_configs_are_valid() {
    let compose = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose");
    for name in ["front-proxy.yaml", "front-proxy-l4.yaml"] {
        let path = compose.join(name);
        if !path.exists() && name != "front-proxy.yaml" {
            continue;
        }
        let out = proxy(&["--validate", "--config", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {out:?}");
    }
    let out = proxy(&[
        "--validate",
        "--config",
        compose.join("front-proxy.yaml").to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("health checks every 1s"), "{summary}");
    assert!(
        summary.contains("retries: refused streams always; reset, unavailable"),
        "{summary}"
    );
}

#[test]
fn usage_errors_exit_64_like_other_configuration_problems() {
    for args in [
        &["--lb", "fastest"][..],
        &["--listen", "nope"],
        &["--no-such-flag"],
    ] {
        let out = proxy(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = proxy(&["--version"]);
    assert!(out.status.success());
}
