//! Asks k3s's channel server which release a channel points at, as
//! `install.sh` does (`get_release_version`: `GET
//! ${INSTALL_K3S_CHANNEL_URL}/${INSTALL_K3S_CHANNEL}` answers with a
//! redirect to the release's page; the last path segment is the release).
//! The server is injectable (`--channel-server`,
//! `EXEDEV_K8S_CHANNEL_SERVER`): tests and the emulator's VM world serve
//! channels on loopback. An edge: the parsing is [`crate::base::release`]'s.

use std::time::Duration;

use crate::base::release::{self, Release};

/// The environment variable naming the channel server.
pub const ENV: &str = "EXEDEV_K8S_CHANNEL_SERVER";

/// Looks `channel` up on `server` (`https://update.k3s.io/v1-release/channels`
/// or, for tests, an `http://` loopback URL). The redirect is read, not
/// followed. Err is a sentence naming the server and what went wrong.
pub async fn resolve(server: &str, channel: &str) -> Result<Release, String> {
    let base = server.trim_end_matches('/');
    crate::edges::client::check_endpoint(base)
        .map_err(|why| format!("channel server {base} {why}"))?;
    if !release::is_channel(channel) {
        return Err(format!("{channel:?} is not a k3s channel"));
    }
    let url = format!("{base}/{channel}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let reply = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::base::text::one_line(&e.to_string())))?;
    let status = reply.status();
    if !status.is_redirection() {
        return Err(format!(
            "{url} answered {status} instead of a redirect to the release (is it k3s's channel server, and does channel {channel} exist?)"
        ));
    }
    let location = reply
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| format!("{url} answered {status} without a Location"))?;
    release::from_channel_location(location).map_err(|e| format!("channel {channel}: {e}"))
}
