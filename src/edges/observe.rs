//! Reads the live state a plan needs: one `ls`, plus `share show` only for
//! the owned VMs whose proxy settings the fleet manages or managed
//! (concurrently, bounded): those whose group declares a share, and those
//! carrying [`fleet::SHARE_TAG`] (their pool lost its share: the plan makes
//! them private).

use std::collections::BTreeMap;

use crate::core::api::ApiError;
use crate::core::fleet::{self, Fleet};
use crate::core::plan::Observed;
use crate::edges::client::Client;

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
            nodes: None,
        });
    }
    // Straight from `ls`, without building the desired VMs (a 1,000-VM
    // fleet's cost about 1 MB): a VM is read when the fleet asks for it
    // by name and owns it, and its group declares a share or it carries
    // the share tag.
    let managed: Vec<String> = vms
        .iter()
        .filter(|v| {
            fleet::desired_group(fleet, &v.vm_name).is_some_and(|g| {
                crate::core::plan::owned(cluster, v)
                    && v.is_running()
                    && (g.share.is_some() || v.tags.iter().any(|t| t == fleet::SHARE_TAG))
            })
        })
        .map(|v| v.vm_name.clone())
        .collect();
    // At most SHARE_SHOW_CONCURRENCY tasks exist at once: one is started
    // as another ends, instead of every request's future allocated up
    // front to wait on a semaphore.
    let mut pending = managed.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    let start = |tasks: &mut tokio::task::JoinSet<_>, name: String| {
        let client = client.clone();
        tasks.spawn(async move {
            let result = client.share_show(&name).await;
            (name, result)
        });
    };
    for name in pending.by_ref().take(SHARE_SHOW_CONCURRENCY) {
        start(&mut tasks, name);
    }
    let mut shares = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some(name) = pending.next() {
            start(&mut tasks, name);
        }
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
    Ok(Observed {
        vms,
        shares,
        nodes: None,
    })
}
