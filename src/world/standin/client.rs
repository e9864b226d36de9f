//! The stand-ins' side of the protocol: which VM this is (from
//! `/exedev-world/meta/vm.json`, so a script that clears its environment
//! cannot lose it), who is calling, and a blocking HTTP/1.1 POST of JSON to
//! the emulator (no async runtime in a process that lives milliseconds):
//! inside a VM over its own Unix socket (`unix:PATH`: the VM has its own
//! network namespace, the host's loopback is out of reach), on the host
//! (the `ssh` stand-in) over `http://127.0.0.1:PORT`.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::world::sandbox::META_DIR;

/// Where this process runs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Meta {
    pub vm: String,
    pub boot: u64,
    pub url: String,
    /// The world's `sleep` scale (1: real time).
    #[serde(default = "one")]
    pub sleep_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Reads the VM's metadata.
pub fn meta() -> Result<Meta, String> {
    let path = format!("{META_DIR}/vm.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("exedev-k8s world stand-in: cannot read {path} ({e}): this command only works inside an emulated VM")
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// The effective user id of this process (from /proc, without libc).
pub fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn decode_chunked(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        body = &body[pos + 2..];
        if size == 0 || body.len() < size {
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    out
}

/// POSTs `body` as JSON to `base` + `path` and parses the JSON answer.
/// `base` is `unix:PATH` (a VM's socket) or `http://HOST:PORT`.
pub fn post<B: Serialize, R: DeserializeOwned>(
    base: &str,
    path: &str,
    body: &B,
) -> Result<R, String> {
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    if let Some(socket) = base.strip_prefix("unix:") {
        let s = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| format!("cannot reach the emulator at {socket}: {e}"))?;
        return exchange(s, "localhost", path, &payload);
    }
    let hostport = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("emulator URL {base:?} is neither unix: nor http://"))?
        .trim_end_matches('/');
    let s = TcpStream::connect(hostport)
        .map_err(|e| format!("cannot reach the emulator at {hostport}: {e}"))?;
    exchange(s, hostport, path, &payload)
}

/// One request and its JSON answer over `s`.
fn exchange<S: Read + Write, R: DeserializeOwned>(
    mut s: S,
    hostport: &str,
    path: &str,
    payload: &[u8],
) -> Result<R, String> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(payload))
        .map_err(|e| format!("cannot talk to the emulator: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the emulator's answer: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the emulator's answer has no header end")?;
    let header = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = header.split_whitespace().nth(1).unwrap_or("0").to_string();
    let mut body = raw[split + 4..].to_vec();
    if header.contains("transfer-encoding: chunked") {
        body = decode_chunked(&body);
    }
    if status != "200" {
        return Err(format!(
            "the emulator answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("the emulator's answer is not understood: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            b"abcde"
        );
        assert_eq!(decode_chunked(b""), b"");
    }
}
