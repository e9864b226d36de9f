//! `plan`: what apply would change, for a person, a pull request or a
//! pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::args::{FleetArg, Format, KubeArgs, ReleaseArgs};
use super::{ApiArgs, CliResult, write_stdout};
use crate::core::plan::render;
use crate::engine::{self, PlanRequest};
use crate::ui;

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
    /// Output format (`-o json`, as kubectl writes it, works too).
    #[arg(
        short = 'o',
        long,
        visible_alias = "output",
        value_enum,
        default_value = "human"
    )]
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
    #[command(flatten)]
    pub release: ReleaseArgs,
}

pub async fn run(a: PlanArgs) -> CliResult {
    let s = super::read_only_session(&a.fleet, &a.api, &a.kube)?
        .with_channel_server(a.release.channel_server.clone());
    let planned = engine::plan(
        &s,
        PlanRequest {
            targets: a.targets,
            destroy: a.destroy,
            skip_secret_check: a.skip_secret_check,
        },
    )
    .await?;
    let p = planned.plan;
    if let Some(checked) = &planned.secrets {
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
    // A refused plan has been shown in full, in every format; it is not
    // saved and the command fails.
    if p.is_refused() {
        return Err(engine::refused(&p).into());
    }
    if let Some(out) = &a.out {
        engine::check_savable(&s, &p, out)?;
        crate::edges::workspace::save_plan(&p, out)?;
        if format == Format::Human {
            println!(
                "\nSaved the plan to {}: run `exedev-k8s apply {}{}` to carry it out.",
                out.display(),
                out.display(),
                a.kube.as_flags()
            );
        }
    }
    Ok(if a.detailed_exitcode && p.has_changes() {
        ExitCode::from(super::exit::CHANGES)
    } else {
        ExitCode::SUCCESS
    })
}
