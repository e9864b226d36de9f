//! `completions` and `man`: shell completion scripts and man pages, made from
//! the same clap definitions that parse the command line, so they never
//! drift from it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use super::{Cli, CliResult, fail, write_stdout};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command here (exedev-k8s.1, exedev-k8s-plan.1,
    /// ...) instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for a shell.
pub fn completions(a: CompletionsArgs) -> CliResult {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    if a.shell != clap_complete::Shell::Bash {
        let mut out = Vec::new();
        clap_complete::generate(a.shell, &mut cmd, name, &mut out);
        write_stdout(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    // clap_complete 4.6.12's bash script names its per-command cases two
    // ways when the program name has a hyphen (`exedev__k8s__subcmd__plan`
    // vs `exedev__subcmd__k8s__subcmd__plan`), so no flag would complete.
    // Generated for a name without one, then registered for the real name.
    let plain = name.replace('-', "_");
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, plain.clone(), &mut out);
    let script = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| match l.trim_start().starts_with("complete -F ") {
            true => l
                .strip_suffix(&format!(" {plain}"))
                .map_or_else(|| l.to_string(), |head| format!("{head} {name}")),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    write_stdout(script + "\n")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the main man page, or writes every page into `--dir`.
pub fn man(a: ManArgs) -> CliResult {
    let cmd = Cli::command();
    match a.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| fail(format!("cannot render the man page: {e}")))?;
            write_stdout(out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, &dir)
                .map_err(|e| fail(format!("cannot write man pages to {}: {e}", dir.display())))?;
            eprintln!(
                "Wrote the man pages to {}; with it in MANPATH, `man exedev-k8s-plan` shows one.",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
