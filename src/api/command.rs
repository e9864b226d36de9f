//! The lobby command grammar: which commands exist, which flags they take,
//! and how a typed [`Command`] becomes a request body.
//!
//! The emulator parses request bodies with [`parse`] against [`CATALOGUE`];
//! the client builds bodies with [`Command::body`]. Both therefore agree on
//! every command name, flag and quoting rule by construction.

use crate::secret::Secret;
use crate::shellwords::{self, WordsError};

use super::{MAX_BODY_BYTES, MAX_COMMENT_BYTES, MAX_SETUP_SCRIPT_BYTES};

/// One flag of a command. Go-style: `--name=x` equals `--name x`; booleans
/// are bare.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub takes_value: bool,
    pub repeatable: bool,
    pub help: &'static str,
}

/// One lobby command.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Full name as granted in a token's `cmds` (`share port`).
    pub name: &'static str,
    pub usage: &'static str,
    pub min_args: usize,
    pub max_args: Option<usize>,
    pub flags: &'static [FlagSpec],
    pub help: &'static str,
}

const fn flag(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: true,
        repeatable: false,
        help,
    }
}
const fn multi(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: true,
        repeatable: true,
        help,
    }
}
const fn bool_flag(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: false,
        repeatable: false,
        help,
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
    multi("env", "K=V environment variable (repeatable)"),
    flag(
        "setup-script",
        "script run once the VM boots (at most 10 KiB)",
    ),
    flag("command", "auto, none, or a container command"),
    flag("comment", "comment (at most 200 bytes)"),
    bool_flag("no-email", "do not send the creation e-mail"),
    multi("integration", "integration to attach"),
    flag("prompt", "initial prompt"),
    flag("registry-auth", "registry credentials for private images"),
];
const RESIZE_FLAGS: &[FlagSpec] = &[
    flag("cpu", "number of CPUs"),
    flag("memory", "memory size"),
    flag("disk", "disk size (only grows)"),
];

/// Every command the tool or the emulator knows, longest names first so that
/// `share port` wins over a hypothetical `share`.
pub const CATALOGUE: &[CommandSpec] = &[
    CommandSpec {
        name: "share show",
        usage: "share show <vm>",
        min_args: 1,
        max_args: Some(1),
        flags: &[],
        help: "show a VM's HTTPS proxy settings",
    },
    CommandSpec {
        name: "share port",
        usage: "share port <vm> <port>",
        min_args: 2,
        max_args: Some(2),
        flags: &[],
        help: "set the VM port the HTTPS proxy forwards to",
    },
    CommandSpec {
        name: "share set-public",
        usage: "share set-public <vm>",
        min_args: 1,
        max_args: Some(1),
        flags: &[],
        help: "make the VM's HTTPS proxy public",
    },
    CommandSpec {
        name: "share set-private",
        usage: "share set-private <vm>",
        min_args: 1,
        max_args: Some(1),
        flags: &[],
        help: "make the VM's HTTPS proxy private",
    },
    CommandSpec {
        name: "ssh-key list",
        usage: "ssh-key list",
        min_args: 0,
        max_args: Some(0),
        flags: &[],
        help: "list registered SSH keys",
    },
    CommandSpec {
        name: "ls",
        usage: "ls [pattern]",
        min_args: 0,
        max_args: Some(1),
        flags: &[],
        help: "list VMs",
    },
    CommandSpec {
        name: "new",
        usage: "new [flags]",
        min_args: 0,
        max_args: Some(0),
        flags: NEW_FLAGS,
        help: "create a VM",
    },
    CommandSpec {
        name: "rm",
        usage: "rm <vm>...",
        min_args: 1,
        max_args: None,
        flags: &[],
        help: "delete VMs, disks included",
    },
    CommandSpec {
        name: "resize",
        usage: "resize <vm> [--cpu N] [--memory S] [--disk S]",
        min_args: 1,
        max_args: Some(1),
        flags: RESIZE_FLAGS,
        help: "resize a VM; disk only grows",
    },
    CommandSpec {
        name: "tag",
        usage: "tag [-d] <vm> <tag>...",
        min_args: 2,
        max_args: None,
        flags: &[bool_flag("d", "remove the tags instead of adding them")],
        help: "add or remove tags",
    },
    CommandSpec {
        name: "comment",
        usage: "comment <vm> <text>",
        min_args: 2,
        max_args: Some(2),
        flags: &[],
        help: "set a VM's comment ('' clears)",
    },
    CommandSpec {
        name: "whoami",
        usage: "whoami",
        min_args: 0,
        max_args: Some(0),
        flags: &[],
        help: "show the account",
    },
    CommandSpec {
        name: "exe0-to-exe1",
        usage: "exe0-to-exe1 [--vm=NAME] <exe0>",
        min_args: 1,
        max_args: Some(1),
        flags: &[flag("vm", "validate a VM-scoped token")],
        help: "issue a short exe1 handle for an exe0 token",
    },
    CommandSpec {
        name: "help",
        usage: "help",
        min_args: 0,
        max_args: Some(0),
        flags: &[],
        help: "list commands",
    },
];

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
    #[error("request body is {0} bytes; exe.dev accepts at most 65536")]
    TooLarge(usize),
    #[error(
        "setup script is {0} bytes; exe.dev accepts at most 10240: move bulk into a file the script downloads"
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
            Command::Ls { pattern } => {
                let mut w = vec![s("ls")];
                w.extend(pattern.clone());
                w
            }
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
                let mut w = vec![s("resize"), vm.clone()];
                if let Some(c) = cpu {
                    w.push(format!("--cpu={c}"));
                }
                if let Some(m) = memory {
                    w.push(format!("--memory={m}"));
                }
                if let Some(d) = disk {
                    w.push(format!("--disk={d}"));
                }
                w
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
            Command::ShareShow { vm } => vec![s("share"), s("show"), vm.clone()],
            Command::SharePort { vm, port } => {
                vec![s("share"), s("port"), vm.clone(), port.to_string()]
            }
            Command::SharePublic { vm } => vec![s("share"), s("set-public"), vm.clone()],
            Command::SharePrivate { vm } => vec![s("share"), s("set-private"), vm.clone()],
            Command::Whoami => vec![s("whoami")],
            Command::SshKeyList => vec![s("ssh-key"), s("list")],
            Command::Exe0ToExe1 { vm, token } => {
                let mut w = vec![s("exe0-to-exe1")];
                if let Some(vm) = vm {
                    w.push(format!("--vm={vm}"));
                }
                w.push(token.expose().to_string());
                w
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

    /// A rendering safe to print or log: secrets replaced (setup scripts,
    /// `--env` values, tokens: see [`redact_words`]), control characters
    /// escaped.
    pub fn display(&self) -> String {
        let redacted = match self {
            Command::New(n) => {
                let mut n = (**n).clone();
                n.setup_script = n
                    .setup_script
                    .as_ref()
                    .map(|_| Secret::new("<setup script>"));
                redact_words(&Command::New(Box::new(n)).words())
            }
            Command::Exe0ToExe1 { vm, .. } => Command::Exe0ToExe1 {
                vm: vm.clone(),
                token: Secret::new("<token>"),
            }
            .words(),
            other => redact_words(&other.words()),
        };
        let words: Vec<String> = redacted.into_iter().filter(|w| w != "--json").collect();
        let shown = shellwords::join(&words).unwrap_or_else(|_| words.join(" "));
        crate::text::one_line(&shown).into_owned()
    }
}

/// Flags whose whole value is secret.
const SECRET_FLAGS: &[&str] = &["setup-script", "registry-auth"];
/// Flags whose value is `K=V` with a secret `V` (environment variables are
/// where API keys and passwords go).
const SECRET_VALUE_FLAGS: &[&str] = &["env"];

fn hide_value(kv: &str) -> String {
    match kv.split_once('=') {
        Some((k, v)) => format!("{k}=<{} bytes redacted>", v.len()),
        None => format!("<{} bytes redacted>", kv.len()),
    }
}

/// Replaces secrets in command words, for error messages and the
/// emulator's log: setup-script and registry-auth values and `--env`
/// values (inline or as the next word), any word holding an exe0/exe1
/// token, and every argument of a command that is not in the catalogue
/// (its grammar is unknown, so nothing in it can be told safe).
pub fn redact_words(words: &[String]) -> Vec<String> {
    if lookup(words).is_none() {
        let mut out: Vec<String> = words
            .first()
            .map(|w| {
                if w.contains("exe0.") || w.contains("exe1.") {
                    "<token>".to_string()
                } else {
                    w.chars().take(40).collect()
                }
            })
            .into_iter()
            .collect();
        if words.len() > 1 {
            out.push(format!("<{} more words redacted>", words.len() - 1));
        }
        return out;
    }
    let mut out = Vec::with_capacity(words.len());
    let mut hide_next: Option<bool> = None;
    for w in words {
        if let Some(key_value) = hide_next.take() {
            out.push(if key_value {
                hide_value(w)
            } else {
                format!("<{} bytes redacted>", w.len())
            });
            continue;
        }
        if w.contains("exe0.") || w.contains("exe1.") {
            out.push("<token>".to_string());
            continue;
        }
        let flag = w.trim_start_matches('-');
        if w.starts_with('-') {
            if let Some((name, value)) = flag.split_once('=') {
                if SECRET_FLAGS.contains(&name) {
                    out.push(format!("--{name}=<{} bytes redacted>", value.len()));
                    continue;
                }
                if SECRET_VALUE_FLAGS.contains(&name) {
                    out.push(format!("--{name}={}", hide_value(value)));
                    continue;
                }
            }
            if SECRET_FLAGS.contains(&flag) {
                hide_next = Some(false);
            } else if SECRET_VALUE_FLAGS.contains(&flag) {
                hide_next = Some(true);
            }
        }
        out.push(w.clone());
    }
    out
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
            name: Some("demo-cp-1".into()),
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
        assert_eq!(inv.flag("name"), Some("demo-cp-1"));
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

    #[test]
    fn env_values_and_unknown_commands_are_redacted() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            redact_words(&w(&[
                "new",
                "--env=API_KEY=sekrit",
                "-env",
                "DB=sekrit2",
                "--env",
                "NOVALUE"
            ])),
            w(&[
                "new",
                "--env=API_KEY=<6 bytes redacted>",
                "-env",
                "DB=<7 bytes redacted>",
                "--env",
                "<7 bytes redacted>"
            ])
        );
        // Typed `new` with env: the same.
        let n = Command::New(Box::new(NewVm {
            name: Some("vm-one".into()),
            env: vec![("TOKEN".into(), "sekrit".into())],
            ..Default::default()
        }));
        assert!(!n.display().contains("sekrit"), "{}", n.display());
        assert!(n.display().contains("TOKEN="), "{}", n.display());
        // Unknown: only the first word survives.
        assert_eq!(
            redact_words(&w(&["frobnicate", "--token", "sekrit", "exe0.a.b"])),
            w(&["frobnicate", "<3 more words redacted>"])
        );
        assert_eq!(redact_words(&w(&["exe0.a.b"])), w(&["<token>"]));
        // A token inside a word.
        assert_eq!(
            redact_words(&w(&["exe0-to-exe1", "--vm=x", "tok=exe1.abc"])),
            w(&["exe0-to-exe1", "--vm=x", "<token>"])
        );
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
