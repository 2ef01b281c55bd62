#![forbid(unsafe_code)]
//! The `oauth-token-operator` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    oauth_token_operator::cli::run(oauth_token_operator::cli::Cli::parse())
}
