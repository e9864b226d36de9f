//! Plan output: human (Terraform-like), markdown (pull-request comments) and
//! JSON (machines). Pure functions of a [`Plan`]; the caller decides colour.
//!
//! A plan quotes what exe.dev reported (names, images, comments, tags,
//! statuses), and exe.dev reports what anyone with access to the account
//! wrote: every such string goes through [`crate::text`] here, so no escape
//! sequence reaches a terminal and no `<!--` hides the rest of a pull
//! request comment.

use std::fmt::Write;

use super::{Action, Change, Plan};
use crate::text::{md_code, md_fence, md_text, one_line};

const RESET: &str = "\x1b[0m";

fn colour(a: Action) -> &'static str {
    match a {
        Action::Create => "\x1b[32m",
        Action::Update => "\x1b[33m",
        Action::Replace => "\x1b[35m",
        Action::Delete => "\x1b[31m",
    }
}

/// "2 to create, 1 to update, 0 to replace, 1 to delete".
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary;
    format!(
        "{} to create, {} to update, {} to replace, {} to delete",
        s.create, s.update, s.replace, s.delete
    )
}

fn value(v: &Option<String>) -> std::borrow::Cow<'_, str> {
    one_line(v.as_deref().unwrap_or("(none)"))
}

fn heading(c: &Change) -> String {
    let extra = match c.action {
        Action::Replace => " must be replaced",
        Action::Delete => " will be deleted",
        Action::Create => " will be created",
        Action::Update => " will be updated in place",
    };
    format!(
        "{} ({}, pool {}){extra}",
        one_line(&c.vm),
        one_line(&c.role),
        one_line(&c.pool)
    )
}

/// Terraform-like text; ANSI colour only when `colour` is true.
pub fn human(plan: &Plan, colour_on: bool) -> String {
    let mut out = String::new();
    let paint = |a: Action, s: &str| {
        if colour_on {
            format!("{}{s}{RESET}", colour(a))
        } else {
            s.to_string()
        }
    };
    let verb = if plan.mode == "destroy" {
        "destroy plan"
    } else {
        "plan"
    };
    let _ = writeln!(
        out,
        "exedev-k8s {verb} for fleet \"{}\"",
        one_line(&plan.fleet)
    );
    if !plan.has_changes() {
        let _ = writeln!(out, "\nNo changes: the VMs on exe.dev match the fleet.");
    }
    for c in &plan.changes {
        let _ = writeln!(
            out,
            "\n  {} {}",
            paint(c.action, c.action.symbol()),
            heading(c)
        );
        for r in &c.reasons {
            let _ = writeln!(out, "      # {}", one_line(r));
        }
        for a in &c.attributes {
            let name = one_line(&a.name);
            let line = match (c.action, &a.before, &a.after) {
                (Action::Create, _, after) => format!("{name:<14} {}", value(after)),
                (Action::Delete, before, _) => format!("{name:<14} {}", value(before)),
                (_, before, after) => {
                    format!("{name:<14} {} → {}", value(before), value(after))
                }
            };
            let _ = writeln!(out, "      {} {line}", paint(c.action, c.action.symbol()));
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  ! {}", one_line(w));
        }
    }
    let _ = writeln!(out, "\nPlan: {}.", summary_line(plan));
    out
}

/// Markdown for a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let verb = if plan.mode == "destroy" {
        "destroy plan"
    } else {
        "plan"
    };
    let _ = writeln!(out, "### exedev-k8s {verb}: {}\n", md_code(&plan.fleet));
    let _ = writeln!(out, "**{}**\n", summary_line(plan));
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes: the VMs on exe.dev match the fleet.");
    } else {
        let _ = writeln!(out, "| action | VM | pool | role | why |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for c in &plan.changes {
            let action = match c.action {
                Action::Create => "➕ create",
                Action::Update => "🔧 update",
                Action::Replace => "♻️ replace",
                Action::Delete => "🗑️ delete",
            };
            let _ = writeln!(
                out,
                "| {action} | {} | {} | {} | {} |",
                md_code(&c.vm),
                md_text(&c.pool),
                md_text(&c.role),
                md_text(&c.reasons.join("; "))
            );
        }
        // Inside a fenced block nothing is markdown or HTML; only a line of
        // backticks as long as the fence could end it early, so the fence
        // is longer than any run of backticks in the block.
        let mut block = String::new();
        for c in &plan.changes {
            let sign = match c.action {
                Action::Create => "+",
                Action::Delete => "-",
                _ => "!",
            };
            let _ = writeln!(block, "{sign} {}", one_line(&c.vm));
            for a in &c.attributes {
                let _ = writeln!(
                    block,
                    "{sign}     {}: {} → {}",
                    one_line(&a.name),
                    value(&a.before),
                    value(&a.after)
                );
            }
        }
        let fence = md_fence(&block);
        let _ = writeln!(
            out,
            "\n<details><summary>Attribute changes</summary>\n\n{fence}diff\n{block}{fence}\n\n</details>"
        );
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\n> [!WARNING]");
        for w in &plan.warnings {
            let _ = writeln!(out, "> {}", md_text(w));
        }
    }
    out
}

/// The documented JSON schema (see README, "Plan JSON"). serde_json
/// escapes C0 controls; [`crate::text::json_safe`] escapes the rest (DEL,
/// C1, bidi overrides) the same way, so the value is unchanged.
pub fn json(plan: &Plan) -> String {
    match serde_json::to_string_pretty(plan) {
        Ok(s) => crate::text::json_safe(&s).into_owned(),
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}
