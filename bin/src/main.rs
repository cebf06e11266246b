//! `switchboard`: use Switchboard from the command line, and load-test it.
//!
//! | subcommand | what it does | built on |
//! |---|---|---|
//! | `serve` | a server: `chat`, `echo` or `files` mode | [`switchboard::Listener`], [`switchboard::Registry`] |
//! | `connect` | an interactive client: stdin lines out, received data to stdout | [`switchboard::Connector`] |
//! | `send` | uploads files to `serve --mode files`, checks their SHA-256 | [`switchboard::Connector`] |
//! | `load` | a load generator against an echo server, with latency percentiles | [`switchboard::Connector`] on a [`switchboard::WorkerPool`] |
//! | `ctl` | one admin command, or a prompt, on a server's admin socket | [`switchboard::admin`] |
//! | `top` | a live view of a server, on its admin socket | `ratatui` |
//!
//! Conventions shared by every subcommand:
//!
//! - results go to stdout, logs to stderr (tracing; `RUST_LOG` filters them, default `info` for
//!   `serve`, `warn` for the clients);
//! - a failure prints one line, `switchboard: <what failed: why>`, on stderr and exits with
//!   status 1; a bad invocation prints one line and exits with status 2;
//! - nothing panics on bad input; should a bug panic anyway, the panic is reported on one line
//!   too, without a backtrace.

mod cli;
mod connect;
mod ctl;
mod load;
mod ops;
mod plot;
mod protocol;
mod send;
mod serve;
mod stdin;
mod takeover;
mod top;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;

use crate::cli::{Cli, Command};

// jemalloc keeps small objects in size classes with no per-allocation header, and the
// 128-byte-aligned task cells leave no holes: an idle connection costs less RSS than under
// glibc's malloc (BENCHMARKS.md, "Accept path, allocator and bulk fairness").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before the first allocation (`_RJEM_MALLOC_CONF` overrides them).
/// One background thread returns freed pages to the kernel after jemalloc's decay time (10 s):
/// without it pages are purged only as the program allocates, so a server gone quiet after a
/// burst of connections keeps the burst's freed memory resident for as long as it stays quiet
/// (BENCHMARKS.md, "Idle memory: 640-byte task cells and a quiet server", item 3).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,max_background_threads:1\0";

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("switchboard: internal error: {message}{location}");
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);

    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Send(args) => send::run(args),
        Command::Load(args) => load::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Top(args) => top::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("switchboard: {}", one_line(&error));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, `outer: inner: root`, without repeating a cause that
/// the message above it already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// clap's errors are several lines (message, usage, hint); a bad invocation gets one. `--help`
/// and `--version` print as clap renders them and exit 0.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        _ => {
            // The first paragraph is the message (a missing argument's name is on its second
            // line); usage and hints follow a blank line.
            let rendered = error.render().to_string();
            let message = rendered
                .trim_start()
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            let message = if message.is_empty() {
                "invalid arguments"
            } else {
                message
            };
            eprintln!("switchboard: {message} (see --help)");
            ExitCode::from(2)
        }
    }
}

fn init_logging(default_level: &str) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // fmt's lines, but a live span costs 112 B instead of ~560 B, and every session keeps one.
    let _ = switchboard::log::LineLog::new(std::io::stderr, std::io::stderr().is_terminal())
        .with(filter)
        .try_init();
}
