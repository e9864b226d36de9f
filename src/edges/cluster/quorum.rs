//! etcd quorum arithmetic for removing k3s servers. Deleting a server's Node
//! removes its etcd member; each such membership change needs a majority of
//! the current members to be healthy, and the cluster left behind must still
//! have a majority. So servers are removed one at a time, and only while the
//! numbers allow it. Pure.

use super::error::ClusterError;

/// Members that must agree for etcd to make progress: a strict majority.
pub fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// Whether `removing` servers may be removed, one at a time, from
/// `total_servers` servers of which `healthy_servers` are Ready.
///
/// Conservative: it assumes each server removed is a healthy one (the worst
/// case for the servers left). Before each removal the healthy servers must
/// be a quorum of the current members, and afterwards the remaining servers
/// (at least one) must still hold a quorum. Removing every server is a
/// destroy, never a removal.
pub fn check_server_removal(
    total_servers: usize,
    healthy_servers: usize,
    removing: usize,
) -> Result<(), ClusterError> {
    if removing == 0 {
        return Ok(());
    }
    if removing >= total_servers {
        return Err(ClusterError::Quorum(format!(
            "removing {removing} of {total_servers} server(s) would leave no control plane; use destroy to delete the whole cluster"
        )));
    }
    let healthy = healthy_servers.min(total_servers);
    for step in 0..=removing {
        let members = total_servers - step;
        let alive = healthy.saturating_sub(step);
        if alive < quorum(members) {
            let when = if step == removing {
                "afterwards".to_string()
            } else {
                format!("before removal {} of {removing}", step + 1)
            };
            return Err(ClusterError::Quorum(format!(
                "removing {removing} of {total_servers} server(s) while {healthy} are Ready would lose etcd quorum {when}: {alive} healthy of {members} members, {} needed; repair or remove the unhealthy servers first",
                quorum(members)
            )));
        }
    }
    Ok(())
}

/// [`check_server_removal`] with every server healthy, as a yes/no: may
/// `removing` servers go, one at a time, from `total_servers`?
pub fn servers_removable(total_servers: usize, removing: usize) -> bool {
    check_server_removal(total_servers, total_servers, removing).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        let q: Vec<usize> = (1..=7).map(quorum).collect();
        assert_eq!(q, [1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn healthy_clusters_shrink_one_at_a_time_but_never_to_zero() {
        assert!(servers_removable(3, 0));
        assert!(servers_removable(3, 1));
        assert!(servers_removable(3, 2));
        assert!(!servers_removable(3, 3));
        assert!(servers_removable(5, 4));
        assert!(servers_removable(2, 1));
        assert!(!servers_removable(1, 1));
        assert!(servers_removable(1, 0));
        assert!(servers_removable(0, 0));
    }

    #[test]
    fn unhealthy_servers_block_removals_that_would_lose_quorum() {
        // 3 servers, 1 down: removing one healthy leaves 1 of 2: no quorum.
        assert!(check_server_removal(3, 2, 1).is_err());
        // 5 servers, 1 down: removing one leaves 3 of 4 healthy: fine.
        assert!(check_server_removal(5, 4, 1).is_ok());
        // 5 servers, 1 down: removing two leaves 2 of 3: fine.
        assert!(check_server_removal(5, 4, 2).is_ok());
        // 5 servers, 2 down: already 3 of 5; removing one leaves 2 of 4.
        assert!(check_server_removal(5, 3, 1).is_err());
        // 3 servers, 2 down: no quorum to begin with.
        let e = check_server_removal(3, 1, 1).map_err(|e| e.to_string());
        let msg = e.err().unwrap_or_default();
        assert!(msg.contains("before removal 1 of 1"), "{msg}");
        assert!(msg.contains("1 healthy of 3 members, 2 needed"), "{msg}");
        // More healthy than total is clamped.
        assert!(check_server_removal(3, 9, 2).is_ok());
    }
}
