//! The k3s flags whose value is a secret, so that a fleet file may give
//! them only as `{flag: --name, secret: {env: NAME}}`: a plain
//! `--token=...` in `serverArgs`/`agentArgs` would be shown in every plan
//! (the markdown plan is a pull-request comment) and land in the unit's
//! world-readable `ExecStart`.
//!
//! Source: k3s's own flag definitions in `pkg/cli/cmds` of k3s-io/k3s,
//! read for this list (issue 22):
//! - `server.go`: `token` (alias `t`, "Shared secret used to join a server
//!   or agent to a cluster", env `K3S_TOKEN`), `agent-token` ("Shared
//!   secret used to join agents to the cluster, but not servers"),
//!   `cluster-secret` (deprecated, "use --token"), `datastore-endpoint`
//!   (an etcd, MySQL or Postgres data source name, which may carry a
//!   user and password), `etcd-s3-access-key` (env `AWS_ACCESS_KEY_ID`),
//!   `etcd-s3-secret-key` (env `AWS_SECRET_ACCESS_KEY`),
//!   `etcd-s3-session-token` (env `AWS_SESSION_TOKEN`), `etcd-s3-proxy` (a
//!   proxy URL, which may carry a user and password);
//! - `agent.go`: `token` (alias `t`), `cluster-secret`, `vpn-auth`
//!   ("Credentials for the VPN provider ... joinKey=<key>", env
//!   `K3S_VPN_AUTH`);
//! - `etcd_snapshot.go`: `etcd-token` (alias `t`, "Shared secret used to
//!   authenticate to etcd server") and the `s3-*` spellings of the S3 flags
//!   above (`s3-access-key`, `s3-secret-key`, `s3-session-token`,
//!   `s3-proxy`).
//!
//! The `*-file` flags (`token-file`, `agent-token-file`, `vpn-auth-file`)
//! name a path, not a secret, and are not listed. Which release added a
//! flag (`etcd-s3-session-token` and `etcd-s3-proxy` are newer than the
//! others) does not matter here: a flag k3s does not know fails at k3s's
//! start either way. Another engineer keeps the table of every k3s flag per
//! release; this module holds only the secret-carrying ones.
//!
//! Pure.

/// When a flag's value is a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// Always: a token or a key.
    Always,
    /// When the value is a URL or DSN with credentials in it
    /// (`postgres://user:PASSWORD@host/db`, `user:pass@tcp(host)/db`, a
    /// Postgres keyword DSN with `password=`): without them it is an
    /// address, fine as a plain argument.
    WithCredentials,
}

/// A k3s flag that carries a secret: every spelling k3s accepts, without
/// the leading `--`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFlag {
    pub names: &'static [&'static str],
    pub carries: Carries,
    /// What the secret is, for the refusal.
    pub what: &'static str,
}

/// Every secret-carrying k3s flag (see the module comment for the source
/// of each).
pub const SECRET_FLAGS: &[SecretFlag] = &[
    SecretFlag {
        names: &["token", "t"],
        carries: Carries::Always,
        what: "the cluster token",
    },
    SecretFlag {
        names: &["agent-token"],
        carries: Carries::Always,
        what: "the agent token",
    },
    SecretFlag {
        names: &["cluster-secret"],
        carries: Carries::Always,
        what: "the cluster token (deprecated spelling)",
    },
    SecretFlag {
        names: &["etcd-token"],
        carries: Carries::Always,
        what: "the etcd token",
    },
    SecretFlag {
        names: &["vpn-auth"],
        carries: Carries::Always,
        what: "the VPN provider's join key",
    },
    SecretFlag {
        names: &["etcd-s3-access-key", "s3-access-key"],
        carries: Carries::Always,
        what: "an S3 access key",
    },
    SecretFlag {
        names: &["etcd-s3-secret-key", "s3-secret-key"],
        carries: Carries::Always,
        what: "an S3 secret key",
    },
    SecretFlag {
        names: &["etcd-s3-session-token", "s3-session-token"],
        carries: Carries::Always,
        what: "an S3 session token",
    },
    SecretFlag {
        names: &["datastore-endpoint"],
        carries: Carries::WithCredentials,
        what: "the datastore's credentials",
    },
    SecretFlag {
        names: &["etcd-s3-proxy", "s3-proxy"],
        carries: Carries::WithCredentials,
        what: "the proxy's credentials",
    },
];

/// The secret flag a plain argument (`--name=value` or `--name`) sets, if
/// it carries a secret written in plain text. A flag that carries one only
/// with credentials counts when its value has them.
pub fn plain_secret(arg: &str) -> Option<&'static SecretFlag> {
    let arg = arg.strip_prefix("--")?;
    let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
    let flag = SECRET_FLAGS.iter().find(|f| f.names.contains(&name))?;
    match flag.carries {
        Carries::Always => Some(flag),
        Carries::WithCredentials => has_credentials(value).then_some(flag),
    }
}

/// Whether a URL or DSN carries credentials: user info before an `@`
/// (`scheme://user:pass@host`, MySQL's `user:pass@tcp(host)/db`) or a
/// `password=` keyword (Postgres' keyword form, a query parameter).
fn has_credentials(value: &str) -> bool {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
        || rest.split_once("@tcp(").is_some()
        || value.to_ascii_lowercase().contains("password=")
}

/// The flag's name as the user wrote it, without any value: for messages
/// that must never repeat a secret.
pub fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples, and the values that stay plain.
    #[test]
    fn secrets_in_plain_arguments_are_recognised() {
        for arg in [
            "--token=K10abc::server:s3cret",
            "--token",
            "--t=abc",
            "--agent-token=abc",
            "--cluster-secret=abc",
            "--etcd-s3-secret-key=abc",
            "--etcd-s3-access-key=AKIA",
            "--etcd-s3-session-token=abc",
            "--s3-secret-key=abc",
            "--vpn-auth=name=tailscale,joinKey=tskey-auth-x",
            "--datastore-endpoint=postgres://user:PASSWORD@db:5432/k3s",
            "--datastore-endpoint=mysql://user:pw@tcp(db:3306)/k3s",
            "--datastore-endpoint=user:pw@tcp(db:3306)/k3s",
            "--datastore-endpoint=host=db user=k3s password=pw dbname=k3s",
            "--datastore-endpoint=postgres://db/k3s?sslmode=disable&password=pw",
            "--etcd-s3-proxy=http://u:p@proxy:3128",
        ] {
            assert!(plain_secret(arg).is_some(), "{arg}");
        }
        for arg in [
            "--datastore-endpoint=postgres://db:5432/k3s",
            "--datastore-endpoint=https://etcd1:2379,https://etcd2:2379",
            "--etcd-s3-proxy=http://proxy:3128",
            "--etcd-s3-endpoint=s3.example.com",
            "--token-file=/etc/k3s-token",
            "--kubelet-arg=max-pods=200",
            "--tokenizer=x",
            "token=x",
        ] {
            assert!(plain_secret(arg).is_none(), "{arg}");
        }
    }

    #[test]
    fn the_name_never_carries_the_value() {
        assert_eq!(flag_name("--token=s3cret"), "--token");
        assert_eq!(flag_name("--etcd-s3"), "--etcd-s3");
    }
}
