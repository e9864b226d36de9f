//! `exedev-k8s exec -- WORDS...`: the raw escape hatch.

use std::process::ExitCode;

use clap::Args;

use super::{ApiArgs, CliResult, fail};
use crate::core::api::Command;
use crate::core::api::command::lookup;
use crate::edges::client::ClientOptions;

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The lobby command, one argument per word (quoted for you).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub words: Vec<String>,
}

pub async fn run(args: ExecArgs) -> CliResult {
    let Some((spec, _)) = lookup(&args.words) else {
        // Only the command word: its arguments may be anything, tokens
        // included.
        return Err(fail(format!(
            "unknown lobby command `{}`; see `exedev-k8s exec -- help`",
            crate::core::api::command::redact_words(&args.words).join(" ")
        )));
    };
    let client = args.api.client(&[spec.name], ClientOptions::default())?;
    let reply = client.exec(&Command::Raw(args.words)).await?;
    super::write_stdout(
        crate::base::text::json_safe(&serde_json::to_string_pretty(&reply)?).into_owned() + "\n",
    )?;
    Ok(ExitCode::SUCCESS)
}
