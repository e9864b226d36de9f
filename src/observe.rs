//! Reads the live state a plan needs: one `ls`, plus `share show` only for
//! the owned VMs whose proxy settings the fleet manages or managed
//! (concurrently, bounded): those whose group declares a share, and those
//! carrying [`fleet::SHARE_TAG`] (their pool lost its share: the plan makes
//! them private).

use std::collections::BTreeMap;

use crate::api::ApiError;
use crate::client::Client;
use crate::fleet::{self, Fleet};
use crate::plan::Observed;

/// How many `share show` calls may run at once.
const SHARE_SHOW_CONCURRENCY: usize = 8;

/// One `ls`, then the `share show` calls the diff needs (none when
/// `with_shares` is false: a teardown does not look at proxy settings).
pub async fn observe(
    client: &Client,
    fleet: &Fleet,
    with_shares: bool,
) -> Result<Observed, ApiError> {
    let cluster = &fleet.name;
    let vms = client.ls(None).await?;
    if !with_shares {
        return Ok(Observed {
            vms,
            shares: BTreeMap::new(),
        });
    }
    let by_name: std::collections::HashMap<&str, &crate::api::types::VmInfo> =
        vms.iter().map(|v| (v.vm_name.as_str(), v)).collect();
    let managed: Vec<String> = fleet::desired_vms(fleet)
        .into_iter()
        .filter(|d| {
            by_name.get(d.name.as_str()).is_some_and(|v| {
                crate::plan::owned(cluster, v)
                    && v.is_running()
                    && (d.share.is_some() || v.tags.iter().any(|t| t == fleet::SHARE_TAG))
            })
        })
        .map(|d| d.name)
        .collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(SHARE_SHOW_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for name in managed {
        let client = client.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (name.clone(), client.share_show(&name).await)
        });
    }
    let mut shares = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((name, result)) = joined else { continue };
        match result {
            Ok(info) => {
                shares.insert(name, info);
            }
            // A VM that cannot answer yet is planned as "share unknown".
            Err(e) if e.is_vm_not_ready() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Observed { vms, shares })
}
