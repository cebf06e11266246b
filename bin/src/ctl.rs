//! `switchboard ctl`: one admin command, or an interactive prompt, on a server's admin socket.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{
    cli::CtlArgs,
    ops::{AdminAddr, AdminClient},
};

/// Most commands one prompt session runs; a bound for the read loop.
const MAX_PROMPT_COMMANDS: usize = 1_000_000;

pub(crate) fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let addr = AdminAddr::parse(&args.admin);
    let mut client = AdminClient::connect(&addr, args.timeout)?;
    if !args.command.is_empty() {
        let reply = client.call(&args.command.join(" "))?;
        let failed = reply.first().is_some_and(|l| l.starts_with("error: "));
        for line in reply {
            println!("{line}");
        }
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    prompt(&addr, &mut client)
}

fn prompt(addr: &AdminAddr, client: &mut AdminClient) -> anyhow::Result<ExitCode> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the prompt")?;
    let prompt = format!("{addr}> ");
    for _ in 0..MAX_PROMPT_COMMANDS {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("cannot read the prompt"),
        };
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(command);
        let reply = client.call(command)?;
        for line in &reply {
            println!("{line}");
        }
        if command == "quit" {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
