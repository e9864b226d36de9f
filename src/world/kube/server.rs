//! The Kubernetes API of a k3s server VM: one TLS listener on 127.0.0.1
//! per server whose k3s is up, standing for that VM's `127.0.0.1:6443`. It
//! presents a serving certificate from the cluster's CA (SANs include
//! `127.0.0.1`, so a kubeconfig pointing through an SSH tunnel verifies),
//! accepts only client certificates from the cluster's client CA, and
//! serves the cluster's objects from the world's model.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::objects::{self, Resource};

mod watch;
use super::store::ApiError;
use super::{discovery, fields, logs, tables};
use crate::world::Inner;

/// A running API listener.
#[derive(Debug)]
pub struct ApiListener {
    pub port: u16,
    pub cluster: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts TCP connections and hands out TLS streams whose handshake
/// succeeded; handshakes run in their own tasks so one slow client does not
/// hold up the others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, std::net::SocketAddr)>,
    addr: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

fn pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))
}

fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_der: &[u8],
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            client_ca_der.to_vec(),
        ))
        .map_err(|e| format!("client CA: {e}"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("serving key: {e}"))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(cert_pem)?, key)
        .map_err(|e| format!("serving certificate: {e}"))
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Inner>,
    vm: String,
    cluster: String,
}

/// Starts serving `cluster`'s API for server `vm` with a certificate for
/// `sans`. Synchronous (the port is bound when it returns), so the world
/// starts it while the model is still locked: nothing sees the server Ready
/// before its API listens. Needs a tokio runtime (it spawns the server).
pub fn start(
    inner: Arc<Inner>,
    m: &crate::world::model::Model,
    vm: &str,
    cluster: &str,
    sans: &[String],
) -> Result<ApiListener, String> {
    let (cert, key, client_ca) = {
        let c = m
            .clusters
            .get(cluster)
            .ok_or_else(|| format!("no cluster {cluster}"))?;
        let (cert, key) = c.pki.serving(sans)?;
        (cert, key, c.pki.client_ca_der.clone())
    };
    let config = tls_config(&cert, &key, &client_ca)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listen_err = |e: std::io::Error| format!("cannot listen for the API of {vm}: {e}");
    let std_tcp = std::net::TcpListener::bind("127.0.0.1:0").map_err(listen_err)?;
    std_tcp.set_nonblocking(true).map_err(listen_err)?;
    let tcp = TcpListener::from_std(std_tcp).map_err(listen_err)?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(64);
    let ctx = Ctx {
        inner,
        vm: vm.to_string(),
        cluster: cluster.to_string(),
    };
    let app = Router::new().fallback(handle).with_state(ctx);
    let task = tokio::spawn(async move {
        let accept = async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    if let Ok(Ok(tls)) = hs {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        };
        let serve = axum::serve(TlsListener { rx, addr }, app.into_make_service());
        tokio::select! {
            _ = accept => {}
            _ = serve => {}
        }
    });
    Ok(ApiListener {
        port: addr.port(),
        cluster: cluster.to_string(),
        task,
    })
}

fn json_response(code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let parsed = serde_json::from_slice(body).or_else(|e| {
        if ct.contains("yaml") {
            serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string())
        } else {
            Err(e.to_string())
        }
    });
    parsed.map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("the request body is not valid: {e}"),
        )
    })
}

/// The version the API reports: `/version` of k3s.
fn version_json(v: &str) -> Value {
    let (major, minor) = super::super::k3s::minor_version(v).unwrap_or((1, 0));
    json!({"major": major.to_string(), "minor": minor.to_string(), "gitVersion": v,
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2024-12-01T00:00:00Z", "goVersion": "go1.22.9", "compiler": "gc",
           "platform": "linux/amd64"})
}

/// Where a path points.
enum Target {
    Collection {
        res: Resource,
        ns: Option<String>,
    },
    Object {
        res: Resource,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn route(group: &str, rest: &[&str]) -> Option<Target> {
    let res = |plural: &str| objects::resource_by_path(group, plural);
    match rest {
        [plural] => Some(Target::Collection {
            res: res(plural)?,
            ns: None,
        }),
        ["namespaces", ns, plural] => Some(Target::Collection {
            res: res(plural)?,
            ns: Some(ns.to_string()),
        }),
        ["namespaces", ns, plural, name, sub @ ..] if sub.len() <= 1 => Some(Target::Object {
            res: res(plural)?,
            ns: ns.to_string(),
            name: name.to_string(),
            sub: sub.first().map(|s| s.to_string()),
        }),
        [plural, name, sub @ ..] if sub.len() <= 1 => Some(Target::Object {
            res: res(plural)?,
            ns: String::new(),
            name: name.to_string(),
            sub: sub.first().map(|s| s.to_string()),
        }),
        _ => None,
    }
}

/// The API answers only while this server's k3s is up with quorum.
fn serving(ctx: &Ctx) -> bool {
    let m = ctx.inner.model();
    m.ready_server(&ctx.vm)
        .is_some_and(|(_, c)| c == ctx.cluster)
        && m.has_quorum(&ctx.cluster)
}

/// The answers that need no object: version, health and API discovery.
fn discovery_reply(ctx: &Ctx, segs: &[&str]) -> Option<Response> {
    match segs {
        ["version"] => {
            let v = ctx.inner.model().api_version(&ctx.cluster);
            Some(json_response(200, &version_json(&v)))
        }
        ["readyz" | "livez" | "healthz", ..] => {
            Some((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
        }
        ["api"] => Some(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        )),
        ["api", "v1"] => Some(json_response(200, &discovery::resource_list("", "v1"))),
        ["apis"] => Some(json_response(200, &discovery::group_list())),
        ["apis", g, v] => Some(json_response(200, &discovery::resource_list(g, v))),
        _ => None,
    }
}

/// OpenAPI v2 (protobuf when asked, else JSON) and v3 (see [`discovery`]).
fn openapi_reply(ctx: &Ctx, segs: &[&str], headers: &HeaderMap) -> Option<Response> {
    match segs {
        ["openapi", "v2"] => {
            let v = ctx.inner.model().api_version(&ctx.cluster);
            let wants_pb = headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("protobuf"));
            Some(if wants_pb {
                (
                    StatusCode::OK,
                    // The `@` form kubectl asks for is no valid media type
                    // (Go's mime.ParseMediaType refuses it, and client-go
                    // fails the response): answer with the dotted form.
                    [(
                        header::CONTENT_TYPE,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )],
                    discovery::openapi_v2_protobuf(&v),
                )
                    .into_response()
            } else {
                json_response(200, &discovery::openapi_v2_json(&v))
            })
        }
        ["openapi", "v3"] => {
            let v = ctx.inner.model().api_version(&ctx.cluster);
            Some(json_response(200, &discovery::openapi_v3_index(&v)))
        }
        ["openapi", "v3", rest @ ..] => {
            let v = ctx.inner.model().api_version(&ctx.cluster);
            let path = rest.join("/");
            Some(match discovery::openapi_v3_group(&path, &v) {
                Some(doc) => json_response(200, &doc),
                None => not_found(&format!("/openapi/v3/{path}")),
            })
        }
        _ => None,
    }
}

/// `/api/v1/namespaces/NS/{pods,services}/NAME[:PORT]/proxy[/PATH]`: the
/// answer of the pod (or the Service's endpoint) over the world's data
/// plane (`world::traffic`), as kube-apiserver passes it on.
fn proxy_subresource(ctx: &Ctx, method: &Method, segs: &[&str], uri: &Uri) -> Option<Response> {
    let [
        "api",
        "v1",
        "namespaces",
        ns,
        kind,
        name,
        "proxy",
        rest @ ..,
    ] = segs
    else {
        return None;
    };
    let kind = match *kind {
        "pods" => crate::world::traffic::ProxyKind::Pod,
        "services" => crate::world::traffic::ProxyKind::Service,
        _ => return None,
    };
    if method != Method::GET {
        return Some(error(&ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the VM world proxies GET only, not {method}"),
        )));
    }
    let mut target = format!("/{}", rest.join("/"));
    if uri.path().ends_with('/') && !rest.is_empty() {
        target.push('/');
    }
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let name = percent_decode(name);
    let r = ctx
        .inner
        .api_proxy(&ctx.cluster, &ctx.vm, kind, ns, &name, &target);
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = if r.is_status {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    Some((status, [(header::CONTENT_TYPE, ct)], r.body).into_response())
}

/// Kubernetes' answer for a path it does not serve.
fn not_found(path: &str) -> Response {
    error(&ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    ))
}

/// One request's parts that the verb handlers read, parsed once by `handle`
/// so each handler takes them whole instead of a dozen arguments.
struct Req {
    method: Method,
    path: String,
    q: BTreeMap<String, String>,
    input: Value,
    content_type: String,
    wants_table: bool,
    whole_object: bool,
    now: u64,
}

/// What a verb handler produces: `Ok` is an object that `handle` sends as
/// JSON (201 for POST) with the field-validation warnings; `Err` is a
/// finished response (an error, a table, a log) sent as it is.
type Outcome = Result<Value, Box<Response>>;

/// An `ApiError` as a finished `Outcome` error, boxed because a `Response`
/// is too large to return by value in a `Result` (clippy's `result_large_err`).
fn fail(e: &ApiError) -> Box<Response> {
    Box::new(error(e))
}

/// The API server's one entry point: readiness, the special paths
/// (OpenAPI, discovery, proxy), routing, watches and field validation;
/// the verbs themselves are in `serve` and the handlers it calls.
async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::world::now_ms();
    if !serving(&ctx) {
        return error(&ApiError::new(
            503,
            "ServiceUnavailable",
            "etcdserver: request timed out (the server is not ready or etcd has no quorum)",
        ));
    }
    let path = uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(resp) = openapi_reply(&ctx, &segs, &headers) {
        return resp;
    }
    if let Some(resp) = discovery_reply(&ctx, &segs) {
        return resp;
    }
    if let Some(resp) = proxy_subresource(&ctx, &method, &segs, &uri) {
        return resp;
    }
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return not_found(&path),
    };
    let Some(target) = route(group, rest) else {
        return not_found(&path);
    };
    let q = query(&uri);
    let input = match parse_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return error(&e),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let wants_table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let whole_object = q.get("includeObject").is_some_and(|i| i == "Object");
    let is_watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if method == Method::GET
        && is_watch
        && let Target::Collection { res, ns } = target
    {
        return watch::start(
            ctx.inner.clone(),
            ctx.cluster.clone(),
            res,
            ns,
            &q,
            wants_table,
        );
    }
    let warnings = match field_warnings(&method, &content_type, &q, &input) {
        Ok(w) => w,
        Err(resp) => return *resp,
    };
    let req = Req {
        method,
        path,
        q,
        input,
        content_type,
        wants_table,
        whole_object,
        now,
    };
    match serve(&ctx, &req, target) {
        Ok(v) => with_warnings(&req.method, &v, warnings),
        Err(resp) => *resp,
    }
}

/// Field validation (API concepts, "Field validation") of a body that
/// carries a whole object: `Strict` refuses unknown fields with 400; the
/// default `Warn` returns them, for `Warning` headers on the reply.
fn field_warnings(
    method: &Method,
    content_type: &str,
    q: &BTreeMap<String, String>,
    input: &Value,
) -> Result<Vec<String>, Box<Response>> {
    let strict = q.get("fieldValidation").is_some_and(|v| v == "Strict");
    let whole_body = *method == Method::POST
        || *method == Method::PUT
        || (*method == Method::PATCH && content_type.starts_with("application/apply-patch"));
    let mut warnings: Vec<String> = Vec::new();
    let validation = q.get("fieldValidation").map_or("Warn", String::as_str);
    if whole_body && validation == "Warn" {
        // The server's default without the parameter (kubectl before
        // 1.25 sends none): accept, and say so in `Warning` headers, which
        // kubectl prints (API concepts, "Field validation").
        warnings = fields::unknown_fields(input)
            .into_iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
    }
    if strict && whole_body {
        let unknown = fields::unknown_fields(input);
        if !unknown.is_empty() {
            let kind = input["kind"].as_str().unwrap_or_default();
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(fail(&ApiError::new(
                400,
                "BadRequest",
                format!(
                    "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", ")
                ),
            )));
        }
    }
    Ok(warnings)
}

/// The reply for the API's 503 when the cluster this server belongs to is
/// no longer in the model; one place for the words.
fn cluster_gone() -> ApiError {
    ApiError::new(503, "ServiceUnavailable", "cluster is gone")
}

/// Routes a (verb, target) pair to its handler: so that each handler is
/// one job and `handle` stays about parsing the request.
fn serve(ctx: &Ctx, req: &Req, target: Target) -> Outcome {
    match (&req.method, target) {
        (&Method::GET, Target::Collection { res, ns }) => list(ctx, req, &res, ns.as_deref()),
        (
            &Method::GET,
            Target::Object {
                res,
                ns,
                name,
                sub: Some(sub),
            },
        ) if res.plural == "pods" && sub == "log" => pod_log(ctx, req, &res, &ns, &name),
        (&Method::POST, Target::Collection { res, ns }) => {
            let mut m = ctx.inner.model();
            let c = m
                .clusters
                .get_mut(&ctx.cluster)
                .ok_or_else(|| fail(&cluster_gone()))?;
            c.api
                .create(&res, ns.as_deref().unwrap_or(""), req.input.clone())
                .map_err(|e| fail(&e))
        }
        (
            &Method::POST,
            Target::Object {
                res,
                ns,
                name,
                sub: Some(sub),
            },
        ) if res.plural == "pods" && sub == "eviction" => {
            let mut m = ctx.inner.model();
            let c = m
                .clusters
                .get_mut(&ctx.cluster)
                .ok_or_else(|| fail(&cluster_gone()))?;
            c.api
                .evict(&ns, &name)
                .map(|()| {
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
                })
                .map_err(|e| fail(&e))
        }
        (
            _,
            Target::Object {
                res,
                ns,
                name,
                sub: Some(sub),
            },
        ) if sub == "scale" => scale(ctx, req, &res, &ns, &name),
        (_, Target::Object { res, ns, name, sub }) => {
            if sub.as_deref().is_some_and(|s| s != "status") {
                return Err(Box::new(not_found(&req.path)));
            }
            object_verb(ctx, req, &res, &ns, &name)
        }
        (method, Target::Collection { .. }) => Err(fail(&ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} on a collection is not supported here"),
        ))),
    }
}

/// GET on a collection: the list, or kubectl's table of it when asked
/// for with `Accept: ...;as=Table`.
fn list(ctx: &Ctx, req: &Req, res: &Resource, ns: Option<&str>) -> Outcome {
    let m = ctx.inner.model();
    let c = m
        .clusters
        .get(&ctx.cluster)
        .ok_or_else(|| fail(&cluster_gone()))?;
    let items = c.api.list(
        res,
        ns,
        req.q.get("labelSelector").map(String::as_str),
        req.q.get("fieldSelector").map(String::as_str),
    );
    let list_meta = json!({"resourceVersion": c.api.resource_version()});
    if req.wants_table {
        let t = tables::table(res, &items, req.now, req.whole_object, list_meta);
        return Err(Box::new(json_response(200, &t)));
    }
    Ok(
        json!({"apiVersion": res.api_version(), "kind": format!("{}List", res.kind),
              "metadata": list_meta, "items": items}),
    )
}

/// GET on a pod's `log` subresource: plain text, not JSON, so it answers
/// with a finished response.
fn pod_log(ctx: &Ctx, req: &Req, res: &Resource, ns: &str, name: &str) -> Outcome {
    let m = ctx.inner.model();
    let c = m
        .clusters
        .get(&ctx.cluster)
        .ok_or_else(|| fail(&cluster_gone()))?;
    match c
        .api
        .get(res, ns, name)
        .and_then(|p| logs::pod_log(&p, req.q.get("container").map(String::as_str)))
    {
        Ok(text) => Err(Box::new(
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
        )),
        Err(e) => Err(fail(&e)),
    }
}

/// The `scale` subresource: GET reads it, PUT and PATCH set the replicas.
fn scale(ctx: &Ctx, req: &Req, res: &Resource, ns: &str, name: &str) -> Outcome {
    let mut m = ctx.inner.model();
    let c = m
        .clusters
        .get_mut(&ctx.cluster)
        .ok_or_else(|| fail(&cluster_gone()))?;
    let r = match req.method {
        Method::GET => c.api.scale(res, ns, name, None),
        Method::PUT | Method::PATCH => c.api.scale(res, ns, name, Some(&req.input)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not supported here", req.method),
        )),
    };
    r.map_err(|e| fail(&e))
}

/// The verbs on one object (or its `status`): GET (also as a table), PUT,
/// the three patch kinds the world takes, and DELETE, which for a node
/// also tells the world's model the node is gone.
fn object_verb(ctx: &Ctx, req: &Req, res: &Resource, ns: &str, name: &str) -> Outcome {
    let mut m = ctx.inner.model();
    let Some(c) = m.clusters.get_mut(&ctx.cluster) else {
        return Err(fail(&cluster_gone()));
    };
    let content_type = req.content_type.as_str();
    let r = match req.method {
        Method::GET if req.wants_table => {
            let obj = c.api.get(res, ns, name).map_err(|e| fail(&e))?;
            let list_meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            let t = tables::table(res, &[obj], req.now, req.whole_object, list_meta);
            return Err(Box::new(json_response(200, &t)));
        }
        Method::GET => c.api.get(res, ns, name),
        Method::PUT => c.api.replace(res, ns, name, req.input.clone()),
        Method::PATCH if content_type.starts_with("application/apply-patch") => {
            let manager = req.q.get("fieldManager").cloned().unwrap_or_default();
            if manager.is_empty() {
                Err(ApiError::new(
                    400,
                    "BadRequest",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ))
            } else {
                let force = req.q.get("force").is_some_and(|f| f == "true");
                c.api.apply(res, ns, name, &manager, force, &req.input)
            }
        }
        Method::PATCH if content_type.contains("json-patch") => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the world's API takes merge, strategic-merge and apply patches",
        )),
        Method::PATCH if content_type.starts_with("application/strategic-merge-patch") => {
            c.api.patch_strategic(res, ns, name, &req.input)
        }
        Method::PATCH => c.api.patch_merge(res, ns, name, &req.input),
        Method::DELETE => {
            let r = c.api.delete(res, ns, name);
            if r.is_ok() && res.plural == "nodes" {
                let fx = m.node_deleted(&ctx.cluster, name, req.now);
                ctx.inner.settle(m, fx);
                return Err(Box::new(json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "kind": "nodes"}}),
                )));
            }
            r.map(|_| json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "kind": res.plural}}))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not supported here", req.method),
        )),
    };
    r.map_err(|e| fail(&e))
}

/// A handler's object as the reply: 201 for POST, 200 otherwise, with each
/// field-validation warning as a `Warning` header, which kubectl prints.
fn with_warnings(method: &Method, v: &Value, warnings: Vec<String>) -> Response {
    let code = if *method == Method::POST { 201 } else { 200 };
    let mut resp = json_response(code, v);
    for w in warnings {
        // RFC 7234 warn-code 299, agent `-`, quoted text.
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = axum::http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}
