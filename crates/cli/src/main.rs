#![forbid(unsafe_code)]
//! The `refsync` binary.

mod args;
mod controller;
mod output;
mod plan;
mod providers;
mod render;
mod tree;
mod validate;
mod webhook;

fn main() -> std::process::ExitCode {
    // Dependencies enable both rustls crypto back ends; rustls needs one chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    args::run()
}
