//! `validate`, `schema`, `plan`, `apply` and `destroy`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};

use super::{ApiArgs, CliError, CliResult, fail, write_stdout};
use crate::api::command::FleetOp;
use crate::apply::{self, ApplyOptions};
use crate::client::{Client, ClientOptions};
use crate::cluster_secrets;
use crate::fleet::{self, Fleet, Role};
use crate::observe::observe;
use crate::plan::{self, Observed, Plan, PlanOptions, render};
use crate::ui;

/// Commands a fleet operation's token must grant, from the catalogue.
pub fn cmds(op: FleetOp) -> Vec<&'static str> {
    crate::api::command::commands_for(op)
}

#[derive(Args, Debug)]
pub struct FleetArg {
    /// The fleet file.
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Markdown,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    /// Only plan for this VM or pool (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Plan the teardown of every VM the fleet owns.
    #[arg(long)]
    pub destroy: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Save the plan for `apply PLANFILE`.
    #[arg(long, value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Secrets not to check here, comma-separated: environment variable
    /// names, secret file paths as written in the fleet, or `k3s-token` (the
    /// stored token). For a job that deliberately lacks them, such as a
    /// pull-request plan; apply checks them all.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub skip_secret_check: Vec<String>,
    /// Where the full plan can be read (e.g. the CI run's artifacts): named
    /// when the markdown plan is summarised to fit a pull-request comment.
    #[arg(long, value_name = "URL")]
    pub full_plan_url: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A plan saved with `plan --out`.
    pub planfile: PathBuf,
    /// Output format (markdown: whole, never summarised).
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The fleet file (optional with a PLANFILE, which records it).
    #[arg(short = 'f', long = "file", value_name = "FLEET")]
    pub file: Option<PathBuf>,
    /// A plan saved with `plan --out`: carried out exactly, or refused if stale.
    pub planfile: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Only apply for this VM or pool (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// How many agents change at once (1 or more).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: u32,
    /// Never send more than this many requests per second.
    #[arg(long, value_parser = positive_rate)]
    pub max_rate: Option<f64>,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// After applying, wait until every VM is a Ready Node with the fleet's
    /// labels and taints (and correct drifted ones).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Delete or replace VMs without draining their nodes first (when the
    /// Kubernetes API cannot be reached).
    #[arg(long)]
    pub skip_drain: bool,
    /// Delete pods whose eviction a PodDisruptionBudget refuses.
    #[arg(long)]
    pub force_drain: bool,
    /// How long a drain may take before it fails (or, with --force-drain,
    /// deletes what is left).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
}

/// How to reach the cluster's Kubernetes API.
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Kubeconfig to use (default: the one `exedev-k8s kubeconfig` stored
    /// under .exedev-k8s/<fleet>/).
    #[arg(long, env = "EXEDEV_K8S_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Reach the API through an SSH tunnel to the first server (when this
    /// machine is not on the tailnet).
    #[arg(long)]
    pub via_ssh_tunnel: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Wait until every VM is a Ready Node with the fleet's labels and taints.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Do not probe the VMs' HTTPS proxies.
    #[arg(long)]
    pub no_probe: bool,
    /// Do not read the VMs' bootstrap state over SSH.
    #[arg(long)]
    pub no_ssh: bool,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub fleet: FleetArg,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Also delete the stored k3s token under .exedev-k8s/<fleet>/.
    #[arg(long)]
    pub purge_secrets: bool,
    /// How many VMs are removed at once (1 or more).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: u32,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `--max-rate`: a positive number of requests per second (0 would mean no
/// cap, the opposite of what was asked).
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("write a positive number of requests per second, e.g. 5 or 0.5".into()),
    }
}

/// Loads and validates a fleet file; on failure prints every error.
pub fn load_fleet(path: &Path) -> CliResult<(Fleet, String)> {
    let loaded = crate::workspace::load_fleet(path)
        .map_err(|e| fail(format!("{} is not a valid fleet:\n{e}", path.display())))?;
    Ok((loaded.fleet, loaded.fingerprint))
}

pub(crate) use crate::workspace::fleet_dir;

pub fn validate(a: FleetArg) -> CliResult {
    let (fleet, _) = load_fleet(&a.file)?;
    let vms = fleet::desired_vms(&fleet);
    plan::spec::check_scripts(&fleet, &vms)?;
    let servers = vms.iter().filter(|v| v.role == Role::Server).count();
    println!(
        "{} is valid: fleet {:?}, {} VMs ({} servers, {} agents)",
        a.file.display(),
        fleet.name,
        vms.len(),
        servers,
        vms.len() - servers
    );
    Ok(ExitCode::SUCCESS)
}

pub fn schema(_: SchemaArgs) -> CliResult {
    write_stdout(serde_json::to_string_pretty(&fleet::json_schema())? + "\n")?;
    Ok(ExitCode::SUCCESS)
}

fn options(max_rate: Option<f64>) -> ClientOptions {
    ClientOptions {
        max_rate,
        ..ClientOptions::default()
    }
}

async fn make_plan(
    client: &Client,
    fleet: &Fleet,
    fp: &str,
    file: &Path,
    opts: &PlanOptions,
) -> CliResult<(Plan, Observed)> {
    let observed = observe(client, fleet, !opts.destroy).await?;
    let p = plan_from(fleet, fp, file, opts, &observed)?;
    Ok((p, observed))
}

fn plan_from(
    fleet: &Fleet,
    fp: &str,
    file: &Path,
    opts: &PlanOptions,
    observed: &Observed,
) -> CliResult<Plan> {
    let mut p = plan::diff(fleet, fp, observed, opts)?;
    p.fleet_file = file.display().to_string();
    Ok(p)
}

pub async fn plan_cmd(a: PlanArgs) -> CliResult {
    let (fleet, fp) = load_fleet(&a.fleet.file)?;
    let client = a.api.client(&cmds(FleetOp::Plan), options(None))?;
    let kube = if a.destroy {
        Err(String::new())
    } else {
        let lazy = lazy_kube(
            &fleet,
            &a.fleet.file,
            &a.kube,
            a.api.ssh_key.as_deref(),
            None,
        );
        kube_now(&lazy, &fleet, &a.fleet.file, &a.kube, false)
            .await
            .map(|_| ())
    };
    let opts = PlanOptions {
        targets: a.targets,
        destroy: a.destroy,
        members_removed: kube.is_ok(),
    };
    let (mut p, observed) = make_plan(&client, &fleet, &fp, &a.fleet.file, &opts).await?;
    if needs_drain(&p)
        && let Err(why) = &kube
    {
        p.warnings.push(drain_warning(why));
    }
    // Plan fails where apply would: every secret the changes need must
    // resolve here, unless this job was told it lacks them on purpose.
    if p.creates_vms() {
        let checked = check_secrets(&fleet, &a.fleet.file, &observed, &a.skip_secret_check)?;
        if !checked.skipped.is_empty() {
            eprintln!(
                "note: secrets not checked here (--skip-secret-check): {}; apply needs them where it runs",
                checked.skipped.join(", ")
            );
        }
        if !checked.unknown_skips.is_empty() {
            eprintln!(
                "warning: --skip-secret-check names {}, which this plan does not need (the fleet references {})",
                checked.unknown_skips.join(", "),
                [checked.resolved.as_slice(), checked.skipped.as_slice()]
                    .concat()
                    .join(", ")
            );
        }
    }
    let format = if a.json { Format::Json } else { a.format };
    match format {
        Format::Human => write_stdout(render::human(&p, ui::colour_enabled()))?,
        Format::Json => write_stdout(render::json(&p) + "\n")?,
        Format::Markdown => {
            let full_plan = match (&a.full_plan_url, &a.out) {
                (Some(url), _) => format!("the full plan: {url}"),
                (None, Some(out)) => format!(
                    "the full plan is saved in `{}` (`exedev-k8s show {}`)",
                    out.display(),
                    out.display()
                ),
                (None, None) => format!(
                    "run `exedev-k8s plan -f {}` for the full plan",
                    a.fleet.file.display()
                ),
            };
            write_stdout(render::markdown_within(
                &p,
                render::MARKDOWN_MAX_BYTES,
                &full_plan,
            ))?
        }
    }
    if let Some(out) = &a.out {
        if p.mode == plan::Mode::Destroy && fleet.protect {
            return Err(fail(format!(
                "not saving {}: fleet {:?} is protected (metadata.protect: true), so apply would refuse this teardown plan. Set protect: false in the fleet file first if you mean it",
                out.display(),
                fleet.name
            )));
        }
        crate::workspace::save_plan(&p, out)?;
        if format == Format::Human {
            println!(
                "\nSaved the plan to {}: run `exedev-k8s apply {}` to carry it out.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if a.detailed_exitcode && p.has_changes() {
        ExitCode::from(super::exit::CHANGES)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a saved plan in full, e.g. one downloaded from a CI run whose
/// pull-request comment was summarised. Reads the file only.
pub fn show_cmd(a: ShowArgs) -> CliResult {
    let p = crate::workspace::load_plan(&a.planfile)?;
    match if a.json { Format::Json } else { a.format } {
        Format::Human => print!("{}", render::human(&p, ui::colour_enabled())),
        Format::Json => println!("{}", render::json(&p)),
        Format::Markdown => print!("{}", render::markdown(&p)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A saved plan that no longer matches: nothing was done; say how to get a
/// plan that can be applied (a fresh one, reviewed).
fn stale_plan(e: &plan::file::PlanFileError, fleet: &Path, planfile: Option<&Path>) -> CliError {
    if !e.is_stale() {
        return fail(e.to_string());
    }
    let out = planfile.map_or_else(|| "plan.json".into(), |p| p.display().to_string());
    fail(format!(
        "{e}.\nNothing was changed. Make a fresh plan, review it, and apply that one:\n  exedev-k8s plan -f {} --out {out}\n  exedev-k8s apply {out}\nIn the example GitHub workflow: run the workflow by hand on main (Actions → Run workflow); it plans again and its apply waits for approval of that plan.",
        fleet.display()
    ))
}

/// Runs [`cluster_secrets::check`] for a plan against `observed`; the error
/// lists every secret that would not resolve.
fn check_secrets(
    fleet: &Fleet,
    fleet_path: &Path,
    observed: &Observed,
    skip: &[String],
) -> CliResult<cluster_secrets::SecretCheck> {
    let cluster_exists = observed.vms.iter().any(|v| plan::owned(&fleet.name, v));
    cluster_secrets::check(
        fleet,
        &fleet_path.display().to_string(),
        &fleet_dir(fleet_path),
        cluster_exists,
        skip,
    )
    .map_err(|errors| {
        fail(format!(
            "{} secret(s) needed to create this plan's VMs cannot be read (values are never shown):\n\n{errors}\n\nSet them where this runs. A job that lacks them on purpose (a pull-request plan) names them in --skip-secret-check; apply always checks them all.",
            errors.errors().len()
        ))
    })
}

/// How the tool reaches the fleet's Kubernetes API: through server `via`
/// (default: the first server), connecting on first use. Nothing is
/// contacted yet.
pub fn lazy_kube(
    fleet: &Fleet,
    fleet_path: &Path,
    kube: &KubeArgs,
    ssh_key: Option<&Path>,
    via: Option<&str>,
) -> crate::kubeaccess::LazyClient {
    // A kubeconfig the user brings is used as it is, as kubectl would use
    // it: say so when it would run programs on this machine.
    if let Some(path) = &kube.kubeconfig {
        let raw = std::fs::read_to_string(path).unwrap_or_default();
        let plugins = crate::cluster::credential_plugins(&raw);
        if !plugins.is_empty() {
            eprintln!(
                "warning: --kubeconfig {}: its credential plugins will run on this machine, as kubectl would run them ({}); exedev-k8s never runs plugins from kubeconfigs it fetches or stores itself",
                crate::text::one_line(&path.display().to_string()),
                plugins.join(", ")
            );
        }
    }
    let ssh = crate::ssh::SshOptions::new(ssh_key.map(Path::to_path_buf));
    let first = crate::kubeaccess::first_server(fleet);
    crate::kubeaccess::LazyClient::new(
        fleet,
        &fleet_dir(fleet_path),
        kube.kubeconfig.as_deref(),
        kube.via_ssh_tunnel,
        via.unwrap_or(&first),
        &ssh,
    )
}

/// The API client now. Without `fetch`, only a kubeconfig at hand is used
/// (Err says why not, for the plan's warning); with it, a missing one is
/// fetched over SSH.
pub async fn kube_now(
    lazy: &crate::kubeaccess::LazyClient,
    fleet: &Fleet,
    fleet_path: &Path,
    kube: &KubeArgs,
    fetch: bool,
) -> Result<kube::Client, String> {
    let stored = crate::kubeaccess::kubeconfig_path(&fleet_dir(fleet_path), &fleet.name);
    if !fetch && kube.kubeconfig.is_none() && !stored.exists() {
        return Err(format!(
            "no kubeconfig at {} (run `exedev-k8s kubeconfig -f {}` or pass --kubeconfig)",
            stored.display(),
            fleet_path.display()
        ));
    }
    lazy.get().await
}

fn needs_drain(p: &Plan) -> bool {
    p.mode == plan::Mode::Apply
        && p.changes
            .iter()
            .any(|c| matches!(c.action, plan::Action::Delete | plan::Action::Replace))
}

fn drain_warning(why: &str) -> String {
    format!(
        "Kubernetes API not reachable ({why}): nodes cannot be drained before their VMs are deleted or replaced; apply needs --skip-drain to go ahead"
    )
}

fn remover(
    kube: Arc<crate::kubeaccess::LazyClient>,
    opts: crate::cluster::DrainOptions,
) -> apply::NodeRemover {
    Arc::new(move |vm: String| {
        let kube = kube.clone();
        Box::pin(async move {
            let client = kube.get().await?;
            match crate::cluster::remove_node(&client, &vm, opts).await {
                Ok(crate::cluster::RemoveOutcome::Removed(r)) => Ok(format!(
                    "node removed ({} pods evicted, {} deleted)",
                    r.evicted.len(),
                    r.deleted.len()
                )),
                Ok(crate::cluster::RemoveOutcome::AlreadyGone) => Ok("no node to remove".into()),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// Waits for readiness, then corrects label/taint drift by server-side apply.
async fn wait_and_fix(
    client: &kube::Client,
    fleet: &Fleet,
    timeout: std::time::Duration,
    json: bool,
) -> CliResult<()> {
    let desired = fleet::desired_vms(fleet);
    let progress = |r: &crate::cluster::Readiness| {
        if !json {
            eprintln!("  {}/{} nodes Ready", r.ready_count(), desired.len());
        }
    };
    let readiness = crate::cluster::wait_ready(
        client,
        &desired,
        timeout,
        std::time::Duration::from_secs(5),
        progress,
    )
    .await?;
    for n in readiness.drifted() {
        if let Some(vm) = desired.iter().find(|d| d.name == n.name) {
            let removed = crate::cluster::apply_labels_taints(client, vm).await?;
            if !json {
                println!(
                    "corrected labels/taints of {}{}",
                    n.name,
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (removed taints: {})",
                            crate::text::one_line(&removed.join(", "))
                        )
                    }
                );
            }
        }
    }
    // The manifests the first server auto-applies (manifests/) must show up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let missing = crate::kubeaccess::verify_manifests(client).await?;
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(format!(
                "the cluster lacks {} although every node is Ready: k3s applies /var/lib/rancher/k3s/server/manifests/ on {} at start; check `journalctl -u k3s` there",
                missing.join(", "),
                crate::kubeaccess::first_server(fleet)
            )));
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    if !json {
        println!(
            "All {} nodes Ready with the fleet's labels and taints; manifests present.",
            desired.len()
        );
    }
    Ok(())
}

/// First Ctrl-C: stop starting work, let changes in flight finish. Second:
/// exit at once (130), as a shell user expects. Each says so through
/// `notify`, which draws above progress bars instead of under them.
fn interrupt_flag(notify: ui::Notifier, verb: &'static str) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.store(true, Ordering::Relaxed);
            notify(&format!(
                "interrupted: finishing the changes in flight, starting no new ones; re-run {verb} to converge (Ctrl-C again to quit now)"
            ));
            if tokio::signal::ctrl_c().await.is_ok() {
                notify(&format!(
                    "interrupted twice: quitting now; re-run {verb} to converge"
                ));
                std::process::exit(super::exit::INTERRUPTED);
            }
        }
    });
    flag
}

/// Waits until a server is a ready member: first its setup script's state
/// over SSH (works before any API exists: the first server of a new
/// cluster), `done` meaning k3s active and `/readyz` ok on the VM; then,
/// when the API is reachable, its Node Ready, with the fleet's labels the
/// kubelet could not set applied through the API.
fn server_waiter(
    kube: Arc<crate::kubeaccess::LazyClient>,
    fleet: &Fleet,
    ssh_key: Option<&Path>,
    timeout: std::time::Duration,
) -> apply::ServerReady {
    let desired = fleet::desired_vms(fleet);
    let ssh = crate::remote::quick(crate::ssh::SshOptions::new(ssh_key.map(Path::to_path_buf)));
    Arc::new(move |vm: String, steps: apply::StepSink| {
        let kube = kube.clone();
        let ssh = ssh.clone();
        let expected: Vec<_> = desired.iter().filter(|d| d.name == vm).cloned().collect();
        Box::pin(async move {
            let start = std::time::Instant::now();
            crate::remote::wait_bootstrapped(
                &vm,
                &ssh,
                timeout,
                std::time::Duration::from_secs(3),
                |s| steps(s.to_string()),
            )
            .await
            .map_err(|e| e.to_string())?;
            steps("bootstrap done (k3s active, /readyz ok)".to_string());
            let client = match kube.get().await {
                Ok(c) => c,
                Err(why) => {
                    return Ok(format!(
                        "bootstrap done; the Kubernetes API is not reachable from here ({why}): relying on the VM's own readiness checks"
                    ));
                }
            };
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(std::time::Duration::from_secs(30));
            let r = crate::cluster::wait_ready(
                &client,
                &expected,
                left,
                std::time::Duration::from_secs(3),
                |_| {},
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut outcome = "node Ready".to_string();
            for n in r.drifted() {
                if let Some(d) = expected.iter().find(|d| d.name == n.name) {
                    crate::cluster::apply_labels_taints(&client, d)
                        .await
                        .map_err(|e| e.to_string())?;
                    outcome.push_str("; labels and taints applied through the API");
                }
            }
            Ok(outcome)
        })
    })
}

/// Logs each VM's Tailscale device out over SSH before its `rm`: bounded,
/// and its failure only reported.
fn device_logout(ssh_key: Option<&Path>) -> apply::DeviceLogout {
    let ssh = crate::remote::quick(crate::ssh::SshOptions::new(ssh_key.map(Path::to_path_buf)));
    Arc::new(move |vm: String| {
        let ssh = ssh.clone();
        Box::pin(async move {
            crate::remote::tailscale_logout(&vm, &ssh, std::time::Duration::from_secs(30)).await
        })
    })
}

/// The fleet's servers that exist and run: the join targets at the start
/// of an apply.
fn owned_servers(fleet: &Fleet, observed: &Observed) -> Vec<String> {
    let cluster = &fleet.name;
    let tag = fleet::role_tag(Role::Server);
    observed
        .vms
        .iter()
        .filter(|v| plan::owned(cluster, v) && v.tags.contains(&tag) && v.is_running())
        .map(|v| v.vm_name.clone())
        .collect()
}

/// How `execute` runs, beyond what it runs on.
struct Exec {
    /// "apply" or "destroy": what the user ran, in messages.
    verb: &'static str,
    parallelism: usize,
    json: bool,
    remover: Option<apply::NodeRemover>,
    server_ready: Option<apply::ServerReady>,
    logout: Option<apply::DeviceLogout>,
}

async fn execute(
    client: &Client,
    fleet: &Fleet,
    fleet_path: &Path,
    p: &Plan,
    observed: &Observed,
    exec: Exec,
) -> CliResult {
    let Exec {
        verb,
        parallelism,
        json,
        remover,
        server_ready,
        logout,
    } = exec;
    if !p.has_changes() {
        if !json {
            println!("Nothing to do.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Only new VMs carry secrets; deleting and updating needs none.
    let creates = p.creates_vms();
    // A k3s token is generated only for a brand-new cluster: a fresh token
    // for an existing one would keep every new node out of it.
    let new_cluster = !observed.vms.iter().any(|v| plan::owned(&fleet.name, v));
    let secrets = if creates {
        // Every missing secret at once, before anything is read for real.
        check_secrets(fleet, fleet_path, observed, &[])?;
        let (secrets, generated) =
            cluster_secrets::resolve_noting_generated(fleet, &fleet_dir(fleet_path), new_cluster)?;
        if !generated.is_empty() {
            let files: Vec<String> = generated.iter().map(|p| p.display().to_string()).collect();
            eprintln!(
                "Generated the k3s tokens of fleet {:?} and stored them in {} (mode 0600, ignored by git). Keep a copy somewhere safe: restoring etcd snapshots and adding nodes later need them. In CI, store them as secrets and write k3s.token: {{env: K3S_TOKEN}} and k3s.agentToken: {{env: K3S_AGENT_TOKEN}}.",
                fleet.name,
                files.join(" and ")
            );
        }
        secrets
    } else {
        plan::spec::ClusterSecrets::placeholders()
    };
    // Render every script with the real secrets (and the first server in
    // both its forms) before the first call: a script over 10 KiB must stop
    // the apply before any VM exists, not halfway.
    let desired = fleet::desired_vms(fleet);
    for c in p
        .changes
        .iter()
        .filter(|c| matches!(c.action, plan::Action::Create | plan::Action::Replace))
    {
        if let Some(d) = desired.iter().find(|d| d.name == c.vm) {
            plan::spec::new_vm(fleet, d, &secrets, None)?;
            if d.is_first_server() {
                plan::spec::new_vm(
                    fleet,
                    d,
                    &secrets,
                    Some(&crate::names::fleet_vm_name(
                        &fleet.name,
                        crate::fleet::CONTROL_PLANE_POOL,
                        2,
                    )),
                )?;
            }
        }
    }
    let progress = ui::Progress::new(ui::ProgressMode::pick(json), p.changes.len());
    let opts = ApplyOptions {
        parallelism,
        cancel: interrupt_flag(progress.notifier(), verb),
        remover,
        server_ready,
        logout,
        ..ApplyOptions::default()
    };
    let report = apply::apply(
        client,
        fleet,
        p,
        &secrets,
        &owned_servers(fleet, observed),
        &opts,
        progress.reporter(),
    )
    .await;
    if json {
        println!(
            "{}",
            ui::json_event(&serde_json::json!({
                "event": "summary",
                "operation": verb,
                "ok": report.ok(),
                "seconds": report.seconds,
                "done": report.done,
                "failed": report.failed,
                "skipped": report.skipped,
            }))
        );
    } else {
        let mut title = verb.to_string();
        title[..1].make_ascii_uppercase();
        print!("\n{}", ui::summary(&title, &report));
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError {
            message: format!(
                "{} change(s) failed and {} were skipped; re-run {verb} to converge (it re-reads exe.dev first)",
                report.failed.len(),
                report.skipped.len()
            ),
            code: 1,
        })
    }
}

pub async fn apply_cmd(a: ApplyArgs) -> CliResult {
    // A saved plan is exactly what was reviewed: narrowing it here would
    // carry out something nobody saw (or, before, silently ignore --target).
    if let (Some(planfile), false) = (&a.planfile, a.targets.is_empty()) {
        return Err(fail(format!(
            "--target cannot be combined with a saved plan ({}): a saved plan is carried out exactly as reviewed. Save a narrowed plan with `exedev-k8s plan -f FLEET --target {} --out FILE` and apply that, or drop --target",
            planfile.display(),
            a.targets.join(" --target ")
        )));
    }
    let saved = a
        .planfile
        .as_deref()
        .map(crate::workspace::load_plan)
        .transpose()?;
    let fleet_path = match (&a.file, &saved) {
        (Some(f), _) => f.clone(),
        (None, Some(p)) if !p.fleet_file.is_empty() => PathBuf::from(&p.fleet_file),
        _ => {
            return Err(fail(
                "which fleet? pass -f FLEET (or a PLANFILE saved by `plan --out`)",
            ));
        }
    };
    let (fleet, fp) = load_fleet(&fleet_path)?;
    let client = a.api.client_with_ttl(
        &cmds(FleetOp::Apply),
        options(a.max_rate),
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    // The Kubernetes API, when a kubeconfig is at hand (or, with --wait,
    // fetched over SSH): drains before removals, readiness after. A new
    // cluster has none yet: apply connects once its first server is up.
    // (Observed first: only an existing cluster can have a kubeconfig to
    // fetch.)
    let destroy_mode = saved
        .as_ref()
        .is_some_and(|s| s.mode == plan::Mode::Destroy);
    let observed = observe(&client, &fleet, !destroy_mode).await?;
    let existing = observed.vms.iter().any(|v| plan::owned(&fleet.name, v));
    let ssh_key = a.api.ssh_key.clone();
    let lazy = lazy_kube(&fleet, &fleet_path, &a.kube, ssh_key.as_deref(), None);
    let kube = kube_now(&lazy, &fleet, &fleet_path, &a.kube, a.wait && existing).await;
    let drain_opts = crate::cluster::DrainOptions {
        timeout: a.drain_timeout,
        force: a.force_drain,
        ..Default::default()
    };
    let p = match saved {
        Some(saved) => {
            if saved.mode == plan::Mode::Destroy && fleet.protect {
                return Err(fail(protect_message(&fleet)));
            }
            let opts = PlanOptions {
                targets: saved.targets.clone(),
                destroy: saved.mode == plan::Mode::Destroy,
                members_removed: kube.is_ok() && !a.skip_drain,
            };
            let fresh = plan_from(&fleet, &fp, &fleet_path, &opts, &observed)?;
            if let Err(e) = plan::file::check_fresh(&saved, &fresh) {
                return Err(stale_plan(&e, &fleet_path, a.planfile.as_deref()));
            }
            saved
        }
        None => {
            let opts = PlanOptions {
                targets: a.targets,
                destroy: false,
                members_removed: kube.is_ok() && !a.skip_drain,
            };
            let mut p = plan_from(&fleet, &fp, &fleet_path, &opts, &observed)?;
            if needs_drain(&p)
                && let Err(why) = &kube
            {
                p.warnings.push(drain_warning(why));
            }
            if !a.json {
                print!("{}", render::human(&p, ui::colour_enabled()));
            }
            if needs_drain(&p) && kube.is_err() && !a.skip_drain {
                return Err(fail(
                    "refusing to delete or replace VMs whose nodes cannot be drained: pass --skip-drain to go ahead anyway, or make the Kubernetes API reachable (--kubeconfig)",
                ));
            }
            if p.has_changes()
                && !a.yes
                && !ui::confirm("Apply these changes?", "--yes").map_err(fail)?
            {
                return Err(fail("apply cancelled"));
            }
            p
        }
    };
    if needs_drain(&p) && kube.is_err() && !a.skip_drain {
        return Err(fail(drain_warning(
            kube.as_ref().err().map(String::as_str).unwrap_or(""),
        )));
    }
    // Rolling server changes talk to a server they leave alone.
    let lazy = Arc::new(match p.api_server(&owned_servers(&fleet, &observed)) {
        Some(via) if via != lazy.via() => {
            lazy_kube(&fleet, &fleet_path, &a.kube, ssh_key.as_deref(), Some(&via))
        }
        _ => lazy,
    });
    let remover = match (&kube, needs_drain(&p) && !a.skip_drain) {
        (Ok(_), true) => Some(remover(lazy.clone(), drain_opts)),
        _ => None,
    };
    // Each new or restarted server must be a ready member (bootstrap done,
    // Node Ready when the API is reachable) before the next server changes.
    let server_ready = Some(server_waiter(
        lazy.clone(),
        &fleet,
        ssh_key.as_deref(),
        a.timeout,
    ));
    let code = execute(
        &client,
        &fleet,
        &fleet_path,
        &p,
        &observed,
        Exec {
            verb: "apply",
            parallelism: a.parallelism as usize,
            json: a.json,
            remover,
            server_ready,
            logout: Some(device_logout(ssh_key.as_deref())),
        },
    )
    .await?;
    if a.wait {
        match lazy.get().await {
            Ok(k) => wait_and_fix(&k, &fleet, a.timeout, a.json).await?,
            Err(why) => return Err(fail(format!("cannot --wait: {why}"))),
        }
    }
    Ok(code)
}

pub async fn status_cmd(a: StatusArgs) -> CliResult {
    let (fleet, _) = load_fleet(&a.fleet.file)?;
    let client = a.api.client(&cmds(FleetOp::Plan), options(None))?;
    let observed = observe(&client, &fleet, true).await?;
    let desired = fleet::desired_vms(&fleet);
    let lazy = lazy_kube(
        &fleet,
        &a.fleet.file,
        &a.kube,
        a.api.ssh_key.as_deref(),
        None,
    );
    let kube = kube_now(&lazy, &fleet, &a.fleet.file, &a.kube, a.wait).await;
    if a.wait {
        match &kube {
            Ok(k) => wait_and_fix(k, &fleet, a.timeout, a.json).await?,
            Err(why) => return Err(fail(format!("cannot --wait: {why}"))),
        }
    }
    let nodes = match &kube {
        Ok(k) => Some(crate::cluster::list_nodes(k).await?),
        Err(_) => None,
    };
    let readiness = nodes
        .as_ref()
        .map(|n| crate::cluster::readiness(&desired, n));
    let probes = if a.no_probe {
        Vec::new()
    } else {
        let base = a
            .api
            .endpoint
            .trim_end_matches('/')
            .trim_end_matches("/exec")
            .to_string();
        let emulated = a.api.endpoint != crate::client::DEFAULT_ENDPOINT;
        let targets: Vec<crate::probe::ProbeTarget> = desired
            .iter()
            .filter_map(|d| d.share.map(|s| (d, s)))
            .filter(|(d, _)| observed.vms.iter().any(|v| v.vm_name == d.name))
            .map(|(d, s)| {
                if emulated {
                    crate::probe::ProbeTarget::emulated(&d.name, s.public, &base)
                } else {
                    crate::probe::ProbeTarget::new(&d.name, s.public)
                }
            })
            .collect();
        let key = match &a.api.ssh_key {
            Some(k) => Some(crate::credentials::load_private_key(k)?),
            None => None,
        };
        crate::probe::probe_all(&targets, key.as_ref(), 8).await
    };
    // How far each running VM's setup script got, over SSH (bounded
    // fan-out, one reused connection per VM).
    let bootstrap = if a.no_ssh {
        BTreeMap::new()
    } else {
        let running: Vec<String> = observed
            .vms
            .iter()
            .filter(|v| plan::owned(&fleet.name, v) && v.is_running())
            .map(|v| v.vm_name.clone())
            .collect();
        let ssh = crate::remote::quick(crate::ssh::SshOptions::new(a.api.ssh_key.clone()));
        crate::remote::read_reports(&running, &ssh, 8, std::time::Duration::from_secs(20))
            .await
            .into_iter()
            .collect()
    };
    let mut st = crate::status::join(
        &fleet.name,
        &desired,
        &observed.vms,
        &observed.shares,
        nodes.as_deref().zip(readiness.as_ref()),
        &probes,
        &bootstrap,
    );
    st.cluster_api_error = kube.as_ref().err().cloned();
    if a.json {
        write_stdout(
            crate::text::json_safe(&serde_json::to_string_pretty(&st)?).into_owned() + "\n",
        )?;
    } else {
        write_stdout(crate::status::render(&st))?;
    }
    Ok(if st.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CHANGES)
    })
}

fn protect_message(fleet: &Fleet) -> String {
    format!(
        "fleet {:?} is protected (metadata.protect: true): destroy refused. Set protect: false in the fleet file first if you really mean it",
        fleet.name
    )
}

pub async fn destroy_cmd(a: DestroyArgs) -> CliResult {
    let (fleet, fp) = load_fleet(&a.fleet.file)?;
    if fleet.protect {
        return Err(fail(protect_message(&fleet)));
    }
    let client = a.api.client_with_ttl(
        &cmds(FleetOp::Destroy),
        options(None),
        crate::credentials::LONG_OPERATION_TTL,
    )?;
    let opts = PlanOptions {
        targets: Vec::new(),
        destroy: true,
        members_removed: false,
    };
    let (p, observed) = make_plan(&client, &fleet, &fp, &a.fleet.file, &opts).await?;
    if !a.json {
        print!("{}", render::human(&p, ui::colour_enabled()));
    }
    if p.has_changes()
        && !a.yes
        && !ui::confirm("Destroy these VMs? Their disks are deleted too.", "--yes").map_err(fail)?
    {
        return Err(fail("destroy cancelled"));
    }
    let code = execute(
        &client,
        &fleet,
        &a.fleet.file,
        &p,
        &observed,
        Exec {
            verb: "destroy",
            parallelism: a.parallelism as usize,
            json: a.json,
            remover: None,
            server_ready: None,
            logout: Some(device_logout(a.api.ssh_key.as_deref())),
        },
    )
    .await?;
    if a.purge_secrets && cluster_secrets::purge(&fleet_dir(&a.fleet.file), &fleet.name)? && !a.json
    {
        println!("Removed the stored k3s token for {:?}.", fleet.name);
    }
    Ok(code)
}
