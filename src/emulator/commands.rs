//! The lobby commands, one function each, over the parsed [`Invocation`].
//!
//! Every function returns a [`Reply`]: the status and the exact body bytes
//! (compact JSON values, each ending in `\n`). A command's own failure is a
//! 422 whose message is what exe.dev's command would print.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use ssh_key::HashAlg;

use crate::base::names::{check_portable_vm_name, check_vm_name, glob_match};
use crate::base::sizes::ByteSize;
use crate::core::api::command::{CATALOGUE, CommandSpec, Invocation};
use crate::core::api::types::{
    Exe1Reply, LsReply, NewReply, RmReply, ShareUpdate, SshKeyInfo, SshKeyList, Visibility,
    WhoamiReply,
};
use crate::core::api::{MAX_COMMENT_BYTES, MAX_SETUP_SCRIPT_BYTES, SHARE_PORT_RANGE};
use crate::core::token::{API_NAMESPACE, vm_namespace};

use super::EmulatorConfig;
use super::auth::validate_exe0;
use super::state::{Exe1Handle, Store, VmRecord, default_port};

/// A status and body, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Compact JSON plus the trailing newline Go's encoder writes.
pub fn json_line<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

impl Reply {
    /// 200 with one JSON value.
    pub fn ok<T: Serialize>(value: &T) -> Self {
        Reply {
            status: 200,
            body: json_line(value),
        }
    }

    /// An error reply `{"error":"..."}`.
    pub fn error(status: u16, message: &str) -> Self {
        Reply {
            status,
            body: json_line(&json!({ "error": message })),
        }
    }
}

/// A 422: the command ran and failed.
fn fail(message: impl AsRef<str>) -> Reply {
    Reply::error(422, message.as_ref())
}

fn not_found(vm: &str) -> Reply {
    fail(format!("VM {vm:?} not found"))
}

/// What happened to a VM, for the VM world (which runs setup scripts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// `new` succeeded: the VM boots, then its setup script runs.
    Created {
        name: String,
        image: String,
        script: Option<String>,
    },
    /// `resize` restarted the VM (its setup script runs again).
    Restarted { name: String },
    /// `rm` deleted it, disk included.
    Removed { name: String },
}

/// What a command may use besides the state.
pub struct Ctx<'a> {
    pub config: &'a EmulatorConfig,
    /// Fingerprint of the key that signed this request.
    pub fingerprint: &'a str,
    pub now_ms: u64,
    /// Seeded generator for random VM names.
    pub rng: &'a mut StdRng,
    /// VM lifecycle events of this command, handed to the world after it.
    pub events: Vec<VmEvent>,
}

/// Whether a command changes the state (and so must be saved): the
/// catalogue's `mutates`.
pub fn mutates(name: &str) -> bool {
    crate::core::api::command::spec(name).is_some_and(|s| s.mutates)
}

/// Runs a parsed, permitted invocation.
pub fn run(inv: &Invocation, store: &mut Store, ctx: &mut Ctx<'_>) -> Reply {
    if inv.help {
        return match CATALOGUE.iter().find(|s| s.name == inv.name) {
            Some(spec) => Reply::ok(&command_help(spec)),
            None => Reply::error(500, "internal error"),
        };
    }
    match inv.name {
        "ls" => ls(inv, store, ctx),
        "new" => new(inv, store, ctx),
        "rm" => rm(inv, store, ctx),
        "resize" => resize(inv, store, ctx),
        "tag" => tag(inv, store),
        "comment" => comment(inv, store),
        "share show" => share_show(inv, store, ctx),
        "share port" => share_port(inv, store, ctx),
        "share set-public" => share_visibility(inv, store, ctx, true),
        "share set-private" => share_visibility(inv, store, ctx, false),
        "whoami" => whoami(ctx),
        "ssh-key list" => ssh_key_list(ctx),
        "exe0-to-exe1" => exe0_to_exe1(inv, store, ctx),
        "help" => help(),
        _ => Reply::error(500, "internal error"),
    }
}

/// `<cmd> --help`: the command's flags, as JSON.
fn command_help(spec: &CommandSpec) -> serde_json::Value {
    let flags: Vec<_> = spec
        .flags
        .iter()
        .map(|f| json!({ "name": f.name, "help": f.help }))
        .collect();
    json!({ "command": spec.name, "usage": spec.usage, "help": spec.help, "flags": flags })
}

fn help() -> Reply {
    let commands: Vec<_> = CATALOGUE
        .iter()
        .map(|s| json!({ "name": s.name, "usage": s.usage, "help": s.help }))
        .collect();
    Reply::ok(&json!({ "commands": commands }))
}

fn ls(inv: &Invocation, store: &Store, ctx: &Ctx<'_>) -> Reply {
    let pattern = inv.args.first().map(String::as_str);
    let lag = ctx.config.strict.ls_lag.as_millis() as u64;
    let vms = store
        .state
        .vms
        .values()
        .filter(|vm| pattern.is_none_or(|p| glob_match(p, &vm.name)))
        .filter(|vm| ctx.now_ms.saturating_sub(vm.created_ms) >= lag)
        .map(|vm| vm.info(ctx.config.boot, ctx.now_ms))
        .collect();
    Reply::ok(&LsReply { vms })
}

fn check_tag(tag: &str) -> Result<(), Reply> {
    if crate::base::names::is_tag(tag) {
        Ok(())
    } else {
        Err(fail(format!(
            "invalid tag {tag:?}: tags must match [a-z0-9][a-z0-9-]{{0,62}}"
        )))
    }
}

fn parse_cpu(v: &str) -> Result<u32, Reply> {
    match v.parse::<u32>() {
        Ok(n) if crate::base::limits::CPU_RANGE.contains(&n) => Ok(n),
        _ => Err(fail(format!(
            "invalid --cpu {v:?}: must be a whole number from 1 to 64"
        ))),
    }
}

fn parse_size(flag: &str, v: &str) -> Result<u64, Reply> {
    match ByteSize::parse(v) {
        Ok(ByteSize(0)) => Err(fail(format!("invalid --{flag} {v:?}: must not be zero"))),
        Ok(ByteSize(n)) => Ok(n),
        Err(e) => Err(fail(format!("invalid --{flag}: {e}"))),
    }
}

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "happy", "icy", "jolly", "keen",
    "lucky", "mellow", "noble", "olive", "proud", "quiet", "rapid", "sunny", "tidy",
];
const NOUNS: &[&str] = &[
    "badger", "comet", "delta", "ember", "falcon", "garnet", "harbor", "island", "juniper",
    "kettle", "lagoon", "meadow", "nectar", "otter", "pebble", "quartz", "river", "spruce",
    "tundra", "willow",
];

/// A free random `word-word` name that passes the naming rules.
fn random_name(store: &Store, ctx: &mut Ctx<'_>) -> String {
    for attempt in 0..1000u32 {
        let a = ADJECTIVES[ctx.rng.random_range(0..ADJECTIVES.len())];
        let n = NOUNS[ctx.rng.random_range(0..NOUNS.len())];
        let name = if attempt < 200 {
            format!("{a}-{n}")
        } else {
            format!("{a}-{n}{attempt}")
        };
        if check_vm_name(&name).is_ok() && !store.state.vms.contains_key(&name) {
            return name;
        }
    }
    format!("vm-{:016x}", ctx.rng.random::<u64>())
}

fn new(inv: &Invocation, store: &mut Store, ctx: &mut Ctx<'_>) -> Reply {
    match build_vm(inv, store, ctx) {
        Ok(vm) => {
            let name = vm.name.clone();
            let reply = NewReply {
                vm_name: name.clone(),
                tags: vm.tags.clone(),
                ssh_command: format!("ssh {name}.exe.xyz"),
                ssh_dest: format!("{name}.exe.xyz"),
                ssh_port: 22,
                https_url: format!("https://{name}.exe.xyz"),
            };
            ctx.events.push(VmEvent::Created {
                name: name.clone(),
                image: vm.image.clone(),
                script: vm.setup_script.clone(),
            });
            store.state.vms.insert(name, vm);
            Reply::ok(&reply)
        }
        Err(r) => r,
    }
}

fn build_vm(inv: &Invocation, store: &Store, ctx: &mut Ctx<'_>) -> Result<VmRecord, Reply> {
    let name = match inv.flag("name") {
        Some(n) => {
            if ctx.config.strict.allow_digit_suffix {
                check_vm_name(n)
            } else {
                check_portable_vm_name(n)
            }
            .map_err(|e| fail(e.to_string()))?;
            n.to_string()
        }
        None => random_name(store, ctx),
    };
    let mut vm = VmRecord::new(&name);
    vm.created_ms = ctx.now_ms;
    vm.boot_started_ms = ctx.now_ms;
    if let Some(script) = inv.flag("setup-script") {
        if script.len() > MAX_SETUP_SCRIPT_BYTES {
            return Err(fail(format!(
                "setup script is {} bytes; the limit is {MAX_SETUP_SCRIPT_BYTES} bytes",
                script.len()
            )));
        }
        vm.setup_script = Some(script.to_string());
    }
    if let Some(c) = inv.flag("comment") {
        if c.len() > MAX_COMMENT_BYTES {
            return Err(fail(format!(
                "comment is {} bytes; the limit is {MAX_COMMENT_BYTES} bytes",
                c.len()
            )));
        }
        vm.comment = c.to_string();
    }
    if let Some(c) = inv.flag("cpu") {
        vm.cpus = parse_cpu(c)?;
    }
    if let Some(m) = inv.flag("memory") {
        vm.memory_bytes = parse_size("memory", m)?;
    }
    if let Some(d) = inv.flag("disk") {
        vm.disk_bytes = parse_size("disk", d)?;
    }
    if let Some(image) = inv.flag("image") {
        if image.trim().is_empty() {
            return Err(fail("invalid --image: must not be empty"));
        }
        vm.image = image.to_string();
        vm.share.port = default_port(image);
    }
    for t in inv.flag_all("tag") {
        check_tag(t)?;
        if !vm.tags.iter().any(|x| x == t) {
            vm.tags.push(t.to_string());
        }
    }
    for e in inv.flag_all("env") {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => vm.env.push((k.to_string(), v.to_string())),
            _ => return Err(fail(format!("invalid --env {e:?}: expected KEY=VALUE"))),
        }
    }
    vm.command = inv.flag("command").map(str::to_string);
    vm.no_email = inv.has("no-email");
    if store.state.vms.contains_key(&name) {
        return Err(fail(format!("VM name {name:?} is not available")));
    }
    Ok(vm)
}

fn rm(inv: &Invocation, store: &mut Store, ctx: &mut Ctx<'_>) -> Reply {
    let mut result = RmReply::default();
    for vm in &inv.args {
        if result.deleted.contains(vm) {
            continue;
        }
        if store.state.vms.remove(vm).is_some() {
            ctx.events.push(VmEvent::Removed { name: vm.clone() });
            result.deleted.push(vm.clone());
        } else if !result.failed.contains(vm) {
            result.failed.push(vm.clone());
        }
    }
    if result.failed.is_empty() {
        return Reply::ok(&result);
    }
    let missing = result
        .failed
        .iter()
        .map(|vm| format!("VM {vm:?} not found"))
        .collect::<Vec<_>>();
    if ctx.config.strict.rm_missing_422 {
        return fail(missing.join("; "));
    }
    // exe.dev's code writes one error per missing VM, then the result, 200.
    let mut body: String = missing
        .iter()
        .map(|m| json_line(&json!({ "error": m })))
        .collect();
    body.push_str(&json_line(&result));
    Reply { status: 200, body }
}

fn vm_mut<'s>(store: &'s mut Store, name: &str) -> Result<&'s mut VmRecord, Reply> {
    store.state.vms.get_mut(name).ok_or_else(|| not_found(name))
}

fn resize(inv: &Invocation, store: &mut Store, ctx: &mut Ctx<'_>) -> Reply {
    let name = &inv.args[0];
    let result = (|| {
        let cpu = inv.flag("cpu").map(parse_cpu).transpose()?;
        let memory = inv
            .flag("memory")
            .map(|m| parse_size("memory", m))
            .transpose()?;
        let disk = inv
            .flag("disk")
            .map(|d| parse_size("disk", d))
            .transpose()?;
        if cpu.is_none() && memory.is_none() && disk.is_none() {
            return Err(fail(
                "nothing to resize: give --cpu, --memory or --disk (usage: resize <vm> [--cpu N] [--memory S] [--disk S])",
            ));
        }
        let vm = vm_mut(store, name)?;
        if let Some(d) = disk
            && d < vm.disk_bytes
        {
            return Err(fail(format!(
                "disk can only grow: VM {name:?} has {} bytes, asked for {d}",
                vm.disk_bytes
            )));
        }
        vm.cpus = cpu.unwrap_or(vm.cpus);
        vm.memory_bytes = memory.unwrap_or(vm.memory_bytes);
        vm.disk_bytes = disk.unwrap_or(vm.disk_bytes);
        // A resize restarts the VM (and re-runs its setup script).
        vm.boot_started_ms = ctx.now_ms;
        ctx.events.push(VmEvent::Restarted { name: name.clone() });
        Ok(Reply::ok(&vm.info(ctx.config.boot, ctx.now_ms)))
    })();
    result.unwrap_or_else(|r| r)
}

fn tag(inv: &Invocation, store: &mut Store) -> Reply {
    let (name, tags) = (&inv.args[0], &inv.args[1..]);
    let result = (|| {
        for t in tags {
            check_tag(t)?;
        }
        let vm = vm_mut(store, name)?;
        if inv.has("d") {
            vm.tags.retain(|t| !tags.contains(t));
        } else {
            for t in tags {
                if !vm.tags.contains(t) {
                    vm.tags.push(t.clone());
                }
            }
        }
        Ok(Reply::ok(&json!({ "vm_name": vm.name, "tags": vm.tags })))
    })();
    result.unwrap_or_else(|r| r)
}

fn comment(inv: &Invocation, store: &mut Store) -> Reply {
    let (name, text) = (&inv.args[0], &inv.args[1]);
    if text.len() > MAX_COMMENT_BYTES {
        return fail(format!(
            "comment is {} bytes; the limit is {MAX_COMMENT_BYTES} bytes",
            text.len()
        ));
    }
    match vm_mut(store, name) {
        Ok(vm) => {
            vm.comment = text.clone();
            Reply::ok(&json!({ "vm_name": vm.name, "comment": vm.comment }))
        }
        Err(r) => r,
    }
}

/// The VM for a `share` command, which talks to the VM and so fails while
/// it is not running (exe.dev: "failed to connect" / "handshake failed").
fn running_vm<'s>(
    store: &'s mut Store,
    name: &str,
    ctx: &Ctx<'_>,
) -> Result<&'s mut VmRecord, Reply> {
    let vm = vm_mut(store, name)?;
    if vm.status(ctx.config.boot, ctx.now_ms) != "running" {
        return Err(fail("failed to connect to VM"));
    }
    Ok(vm)
}

fn share_show(inv: &Invocation, store: &mut Store, ctx: &Ctx<'_>) -> Reply {
    match running_vm(store, &inv.args[0], ctx) {
        Ok(vm) => Reply::ok(&vm.share_info()),
        Err(r) => r,
    }
}

fn share_update(vm: &VmRecord) -> Reply {
    Reply::ok(&ShareUpdate {
        vm_name: vm.name.clone(),
        port: vm.share.port,
        share: Visibility::from_public(vm.share.public),
        status: "updated".into(),
    })
}

fn share_port(inv: &Invocation, store: &mut Store, ctx: &Ctx<'_>) -> Reply {
    let raw = &inv.args[1];
    let port = match raw.parse::<u16>() {
        Ok(p) if SHARE_PORT_RANGE.contains(&p) => p,
        _ => {
            return fail(format!(
                "invalid port {raw:?}: must be between {} and {}",
                SHARE_PORT_RANGE.start(),
                SHARE_PORT_RANGE.end()
            ));
        }
    };
    match running_vm(store, &inv.args[0], ctx) {
        Ok(vm) => {
            vm.share.port = port;
            share_update(vm)
        }
        Err(r) => r,
    }
}

fn share_visibility(inv: &Invocation, store: &mut Store, ctx: &Ctx<'_>, public: bool) -> Reply {
    match running_vm(store, &inv.args[0], ctx) {
        Ok(vm) => {
            vm.share.public = public;
            share_update(vm)
        }
        Err(r) => r,
    }
}

/// The account's user id: stable for an e-mail address.
pub fn user_id(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("usr{hex}")
}

fn whoami(ctx: &Ctx<'_>) -> Reply {
    Reply::ok(&WhoamiReply {
        email: ctx.config.user_email.clone(),
        user_id: user_id(&ctx.config.user_email),
    })
}

fn ssh_key_list(ctx: &Ctx<'_>) -> Reply {
    let ssh_keys = ctx
        .config
        .authorized_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let fingerprint = k.fingerprint(HashAlg::Sha256).to_string();
            let name = if k.comment().is_empty() {
                format!("key-{}", i + 1)
            } else {
                k.comment().to_string()
            };
            let mut bare = k.clone();
            bare.set_comment("");
            SshKeyInfo {
                public_key: bare.to_openssh().unwrap_or_default().trim().to_string(),
                current: fingerprint == ctx.fingerprint,
                fingerprint,
                name,
            }
        })
        .collect();
    Reply::ok(&SshKeyList { ssh_keys })
}

fn exe0_to_exe1(inv: &Invocation, store: &mut Store, ctx: &Ctx<'_>) -> Reply {
    let namespace = match inv.flag("vm") {
        Some(vm) if !store.state.vms.contains_key(vm) => return not_found(vm),
        Some(vm) => vm_namespace(vm),
        None => API_NAMESPACE.to_string(),
    };
    let exe0 = &inv.args[0];
    let now = (ctx.now_ms / 1000) as i64;
    if validate_exe0(exe0, &namespace, &ctx.config.authorized_keys, now).is_err() {
        return fail("invalid token");
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes);
    let token = format!("exe1.{}", URL_SAFE_NO_PAD.encode(bytes));
    store.state.exe1.insert(
        token.clone(),
        Exe1Handle {
            exe0: exe0.clone(),
            namespace,
        },
    );
    Reply::ok(&Exe1Reply { token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("w?b-*-1", "web-x-1"));
        assert!(!glob_match("web-?", "web-ab"));
        assert!(glob_match("*a*b", "xxaxxb"));
        assert!(!glob_match("*a*b", "xxaxxbc"));
    }

    #[test]
    fn tags_and_suffixes() {
        assert!(check_tag("k8s-1").is_ok());
        assert!(check_tag("-x").is_err() && check_tag("A").is_err() && check_tag("").is_err());
    }
}
