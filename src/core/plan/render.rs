//! Plan output: human (Terraform-like), markdown (pull-request comments) and
//! JSON (machines). Pure functions of a [`Plan`]; the caller decides colour.
//!
//! A plan quotes what exe.dev reported (names, images, comments, tags,
//! statuses), and exe.dev reports what anyone with access to the account
//! wrote: every such string goes through [`crate::base::text`] here, so no escape
//! sequence reaches a terminal and no `<!--` hides the rest of a pull
//! request comment.

use std::fmt::Write;

use super::{Action, Change, Plan, Restart};
use crate::base::text::{md_code, md_fence, md_text, one_line};
use crate::core::fleet::Role;

const RESET: &str = "\x1b[0m";

fn colour(a: Action) -> &'static str {
    match a {
        Action::Create => "\x1b[32m",
        Action::Update | Action::Upgrade => "\x1b[33m",
        Action::Replace => "\x1b[35m",
        Action::Delete => "\x1b[31m",
    }
}

/// "2 to create, 1 to update, 3 to upgrade, 0 to replace, 1 to delete".
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary;
    format!(
        "{} to create, {} to update, {} to upgrade, {} to replace, {} to delete",
        s.create, s.update, s.upgrade, s.replace, s.delete
    )
}

/// "k3s v1.31.6+k3s1 (channel stable)".
fn release_line(plan: &Plan) -> Option<String> {
    plan.release.as_ref().map(|r| match &r.channel {
        Some(c) => format!(
            "k3s {} (channel {}, looked up now)",
            one_line(&r.version),
            one_line(c)
        ),
        None => format!("k3s {}", one_line(&r.version)),
    })
}

/// What the change restarts or how it replaces, for its heading.
fn disruption(c: &Change) -> String {
    let mut s = String::new();
    if let Some(new) = c.successor() {
        s.push_str(&format!(" by {} (create before destroy)", one_line(new)));
    }
    match (c.lost, c.role) {
        (Some(_), Role::Server) => s.push_str(" (lost: its etcd member is removed first)"),
        (Some(_), Role::Agent) => s.push_str(" (lost: its stale node is deleted first)"),
        (None, _) => {}
    }
    match c.restart {
        Some(Restart::K3s) => s.push_str(" (k3s restarts; drained first)"),
        Some(Restart::Vm) => s.push_str(" (the VM restarts; drained first)"),
        None => {}
    }
    s
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
        Action::Upgrade => " will be upgraded in place",
    };
    format!(
        "{} ({}, pool {}){extra}{}",
        one_line(&c.vm),
        c.role.as_str(),
        one_line(&c.pool),
        disruption(c)
    )
}

/// A warning's lines: the tool's own warnings may carry an error that
/// spans lines (its advice indented under it); each line is shown as a
/// line, never as a literal `\n`. Outside text inside them is escaped by
/// the caller, line by line.
fn warning_lines(w: &str) -> impl Iterator<Item = &str> {
    w.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// A warning as markdown quote lines (`> ...`); GitHub comments keep the
/// line breaks.
fn markdown_warning(w: &str) -> String {
    warning_lines(w)
        .map(|l| format!("> {}", md_text(l)))
        .collect::<Vec<_>>()
        .join("\n")
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
    let verb = if plan.mode == super::Mode::Destroy {
        "destroy plan"
    } else {
        "plan"
    };
    let _ = writeln!(
        out,
        "exedev-k8s {verb} for fleet \"{}\"",
        one_line(&plan.fleet)
    );
    if let Some(r) = release_line(plan) {
        let _ = writeln!(out, "{r}");
    }
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
            let name = a.name.to_string();
            let name = one_line(&name);
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
            for (i, line) in warning_lines(w).enumerate() {
                let mark = if i == 0 { "  ! " } else { "    " };
                let _ = writeln!(out, "{mark}{}", one_line(line));
            }
        }
    }
    let _ = writeln!(out, "\nPlan: {}.", summary_line(plan));
    if plan.is_refused() {
        let _ = writeln!(out, "\nRefused: this plan cannot be applied:");
        for r in &plan.refusals {
            let _ = writeln!(out, "  ✗ {}", one_line(r));
        }
    }
    out
}

/// GitHub refuses comments over 65,536 characters; a markdown plan is kept
/// under this many bytes (bytes ≥ characters), with room to spare for what
/// a workflow adds around it.
pub const MARKDOWN_MAX_BYTES: usize = 60_000;

/// Title and summary line of a markdown plan.
fn markdown_title(plan: &Plan) -> String {
    let verb = if plan.mode == super::Mode::Destroy {
        "destroy plan"
    } else {
        "plan"
    };
    let mut out = format!(
        "### exedev-k8s {verb}: {}\n\n**{}**\n",
        md_code(&plan.fleet),
        summary_line(plan)
    );
    if let Some(r) = release_line(plan) {
        let _ = writeln!(out, "\n{}", md_text(&r));
    }
    if plan.is_refused() {
        let _ = writeln!(
            out,
            "\n> [!CAUTION]\n> **Refused: this plan cannot be applied.**"
        );
        for r in &plan.refusals {
            let _ = writeln!(out, "> - {}", md_text(r));
        }
    }
    out
}

fn change_row(c: &Change) -> String {
    let action = match c.action {
        Action::Create => "➕ create",
        Action::Update => "🔧 update",
        Action::Upgrade => "⬆️ upgrade",
        Action::Replace => "♻️ replace",
        Action::Delete => "🗑️ delete",
    };
    let vm = match c.successor() {
        Some(new) => format!("{} → {}", md_code(&c.vm), md_code(new)),
        None => md_code(&c.vm),
    };
    let restart = match (c.restart, c.lost) {
        (_, Some(_)) if c.role == Role::Agent => " (lost agent)",
        (_, Some(_)) => " (lost server)",
        (Some(Restart::K3s), None) => " (k3s restarts)",
        (Some(Restart::Vm), None) => " (VM restarts)",
        (None, None) => "",
    };
    format!(
        "| {action}{restart} | {vm} | {} | {} | {} |",
        md_text(&c.pool),
        c.role.as_str(),
        md_text(&c.reasons.join("; "))
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
                    one_line(&a.name.as_str()),
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
            let _ = writeln!(out, "{}", markdown_warning(w));
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
    // The operator's own words (a URL, a file name): kept as markdown, on
    // one line.
    let note = one_line(full_plan);
    let mut out = markdown_title(plan);
    let _ = writeln!(
        out,
        "\n> [!NOTE]\n> Summarised to fit a pull-request comment (the whole plan is {} KB): {note}.\n",
        whole.len().div_ceil(1024),
    );
    // What must still fit after whatever is added: the closing lines.
    let reserve = note.len() + 256;
    let fits = |out: &String, add: &str| out.len() + add.len() + 1 + reserve <= max_bytes;
    let mut omitted_warnings = 0;
    if !plan.warnings.is_empty() {
        out.push_str("> [!WARNING]\n");
        for w in &plan.warnings {
            let line = markdown_warning(w);
            if fits(&out, &line) {
                let _ = writeln!(out, "{line}");
            } else {
                omitted_warnings += 1;
            }
        }
        out.push('\n');
    }
    // Counts per pool and role, in apply order of first appearance.
    let mut groups: Vec<((&str, &str), [u32; 5])> = Vec::new();
    for c in &plan.changes {
        let key = (c.pool.as_str(), c.role.as_str());
        let i = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key, [0; 5]));
                groups.len() - 1
            }
        };
        let column = match c.action {
            Action::Create => 0,
            Action::Update => 1,
            Action::Upgrade => 2,
            Action::Replace => 3,
            Action::Delete => 4,
        };
        groups[i].1[column] += 1;
    }
    out.push_str(
        "| pool | role | create | update | upgrade | replace | delete |\n|---|---|---|---|---|---|---|\n",
    );
    let mut omitted_pools = 0;
    for ((pool, role), n) in &groups {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            md_text(pool),
            md_text(role),
            n[0],
            n[1],
            n[2],
            n[3],
            n[4]
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
    let _ = writeln!(out, "\n_Not shown here: {}; {note}._", left.join(", "),);
    out
}

/// The documented JSON schema (see README, "Plan JSON").
/// The documented JSON schema (see README, "Plan JSON"). serde_json
/// escapes C0 controls; [`crate::base::text::json_safe`] escapes the rest (DEL,
/// C1, bidi overrides) the same way, so the value is unchanged.
pub fn json(plan: &Plan) -> String {
    match serde_json::to_string_pretty(plan) {
        Ok(s) => crate::base::text::json_safe(&s).into_owned(),
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}
