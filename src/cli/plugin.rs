//! The binary as a kubectl plugin: invoked as `kubectl-oauth_token` (a symlink or copy on the
//! PATH), it is `kubectl oauth-token`, with that name in its usage and help.

use std::ffi::OsString;
use std::path::Path;

use clap::{CommandFactory, FromArgMatches};

use super::Cli;

/// The file name kubectl looks for to run `kubectl oauth-token` (kubectl maps `-` in a plugin
/// name to `_` in its file name).
pub const PLUGIN_BINARY: &str = "kubectl-oauth_token";

/// How the plugin names itself in usage lines.
pub const PLUGIN_NAME: &str = "kubectl oauth-token";

/// Whether `argv0` (the path the binary was started as) is the plugin's file name.
pub fn invoked_as_plugin(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.strip_suffix(".exe").unwrap_or(n) == PLUGIN_BINARY)
}

impl Cli {
    /// Parses the command line as `oauth-token-operator`, or as `kubectl oauth-token` when the
    /// binary was started as [`PLUGIN_BINARY`]; exits with clap's message and code 2 on a usage
    /// error.
    pub fn parse_invocation<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Cli::command();
        if args.first().is_some_and(|a| invoked_as_plugin(a)) {
            command = command
                .name(PLUGIN_NAME)
                .bin_name(PLUGIN_NAME)
                .display_name(PLUGIN_NAME)
                // The controller's commands work, but are not what the plugin is for.
                .mut_subcommand("run", |c| c.hide(true))
                .mut_subcommand("crd", |c| c.hide(true));
        }
        let parsed = command
            .try_get_matches_from(args)
            .and_then(|matches| Cli::from_arg_matches(&matches));
        parsed.unwrap_or_else(|e| exit_with(&e))
    }
}

/// Prints clap's message (help, version or a usage error) as plain text through the terminal
/// filter (a usage error quotes the argument as given, escape sequences included), and exits
/// with clap's code.
fn exit_with(error: &clap::Error) -> ! {
    let text = super::terminal::safe(&error.render().to_string());
    if error.use_stderr() {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    std::process::exit(error.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name() {
        for name in [
            "kubectl-oauth_token",
            "/usr/local/bin/kubectl-oauth_token",
            "kubectl-oauth_token.exe",
        ] {
            assert!(invoked_as_plugin(name.as_ref()), "{name}");
        }
        for name in ["oauth-token-operator", "kubectl-oauth-token", "kubectl"] {
            assert!(!invoked_as_plugin(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn the_plugin_parses_the_same_commands() {
        let cli = Cli::parse_invocation(["kubectl-oauth_token", "status", "-n", "x", "-o", "json"]);
        assert!(
            matches!(cli.command, super::super::Command::Status(ref a) if a.kube.namespace.as_deref() == Some("x"))
        );
        let help = {
            let mut c = Cli::command().name(PLUGIN_NAME).bin_name(PLUGIN_NAME);
            c.render_usage().to_string()
        };
        assert!(help.contains("kubectl oauth-token"), "{help}");
    }
}
