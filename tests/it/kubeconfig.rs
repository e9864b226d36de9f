//! `exedev-k8s kubeconfig` against a stub `ssh` (EXEDEV_K8S_SSH): a shell
//! script that records its arguments and prints a k3s kubeconfig, or fails
//! with ssh's connection-failure code 255.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::utf8;

const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkekNDQVIyZ0F3SUJBZ0lCQURBS0JnZ3Foa2pPUFFRREFqQWpNU0V3SHdZRFZRUUREQmhyTTNNdGMyVnkK
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0xJRU5UQ0VSVERBVEE=
    client-key-data: U0VDUkVUQ0xJRU5US0VZREFUQQ==
";

const CLIENT_KEY: &str = "U0VDUkVUQ0xJRU5US0VZREFUQQ==";

/// The shared minimal fleet (one server, `demo-cp1`), pinned: `plan` would
/// otherwise look the channel up on k3s's channel server.
fn fleet() -> String {
    crate::common::minimal_fleet(&[("channel: stable", "version: v1.31.4+k3s1")], "")
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A fleet file and a stub ssh that fails with 255 `failures` times
    /// (counted in a file), then prints the k3s kubeconfig.
    fn new(failures: u32) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("fleet.yaml"), fleet()).expect("fleet");
        std::fs::write(dir.path().join("k3s.yaml"), K3S_YAML).expect("fixture");
        let d = dir.path().display();
        let stub = format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$@\" >> '{d}/argv'\n\
             echo --- >> '{d}/argv'\n\
             n=$(cat '{d}/count' 2>/dev/null || echo 0)\n\
             echo $((n + 1)) > '{d}/count'\n\
             if [ \"$n\" -lt {failures} ]; then\n\
               echo 'kex_exchange_identification: Connection closed by remote host' >&2\n\
               exit 255\n\
             fi\n\
             cat '{d}/k3s.yaml'\n"
        );
        let path = dir.path().join("ssh-stub");
        std::fs::write(&path, stub).expect("stub");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
            .arg("kubeconfig")
            .arg("-f")
            .arg(self.path("fleet.yaml"))
            .args(["--ssh-retry-delay", "10ms"])
            .args(extra)
            .env("EXEDEV_K8S_SSH", self.path("ssh-stub"))
            .env("TMPDIR", self.dir.path())
            .env_remove("EXE_DEV_SSH_KEY")
            .output()
            .expect("run the binary")
    }

    fn argv(&self) -> String {
        std::fs::read_to_string(self.path("argv")).unwrap_or_default()
    }

    fn calls(&self) -> usize {
        self.argv().matches("---\n").count()
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("written").permissions().mode() & 0o777
}

fn kubeconfig(p: &Path) -> kube::config::Kubeconfig {
    kube::config::Kubeconfig::read_from(p).expect("a valid kubeconfig")
}

#[test]
fn fetches_rewrites_and_stores_privately() {
    let env = Env::new(0);
    let out = env.run(&[]);
    let (stdout, stderr) = (utf8(&out.stdout), utf8(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let argv = env.argv();
    assert!(argv.contains("HostKeyAlias=exe.dev\n"), "{argv}");
    assert!(argv.contains("BatchMode=yes\n"), "{argv}");
    assert!(argv.contains("ControlMaster=auto\n"), "{argv}");
    assert!(argv.contains("ControlPath="), "{argv}");
    assert!(argv.contains("\ndemo-cp1.exe.xyz\n"), "{argv}");
    assert!(
        argv.contains("sudo -n cat /etc/rancher/k3s/k3s.yaml"),
        "{argv}"
    );
    assert!(!argv.contains("\n-i\n"), "no key given: {argv}");

    let stored = env.path(".exedev-k8s/demo/kubeconfig");
    assert_eq!(mode(&stored), 0o600);
    let k = kubeconfig(&stored);
    assert_eq!(k.current_context.as_deref(), Some("demo"));
    assert_eq!(k.clusters[0].name, "demo");
    assert_eq!(k.auth_infos[0].name, "demo");
    assert_eq!(k.contexts[0].name, "demo");
    assert_eq!(
        k.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.as_deref()),
        Some("https://demo-cp1.tail1234.ts.net:6443")
    );
    let raw = std::fs::read_to_string(&stored).expect("read");
    assert!(raw.contains(CLIENT_KEY), "the key is kept: {raw}");

    assert!(stdout.contains(&stored.display().to_string()), "{stdout}");
    assert!(!stdout.contains(CLIENT_KEY) && !stderr.contains(CLIENT_KEY));
    assert!(!stdout.contains("client-key-data"), "{stdout}");
}

#[test]
fn out_with_merge_keeps_other_clusters() {
    let env = Env::new(0);
    let target = env.path("kube/config");
    std::fs::create_dir_all(env.path("kube")).expect("dir");
    std::fs::write(
        &target,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod:6443'}\nusers:\n- name: prod\n  user: {token: abc}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\ncurrent-context: prod\n",
    )
    .expect("existing");
    let key = env.path("id_test");
    let out = env.run(&[
        "--out",
        &target.display().to_string(),
        "--merge",
        "--ssh-key",
        &key.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    assert!(env.argv().contains(&format!("\n-i\n{}\n", key.display())));
    assert_eq!(mode(&target), 0o600);
    let k = kubeconfig(&target);
    let names: Vec<&str> = k.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prod", "demo"]);
    assert_eq!(k.current_context.as_deref(), Some("demo"));
    assert!(!env.path(".exedev-k8s/demo/kubeconfig").exists());
    assert!(!utf8(&out.stdout).contains(CLIENT_KEY));
    // The switch of kubectl's current cluster is said.
    assert!(
        utf8(&out.stdout).contains(
            "current-context changed from \"prod\" to \"demo\": kubectl now talks to this cluster (switch back: kubectl config use-context prod)"
        ),
        "{}",
        utf8(&out.stdout)
    );

    // Without --merge, --out refuses to drop the other context, before
    // any SSH session...
    let calls = env.calls();
    let before = std::fs::read_to_string(&target).expect("read");
    let out = env.run(&["--out", &target.display().to_string()]);
    assert!(!out.status.success());
    let err = utf8(&out.stderr);
    assert!(
        err.contains("holds other contexts (\"prod\")") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).expect("read"), before);
    assert_eq!(env.calls(), calls, "refused before fetching");
    // ...and overwrites it with --overwrite.
    let out = env.run(&["--out", &target.display().to_string(), "--overwrite"]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    let names: Vec<String> = kubeconfig(&target)
        .clusters
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["demo"]);
}

#[test]
fn connection_failures_are_retried() {
    let env = Env::new(2);
    let out = env.run(&[]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    assert_eq!(env.calls(), 3);
    assert!(env.path(".exedev-k8s/demo/kubeconfig").exists());
}

#[test]
fn persistent_connection_failure_names_the_vm_and_what_to_do() {
    let env = Env::new(1000);
    let out = env.run(&["--ssh-retries", "2"]);
    assert!(!out.status.success());
    assert_eq!(env.calls(), 3);
    let err = utf8(&out.stderr);
    assert!(err.contains("demo-cp1.exe.xyz"), "{err}");
    assert!(err.contains("255"), "{err}");
    assert!(err.contains("Connection closed by remote host"), "{err}");
    assert!(err.contains("registered with exe.dev"), "{err}");
    assert!(err.contains("running"), "{err}");
    assert!(!env.path(".exedev-k8s/demo/kubeconfig").exists());
}

#[test]
fn a_failing_remote_command_is_not_retried() {
    let env = Env::new(0);
    let stub = format!(
        "#!/bin/sh\necho --- >> '{}/argv'\necho 'sudo: a password is required' >&2\nexit 1\n",
        env.dir.path().display()
    );
    std::fs::write(env.path("ssh-stub"), stub).expect("stub");
    let out = env.run(&[]);
    assert!(!out.status.success());
    assert_eq!(env.calls(), 1);
    let err = utf8(&out.stderr);
    assert!(err.contains("demo-cp1"), "{err}");
    assert!(err.contains("exit code 1"), "{err}");
    assert!(err.contains("sudo: a password is required"), "{err}");
}

/// k3s's kubeconfig with a credential plugin added, as root on the first
/// server could plant it: run, the plugin would write `PWNED` in the test
/// directory.
fn poisoned(env: &Env) -> String {
    let key_line = format!("    client-key-data: {CLIENT_KEY}\n");
    assert!(K3S_YAML.contains(&key_line));
    K3S_YAML.replace(
        &key_line,
        &format!(
            "{key_line}    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: /bin/sh\n      args: [\"-c\", \"id > '{}'\"]\n",
            env.path("PWNED").display()
        ),
    )
}

#[test]
fn a_planted_exec_plugin_is_refused_never_stored_and_never_run() {
    let env = Env::new(0);
    std::fs::write(env.path("k3s.yaml"), poisoned(&env)).expect("fixture");
    let out = env.run(&[]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("users[0].user.exec"), "{err}");
    assert!(err.contains("credential plugin"), "{err}");
    assert!(err.contains("demo-cp1"), "names the VM: {err}");
    assert!(err.contains("was altered"), "says what it means: {err}");
    assert!(!err.contains(CLIENT_KEY) && !err.contains("PWNED"), "{err}");
    assert!(!env.path(".exedev-k8s/demo/kubeconfig").exists());
    assert!(!env.path("PWNED").exists(), "the plugin ran");

    // Merging into a file of the user's: refused the same, file untouched.
    let target = env.path("config");
    std::fs::write(&target, "apiVersion: v1\nkind: Config\n").expect("existing");
    let out = env.run(&["--out", &target.display().to_string(), "--merge"]);
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(&target).expect("kept"),
        "apiVersion: v1\nkind: Config\n"
    );
    assert!(!env.path("PWNED").exists(), "the plugin ran");
}

#[test]
fn a_broken_merge_target_is_reported_without_its_content() {
    let env = Env::new(0);
    let target = env.path("config");
    std::fs::write(
        &target,
        "users:\n- name: prod\n  user:\n    token: SEKRIT-TOKEN-VALUE\n    client-key-data: S0VZ\n   oops: [\n",
    )
    .expect("existing");
    let out = env.run(&["--out", &target.display().to_string(), "--merge"]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&target.display().to_string()), "{err}");
    assert!(err.contains("line "), "located: {err}");
    assert!(!err.contains("SEKRIT") && !err.contains("S0VZ"), "{err}");
    assert!(!err.contains(CLIENT_KEY), "{err}");
}

/// The stored kubeconfig and a user's `--kubeconfig` against a fleet whose
/// VMs exist in the emulator.
mod with_the_emulator {
    use super::*;

    fn cli(h: &crate::common::Harness, env: &Env, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
            .args(args)
            .arg("-f")
            .arg(env.path("fleet.yaml"))
            .env("EXE_DEV_ENDPOINT", &h.emu.url)
            .env("EXE_DEV_API_KEY", &h.token)
            .env("TS_AUTHKEY", "tskey-auth-fake")
            .env("EXEDEV_K8S_SSH", env.path("ssh-stub"))
            .env("TMPDIR", env.dir.path())
            .env_remove("EXE_DEV_SSH_KEY")
            .env_remove("EXEDEV_K8S_KUBECONFIG")
            .output()
            .expect("run the binary")
    }

    /// A stored kubeconfig is read back through the same rule as a fetched
    /// one: the plugin planted in it is refused on every later command.
    #[test]
    fn a_stored_kubeconfig_with_a_plugin_is_refused_on_read_back() {
        let h = crate::common::harness(|_| {});
        let env = Env::new(0);
        let stored = env.path(".exedev-k8s/demo/kubeconfig");
        std::fs::create_dir_all(env.path(".exedev-k8s/demo")).expect("dir");
        let poison = poisoned(&env)
            .replace("name: default", "name: demo")
            .replace(
                "cluster: default\n    user: default",
                "cluster: demo\n    user: demo",
            );
        std::fs::write(
            &stored,
            poison.replace("current-context: default", "current-context: demo"),
        )
        .expect("plant");
        // status reads the stored kubeconfig back and refuses it, saying why.
        let out = cli(&h, &env, &["status", "--no-ssh", "--no-probe"]);
        let err = format!("{}{}", utf8(&out.stdout), utf8(&out.stderr));
        assert!(err.contains("users[0].user.exec"), "{err}");
        assert!(err.contains(&stored.display().to_string()), "{err}");
        assert!(err.contains("delete the file"), "{err}");
        let out = cli(&h, &env, &["plan"]);
        assert!(out.status.success(), "{}", utf8(&out.stderr));
        assert!(!env.path("PWNED").exists(), "the plugin ran");
        assert!(!err.contains(CLIENT_KEY));
    }

    /// A broken `--kubeconfig` of the user's is reported with its place,
    /// never its lines (kube-rs's own parser quotes them).
    #[test]
    fn a_broken_users_kubeconfig_is_reported_without_its_content() {
        let h = crate::common::harness(|_| {});
        let env = Env::new(0);
        let mine = env.path("mine.yaml");
        std::fs::write(
            &mine,
            "users:\n- name: prod\n  user:\n    token: SEKRIT-TOKEN-VALUE\n   oops: [\n",
        )
        .expect("write");
        let out = cli(
            &h,
            &env,
            &[
                "status",
                "--no-probe",
                "--kubeconfig",
                &mine.display().to_string(),
            ],
        );
        let all = format!("{}{}", utf8(&out.stdout), utf8(&out.stderr));
        assert!(all.contains(&mine.display().to_string()), "{all}");
        assert!(all.contains("line "), "located: {all}");
        assert!(!all.contains("SEKRIT"), "{all}");
    }

    /// A `--kubeconfig` the user brings is theirs: used as kubectl would,
    /// with a warning that its plugins run.
    #[test]
    fn a_users_kubeconfig_with_a_plugin_is_warned_about() {
        let h = crate::common::harness(|_| {});
        let env = Env::new(0);
        let mine = env.path("mine.yaml");
        std::fs::write(&mine, poisoned(&env)).expect("write");
        let out = cli(
            &h,
            &env,
            &["plan", "--kubeconfig", &mine.display().to_string()],
        );
        let err = utf8(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("credential plugins will run on this machine"),
            "{err}"
        );
        assert!(err.contains("user \"default\": exec"), "{err}");
        assert!(!err.contains(CLIENT_KEY), "{err}");
        let clean = env.path("clean.yaml");
        std::fs::write(&clean, K3S_YAML).expect("write");
        let out = cli(
            &h,
            &env,
            &["plan", "--kubeconfig", &clean.display().to_string()],
        );
        assert!(!utf8(&out.stderr).contains("credential plugins"));
    }
}

/// `ssh` (and whatever ProxyCommand the user's config runs) sees only the
/// environment it needs: not the exe.dev token, the key passphrase, the
/// Tailscale key or the k3s token.
#[test]
fn ssh_gets_no_secret_from_the_environment() {
    let env = Env::new(0);
    let stub = format!(
        "#!/bin/sh\nenv > '{d}/env'\ncat '{d}/k3s.yaml'\n",
        d = env.dir.path().display()
    );
    std::fs::write(env.path("ssh-stub"), stub).expect("stub");
    let out = Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
        .arg("kubeconfig")
        .arg("-f")
        .arg(env.path("fleet.yaml"))
        .env("EXEDEV_K8S_SSH", env.path("ssh-stub"))
        .env("TMPDIR", env.dir.path())
        .env("EXE_DEV_API_KEY", "exe0.SECRET-API-KEY.sig")
        .env("EXE_DEV_SSH_KEY_PASSPHRASE", "SECRET-PASSPHRASE")
        .env("TS_AUTHKEY", "tskey-auth-SECRET")
        .env("K3S_TOKEN", "SECRET-K3S-TOKEN")
        .env("GITHUB_TOKEN", "SECRET-GH")
        .env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .env("LC_ALL", "C")
        .env_remove("EXE_DEV_SSH_KEY")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    let seen = std::fs::read_to_string(env.path("env")).expect("the stub ran");
    assert!(!seen.contains("SECRET"), "{seen}");
    for kept in [
        "PATH=",
        "HOME=",
        "SSH_AUTH_SOCK=/tmp/agent.sock",
        "LC_ALL=C",
        "TMPDIR=",
    ] {
        assert!(seen.lines().any(|l| l.starts_with(kept)), "{kept}: {seen}");
    }
}

/// The socket directory under TMPDIR is refused, never taken over or
/// chmod-ed, when others can reach it.
#[test]
fn an_open_control_directory_is_refused_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(0);
    let ctl = env.path("exedev-k8s-ssh-tester");
    std::fs::create_dir(&ctl).expect("dir");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
        .arg("kubeconfig")
        .arg("-f")
        .arg(env.path("fleet.yaml"))
        .env("EXEDEV_K8S_SSH", env.path("ssh-stub"))
        .env("TMPDIR", env.dir.path())
        .env("USER", "tester")
        .env_remove("EXE_DEV_SSH_KEY")
        .output()
        .expect("run");
    let err = utf8(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&ctl.display().to_string()), "{err}");
    assert!(err.contains("open to other users (mode 777)"), "{err}");
    assert_eq!(mode(&ctl), 0o777, "not chmod-ed");
    assert_eq!(env.calls(), 0, "ssh never ran");
}

/// A three-server fleet whose stub ssh cannot reach the servers named in
/// `down` (exit 255, as ssh) and prints the kubeconfig for the others.
fn ha_env(down: &[&str]) -> Env {
    let env = Env::new(0);
    std::fs::write(
        env.path("fleet.yaml"),
        crate::common::minimal_fleet(
            &[("channel: stable", "version: v1.31.4+k3s1")],
            "controlPlane:\n  count: 3\n",
        ),
    )
    .expect("fleet");
    let d = env.dir.path().display();
    let cases: String = down
        .iter()
        .map(|vm| {
            format!(
                "  *{vm}.exe.xyz*) echo 'ssh: connect to host {vm}.exe.xyz port 22: Connection refused' >&2; exit 255 ;;\n"
            )
        })
        .collect();
    let stub = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{d}/argv'\necho --- >> '{d}/argv'\ncase \"$*\" in\n{cases}esac\ncat '{d}/k3s.yaml'\n"
    );
    std::fs::write(env.path("ssh-stub"), stub).expect("stub");
    env
}

/// With the first server down, the kubeconfig comes from the next server
/// SSH reaches, and points at that server (every server's name is in every
/// certificate).
#[test]
fn a_down_first_server_is_passed_over_for_the_next() {
    let env = ha_env(&["demo-cp1"]);
    let out = env.run(&["--ssh-retries", "0"]);
    let (stdout, stderr) = (utf8(&out.stdout), utf8(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(from demo-cp2)"), "{stdout}");
    let k = kubeconfig(&env.path(".exedev-k8s/demo/kubeconfig"));
    assert_eq!(
        k.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
        Some("https://demo-cp2.tail1234.ts.net:6443")
    );
    let argv = env.argv();
    assert!(argv.contains("demo-cp1.exe.xyz"), "cp1 tried first: {argv}");
    assert!(!argv.contains("demo-cp3.exe.xyz"), "stops at cp2: {argv}");
}

/// No server reachable: the first server's failure, and the others named.
#[test]
fn no_reachable_server_names_each_one_tried() {
    let env = ha_env(&["demo-cp1", "demo-cp2", "demo-cp3"]);
    let out = env.run(&["--ssh-retries", "0"]);
    let stderr = utf8(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("demo-cp1"), "{stderr}");
    assert!(
        stderr.contains("the other servers (demo-cp2, demo-cp3) could not be reached either"),
        "{stderr}"
    );
    assert!(!env.path(".exedev-k8s/demo/kubeconfig").exists());
}
