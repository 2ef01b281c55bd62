#![forbid(unsafe_code)]
//! The `oauth-token-operator` binary: parses the command line and hands over to the library.
//! Started as `kubectl-oauth_token`, it is the kubectl plugin `kubectl oauth-token`.

use oauth_token_operator::cli::{Cli, run};

/// jemalloc, configured at build time by `.cargo/config.toml` (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    run(Cli::parse_invocation(std::env::args_os()))
}
