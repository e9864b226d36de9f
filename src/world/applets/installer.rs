//! What `https://get.k3s.io` serves in the world: an installer that
//! behaves like k3s's `install.sh` where the facts file describes it (the
//! rest, `INSTALL_K3S_SKIP_ENABLE`, the SHA-256 check and
//! `Restart=always`/`RestartSec=5s`, is the model's reading of install.sh,
//! not a fact from the file), and
//! the "k3s binary" it downloads: a shim that runs the k3s stand-in with
//! its version baked in (so `k3s --version` answers what was installed,
//! and a node keeps its version until something reinstalls it).

use sha2::{Digest, Sha256};

/// The installer. Models (facts "Install", "The installer, and what
/// blocks"): `INSTALL_K3S_VERSION` wins over `INSTALL_K3S_CHANNEL` (default
/// `stable`, resolved through update.k3s.io); `INSTALL_K3S_EXEC` and the
/// arguments give the command (`server`, or `agent` when `K3S_URL` is set)
/// and its flags; `INSTALL_K3S_SKIP_DOWNLOAD` keeps the installed binary;
/// the binary's SHA-256 is checked; `K3S_*` variables go to the unit's
/// environment file (0600); the unit is `Type=notify` with
/// `Restart=always`; it is enabled unless `INSTALL_K3S_SKIP_ENABLE` (which
/// also skips the start) and, unless `INSTALL_K3S_SKIP_START`, restarted
/// with `systemctl restart`, which blocks until k3s is ready. Its own
/// downloads are not retried.
pub const INSTALL_SH: &str = r#"#!/bin/sh
# k3s installer stand-in served by the exedev-k8s emulator's VM world.
set -e

info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR] $*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=''; else SUDO=sudo; fi
BIN_DIR=/usr/local/bin

# INSTALL_K3S_EXEC words come first, then the arguments.
# shellcheck disable=SC2086
set -- ${INSTALL_K3S_EXEC:-} "$@"
case "${1:-}" in
  -* | '')
    if [ -n "${K3S_URL:-}" ]; then
      [ -n "${K3S_TOKEN:-}${K3S_TOKEN_FILE:-}" ] || fatal "Defaulted k3s exec command to 'agent' because K3S_URL is defined, but K3S_TOKEN or K3S_TOKEN_FILE is not defined."
      CMD_K3S=agent
    else
      CMD_K3S=server
    fi
    ;;
  *)
    CMD_K3S=$1
    shift
    ;;
esac
case "$CMD_K3S" in
  server) SYSTEM_NAME=${INSTALL_K3S_NAME:-k3s} ;;
  *) SYSTEM_NAME=${INSTALL_K3S_NAME:-k3s-$CMD_K3S} ;;
esac

if [ -n "${INSTALL_K3S_VERSION:-}" ]; then
  VERSION_K3S=$INSTALL_K3S_VERSION
else
  CHANNEL=${INSTALL_K3S_CHANNEL:-stable}
  info "Finding release for channel ${CHANNEL}"
  VERSION_K3S=$(curl -w '%{url_effective}' -L -s -S "https://update.k3s.io/v1-release/channels/${CHANNEL}" -o /dev/null | sed -e 's|.*/||')
  [ -n "$VERSION_K3S" ] || fatal "Unable to find a release for channel ${CHANNEL}"
fi

if [ "${INSTALL_K3S_SKIP_DOWNLOAD:-}" = true ]; then
  info "Skipping k3s download and verify"
  [ -x "$BIN_DIR/k3s" ] || fatal "Executable k3s binary not found at $BIN_DIR/k3s"
else
  info "Using ${VERSION_K3S} as release"
  TMP_DIR=$(mktemp -d -t k3s-install.XXXXXXXXXX)
  trap 'rm -rf "$TMP_DIR"' EXIT
  URL="https://github.com/k3s-io/k3s/releases/download/${VERSION_K3S}"
  info "Downloading hash ${URL}/sha256sum-amd64.txt"
  curl -sfL -o "$TMP_DIR/k3s.hash" "${URL}/sha256sum-amd64.txt" || fatal "Download failed"
  HASH_EXPECTED=$(awk '$2 == "k3s" { print $1 }' "$TMP_DIR/k3s.hash")
  if [ -x "$BIN_DIR/k3s" ] && [ "$(sha256sum "$BIN_DIR/k3s" | awk '{ print $1 }')" = "$HASH_EXPECTED" ]; then
    info "Skipping binary downloaded, installed k3s matches hash"
  else
    info "Downloading binary ${URL}/k3s"
    curl -sfL -o "$TMP_DIR/k3s.bin" "${URL}/k3s" || fatal "Download failed"
    HASH_BIN=$(sha256sum "$TMP_DIR/k3s.bin" | awk '{ print $1 }')
    [ "$HASH_EXPECTED" = "$HASH_BIN" ] || fatal "Download sha256 does not match ${HASH_EXPECTED}, got ${HASH_BIN}"
    chmod 755 "$TMP_DIR/k3s.bin"
    info "Installing k3s to $BIN_DIR/k3s"
    $SUDO mv -f "$TMP_DIR/k3s.bin" "$BIN_DIR/k3s"
  fi
fi
for cmd in kubectl crictl ctr; do
  if [ ! -e "$BIN_DIR/$cmd" ]; then
    info "Creating $BIN_DIR/$cmd symlink to k3s"
    $SUDO ln -sf k3s "$BIN_DIR/$cmd"
  fi
done

UNINSTALL="$BIN_DIR/${SYSTEM_NAME}-uninstall.sh"
info "Creating uninstall script $UNINSTALL"
$SUDO tee "$UNINSTALL" >/dev/null <<EOF
#!/bin/sh
set -x
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
systemctl stop ${SYSTEM_NAME} || true
systemctl disable ${SYSTEM_NAME} || true
rm -f /etc/systemd/system/${SYSTEM_NAME}.service /etc/systemd/system/${SYSTEM_NAME}.service.env
rm -f $BIN_DIR/k3s $BIN_DIR/kubectl $BIN_DIR/crictl $BIN_DIR/ctr
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s /etc/rancher/node
rm -f "\$0"
EOF
$SUDO chmod 755 "$UNINSTALL"

FILE_ENV="/etc/systemd/system/${SYSTEM_NAME}.service.env"
info "env: Creating environment file ${FILE_ENV}"
$SUDO touch "$FILE_ENV"
$SUDO chmod 0600 "$FILE_ENV"
env | grep '^K3S_' | $SUDO tee "$FILE_ENV" >/dev/null || true

quote() {
  for arg in "$@"; do
    printf ' \\\n\t%s' "'$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
  done
}
FILE_SERVICE="/etc/systemd/system/${SYSTEM_NAME}.service"
info "systemd: Creating service file ${FILE_SERVICE}"
$SUDO tee "$FILE_SERVICE" >/dev/null <<EOF
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_ENV}
KillMode=process
Delegate=yes
LimitNOFILE=1048576
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=${BIN_DIR}/k3s \\
    ${CMD_K3S}$(quote "$@")
EOF

$SUDO systemctl daemon-reload
if [ "${INSTALL_K3S_SKIP_ENABLE:-}" = true ]; then
  info "Skipping ${SYSTEM_NAME} enable and start"
  exit 0
fi
info "systemd: Enabling ${SYSTEM_NAME} unit"
$SUDO systemctl enable "${SYSTEM_NAME}" >/dev/null 2>&1
if [ "${INSTALL_K3S_SKIP_START:-}" = true ]; then
  info "Skipping ${SYSTEM_NAME} start"
  exit 0
fi
info "systemd: Starting ${SYSTEM_NAME}"
$SUDO systemctl restart "${SYSTEM_NAME}"
"#;

const SHIM_VERSION_PREFIX: &str = "EXEDEV_WORLD_K3S_VERSION='";

/// The "k3s binary" of a version.
pub fn shim(version: &str) -> String {
    format!(
        "#!/bin/sh\n# k3s {version}: the exedev-k8s VM world's stand-in for the k3s binary.\n{SHIM_VERSION_PREFIX}{version}'\nexport EXEDEV_WORLD_K3S_VERSION\nexec /exedev-world/exedev-k8s __world \"$(basename \"$0\")\" \"$@\"\n"
    )
}

/// The version a shim carries.
pub fn shim_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(SHIM_VERSION_PREFIX))
        .and_then(|v| v.strip_suffix('\''))
        .map(str::to_string)
}

/// `sha256sum-amd64.txt` of a version.
pub fn hash_file(version: &str) -> String {
    let h: String = Sha256::digest(shim(version).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{h}  k3s\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_carry_their_version() {
        assert_eq!(
            shim_version(&shim("v1.31.4+k3s1")).as_deref(),
            Some("v1.31.4+k3s1")
        );
        assert_eq!(shim_version("#!/bin/sh\n"), None);
        assert!(hash_file("v1.31.4+k3s1").ends_with("  k3s\n"));
    }

    #[test]
    fn the_installer_passes_shellcheck() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("install.sh");
        std::fs::write(&p, INSTALL_SH).unwrap();
        let out = std::process::Command::new("shellcheck").arg(&p).output();
        match out {
            Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout)),
            Err(e) => panic!("shellcheck must be installed: {e}"),
        }
        let p = dir.path().join("k3s");
        std::fs::write(&p, shim("v1.31.4+k3s1")).unwrap();
        let o = std::process::Command::new("shellcheck")
            .arg(&p)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}
