//! `completions` and `man`: shell completion scripts and man pages, made from
//! the same clap definitions that parse the command line, so they never
//! drift from it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use super::{Cli, CliResult, fail, write_stdout};

/// Without a shell, the help (usage, the shells and where each script
/// goes) on stderr and exit 1: a mistake, not a script on stdout.
#[derive(Args, Debug)]
#[command(
    arg_required_else_help = true,
    after_help = "Install:\n  exedev-k8s completions bash > ~/.local/share/bash-completion/completions/exedev-k8s\n  exedev-k8s completions zsh  > \"${fpath[1]}/_exedev-k8s\"\n  exedev-k8s completions fish > ~/.config/fish/completions/exedev-k8s.fish"
)]
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
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    match a.dir {
        None => {
            let mut out = Vec::new();
            render_page(&cmd, true, &mut out)
                .map_err(|e| fail(format!("cannot render the man page: {e}")))?;
            write_stdout(out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
            write_pages(&cmd, true, &dir)
                .map_err(|e| fail(format!("cannot write man pages to {}: {e}", dir.display())))?;
            eprintln!(
                "Wrote the man pages to {}; with it in MANPATH, `man exedev-k8s-plan` shows one.",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per visible command, as `clap_mangen::generate_to` names them
/// (`exedev-k8s-plan.1`), each with our sections.
fn write_pages(cmd: &clap::Command, main: bool, dir: &std::path::Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, false, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    render_page(cmd, main, &mut out)?;
    std::fs::write(dir.join(man.get_filename()), out)
}

/// clap_mangen's page, with ENVIRONMENT (every variable the command reads,
/// from the same definitions that parse it) and EXIT STATUS (from
/// `exit::MEANINGS`) added before VERSION, where man-pages(7) puts them;
/// clap_mangen writes neither.
fn render_page(cmd: &clap::Command, main: bool, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let page = String::from_utf8_lossy(&page);
    let ours = environment_section(cmd, main) + &exit_status_section();
    let text = match page.find(".SH VERSION") {
        Some(at) => format!("{}{ours}{}", &page[..at], &page[at..]),
        None => format!("{page}{ours}"),
    };
    w.write_all(text.as_bytes())
}

/// Variables read outside the argument definitions: (name, meaning, which
/// commands read them; empty = every command that reaches exe.dev or VMs).
const OTHER_ENV: &[(&str, &str, &[&str])] = &[
    (
        crate::core::token::keys::PASSPHRASE_ENV,
        "The passphrase of an encrypted --ssh-key (otherwise asked on a terminal).",
        &[],
    ),
    (
        crate::edges::ssh::SSH_PROGRAM_ENV,
        "The program run as ssh to reach VMs (the emulator's VM world prints its stand-in).",
        &["apply", "destroy", "status", "kubeconfig", "plan"],
    ),
    (
        "NO_COLOR",
        "When set and not empty, no colour, even on a terminal.",
        &["plan", "apply", "destroy", "show"],
    ),
];

/// roff text: backslashes and hyphens escaped, no line starting a request.
fn roff_text(s: &str) -> String {
    s.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| match l.starts_with('.') || l.starts_with('\'') {
            true => format!("\\&{l}"),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every environment variable the command (the main page: any command)
/// reads: from each argument's `env`, then [`OTHER_ENV`].
fn environment_section(cmd: &clap::Command, main: bool) -> String {
    /// The command's own arguments' variables (globals included), and with
    /// `deep` its subcommands', each once: those of flags, or with `!flags`
    /// those of positionals.
    fn collect(cmd: &clap::Command, deep: bool, flags: bool, seen: &mut Vec<(String, String)>) {
        for a in cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_long().is_some() == flags)
        {
            let Some(env) = a.get_env() else { continue };
            let name = env.to_string_lossy().into_owned();
            if seen.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let flag = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| a.get_id().to_string().to_uppercase());
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            seen.push((name, format!("Sets {flag}: {help}")));
        }
        if deep {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                collect(sub, deep, flags, seen);
            }
        }
    }
    let mut vars = Vec::new();
    // Flags first: a variable both a flag and a positional read (the token)
    // is described as the flag.
    collect(cmd, main, true, &mut vars);
    collect(cmd, main, false, &mut vars);
    let reaches_out = main || cmd.get_arguments().any(|a| a.get_long() == Some("ssh-key"));
    for (name, meaning, commands) in OTHER_ENV {
        let applies = main
            || match commands.is_empty() {
                true => reaches_out,
                false => commands.contains(&cmd.get_name()),
            };
        if applies && !vars.iter().any(|(n, _)| n == name) {
            vars.push((name.to_string(), meaning.to_string()));
        }
    }
    if vars.is_empty() {
        return String::new();
    }
    let mut out = String::from(".SH ENVIRONMENT\n");
    for (name, meaning) in vars {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_text(&name),
            roff_text(&meaning)
        ));
    }
    out
}

fn exit_status_section() -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in super::exit::MEANINGS {
        out.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff_text(meaning)));
    }
    out
}
