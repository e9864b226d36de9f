//! The lobby command grammar: which commands exist, which flags they take,
//! and how a typed [`Command`] becomes a request body.
//!
//! The emulator parses request bodies with [`parse`] against [`CATALOGUE`];
//! the client builds bodies with [`Command::body`]. Both therefore agree on
//! every command name, flag and quoting rule by construction.

use crate::base::secret::Secret;
use crate::base::shellwords::{self, WordsError};

use super::{MAX_BODY_BYTES, MAX_COMMENT_BYTES, MAX_SETUP_SCRIPT_BYTES};

/// How a command may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// No side effect (`ls`, `share show`, `whoami`...).
    Read,
    /// Same effect when repeated (`tag`, `comment`, `resize`).
    IdempotentWrite,
    /// Idempotent, and may fail while the VM boots.
    Share,
    /// Never re-sent when its outcome is unknown (`new`, `rm`).
    NotIdempotent,
}

/// One flag of a command. Go-style: `--name=x` equals `--name x`; booleans
/// are bare.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub takes_value: bool,
    pub repeatable: bool,
    /// Its value may carry a secret: redacted wherever words are shown or
    /// logged ([`redact_words`]).
    pub secret: bool,
    pub help: &'static str,
}

/// A fleet operation of this tool, for deciding which commands its token
/// must grant (least privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetOp {
    /// `plan` and `status`: read what exists.
    Plan,
    /// `apply`: create, change and remove VMs.
    Apply,
    /// `destroy`: remove every VM the fleet owns.
    Destroy,
}

/// One lobby command and every fact about it, in one place (like ripgrep's
/// `flags/defs.rs`): its grammar, how it may be retried, whether it changes
/// exe.dev's state, which flags carry secrets, whether a token grants it by
/// default, and which fleet operations need it. The client, the retry rules,
/// the emulator, the token code and the CLI all read these entries; none
/// keeps a list of its own.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Full name as granted in a token's `cmds` (`share port`).
    pub name: &'static str,
    pub usage: &'static str,
    pub min_args: usize,
    pub max_args: Option<usize>,
    pub flags: &'static [FlagSpec],
    pub help: &'static str,
    /// How a failed attempt may be retried.
    pub retry: RetryClass,
    /// Changes exe.dev's state (the emulator persists after it).
    pub mutates: bool,
    /// Positional arguments may carry a secret (a token).
    pub secret_args: bool,
    /// Granted by a token whose permissions carry no `cmds`.
    pub default_grant: bool,
    /// Fleet operations whose tokens must grant it.
    pub needed_by: &'static [FleetOp],
}

const fn flag(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: true,
        repeatable: false,
        secret: false,
        help,
    }
}
const fn multi(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        repeatable: true,
        ..flag(name, help)
    }
}
const fn secret(f: FlagSpec) -> FlagSpec {
    FlagSpec { secret: true, ..f }
}
const fn bool_flag(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        takes_value: false,
        ..flag(name, help)
    }
}

/// A read-only command of `usage` with `min..=max` arguments: the base every
/// catalogue entry starts from.
const fn read(
    name: &'static str,
    usage: &'static str,
    args: (usize, Option<usize>),
    help: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        usage,
        min_args: args.0,
        max_args: args.1,
        flags: &[],
        help,
        retry: RetryClass::Read,
        mutates: false,
        secret_args: false,
        default_grant: false,
        needed_by: &[],
    }
}

const NEW_FLAGS: &[FlagSpec] = &[
    flag(
        "name",
        "VM name: 5-64 chars, ^[a-z][a-z0-9]*(-[a-z0-9]+)*$; random word-word if omitted",
    ),
    flag("image", "container image (default exeuntu)"),
    flag("cpu", "number of CPUs"),
    flag("memory", "memory size, e.g. 4GB"),
    flag("disk", "disk size, e.g. 20GB"),
    multi("tag", "tag to add (repeatable)"),
    secret(multi("env", "K=V environment variable (repeatable)")),
    secret(flag(
        "setup-script",
        "script run once the VM boots (at most 10 KiB)",
    )),
    flag("command", "auto, none, or a container command"),
    flag("comment", "comment (at most 200 bytes)"),
    bool_flag("no-email", "do not send the creation e-mail"),
    multi("integration", "integration to attach"),
    flag("prompt", "initial prompt"),
    secret(flag(
        "registry-auth",
        "registry credentials for private images",
    )),
];
const RESIZE_FLAGS: &[FlagSpec] = &[
    flag("cpu", "number of CPUs"),
    flag("memory", "memory size"),
    flag("disk", "disk size (only grows)"),
];

const ALL_OPS: &[FleetOp] = &[FleetOp::Plan, FleetOp::Apply, FleetOp::Destroy];

/// Every command the tool or the emulator knows, longest names first so that
/// `share port` wins over a hypothetical `share`.
pub const CATALOGUE: &[CommandSpec] = &[
    CommandSpec {
        default_grant: true,
        needed_by: &[FleetOp::Plan, FleetOp::Apply],
        ..read(
            "share show",
            "share show <vm>",
            (1, Some(1)),
            "show a VM's HTTPS proxy settings",
        )
    },
    CommandSpec {
        retry: RetryClass::Share,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "share port",
            "share port <vm> <port>",
            (2, Some(2)),
            "set the VM port the HTTPS proxy forwards to",
        )
    },
    CommandSpec {
        retry: RetryClass::Share,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "share set-public",
            "share set-public <vm>",
            (1, Some(1)),
            "make the VM's HTTPS proxy public",
        )
    },
    CommandSpec {
        retry: RetryClass::Share,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "share set-private",
            "share set-private <vm>",
            (1, Some(1)),
            "make the VM's HTTPS proxy private",
        )
    },
    CommandSpec {
        default_grant: true,
        ..read(
            "ssh-key list",
            "ssh-key list",
            (0, Some(0)),
            "list registered SSH keys",
        )
    },
    CommandSpec {
        default_grant: true,
        needed_by: ALL_OPS,
        ..read("ls", "ls [pattern]", (0, Some(1)), "list VMs")
    },
    CommandSpec {
        flags: NEW_FLAGS,
        retry: RetryClass::NotIdempotent,
        mutates: true,
        default_grant: true,
        needed_by: &[FleetOp::Apply],
        ..read("new", "new [flags]", (0, Some(0)), "create a VM")
    },
    CommandSpec {
        retry: RetryClass::NotIdempotent,
        mutates: true,
        needed_by: &[FleetOp::Apply, FleetOp::Destroy],
        ..read("rm", "rm <vm>...", (1, None), "delete VMs, disks included")
    },
    CommandSpec {
        flags: RESIZE_FLAGS,
        retry: RetryClass::IdempotentWrite,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "resize",
            "resize <vm> [--cpu N] [--memory S] [--disk S]",
            (1, Some(1)),
            "resize a VM; disk only grows",
        )
    },
    CommandSpec {
        flags: &[bool_flag("d", "remove the tags instead of adding them")],
        retry: RetryClass::IdempotentWrite,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "tag",
            "tag [-d] <vm> <tag>...",
            (2, None),
            "add or remove tags",
        )
    },
    // Apply records a node's k3s release and settings in its comment after
    // an in-place change (plan::spec::SpecComment).
    CommandSpec {
        retry: RetryClass::IdempotentWrite,
        mutates: true,
        needed_by: &[FleetOp::Apply],
        ..read(
            "comment",
            "comment <vm> <text>",
            (2, Some(2)),
            "set a VM's comment ('' clears)",
        )
    },
    CommandSpec {
        default_grant: true,
        ..read("whoami", "whoami", (0, Some(0)), "show the account")
    },
    // Each call issues a new handle (state changes) but a repeat is
    // harmless: an idempotent write, never an unknown outcome.
    CommandSpec {
        flags: &[flag("vm", "validate a VM-scoped token")],
        retry: RetryClass::IdempotentWrite,
        mutates: true,
        secret_args: true,
        default_grant: true,
        ..read(
            "exe0-to-exe1",
            "exe0-to-exe1 [--vm=NAME] <exe0>",
            (1, Some(1)),
            "issue a short exe1 handle for an exe0 token",
        )
    },
    CommandSpec {
        default_grant: true,
        ..read("help", "help", (0, Some(0)), "list commands")
    },
];

/// The catalogue entry named `name` (a full name such as `share port`).
pub fn spec(name: &str) -> Option<&'static CommandSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// The commands a token must grant for `op`, in catalogue order.
pub fn commands_for(op: FleetOp) -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|s| s.needed_by.contains(&op))
        .map(|s| s.name)
        .collect()
}

/// The commands a token grants when its permissions carry no `cmds`.
pub fn default_grants() -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|s| s.default_grant)
        .map(|s| s.name)
        .collect()
}

/// Finds the command a word list starts with; returns it and how many words
/// its name took.
pub fn lookup<S: AsRef<str>>(words: &[S]) -> Option<(&'static CommandSpec, usize)> {
    CATALOGUE.iter().find_map(|spec| {
        let n = spec.name.split(' ').count();
        let matches = words.len() >= n
            && spec
                .name
                .split(' ')
                .zip(words)
                .all(|(a, b)| a == b.as_ref());
        matches.then_some((spec, n))
    })
}

/// A parsed invocation: which command, its positional arguments and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub name: &'static str,
    pub args: Vec<String>,
    pub flags: Vec<(String, Option<String>)>,
    /// `--json` was given (always implied on `/exec`).
    pub json: bool,
    /// `--help` was given.
    pub help: bool,
}

impl Invocation {
    /// The last value of a flag.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    /// Every value of a repeatable flag, in order.
    pub fn flag_all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
    /// Whether a boolean flag was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }
}

/// Why words could not be parsed into an invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// exe.dev answers 404.
    #[error("unknown command")]
    Unknown,
    /// exe.dev answers 422: the command ran and rejected its input.
    #[error("{0}")]
    Usage(String),
}

/// Parses words against [`CATALOGUE`]. Flags may come before or after
/// arguments; `--` ends flags; `-x` and `--x` are the same flag.
pub fn parse(words: &[String]) -> Result<Invocation, ParseError> {
    let (spec, used) = lookup(words).ok_or(ParseError::Unknown)?;
    let mut inv = Invocation {
        name: spec.name,
        args: Vec::new(),
        flags: Vec::new(),
        json: false,
        help: false,
    };
    let mut rest = words[used..].iter();
    let mut only_args = false;
    while let Some(w) = rest.next() {
        if only_args || !w.starts_with('-') || w == "-" {
            inv.args.push(w.clone());
            continue;
        }
        if w == "--" {
            only_args = true;
            continue;
        }
        let body = w.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        match name {
            "json" => {
                inv.json = true;
                continue;
            }
            "help" | "h" => {
                inv.help = true;
                continue;
            }
            _ => {}
        }
        let Some(f) = spec.flags.iter().find(|f| f.name == name) else {
            return Err(ParseError::Usage(format!(
                "flag provided but not defined: -{name} (usage: {})",
                spec.usage
            )));
        };
        let value = if f.takes_value {
            match inline {
                Some(v) => Some(v),
                None => Some(rest.next().cloned().ok_or_else(|| {
                    ParseError::Usage(format!("flag needs an argument: -{name}"))
                })?),
            }
        } else {
            if inline.is_some() && inline.as_deref() != Some("true") {
                return Err(ParseError::Usage(format!("flag -{name} takes no value")));
            }
            None
        };
        if !f.repeatable && inv.flags.iter().any(|(n, _)| n == name) {
            return Err(ParseError::Usage(format!("flag -{name} given twice")));
        }
        inv.flags.push((name.to_string(), value));
    }
    if !inv.help
        && (inv.args.len() < spec.min_args || spec.max_args.is_some_and(|m| inv.args.len() > m))
    {
        return Err(ParseError::Usage(format!("usage: {}", spec.usage)));
    }
    Ok(inv)
}

/// Everything `new` can be given. The setup script is a [`Secret`]: it
/// carries the k3s token and the Tailscale key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewVm {
    pub name: Option<String>,
    pub image: Option<String>,
    pub cpu: Option<u32>,
    pub memory: Option<String>,
    pub disk: Option<String>,
    pub tags: Vec<String>,
    pub env: Vec<(String, String)>,
    pub setup_script: Option<Secret>,
    pub command: Option<String>,
    pub comment: Option<String>,
    pub no_email: bool,
}

/// A lobby command the tool sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ls {
        pattern: Option<String>,
    },
    New(Box<NewVm>),
    Rm {
        vms: Vec<String>,
    },
    Resize {
        vm: String,
        cpu: Option<u32>,
        memory: Option<String>,
        disk: Option<String>,
    },
    Tag {
        vm: String,
        tags: Vec<String>,
    },
    Untag {
        vm: String,
        tags: Vec<String>,
    },
    Comment {
        vm: String,
        text: String,
    },
    ShareShow {
        vm: String,
    },
    SharePort {
        vm: String,
        port: u16,
    },
    SharePublic {
        vm: String,
    },
    SharePrivate {
        vm: String,
    },
    Whoami,
    SshKeyList,
    Exe0ToExe1 {
        vm: Option<String>,
        token: Secret,
    },
    /// Raw words from `exedev-k8s exec`; quoted like any other command.
    Raw(Vec<String>),
}

/// Why a command cannot be sent at all (checked before any request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Words(#[from] WordsError),
    #[error("request body is {0} bytes; exe.dev accepts at most {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error(
        "setup script is {0} bytes; exe.dev accepts at most {MAX_SETUP_SCRIPT_BYTES}: move bulk into a file the script downloads"
    )]
    SetupScriptTooLarge(usize),
    #[error("comment is {0} bytes; exe.dev accepts at most 200")]
    CommentTooLarge(usize),
    #[error("empty command")]
    Empty,
}

impl Command {
    /// The name a token's `cmds` must grant for this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ls { .. } => "ls",
            Command::New(_) => "new",
            Command::Rm { .. } => "rm",
            Command::Resize { .. } => "resize",
            Command::Tag { .. } | Command::Untag { .. } => "tag",
            Command::Comment { .. } => "comment",
            Command::ShareShow { .. } => "share show",
            Command::SharePort { .. } => "share port",
            Command::SharePublic { .. } => "share set-public",
            Command::SharePrivate { .. } => "share set-private",
            Command::Whoami => "whoami",
            Command::SshKeyList => "ssh-key list",
            Command::Exe0ToExe1 { .. } => "exe0-to-exe1",
            Command::Raw(words) => lookup(words).map(|(s, _)| s.name).unwrap_or("(unknown)"),
        }
    }

    /// The VM this command is about, for error messages.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Command::New(n) => n.name.as_deref(),
            Command::Rm { vms } => vms.first().map(String::as_str),
            Command::Resize { vm, .. }
            | Command::Tag { vm, .. }
            | Command::Untag { vm, .. }
            | Command::Comment { vm, .. }
            | Command::ShareShow { vm }
            | Command::SharePort { vm, .. }
            | Command::SharePublic { vm }
            | Command::SharePrivate { vm } => Some(vm),
            _ => None,
        }
    }

    /// The words exe.dev will see. Secrets are included: use
    /// [`Command::display`] for anything shown to a person.
    pub fn words(&self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let mut w: Vec<String> = match self {
            Command::Ls { pattern } => positional(vec![s("ls")], pattern.iter().cloned()),
            Command::New(n) => {
                let mut w = vec![s("new")];
                let mut opt = |flag: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        w.push(format!("--{flag}={v}"));
                    }
                };
                opt("name", &n.name);
                opt("image", &n.image);
                opt("cpu", &n.cpu.map(|c| c.to_string()));
                opt("memory", &n.memory);
                opt("disk", &n.disk);
                opt("command", &n.command);
                opt("comment", &n.comment);
                for t in &n.tags {
                    w.push(format!("--tag={t}"));
                }
                for (k, v) in &n.env {
                    w.push(format!("--env={k}={v}"));
                }
                if let Some(script) = &n.setup_script {
                    w.push(format!("--setup-script={}", script.expose()));
                }
                if n.no_email {
                    w.push(s("--no-email"));
                }
                w
            }
            Command::Rm { vms } => positional(vec![s("rm")], vms.iter().cloned()),
            Command::Resize {
                vm,
                cpu,
                memory,
                disk,
            } => {
                let mut w = vec![s("resize")];
                if let Some(c) = cpu {
                    w.push(format!("--cpu={c}"));
                }
                if let Some(m) = memory {
                    w.push(format!("--memory={m}"));
                }
                if let Some(d) = disk {
                    w.push(format!("--disk={d}"));
                }
                positional(w, std::iter::once(vm.clone()))
            }
            Command::Tag { vm, tags } => positional(
                vec![s("tag")],
                std::iter::once(vm.clone()).chain(tags.iter().cloned()),
            ),
            Command::Untag { vm, tags } => positional(
                vec![s("tag"), s("-d")],
                std::iter::once(vm.clone()).chain(tags.iter().cloned()),
            ),
            Command::Comment { vm, text } => {
                positional(vec![s("comment")], [vm.clone(), text.clone()].into_iter())
            }
            Command::ShareShow { vm } => {
                positional(vec![s("share"), s("show")], [vm.clone()].into_iter())
            }
            Command::SharePort { vm, port } => positional(
                vec![s("share"), s("port")],
                [vm.clone(), port.to_string()].into_iter(),
            ),
            Command::SharePublic { vm } => {
                positional(vec![s("share"), s("set-public")], [vm.clone()].into_iter())
            }
            Command::SharePrivate { vm } => {
                positional(vec![s("share"), s("set-private")], [vm.clone()].into_iter())
            }
            Command::Whoami => vec![s("whoami")],
            Command::SshKeyList => vec![s("ssh-key"), s("list")],
            Command::Exe0ToExe1 { vm, token } => {
                let mut w = vec![s("exe0-to-exe1")];
                if let Some(vm) = vm {
                    w.push(format!("--vm={vm}"));
                }
                positional(w, std::iter::once(token.expose().to_string()))
            }
            Command::Raw(words) => return words.clone(),
        };
        // `--json` goes right after the command name, before any `--`.
        let name_words = self.name().split(' ').count();
        w.insert(name_words.min(w.len()), s("--json"));
        w
    }

    /// The request body: quoted words, checked against every limit exe.dev
    /// enforces, so that nothing doomed is ever sent.
    pub fn body(&self) -> Result<String, CommandError> {
        if let Command::New(n) = self {
            if let Some(script) = &n.setup_script
                && script.expose().len() > MAX_SETUP_SCRIPT_BYTES
            {
                return Err(CommandError::SetupScriptTooLarge(script.expose().len()));
            }
            if let Some(c) = &n.comment
                && c.len() > MAX_COMMENT_BYTES
            {
                return Err(CommandError::CommentTooLarge(c.len()));
            }
        }
        if let Command::Comment { text, .. } = self
            && text.len() > MAX_COMMENT_BYTES
        {
            return Err(CommandError::CommentTooLarge(text.len()));
        }
        let words = self.words();
        if words.is_empty() {
            return Err(CommandError::Empty);
        }
        let body = shellwords::join(&words)?;
        if body.len() > MAX_BODY_BYTES {
            return Err(CommandError::TooLarge(body.len()));
        }
        Ok(body)
    }

    /// A rendering safe to print or log: secrets replaced as the catalogue
    /// marks them ([`redact_words`]), control characters escaped (VM names
    /// and comments may come from exe.dev).
    pub fn display(&self) -> String {
        let words: Vec<String> = redact_words(&self.words())
            .into_iter()
            .filter(|w| w != "--json")
            .collect();
        let shown = shellwords::join(&words).unwrap_or_else(|_| words.join(" "));
        crate::base::text::one_line(&shown).into_owned()
    }
}

/// Replaces secrets in command words, as the catalogue marks them: values
/// of secret flags (inline or as the next word), the positional arguments
/// of commands whose arguments are secret, and any exe0/exe1 token wherever
/// it stands. Words of an unknown command are all hidden but the first: the
/// tool cannot tell which of them are secret.
pub fn redact_words(words: &[String]) -> Vec<String> {
    let Some((spec, used)) = lookup(words) else {
        let mut out: Vec<String> = words.iter().take(1).map(|w| redact_token(w)).collect();
        if words.len() > 1 {
            out.push(format!("<{} more words redacted>", words.len() - 1));
        }
        return out;
    };
    let is_secret_flag = |name: &str| spec.flags.iter().any(|f| f.secret && f.name == name);
    let mut out: Vec<String> = words[..used].to_vec();
    let mut hide_next = false;
    let mut only_args = false;
    for w in &words[used..] {
        if hide_next {
            hide_next = false;
            out.push(format!("<{} bytes redacted>", w.len()));
            continue;
        }
        let is_flag = !only_args && w.starts_with('-') && w != "-";
        if w == "--" && !only_args {
            only_args = true;
            out.push(w.clone());
            continue;
        }
        if is_flag {
            let body = w.trim_start_matches('-');
            if let Some((name, value)) = body.split_once('=')
                && is_secret_flag(name)
            {
                out.push(format!("--{name}=<{} bytes redacted>", value.len()));
                continue;
            }
            if is_secret_flag(body) {
                hide_next = true;
            }
            out.push(redact_token(w));
        } else if spec.secret_args && redact_token(w) == *w {
            out.push(format!("<{} bytes redacted>", w.len()));
        } else {
            out.push(redact_token(w));
        }
    }
    out
}

/// An exe0/exe1 token, wherever it stands, becomes `<token>`.
fn redact_token(w: &str) -> String {
    if w.starts_with("exe0.") || w.starts_with("exe1.") {
        "<token>".to_string()
    } else {
        w.to_string()
    }
}

/// Appends positional arguments, preceded by `--` when one of them starts
/// with `-` so that it is never read as a flag.
fn positional(mut head: Vec<String>, args: impl Iterator<Item = String>) -> Vec<String> {
    let args: Vec<String> = args.collect();
    if args.iter().any(|a| a.starts_with('-')) {
        head.push("--".to_string());
    }
    head.extend(args);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<String> {
        shellwords::split(s).unwrap()
    }

    #[test]
    fn lookup_prefers_two_word_names() {
        assert_eq!(
            lookup(&["share", "port", "x", "1"]).unwrap().0.name,
            "share port"
        );
        assert_eq!(lookup(&["ls"]).unwrap().0.name, "ls");
        assert!(lookup(&["share"]).is_none());
        assert!(lookup(&["ssh-key"]).is_none());
        assert!(lookup(&["frobnicate"]).is_none());
    }

    #[test]
    fn go_style_flags() {
        let a = parse(&words(
            "new --name=web-a --cpu 2 --tag a --tag=b --no-email --json",
        ))
        .unwrap();
        assert_eq!(a.flag("name"), Some("web-a"));
        assert_eq!(a.flag("cpu"), Some("2"));
        assert_eq!(a.flag_all("tag"), ["a", "b"]);
        assert!(a.has("no-email") && a.json);
        let t = parse(&words("tag -d vm-one t1 t2")).unwrap();
        assert!(t.has("d"));
        assert_eq!(t.args, ["vm-one", "t1", "t2"]);
        assert!(
            parse(&words("new --bogus"))
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
        assert!(matches!(
            parse(&words("new --name")),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(parse(&words("rm")), Err(ParseError::Usage(_))));
        assert_eq!(parse(&words("nope")), Err(ParseError::Unknown));
        assert!(parse(&words("new --help")).unwrap().help);
        assert!(
            parse(&words("rm --help")).unwrap().help,
            "--help needs no arguments"
        );
    }

    #[test]
    fn builder_and_parser_agree() {
        let cmd = Command::New(Box::new(NewVm {
            name: Some("demo-cp1".into()),
            cpu: Some(2),
            memory: Some("4GB".into()),
            tags: vec!["exk8s-fleet-demo".into(), "team a".into()],
            setup_script: Some(Secret::new("#!/bin/bash\necho 'hi' \"$X\"\n")),
            comment: Some("exedev-k8s spec=abc".into()),
            no_email: true,
            ..Default::default()
        }));
        let inv = parse(&shellwords::split(&cmd.body().unwrap()).unwrap()).unwrap();
        assert_eq!(inv.name, "new");
        assert_eq!(inv.flag("name"), Some("demo-cp1"));
        assert_eq!(inv.flag_all("tag"), ["exk8s-fleet-demo", "team a"]);
        assert_eq!(
            inv.flag("setup-script"),
            Some("#!/bin/bash\necho 'hi' \"$X\"\n")
        );
        assert!(inv.has("no-email"));
        assert!(!cmd.display().contains("echo"), "display hides the script");
    }

    #[test]
    fn limits_are_checked_before_sending() {
        let big = Command::New(Box::new(NewVm {
            setup_script: Some(Secret::new("x".repeat(10 * 1024 + 1))),
            ..Default::default()
        }));
        assert_eq!(big.body(), Err(CommandError::SetupScriptTooLarge(10241)));
        let c = Command::Comment {
            vm: "vm-one".into(),
            text: "c".repeat(201),
        };
        assert_eq!(c.body(), Err(CommandError::CommentTooLarge(201)));
        let raw = Command::Raw(vec!["ls".into(), "x".repeat(70_000)]);
        assert!(matches!(raw.body(), Err(CommandError::TooLarge(_))));
        let nul = Command::Comment {
            vm: "vm-one".into(),
            text: "a\0b".into(),
        };
        assert_eq!(nul.body(), Err(CommandError::Words(WordsError::Nul)));
    }

    #[test]
    fn token_never_displayed() {
        let c = Command::Exe0ToExe1 {
            vm: None,
            token: Secret::new("exe0.sekrit.sig"),
        };
        assert!(!c.display().contains("sekrit"));
        assert!(!format!("{c:?}").contains("sekrit"));
        let r = Command::Raw(vec!["exe0-to-exe1".into(), "exe0.sekrit.sig".into()]);
        assert!(!r.display().contains("sekrit"));
        let r = Command::Raw(vec![
            "new".into(),
            "--setup-script".into(),
            "TS=sekrit".into(),
        ]);
        assert!(!r.display().contains("sekrit"), "{}", r.display());
        let r = Command::Raw(vec!["new".into(), "--setup-script=TS=sekrit".into()]);
        assert!(!r.display().contains("sekrit"));
    }

    /// Reads an invocation back into the typed command it came from: the
    /// test oracle for the builder (the emulator works on invocations).
    fn typed(inv: &Invocation) -> Command {
        let vm = || inv.args[0].clone();
        let s = |f: &str| inv.flag(f).map(str::to_string);
        match inv.name {
            "ls" => Command::Ls {
                pattern: inv.args.first().cloned(),
            },
            "new" => Command::New(Box::new(NewVm {
                name: s("name"),
                image: s("image"),
                cpu: inv.flag("cpu").map(|c| c.parse().unwrap()),
                memory: s("memory"),
                disk: s("disk"),
                tags: inv
                    .flag_all("tag")
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                env: inv
                    .flag_all("env")
                    .into_iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
                setup_script: s("setup-script").map(Secret::new),
                command: s("command"),
                comment: s("comment"),
                no_email: inv.has("no-email"),
            })),
            "rm" => Command::Rm {
                vms: inv.args.clone(),
            },
            "resize" => Command::Resize {
                vm: vm(),
                cpu: inv.flag("cpu").map(|c| c.parse().unwrap()),
                memory: s("memory"),
                disk: s("disk"),
            },
            "tag" if inv.has("d") => Command::Untag {
                vm: vm(),
                tags: inv.args[1..].to_vec(),
            },
            "tag" => Command::Tag {
                vm: vm(),
                tags: inv.args[1..].to_vec(),
            },
            "comment" => Command::Comment {
                vm: vm(),
                text: inv.args[1].clone(),
            },
            "share show" => Command::ShareShow { vm: vm() },
            "share port" => Command::SharePort {
                vm: vm(),
                port: inv.args[1].parse().unwrap(),
            },
            "share set-public" => Command::SharePublic { vm: vm() },
            "share set-private" => Command::SharePrivate { vm: vm() },
            "whoami" => Command::Whoami,
            "ssh-key list" => Command::SshKeyList,
            "exe0-to-exe1" => Command::Exe0ToExe1 {
                vm: s("vm"),
                token: Secret::new(inv.args[0].clone()),
            },
            other => panic!("no typed command for {other}"),
        }
    }

    /// Any text without NUL; sometimes starting with `-` to test `--`.
    fn text() -> impl Strategy<Value = String> {
        "-?[^\0]{0,24}"
    }

    /// Every typed variant, with awkward values.
    fn any_command() -> impl Strategy<Value = Command> {
        let vm = "[a-z][a-z0-9-]{4,20}";
        let new_vm = (
            (
                proptest::option::of(vm),
                proptest::option::of(text()),
                proptest::option::of(1u32..64),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (
                proptest::collection::vec(text(), 0..3),
                proptest::collection::vec(("[A-Z_]{1,8}", text()), 0..3),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of("[^\0]{0,100}"),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (name, image, cpu, memory, disk),
                    (tags, env, command, comment, script, no_email),
                )| {
                    Command::New(Box::new(NewVm {
                        name,
                        image,
                        cpu,
                        memory,
                        disk,
                        tags,
                        env,
                        setup_script: script.map(Secret::new),
                        command,
                        comment,
                        no_email,
                    }))
                },
            );
        prop_oneof![
            proptest::option::of(text()).prop_map(|pattern| Command::Ls { pattern }),
            new_vm,
            proptest::collection::vec(text(), 1..4).prop_map(|vms| Command::Rm { vms }),
            (
                vm,
                proptest::option::of(1u32..64),
                proptest::option::of(text()),
                proptest::option::of(text())
            )
                .prop_map(|(vm, cpu, memory, disk)| Command::Resize {
                    vm,
                    cpu,
                    memory,
                    disk
                }),
            (vm, proptest::collection::vec(text(), 1..4))
                .prop_map(|(vm, tags)| Command::Tag { vm, tags }),
            (vm, proptest::collection::vec(text(), 1..4))
                .prop_map(|(vm, tags)| Command::Untag { vm, tags }),
            (vm, text()).prop_map(|(vm, text)| Command::Comment { vm, text }),
            vm.prop_map(|vm| Command::ShareShow { vm }),
            (vm, any::<u16>()).prop_map(|(vm, port)| Command::SharePort { vm, port }),
            vm.prop_map(|vm| Command::SharePublic { vm }),
            vm.prop_map(|vm| Command::SharePrivate { vm }),
            Just(Command::Whoami),
            Just(Command::SshKeyList),
            (proptest::option::of(vm), text()).prop_map(|(vm, t)| Command::Exe0ToExe1 {
                vm,
                token: Secret::new(t)
            }),
        ]
    }

    /// The facts that used to disagree now come from one entry each.
    #[test]
    fn catalogue_is_the_single_source() {
        use super::super::retry::{RetryClass, class_of};
        let ex = Command::Exe0ToExe1 {
            vm: None,
            token: Secret::new("exe0.a.b"),
        };
        let raw = Command::Raw(ex.words());
        assert_eq!(class_of(&ex), class_of(&raw));
        assert_eq!(class_of(&ex), RetryClass::IdempotentWrite);
        assert!(spec("exe0-to-exe1").unwrap().mutates);
        assert_eq!(
            class_of(&Command::Raw(vec!["frobnicate".into()])),
            RetryClass::NotIdempotent
        );
        assert_eq!(commands_for(FleetOp::Plan), ["share show", "ls"]);
        assert_eq!(commands_for(FleetOp::Destroy), ["ls", "rm"]);
        let apply = commands_for(FleetOp::Apply);
        for c in commands_for(FleetOp::Plan)
            .into_iter()
            .chain(commands_for(FleetOp::Destroy))
        {
            assert!(apply.contains(&c), "apply's token lacks {c}");
        }
        assert!(
            apply.contains(&"comment"),
            "apply records in-place changes in the comment"
        );
        assert_eq!(
            default_grants(),
            [
                "share show",
                "ssh-key list",
                "ls",
                "new",
                "whoami",
                "exe0-to-exe1",
                "help"
            ]
        );
        for s in CATALOGUE {
            assert_eq!(
                s.retry == RetryClass::Read,
                !s.mutates,
                "{}: reads are exactly the commands that change nothing",
                s.name
            );
        }
    }

    #[test]
    fn unknown_commands_show_only_their_first_word() {
        let r = Command::Raw(vec!["frob".into(), "exe0.sekrit".into(), "TS=x".into()]);
        assert_eq!(r.display(), "frob '<2 more words redacted>'");
        let r = Command::Raw(vec![
            "new".into(),
            "--env=TS_AUTHKEY=tskey-sekrit".into(),
            "--env".into(),
            "K=sekrit".into(),
        ]);
        assert!(!r.display().contains("sekrit"), "{}", r.display());
    }

    proptest! {
        /// Every typed command reaches the parser as itself: builder → body
        /// → shell words → parser → the same command, for every variant.
        #[test]
        fn every_variant_round_trips(cmd in any_command()) {
            let body = match cmd.body() {
                Ok(b) => b,
                // Limits are checked before sending; nothing else may fail.
                Err(CommandError::TooLarge(_) | CommandError::CommentTooLarge(_)) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            let inv = parse(&shellwords::split(&body).unwrap()).unwrap();
            prop_assert_eq!(inv.name, cmd.name());
            prop_assert!(inv.json, "--json is always sent");
            prop_assert_eq!(typed(&inv), cmd.clone());
            // What is shown never carries a secret value.
            if let Command::New(n) = &cmd {
                let shown = cmd.display();
                if let Some(s) = n.setup_script.as_ref().filter(|s| s.expose().len() > 3) {
                    prop_assert!(!shown.contains(s.expose()));
                }
            }
        }
    }

    proptest! {
        /// Any value without NUL reaches the emulator's parser unchanged.
        #[test]
        fn values_survive_quoting(comment in "[^\0]{0,60}", tag in "[^\0]{1,20}", vm in "[a-z][a-z0-9-]{4,20}") {
            let cmd = Command::New(Box::new(NewVm {
                name: Some(vm.clone()),
                tags: vec![tag.clone()],
                comment: Some(comment.clone()),
                ..Default::default()
            }));
            let inv = parse(&shellwords::split(&cmd.body().unwrap()).unwrap()).unwrap();
            prop_assert_eq!(inv.flag("name"), Some(vm.as_str()));
            prop_assert_eq!(inv.flag_all("tag"), vec![tag.as_str()]);
            prop_assert_eq!(inv.flag("comment"), Some(comment.as_str()));
            let c = Command::Comment { vm: vm.clone(), text: comment.clone() };
            let inv = parse(&shellwords::split(&c.body().unwrap()).unwrap()).unwrap();
            prop_assert_eq!(inv.args, vec![vm, comment]);
        }
    }
}
