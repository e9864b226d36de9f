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

/// GitHub refuses comments over 65,536 characters; a markdown plan is kept
/// under this many bytes (bytes ≥ characters), with room to spare for what
/// a workflow adds around it.
pub const MARKDOWN_MAX_BYTES: usize = 60_000;

fn markdown_title(plan: &Plan) -> String {
    let verb = if plan.mode == "destroy" {
        "destroy plan"
    } else {
        "plan"
    };
    format!(
        "### exedev-k8s {verb}: `{}`\n\n**{}**\n",
        md_escape(&plan.fleet).replace('`', "'"),
        summary_line(plan)
    )
}

fn action_cell(a: Action) -> &'static str {
    match a {
        Action::Create => "➕ create",
        Action::Update => "🔧 update",
        Action::Replace => "♻️ replace",
        Action::Delete => "🗑️ delete",
    }
}

fn change_row(c: &Change) -> String {
    format!(
        "| {} | `{}` | {} | {} | {} |",
        action_cell(c.action),
        c.vm,
        md_escape(&c.pool),
        c.role,
        md_escape(&c.reasons.join("; "))
    )
}

/// Markdown for a pull-request comment, whole.
pub fn markdown(plan: &Plan) -> String {
    let mut out = markdown_title(plan);
    out.push('\n');
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes: the VMs on exe.dev match the fleet.");
    } else {
        let _ = writeln!(out, "| action | VM | pool | role | why |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for c in &plan.changes {
            let _ = writeln!(out, "{}", change_row(c));
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

/// Markdown for a pull-request comment, at most `max_bytes` long: the whole
/// plan when it fits, else a summary (counts per pool, warnings, the first
/// changes in apply order) that says where `full_plan` is.
pub fn markdown_within(plan: &Plan, max_bytes: usize, full_plan: &str) -> String {
    let whole = markdown(plan);
    if whole.len() <= max_bytes {
        return whole;
    }
    let mut out = markdown_title(plan);
    let _ = writeln!(
        out,
        "\n> [!NOTE]\n> Summarised to fit a pull-request comment (the whole plan is {} KB): {}.\n",
        whole.len().div_ceil(1024),
        md_escape(full_plan)
    );
    // What must still fit after whatever is added: the closing lines.
    let reserve = full_plan.len() + 256;
    let fits = |out: &String, add: &str| out.len() + add.len() + 1 + reserve <= max_bytes;
    let mut omitted_warnings = 0;
    if !plan.warnings.is_empty() {
        out.push_str("> [!WARNING]\n");
        for w in &plan.warnings {
            let line = format!("> {}", md_escape(w));
            if fits(&out, &line) {
                let _ = writeln!(out, "{line}");
            } else {
                omitted_warnings += 1;
            }
        }
        out.push('\n');
    }
    // Counts per pool and role, in apply order of first appearance.
    let mut groups: Vec<((&str, &str), [u32; 4])> = Vec::new();
    for c in &plan.changes {
        let key = (c.pool.as_str(), c.role.as_str());
        let i = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key, [0; 4]));
                groups.len() - 1
            }
        };
        let column = match c.action {
            Action::Create => 0,
            Action::Update => 1,
            Action::Replace => 2,
            Action::Delete => 3,
        };
        groups[i].1[column] += 1;
    }
    out.push_str(
        "| pool | role | create | update | replace | delete |\n|---|---|---|---|---|---|\n",
    );
    let mut omitted_pools = 0;
    for ((pool, role), n) in &groups {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} |",
            md_escape(pool),
            md_escape(role),
            n[0],
            n[1],
            n[2],
            n[3]
        );
        if fits(&out, &line) {
            let _ = writeln!(out, "{line}");
        } else {
            omitted_pools += 1;
        }
    }
    let head = "\n| action | VM | pool | role | why |\n|---|---|---|---|---|";
    let mut shown = 0;
    if fits(&out, head) {
        let _ = writeln!(out, "{head}");
        for c in &plan.changes {
            let row = change_row(c);
            if !fits(&out, &row) {
                break;
            }
            let _ = writeln!(out, "{row}");
            shown += 1;
        }
    }
    let mut left = vec!["the attribute changes".to_string()];
    if shown < plan.changes.len() {
        left.push(format!("{} more changes", plan.changes.len() - shown));
    }
    if omitted_warnings > 0 {
        left.push(format!("{omitted_warnings} more warnings"));
    }
    if omitted_pools > 0 {
        left.push(format!("{omitted_pools} more pool rows"));
    }
    let _ = writeln!(
        out,
        "\n_Not shown here: {}; {}._",
        left.join(", "),
        md_escape(full_plan)
    );
    out
}

/// The documented JSON schema (see README, "Plan JSON").
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
