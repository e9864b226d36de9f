//! A cluster's data-plane snapshot kept between requests: what it is
//! built from besides the API objects ([`Settings`], read from the model
//! by `underlay::settings`) and the cache the API store holds
//! ([`NetCache`]). Apart from `underlay` so that the store can hold it
//! without seeing the model.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Net;

/// What a cluster's snapshot is built from besides its API objects: each
/// running node's flannel interface and MTU, and the cluster DNS address
/// and domain from the first node's config (they are critical settings,
/// equal on every server), k3s's defaults otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub flannel: BTreeMap<String, (Option<String>, u32)>,
    pub dns: Ipv4Addr,
    pub domain: String,
}

/// The cluster's data plane from its API objects (Nodes, Pods, Services)
/// and its [`Settings`].
pub fn snapshot(
    s: &Settings,
    nodes: &[serde_json::Value],
    pods: &[serde_json::Value],
    services: &[serde_json::Value],
) -> Net {
    Net::from_objects(nodes, pods, services, &s.flannel, s.dns, &s.domain)
}

/// A cluster's last snapshot, kept with the API objects it was built from
/// (in `world::kube`'s store, so an etcd snapshot's copy of the store
/// carries the snapshot of its own objects): the API server's proxy and
/// exe.dev's proxy answer many requests between two changes (`check`
/// sends hundreds of `/dial`s), and rebuilding it from every object for
/// each was most of their cost. Valid while the store's resourceVersion
/// (bumped by every change of an object) and the [`Settings`] are the
/// same; the tailnet's policy is not in it (the world's underlay is
/// asked at each connection).
#[derive(Default)]
pub struct NetCache(std::sync::Mutex<Option<(u64, Settings, std::sync::Arc<Net>)>>);

impl NetCache {
    /// The snapshot for resourceVersion `rv` and `settings`: the kept one
    /// when both are the same, else `build`'s, kept.
    pub fn get_or_build(
        &self,
        rv: u64,
        settings: Settings,
        build: impl FnOnce(&Settings) -> Net,
    ) -> std::sync::Arc<Net> {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((r, s, net)) = kept.as_ref()
            && *r == rv
            && *s == settings
        {
            return net.clone();
        }
        let net = std::sync::Arc::new(build(&settings));
        *kept = Some((rv, settings, net.clone()));
        net
    }

    fn kept(&self) -> Option<(u64, Settings, std::sync::Arc<Net>)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Clone for NetCache {
    fn clone(&self) -> NetCache {
        NetCache(std::sync::Mutex::new(self.kept()))
    }
}

impl std::fmt::Debug for NetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetCache")
            .field("rv", &self.kept().map(|(rv, _, _)| rv))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::dataplane::TAILNET_IFACE;
    use crate::world::dataplane::cidr::DEFAULT_CLUSTER_DNS;

    fn settings(iface: &str) -> Settings {
        Settings {
            flannel: [("a".to_string(), (Some(iface.to_string()), 1230))].into(),
            dns: DEFAULT_CLUSTER_DNS,
            domain: "cluster.local".into(),
        }
    }

    /// A snapshot whose one node name says which build made it.
    fn built(n: &std::cell::Cell<u32>) -> Net {
        n.set(n.get() + 1);
        let node = serde_json::json!({"metadata": {"name": format!("build-{}", n.get())}});
        Net::from_objects(
            &[node],
            &[],
            &[],
            &BTreeMap::new(),
            DEFAULT_CLUSTER_DNS,
            "cluster.local",
        )
    }

    #[test]
    fn a_snapshot_is_kept_until_the_objects_or_the_settings_change() {
        let cache = NetCache::default();
        let builds = std::cell::Cell::new(0);
        let first = cache.get_or_build(7, settings(TAILNET_IFACE), |_| built(&builds));
        let again = cache.get_or_build(7, settings(TAILNET_IFACE), |_| built(&builds));
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        assert_eq!(builds.get(), 1);
        // An object changed: the store's resourceVersion moved on.
        let newer = cache.get_or_build(8, settings(TAILNET_IFACE), |_| built(&builds));
        assert_eq!(newer.nodes[0].name, "build-2");
        // A node's flannel interface changed (its k3s config), same objects.
        let moved = cache.get_or_build(8, settings("eth0"), |_| built(&builds));
        assert_eq!(moved.nodes[0].name, "build-3");
        // A copy (an etcd snapshot's store) keeps the snapshot of its own
        // objects, and the two go their own ways afterwards.
        let copy = cache.clone();
        let kept = copy.get_or_build(8, settings("eth0"), |_| built(&builds));
        assert!(std::sync::Arc::ptr_eq(&moved, &kept));
        copy.get_or_build(9, settings("eth0"), |_| built(&builds));
        let original = cache.get_or_build(8, settings("eth0"), |_| built(&builds));
        assert!(std::sync::Arc::ptr_eq(&moved, &original));
        assert_eq!(builds.get(), 4);
    }
}
