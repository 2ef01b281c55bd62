//! The compiled binary as a user runs it, one module per command: the binary as a separate
//! process with a kubeconfig pointing at the API-server double, while (for the day-2 commands)
//! the real controller in-process keeps the clients' tokens and statuses.
//!
//! * [`run`]: `run` itself: tokens, probes, metrics, SIGTERM, leader election, startup errors;
//! * [`status`]: the table, the detail view, kubeconfig handling, the kubectl plugin;
//! * [`renew`]: `renew` with and without `--wait`, `--all`, usage errors;
//! * [`inspect`]: decoding a managed Secret's token, never printing it;
//! * [`cluster`]: `status`, `renew` and `inspect` on a ClusterOAuthClient (`clusteroauthclient/NAME`);
//! * [`names`]: names that are no names never reach a request path;
//! * [`terminal`]: nothing a hostile cluster says reaches the terminal raw;
//! * [`common`]: what they share.
//!
//! `cargo test --test cli -- --nocapture` prints every command and its output (the
//! Troubleshooting section of `docs/operations.md` is copied from such a run).
//!
//! The modules gather what four test binaries held: `tests/cli_day2.rs` (now `status`, `renew`,
//! `inspect`), `tests/cli_names.rs` (now `names`), `tests/cli_terminal.rs` (now `terminal`) and
//! `tests/operator_binary.rs` (now `run`).

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod common;
mod inspect;
mod names;
mod renew;
mod run;
mod status;
mod terminal;
