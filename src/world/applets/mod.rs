//! The emulator's side of each stand-in: what `systemctl`, `journalctl`,
//! `tailscale`, `tailscaled`, `k3s`/`kubectl`, `logger` and `hostname` do
//! in a VM, over the world's model; what `curl` reaches ([`fetch`]); what
//! the k3s installer is ([`installer`]).

pub mod etcd_snapshot;
pub mod fetch;
pub mod installer;
pub mod journal;
pub mod k3s_cli;
pub mod systemctl;
pub mod tailscale;

use std::sync::Arc;

use super::Inner;
use super::protocol::{Call, Output};

/// Runs one stand-in call. Calls from a VM that is gone, or from a boot
/// that ended (a process that should be dead), are refused.
pub async fn call(inner: &Arc<Inner>, call: &Call) -> Output {
    let live = inner
        .model()
        .vms
        .get(&call.vm)
        .is_some_and(|v| v.up && v.boot == call.boot);
    if !live {
        return Output::fail(
            255,
            format!("{}: the VM has rebooted or is gone", call.command),
        );
    }
    match call.command.as_str() {
        "systemctl" => systemctl::run(inner, call).await,
        "journalctl" => journal::journalctl(inner, call),
        "logger" => journal::logger(inner, call),
        "hostname" => journal::hostname(inner, call),
        "getent" => journal::getent(inner, call),
        "tailscale" => tailscale::tailscale(inner, call).await,
        "tailscaled" => {
            inner.sync_tailscale_identity(&call.vm);
            tailscale::tailscaled(inner, call)
        }
        "k3s" | "kubectl" | "crictl" | "ctr" => k3s_cli::run(inner, call),
        other => Output::fail(127, format!("{other}: command not found")),
    }
}

/// A stand-in's arguments read one at a time, as the real tools read them:
/// `--flag=value` is `--flag value`. Which arguments an `=` splits differs
/// by tool (getopt splits long options only; Go's `flag` and `pflag` also
/// `-flag=value`), so each applet says it; the reading is shared.
pub struct Args<'a> {
    rest: std::slice::Iter<'a, String>,
    splits: fn(&str) -> bool,
    whole: &'a str,
    inline: Option<&'a str>,
}

impl<'a> Args<'a> {
    /// Reads `args`, splitting `flag=value` in the arguments `splits` picks.
    pub fn new(args: &'a [String], splits: fn(&str) -> bool) -> Self {
        Args {
            rest: args.iter(),
            splits,
            whole: "",
            inline: None,
        }
    }

    /// getopt's rule: only long options (`--unit=x`) carry an `=value`.
    pub fn long_options(a: &str) -> bool {
        a.starts_with("--")
    }

    /// The next argument as the flag it names (`--unit=x` gives `--unit`,
    /// its value kept for [`Args::value`]); `None` at the end.
    pub fn next_flag(&mut self) -> Option<&'a str> {
        let a = self.rest.next()?.as_str();
        self.whole = a;
        match a.split_once('=') {
            Some((flag, value)) if (self.splits)(a) => {
                self.inline = Some(value);
                Some(flag)
            }
            _ => {
                self.inline = None;
                Some(a)
            }
        }
    }

    /// The argument last read, whole (`--unit=x`).
    pub fn whole(&self) -> &'a str {
        self.whole
    }

    /// The `=value` of the flag last read, if it had one.
    pub fn inline(&self) -> Option<String> {
        self.inline.map(str::to_string)
    }

    /// The value of the flag last read: its `=value`, else the next argument.
    pub fn value(&mut self) -> Option<String> {
        match self.inline.take() {
            Some(v) => Some(v.to_string()),
            None => self.rest.next().cloned(),
        }
    }

    /// The arguments not read yet (after `--`).
    pub fn rest(&mut self) -> impl Iterator<Item = &'a String> + '_ {
        self.rest.by_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    #[test]
    fn an_equals_sign_carries_a_value_only_where_the_tool_says() {
        let args: Vec<String> = ["--unit=k3s", "-n", "5", "a=b", "--tag", "x", "--", "m"]
            .map(String::from)
            .into();
        let mut a = Args::new(&args, Args::long_options);
        assert_eq!(a.next_flag(), Some("--unit"));
        assert_eq!(a.whole(), "--unit=k3s");
        assert_eq!(a.value().as_deref(), Some("k3s"));
        assert_eq!(a.next_flag(), Some("-n"));
        assert_eq!(a.inline(), None);
        assert_eq!(a.value().as_deref(), Some("5"));
        assert_eq!(a.next_flag(), Some("a=b"));
        assert_eq!(a.next_flag(), Some("--tag"));
        assert_eq!(a.value().as_deref(), Some("x"));
        assert_eq!(a.next_flag(), Some("--"));
        assert_eq!(a.rest().cloned().collect::<Vec<_>>(), ["m"]);
        assert_eq!(a.next_flag(), None);
        let go: Vec<String> = ["-authkey=k"].map(String::from).into();
        let mut a = Args::new(&go, |_| true);
        assert_eq!(a.next_flag(), Some("-authkey"));
        assert_eq!(a.inline().as_deref(), Some("k"));
    }
}
