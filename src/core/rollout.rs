//! The rules of a rolling change, as data: which changes take a node out
//! of service ([`crate::core::plan::Change::disrupts`]: drained, restarted,
//! replaced, removed), how many of them may run at once (servers one at a
//! time; each pool's agents up to its `maxUnavailable`, default 1), and in
//! which order (the plan's: servers first, then agents, facts "Kubeconfig,
//! manifests, removal, upgrade"). Changes that take nothing out of service
//! (new VMs, tags, the proxy, labels, comments) are bounded only by
//! `--parallelism`. Pure: `apply` carries it out.

use std::collections::BTreeMap;

use crate::core::fleet::{CONTROL_PLANE_POOL, Fleet, Role};
use crate::core::plan::{Change, Plan};

/// How many nodes of each pool may be out of service at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets(BTreeMap<String, usize>);

impl Budgets {
    /// The fleet's budgets: `maxUnavailable` per pool; the control plane 1
    /// (etcd joins one learner at a time, and quorum must hold).
    pub fn of(fleet: &Fleet) -> Budgets {
        let mut m: BTreeMap<String, usize> = fleet
            .pools
            .iter()
            .map(|p| (p.pool.clone(), p.max_unavailable as usize))
            .collect();
        m.insert(CONTROL_PLANE_POOL.to_string(), 1);
        Budgets(m)
    }

    /// A pool's budget; 1 for a pool the fleet no longer has (its VMs are
    /// being removed).
    pub fn of_pool(&self, pool: &str) -> usize {
        self.0.get(pool).copied().unwrap_or(1).max(1)
    }
}

/// A plan's changes split the way apply runs them.
#[derive(Debug)]
pub struct Rollout<'a> {
    /// One at a time, in plan order.
    pub servers: Vec<&'a Change>,
    /// After the servers (or, for a new cluster, once the first server is
    /// ready), each pool's disruptive changes within its budget.
    pub agents: Vec<&'a Change>,
}

impl<'a> Rollout<'a> {
    pub fn of(plan: &'a Plan) -> Rollout<'a> {
        let (servers, agents) = plan.changes.iter().partition(|c| c.role == Role::Server);
        Rollout { servers, agents }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_default_to_one_and_servers_are_one() {
        let yaml = "apiVersion: exedev-k8s/v1\nkind: Fleet\nmetadata:\n  name: demo\nk3s:\n  version: v1.31.4+k3s1\nnetwork:\n  tailscale:\n    tailnet: t.ts.net\n    authKey: {env: K}\ncontrolPlane:\n  count: 3\npools:\n  - name: web\n    count: 4\n    maxUnavailable: 2\n  - name: db\n    count: 2\n";
        let f = crate::core::fleet::parse(yaml, "f.yaml").unwrap_or_else(|e| panic!("{e}"));
        let b = Budgets::of(&f);
        assert_eq!(
            (
                b.of_pool("web"),
                b.of_pool("db"),
                b.of_pool("cp"),
                b.of_pool("gone")
            ),
            (2, 1, 1, 1)
        );
    }
}
