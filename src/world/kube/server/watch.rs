//! `?watch=true` on a collection: a stream of `{"type": ..., "object":
//! ...}` lines, one per change (`ADDED`, `MODIFIED`, `DELETED`), as the
//! API server's watch sends them (kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
//! `kubectl rollout status`, `get -w` and `wait` watch.
//!
//! The store keeps no event history, so the stream compares snapshots of
//! the collection every 100 ms: changes between two snapshots merge into
//! one event, and a watch from a `resourceVersion` sees objects changed
//! since then as `MODIFIED` (deletions before the watch started are not
//! replayed). Without a `resourceVersion` (or `0`) it starts with `ADDED`
//! for every object, as the real server does. It ends at
//! `timeoutSeconds` (at most an hour) or when the API stops serving.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::super::objects::{self, Resource};
use super::super::tables;
use crate::world::Inner;

/// The response body: lines from the watching task.
struct Lines(mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Starts watching `res` (in `ns`, filtered by the query's selectors).
pub fn start(
    inner: Arc<Inner>,
    cluster: String,
    res: Resource,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
    as_table: bool,
) -> Response {
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800)
        .min(3600);
    let since: Option<u64> = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r != 0);
    let labels = q.get("labelSelector").cloned();
    let fields = q.get("fieldSelector").cloned();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut seen: BTreeMap<(String, String), Value> = BTreeMap::new();
        let mut first = true;
        loop {
            let items = {
                let m = inner.model();
                let Some(c) = m.clusters.get(&cluster) else {
                    return;
                };
                c.api
                    .list(&res, ns.as_deref(), labels.as_deref(), fields.as_deref())
            };
            let mut events: Vec<(&str, Value)> = Vec::new();
            let mut now: BTreeMap<(String, String), Value> = BTreeMap::new();
            for item in items {
                let k = objects::ns_name(&item);
                match seen.get(&k) {
                    Some(old) if rv(old) != rv(&item) => events.push(("MODIFIED", item.clone())),
                    Some(_) => {}
                    None if first => match since {
                        None => events.push(("ADDED", item.clone())),
                        Some(s) if rv(&item) > s => events.push(("MODIFIED", item.clone())),
                        Some(_) => {}
                    },
                    None => events.push(("ADDED", item.clone())),
                }
                now.insert(k, item);
            }
            for (k, old) in &seen {
                if !now.contains_key(k) {
                    events.push(("DELETED", old.clone()));
                }
            }
            seen = now;
            first = false;
            for (ty, obj) in events {
                let object = if as_table {
                    let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                    tables::table(&res, &[obj], crate::world::now_ms(), false, meta)
                } else {
                    obj
                };
                let line = format!("{}\n", json!({"type": ty, "object": object}));
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(Lines(rx)),
    )
        .into_response()
}
