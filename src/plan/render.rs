//! Plan output: human (Terraform-like), markdown (pull-request comments) and
//! JSON (machines). Pure functions of a [`Plan`]; the caller decides colour.

use std::fmt::Write;

use super::{Action, Change, Plan};

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

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

fn heading(c: &Change) -> String {
    let extra = match c.action {
        Action::Replace => " must be replaced",
        Action::Delete => " will be deleted",
        Action::Create => " will be created",
        Action::Update => " will be updated in place",
    };
    format!("{} ({}, pool {}){extra}", c.vm, c.role, c.pool)
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
    let _ = writeln!(out, "exedev-k8s {verb} for fleet {:?}", plan.fleet);
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
            let _ = writeln!(out, "      # {r}");
        }
        for a in &c.attributes {
            let line = match (c.action, &a.before, &a.after) {
                (Action::Create, _, after) => format!("{:<14} {}", a.name, value(after)),
                (Action::Delete, before, _) => format!("{:<14} {}", a.name, value(before)),
                (_, before, after) => {
                    format!("{:<14} {} → {}", a.name, value(before), value(after))
                }
            };
            let _ = writeln!(out, "      {} {line}", paint(c.action, c.action.symbol()));
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    let _ = writeln!(out, "\nPlan: {}.", summary_line(plan));
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markdown for a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let verb = if plan.mode == "destroy" {
        "destroy plan"
    } else {
        "plan"
    };
    let _ = writeln!(out, "### exedev-k8s {verb}: `{}`\n", plan.fleet);
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
                "| {action} | `{}` | {} | {} | {} |",
                c.vm,
                md_escape(&c.pool),
                c.role,
                md_escape(&c.reasons.join("; "))
            );
        }
        let _ = writeln!(
            out,
            "\n<details><summary>Attribute changes</summary>\n\n```diff"
        );
        for c in &plan.changes {
            let sign = match c.action {
                Action::Create => "+",
                Action::Delete => "-",
                _ => "!",
            };
            let _ = writeln!(out, "{sign} {}", c.vm);
            for a in &c.attributes {
                let _ = writeln!(
                    out,
                    "{sign}     {}: {} → {}",
                    a.name,
                    value(&a.before),
                    value(&a.after)
                );
            }
        }
        let _ = writeln!(out, "```\n\n</details>");
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\n> [!WARNING]");
        for w in &plan.warnings {
            let _ = writeln!(out, "> {}", md_escape(w));
        }
    }
    out
}

/// The documented JSON schema (see README, "Plan JSON").
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
