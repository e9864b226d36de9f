//! `validate`, `schema` and `show`: the fleet file and saved plans, with no
//! API call.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::args::{FleetArg, Format};
use super::{CliResult, write_stdout};
use crate::core::fleet::{self, Role};
use crate::core::plan::render;
use crate::engine::Session;
use crate::ui;

#[derive(Args, Debug)]
pub struct SchemaArgs {}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A plan saved with `plan --out`.
    pub planfile: PathBuf,
    /// Output format (markdown: whole, never summarised; `-o json` works too).
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
}

pub fn validate(a: FleetArg) -> CliResult {
    let fleet = Session::load(&a.file)?.fleet;
    let vms = fleet::desired_vms(&fleet);
    let version = crate::core::plan::spec::sizing_release(&fleet);
    crate::core::plan::spec::check_scripts(&fleet, &vms, &version)?;
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

/// Prints a saved plan in full, e.g. one downloaded from a CI run whose
/// pull-request comment was summarised. Reads the file only.
pub fn show(a: ShowArgs) -> CliResult {
    let p = crate::edges::workspace::load_plan(&a.planfile)?;
    write_stdout(match if a.json { Format::Json } else { a.format } {
        Format::Human => render::human(&p, ui::colour_enabled()),
        Format::Json => render::json(&p) + "\n",
        Format::Markdown => render::markdown(&p),
    })?;
    Ok(ExitCode::SUCCESS)
}
