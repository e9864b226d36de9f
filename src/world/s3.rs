//! Pure S3-compatible store: the object storage the world's "internet"
//! offers VMs at one host (`emulator --s3-endpoint`, default
//! [`DEFAULT_ENDPOINT`]), for k3s's etcd snapshots. k3s reaches S3 with
//! minio-go and checks, before any upload, list, delete or download, that
//! its credentials resolve and that the bucket exists (`BucketExists`), and
//! it never creates a bucket (k3s `pkg/etcd/s3/s3.go:125-258` @1feb5ae,
//! `docs/facts/disaster-recovery.md` §2). The world's choices where k3s is
//! silent: the buckets are the ones the emulator was given (`--s3-bucket`),
//! or, when none was, every bucket name exists; the key pair is checked
//! when one was given (`--s3-access-key`/`--s3-secret-key`), otherwise any
//! pair is accepted; the service answers both `https` and plain `http`
//! (`etcd-s3-insecure`) and its certificate is trusted (no
//! `etcd-s3-endpoint-ca` needed). Errors carry AWS's own codes and wording
//! (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `NoSuchKey`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The store's host unless the emulator says otherwise.
pub const DEFAULT_ENDPOINT: &str = "s3.emulator.internal";

/// How the emulator configured the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// The host VMs reach it at (`host` or `host:port`).
    pub endpoint: String,
    /// The key pair it accepts; `None`: any.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// The buckets that exist; empty: every name exists.
    pub buckets: Vec<String>,
}

impl S3Config {
    /// The defaults: the default host, any key pair, any bucket.
    pub fn new() -> Self {
        S3Config {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            ..S3Config::default()
        }
    }
}

/// One stored object: a snapshot file (or, by name, its metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    /// The file's bytes (the world's snapshot files are text).
    pub body: String,
    pub last_modified_ms: u64,
    /// minio user metadata k3s sets: the uploading node.
    pub node: String,
}

/// What a client presents: the `etcd-s3-*` settings k3s uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Client {
    pub endpoint: String,
    pub bucket: String,
    pub folder: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Client {
    /// `folder/name` as k3s joins them (`path.Join`, `s3.go:267`).
    pub fn key(&self, name: &str) -> String {
        let folder = self.folder.trim_matches('/');
        if folder.is_empty() {
            name.to_string()
        } else {
            format!("{folder}/{name}")
        }
    }

    /// `s3://bucket/key`, the location k3s reports (`s3.go:272`).
    pub fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }
}

/// The store.
#[derive(Debug, Clone, Default)]
pub struct S3Store {
    pub config: S3Config,
    /// (bucket, key) → object.
    objects: BTreeMap<(String, String), S3Object>,
}

impl S3Store {
    pub fn new(config: S3Config) -> Self {
        S3Store {
            config,
            objects: BTreeMap::new(),
        }
    }

    /// Does `endpoint` name this store? k3s's endpoint is a host with an
    /// optional port, no scheme; a host other than the store's does not
    /// resolve (the world's internet has no other S3).
    pub fn serves(&self, endpoint: &str) -> bool {
        let host = |e: &str| e.split(':').next().unwrap_or_default().to_ascii_lowercase();
        host(endpoint) == host(&self.config.endpoint)
    }

    /// What k3s's client setup checks before it uses the bucket (`GetClient`,
    /// `s3.go:125-258`), with k3s's wording around S3's errors.
    pub fn check(&self, c: &S3Client) -> Result<(), String> {
        if c.bucket.is_empty() {
            return Err("s3 bucket name was not set".into());
        }
        let test = |e: String| format!("failed to test for existence of bucket {}: {e}", c.bucket);
        if !self.serves(&c.endpoint) {
            let host = c.endpoint.split(':').next().unwrap_or_default();
            return Err(test(format!(
                "Get \"https://{}/{}/?location=\": dial tcp: lookup {host}: no such host",
                c.endpoint, c.bucket
            )));
        }
        if let Some(want) = &self.config.access_key
            && *want != c.access_key
        {
            return Err(test(
                "The AWS Access Key Id you provided does not exist in our records.".into(),
            ));
        }
        if let Some(want) = &self.config.secret_key
            && *want != c.secret_key
        {
            return Err(test("The request signature we calculated does not match the signature you provided. Check your key and signing method.".into()));
        }
        if !self.bucket_exists(&c.bucket) {
            return Err(format!("bucket {} does not exist", c.bucket));
        }
        Ok(())
    }

    fn bucket_exists(&self, bucket: &str) -> bool {
        self.config.buckets.is_empty() || self.config.buckets.iter().any(|b| b == bucket)
    }

    /// Stores `body` at `folder/name` (after [`S3Store::check`]).
    pub fn put(&mut self, c: &S3Client, name: &str, body: String, node: &str, now_ms: u64) {
        self.objects.insert(
            (c.bucket.clone(), c.key(name)),
            S3Object {
                body,
                last_modified_ms: now_ms,
                node: node.to_string(),
            },
        );
    }

    /// The object at `folder/name`, or S3's `NoSuchKey` wording.
    pub fn get(&self, c: &S3Client, name: &str) -> Result<&S3Object, String> {
        self.objects
            .get(&(c.bucket.clone(), c.key(name)))
            .ok_or_else(|| "The specified key does not exist.".to_string())
    }

    /// Removes `folder/name`; whether it was there.
    pub fn delete(&mut self, c: &S3Client, name: &str) -> bool {
        self.objects
            .remove(&(c.bucket.clone(), c.key(name)))
            .is_some()
    }

    /// The snapshots under the client's folder whose name starts with
    /// `prefix` (every one for `""`), as (name, object); k3s skips its
    /// `.metadata/` objects (`s3.go:412`), the world stores none.
    pub fn list(&self, c: &S3Client, prefix: &str) -> Vec<(String, &S3Object)> {
        let start = c.key(prefix);
        let folder = c.key("");
        self.objects
            .iter()
            .filter(|((b, k), _)| *b == c.bucket && k.starts_with(&start))
            .filter_map(|((_, k), o)| {
                let name = k.strip_prefix(&folder).unwrap_or(k);
                (!name.contains('/')).then(|| (name.to_string(), o))
            })
            .collect()
    }

    /// S3 retention (`SnapshotRetention`, `s3.go:389-441`): the snapshots
    /// under `folder/prefix`, every node's together, newest first by
    /// LastModified; those past `retention` are removed. `retention < 1`
    /// keeps everything. Returns the removed names.
    pub fn retention(&mut self, c: &S3Client, prefix: &str, retention: i64) -> Vec<String> {
        if retention < 1 {
            return Vec::new();
        }
        let mut all: Vec<(String, u64)> = self
            .list(c, prefix)
            .into_iter()
            .map(|(n, o)| (n, o.last_modified_ms))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        let gone: Vec<String> = all
            .into_iter()
            .skip(retention as usize)
            .map(|(n, _)| n)
            .collect();
        for n in &gone {
            self.delete(c, n);
        }
        gone
    }

    /// The store for `/_emulator/state`: its host, whether keys are
    /// checked (never the keys), its buckets and every object's size.
    pub fn view(&self) -> Value {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|((b, k), o)| {
                json!({"bucket": b, "key": k, "size": o.body.len(),
                       "last_modified_ms": o.last_modified_ms, "node": o.node})
            })
            .collect();
        let buckets: BTreeSet<&String> = self.config.buckets.iter().collect();
        json!({
            "endpoint": self.config.endpoint,
            "keys_checked": self.config.access_key.is_some() || self.config.secret_key.is_some(),
            "buckets": if buckets.is_empty() { json!("any") } else { json!(buckets) },
            "objects": objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(bucket: &str, folder: &str) -> S3Client {
        S3Client {
            endpoint: DEFAULT_ENDPOINT.into(),
            bucket: bucket.into(),
            folder: folder.into(),
            access_key: "AK".into(),
            secret_key: "SK".into(),
        }
    }

    #[test]
    fn keys_buckets_and_hosts_are_checked_as_s3_does() {
        let open = S3Store::new(S3Config::new());
        assert_eq!(open.check(&client("anything", "")), Ok(()));
        let store = S3Store::new(S3Config {
            endpoint: "s3.example:9000".into(),
            access_key: Some("AK".into()),
            secret_key: Some("SK".into()),
            buckets: vec!["prod".into()],
        });
        let mut c = client("prod", "");
        c.endpoint = "s3.example".into();
        assert_eq!(store.check(&c), Ok(()));
        c.bucket = "other".into();
        assert_eq!(store.check(&c).unwrap_err(), "bucket other does not exist");
        c.bucket = "prod".into();
        c.secret_key = "wrong".into();
        assert!(
            store
                .check(&c)
                .unwrap_err()
                .contains("signature we calculated")
        );
        c.access_key = "wrong".into();
        assert!(store.check(&c).unwrap_err().contains("Access Key Id"));
        c.endpoint = "s3.amazonaws.com".into();
        assert!(
            store
                .check(&c)
                .unwrap_err()
                .contains("lookup s3.amazonaws.com: no such host")
        );
        c.bucket = String::new();
        assert_eq!(store.check(&c).unwrap_err(), "s3 bucket name was not set");
    }

    #[test]
    fn folders_separate_and_retention_counts_every_node_together() {
        let mut s = S3Store::new(S3Config::new());
        let prod = client("b", "prod/");
        let other = client("b", "");
        for (i, n) in [
            "etcd-snapshot-a-1",
            "etcd-snapshot-b-2",
            "etcd-snapshot-a-3",
        ]
        .iter()
        .enumerate()
        {
            s.put(&prod, n, "x".into(), "a", i as u64);
        }
        s.put(&prod, "on-demand-a-4", "x".into(), "a", 10);
        s.put(&other, "etcd-snapshot-z-9", "x".into(), "z", 0);
        assert_eq!(prod.location("n"), "s3://b/prod/n");
        assert_eq!(s.list(&prod, "").len(), 4);
        assert_eq!(
            s.list(&other, "").len(),
            1,
            "a folder's objects are not at the top"
        );
        let gone = s.retention(&prod, "etcd-snapshot", 2);
        assert_eq!(gone, ["etcd-snapshot-a-1"]);
        assert!(s.get(&prod, "on-demand-a-4").is_ok());
        assert_eq!(s.retention(&prod, "etcd-snapshot", 0), Vec::<String>::new());
        assert!(s.delete(&prod, "on-demand-a-4"));
        assert_eq!(
            s.get(&prod, "on-demand-a-4").unwrap_err(),
            "The specified key does not exist."
        );
        let v = s.view();
        assert_eq!(v["buckets"], "any");
        assert!(!v.to_string().contains("SK"));
    }
}
