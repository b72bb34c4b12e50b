#![forbid(unsafe_code)]
//! The `refsync` binary.

mod args;
mod providers;
mod render;

fn main() -> std::process::ExitCode {
    args::run()
}
