//! The terminal edge: argument parsing, rendering, exit codes. The work is
//! the engine's (`crate::engine`); each command file here parses its
//! arguments, calls it and renders what comes back.
//!
//! Every subcommand returns a [`CliResult`]; `main` prints the error, its
//! causes and its hint once, and exits 1. Exit codes are a contract with
//! pipelines: see [`exit`].

mod apply;
mod args;
mod check_cmd;
mod docs_cmd;
mod exec_cmd;
pub mod exit;
mod kubeconfig_cmd;
mod plan;
mod restore_cmd;
mod snapshot_cmd;
mod status;
mod token_cmd;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::edges::client::{Client, ClientOptions, DEFAULT_ENDPOINT};
use crate::edges::credentials::Credentials;

/// A user-facing failure: what went wrong (with the errors that caused it)
/// and, once, what to do.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    /// What to do, printed once after the message (see `crate::base::hint`).
    pub hint: Option<String>,
    /// Exit code: 1 for errors.
    pub code: u8,
}

/// Any error: its message, then each cause its message does not already
/// quote, and its hint when it is one of the tool's errors that carry one.
impl<E: std::error::Error + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        use crate::base::hint::Hint;
        let mut message = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message.push_str(&format!("\n  caused by: {text}"));
            }
            cause = c.source();
        }
        let any: &dyn std::any::Any = &e;
        let hint = if let Some(e) = any.downcast_ref::<crate::engine::EngineError>() {
            e.hint()
        } else if let Some(e) = any.downcast_ref::<crate::core::api::ApiError>() {
            e.hint()
        } else {
            None
        };
        CliError {
            message,
            hint,
            code: exit::FAILURE,
        }
    }
}

pub type CliResult<T = ExitCode> = Result<T, CliError>;

/// Build a CliError from a message.
pub fn fail(message: impl Into<String>) -> CliError {
    CliError {
        message: message.into(),
        hint: None,
        code: exit::FAILURE,
    }
}

/// A session for a fleet operation: warns (stderr) first when a kubeconfig
/// the user brings carries credential plugins, since they will run on this
/// machine, as kubectl would run them.
fn session(
    loaded: crate::edges::workspace::LoadedFleet,
    path: &std::path::Path,
    client: crate::edges::client::Client,
    kube: crate::engine::KubeSettings,
) -> crate::engine::Session {
    let plugins = crate::engine::user_kubeconfig_plugins(&kube);
    if let (Some(path), false) = (&kube.kubeconfig, plugins.is_empty()) {
        eprintln!(
            "warning: --kubeconfig {}: its credential plugins will run on this machine, as kubectl would run them ({}); exedev-k8s never runs plugins from kubeconfigs it fetches or stores itself",
            crate::base::text::one_line(&path.display().to_string()),
            plugins.join(", ")
        );
    }
    crate::engine::Session::new(loaded, path, client, kube)
}

/// A session that only reads (plan, status): the fleet loaded, a token
/// with the plan's grants.
fn read_only_session(
    fleet: &args::FleetArg,
    api: &ApiArgs,
    kube: &args::KubeArgs,
) -> CliResult<crate::engine::Session> {
    let loaded = crate::engine::Session::load(&fleet.file)?;
    let client = api.client(
        &crate::engine::cmds(crate::core::api::command::FleetOp::Plan),
        api.options(None),
    )?;
    Ok(session(
        loaded,
        &fleet.file,
        client,
        kube.settings(api.ssh_key()),
    ))
}

/// Where the engine's progress notes go: stderr, or nowhere with --json
/// (stdout is then one JSON document).
fn notes(json: bool) -> crate::engine::Notes {
    if json {
        std::sync::Arc::new(|_: &str| {})
    } else {
        // Notes quote VMs and Kubernetes (errors, names): escaped like
        // every other line of outside text.
        std::sync::Arc::new(|n: &str| eprintln!("{}", crate::base::text::lines(n)))
    }
}

/// Writes `text` to stdout. A reader that went away (`exedev-k8s plan |
/// head`) is not an error: the output is simply cut, as with any Unix
/// tool, instead of a panic.
pub fn write_stdout(text: impl AsRef<[u8]>) -> CliResult<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_ref()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(format!("cannot write to stdout: {e}"))),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "exedev-k8s",
    version,
    about = "Declarative k3s fleets on exe.dev VMs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// How to reach exe.dev, shared by every subcommand that calls it.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The /exec endpoint (the built-in emulator prints its own); a bare
    /// origin means its /exec.
    #[arg(long, env = "EXE_DEV_ENDPOINT", hide_env_values = true, default_value = DEFAULT_ENDPOINT, global = true,
          value_parser = crate::edges::client::parse_endpoint)]
    pub endpoint: String,
    /// An exe0/exe1 API token [env: EXE_DEV_API_KEY; the flag wins].
    // The environment is read by `credentials::Given`, not by clap, so that
    // a flag given on the command line beats any variable.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// An SSH private key registered with exe.dev: tokens are minted from it
    /// on the fly with only the commands needed and a 1 h expiry
    /// [env: EXE_DEV_SSH_KEY; the flag wins, also over EXE_DEV_API_KEY].
    #[arg(long, global = true)]
    pub ssh_key: Option<PathBuf>,
}

impl ApiArgs {
    fn given(&self) -> crate::edges::credentials::Given {
        crate::edges::credentials::Given::with_env(self.token.clone(), self.ssh_key.clone())
    }

    /// The SSH key for VMs: `--ssh-key`, else `EXE_DEV_SSH_KEY`.
    pub fn ssh_key(&self) -> Option<PathBuf> {
        self.given().key()
    }

    /// The credentials to use ([`crate::edges::credentials::choose`]); a note
    /// about what was passed over goes to stderr, once per run.
    pub fn credentials(&self) -> CliResult<Credentials> {
        let (credentials, note) =
            crate::edges::credentials::choose(&self.given(), crate::edges::credentials::now_unix())
                .map_err(fail)?;
        static NOTED: std::sync::Once = std::sync::Once::new();
        if let Some(note) = note {
            NOTED.call_once(|| eprintln!("{note}"));
        }
        Ok(credentials)
    }

    /// Client options with an optional request-rate cap.
    pub fn options(&self, max_rate: Option<f64>) -> ClientOptions {
        ClientOptions {
            max_rate,
            ..ClientOptions::default()
        }
    }

    /// A client whose token grants `cmds`.
    pub fn client(&self, cmds: &[&str], options: ClientOptions) -> CliResult<Client> {
        self.client_with_ttl(cmds, options, crate::edges::credentials::ON_THE_FLY_TTL)
    }

    /// A client whose (minted) token lives `ttl`.
    pub fn client_with_ttl(
        &self,
        cmds: &[&str],
        options: ClientOptions,
        ttl: std::time::Duration,
    ) -> CliResult<Client> {
        let token = self.credentials()?.token_for(cmds, ttl)?;
        Ok(Client::new(self.endpoint.clone(), token, options)?)
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mint and inspect exe.dev API tokens.
    #[command(subcommand)]
    Token(token_cmd::TokenCmd),
    /// Send one raw lobby command and print its JSON reply.
    Exec(exec_cmd::ExecArgs),
    /// Check a fleet file: every error with file:line:column.
    Validate(args::FleetArg),
    /// Print the fleet file's JSON Schema (for editors).
    Schema(validate::SchemaArgs),
    /// Show what apply would change.
    Plan(plan::PlanArgs),
    /// Print a saved plan in full (no API call).
    Show(validate::ShowArgs),
    /// Make exe.dev match the fleet (or carry out a saved plan).
    Apply(apply::ApplyArgs),
    /// Delete every VM the fleet owns.
    Destroy(apply::DestroyArgs),
    /// One table of exe.dev VMs, Kubernetes Nodes and proxy probes.
    Status(status::StatusArgs),
    /// Prove pod-to-pod (node pairs), Service, DNS, API-from-pod and each
    /// shared pool's port, with a temporary netexec DaemonSet.
    Check(check_cmd::CheckArgs),
    /// Roll the cluster back to an etcd snapshot (shows what it will do, asks).
    Restore(Box<restore_cmd::RestoreArgs>),
    /// Fetch the cluster's kubeconfig from the first server over SSH.
    Kubeconfig(kubeconfig_cmd::KubeconfigArgs),
    /// Take, list and delete k3s's etcd snapshots over SSH.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCmd),
    /// Run the exe.dev API emulator (for tests, demos and CI).
    Emulator(Box<crate::emulator::EmulatorArgs>),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(docs_cmd::CompletionsArgs),
    /// Print the man page, or write one per command with --dir.
    Man(docs_cmd::ManArgs),
}

/// Entry point of the binary. A panic is a bug, but it must not read as a
/// result: the panic hook reports it and exits [`exit::FAILURE`] at once,
/// wherever it happens (also in a spawned task whose failure a caller
/// might otherwise pass over).
pub fn main() -> ExitCode {
    exit::install_panic_report();
    #[cfg(debug_assertions)]
    if std::env::var_os(exit::TEST_PANIC_ENV).is_some_and(|v| v == "main") {
        panic!("{}=main (debug builds only)", exit::TEST_PANIC_ENV);
    }
    // The VM world's stand-ins (`exedev-k8s __world <command>`): run inside
    // emulated VMs, never by a user; they take their own arguments.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(crate::world::standin::HIDDEN_COMMAND) {
        let code = crate::world::standin::main(args[2..].to_vec());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = exit::usage_error(&e);
            if let Some(hint) = positional_fleet_hint(&e, &args) {
                eprintln!("hint: {}", crate::base::text::one_line(&hint));
            }
            return code;
        }
    };
    // Every command but the emulator waits on the network, with bounded
    // concurrency: one thread drives it all (fewer threads and allocator
    // arenas: less memory and CPU for a large plan). The emulator serves
    // many clients at once and keeps a thread per core.
    let mut builder = match cli.command {
        Cmd::Emulator(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote exe.dev, VMs and Kubernetes: keep the lines,
            // escape every other control character.
            eprintln!("error: {}", crate::base::text::lines(&e.message));
            if let Some(h) = &e.hint {
                eprintln!("hint: {}", crate::base::text::lines(h));
            }
            ExitCode::from(e.code)
        }
    }
}

/// `exedev-k8s plan fleet.yaml`: clap refuses the stray positional; the
/// likely meaning is `-f fleet.yaml`, said for every command that takes a
/// fleet file (apply takes a PLANFILE there and says so itself).
fn positional_fleet_hint(e: &clap::Error, args: &[String]) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(stray)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if stray.starts_with('-') {
        return None;
    }
    let cli = Cli::command();
    let sub = args.iter().skip(1).find_map(|a| cli.find_subcommand(a))?;
    sub.get_arguments()
        .any(|a| a.get_short() == Some('f') && a.get_long() == Some("file"))
        .then(|| {
            format!(
                "did you mean `exedev-k8s {} -f {stray}`? (without -f, it reads fleet.yaml in the working directory)",
                sub.get_name()
            )
        })
}

async fn run(cli: Cli) -> CliResult {
    #[cfg(debug_assertions)]
    if std::env::var_os(exit::TEST_PANIC_ENV).is_some_and(|v| v == "task") {
        // A panicking task whose JoinError is passed over, as a careless
        // caller might: the hook still makes the process fail.
        let _ = tokio::spawn(async { panic!("{}=task", exit::TEST_PANIC_ENV) }).await;
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        Cmd::Token(t) => token_cmd::run(t),
        Cmd::Exec(a) => exec_cmd::run(a).await,
        Cmd::Validate(a) => validate::validate(a),
        Cmd::Schema(a) => validate::schema(a),
        Cmd::Plan(a) => plan::run(a).await,
        Cmd::Show(a) => validate::show(a),
        Cmd::Apply(a) => apply::apply(a).await,
        Cmd::Destroy(a) => apply::destroy(a).await,
        Cmd::Status(a) => status::run(a).await,
        Cmd::Check(a) => check_cmd::run(a).await,
        Cmd::Restore(a) => restore_cmd::run(*a).await,
        Cmd::Kubeconfig(a) => kubeconfig_cmd::run(a).await,
        Cmd::Snapshot(c) => snapshot_cmd::run(c).await,
        Cmd::Completions(a) => docs_cmd::completions(a),
        Cmd::Man(a) => docs_cmd::man(a),
        Cmd::Emulator(a) => {
            crate::emulator::run_cli(*a).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
