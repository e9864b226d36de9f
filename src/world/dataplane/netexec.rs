//! agnhost `netexec` as the world's pods run it: which containers are
//! netexec, its start log, and its HTTP and UDP answers, read from
//! kubernetes/kubernetes `test/images/agnhost/netexec/netexec.go`
//! @04791b49 (facts "agnhost netexec"). Pure: the network it dials
//! through is a [`Dialer`] the caller provides.

use std::net::SocketAddrV4;

/// Its default ports (`init()`: `http-port` 8080, `udp-port` 8081).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_UDP_PORT: u16 = 8081;

/// A netexec process: its ports (`udp_port` `None` for `--udp-port=-1`)
/// and the addresses its UDP server binds (`--udp-listen-addresses`,
/// comma-separated; empty: the one unnamed address, all interfaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netexec {
    pub http_port: u16,
    pub udp_port: Option<u16>,
    pub udp_listen: Vec<String>,
}

/// [`from_container`] of a pod spec's container (`image`, `command`,
/// `args`): the one reading of "this container runs netexec", for the
/// data plane (what answers) and the API's pod logs (what it printed).
pub fn in_container(c: &serde_json::Value) -> Option<Netexec> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    from_container(
        c["image"].as_str().unwrap_or_default(),
        &strings(&c["command"]),
        &strings(&c["args"]),
    )
}

/// The container runs netexec: an `agnhost` image whose arguments (its
/// `command` after the binary, then `args`) start with `netexec`. Ports
/// from `--http-port`/`--udp-port` (`=V` or a separate word); a port it
/// could not parse makes the real binary exit, so this is `None` (the pod
/// then serves nothing).
pub fn from_container(image: &str, command: &[String], args: &[String]) -> Option<Netexec> {
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo);
    if repo != "agnhost" {
        return None;
    }
    let mut words: Vec<&str> = command.iter().map(String::as_str).collect();
    if words.first().is_some_and(|w| w.ends_with("agnhost")) {
        words.remove(0);
    }
    words.extend(args.iter().map(String::as_str));
    if words.first() != Some(&"netexec") {
        return None;
    }
    let mut n = Netexec {
        http_port: DEFAULT_HTTP_PORT,
        udp_port: Some(DEFAULT_UDP_PORT),
        udp_listen: Vec::new(),
    };
    let mut i = 1;
    while i < words.len() {
        let w = words[i].trim_start_matches('-');
        let (flag, value) = match w.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (w, None),
        };
        let value = match (flag, value) {
            ("http-port" | "udp-port" | "udp-listen-addresses", None) => {
                i += 1;
                words.get(i).copied()
            }
            (_, v) => v,
        };
        match flag {
            "http-port" => n.http_port = value?.parse().ok().filter(|p| *p > 0)?,
            "udp-listen-addresses" => {
                n.udp_listen = value?
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "udp-port" => {
                let v: i32 = value?.parse().ok()?;
                n.udp_port = match v {
                    -1 => None,
                    1..=65535 => Some(v as u16),
                    _ => return None,
                };
            }
            _ => {}
        }
        i += 1;
    }
    Some(n)
}

/// One HTTP answer: status and body (netexec's bodies are text; Go's
/// content sniffing calls them `text/plain; charset=utf-8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
        }
    }
    /// Go's `http.Error`: the message and a newline.
    fn error(status: u16, msg: &str) -> Reply {
        Reply {
            status,
            body: format!("{msg}\n"),
        }
    }
}

/// The network as a netexec process sees it, for `/dial`.
pub trait Dialer {
    /// `net.ResolveTCPAddr`/`ResolveUDPAddr` of `host:port`; the error is
    /// Go's text (e.g. `lookup web on 10.43.0.10:53: no such host`).
    fn resolve(&mut self, host: &str, port: &str) -> Result<SocketAddrV4, String>;
    /// One `GET http://addr/<request>` (5 s client timeout): the body, or
    /// Go's error text.
    fn http_get(&mut self, addr: SocketAddrV4, request: &str) -> Result<String, String>;
    /// One UDP exchange (5 s read deadline): the reply, or Go's error text.
    fn udp(&mut self, addr: SocketAddrV4, request: &str) -> Result<String, String>;
}

impl Netexec {
    /// The lines it logs at start (without Go's `log` date prefix), in the
    /// order a reader sees them: the UDP server starts in a goroutine, the
    /// HTTP line is printed right after; their real order can vary.
    pub fn start_log(&self) -> Vec<String> {
        let mut lines = vec![format!("Started HTTP server on port {}", self.http_port)];
        if let Some(p) = self.udp_port {
            // `"Started UDP server on port %s %d"`, once per listen
            // address; with none, the empty one: two spaces.
            if self.udp_listen.is_empty() {
                lines.push(format!("Started UDP server on port  {p}"));
            }
            for a in &self.udp_listen {
                lines.push(format!("Started UDP server on port {a} {p}"));
            }
        }
        lines
    }

    /// The answer to `GET <path>?<query>` from `client` (`IP:port`, what
    /// `/clientip` returns). `hostname` is the pod's (its name), `now` the
    /// text `/` prints after `NOW: `.
    pub fn http(
        &self,
        path: &str,
        query: &str,
        hostname: &str,
        client: &str,
        now: &str,
        dialer: &mut dyn Dialer,
    ) -> Reply {
        let form = |k: &str| form_value(query, k);
        match path {
            "/hostname" | "/hostName" => Reply::ok(hostname),
            "/clientip" => Reply::ok(client),
            "/echo" => {
                let msg = form("msg");
                let code = form("code");
                if code.is_empty() {
                    return Reply::ok(msg);
                }
                match code.parse::<u16>() {
                    Ok(c) if (100..=999).contains(&c) => Reply {
                        status: c,
                        body: msg,
                    },
                    _ => Reply::ok(format!(
                        "argument 'code' must be an integer or empty, got {code:?}\n"
                    )),
                }
            }
            // 200 once the UDP server runs; without one, never ready.
            "/healthz" => Reply {
                status: if self.udp_port.is_some() { 200 } else { 412 },
                body: String::new(),
            },
            "/dial" => dial(query, dialer),
            "/exit" | "/shutdown" | "/shell" | "/upload" | "/redirect" => Reply {
                status: 501,
                body: format!(
                    "the VM world does not model netexec's {path} (only /, /clientip, /dial, \
                     /echo, /healthz, /hostname)\n"
                ),
            },
            // Go's ServeMux sends every other path to "/".
            _ => Reply::ok(format!("NOW: {now}")),
        }
    }
}

/// `dialHandler`: parameters, `tries` requests, the JSON of responses and
/// errors. Always 200 once the parameters are valid (the code, not the
/// usage text's 417; facts "agnhost netexec").
fn dial(query: &str, dialer: &mut dyn Dialer) -> Reply {
    let get = |k: &str| form_value(query, k);
    let (host, port, request, protocol, tries) = (
        get("host"),
        get("port"),
        get("request"),
        get("protocol"),
        get("tries"),
    );
    let tries: i64 = if tries.is_empty() {
        1
    } else {
        match tries.parse() {
            Ok(t) => t,
            Err(_) => {
                return Reply::error(
                    400,
                    &format!(
                        "tries parameter is invalid. strconv.Atoi: parsing {tries:?}: invalid syntax"
                    ),
                );
            }
        }
    };
    if request.is_empty() {
        return Reply::error(400, "request parameter not specified. <nil>");
    }
    let udp = match protocol.to_ascii_lowercase().as_str() {
        "" | "http" => false,
        "udp" => true,
        "sctp" => {
            return Reply::error(400, "the VM world does not model SCTP");
        }
        _ => return Reply::error(400, &format!("unsupported protocol. {protocol}")),
    };
    let addr = match dialer.resolve(&host, &port) {
        Ok(a) => a,
        Err(e) => {
            return Reply::error(400, &format!("host and/or port param are invalid. {e}"));
        }
    };
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    let mut last = String::new();
    for _ in 0..tries.max(0) {
        let r = if udp {
            dialer.udp(addr, &request)
        } else {
            dialer.http_get(addr, &request)
        };
        match r {
            Ok(body) => {
                last = body.clone();
                responses.push(body);
            }
            Err(e) => {
                last.clear();
                errors.push(e);
            }
        }
    }
    // `output["responses"]` only when the last try's response is
    // non-empty; Go's map marshals keys sorted.
    let mut out = serde_json::Map::new();
    if !errors.is_empty() {
        out.insert("errors".into(), errors.into());
    }
    if !last.is_empty() {
        out.insert("responses".into(), responses.into());
    }
    Reply::ok(go_json(&serde_json::Value::Object(out)))
}

/// The reply of netexec's UDP server to one datagram (`startUDPServer`):
/// `hostname`, `echo <msg>`, `clientip`, case-insensitive and trimmed;
/// anything else gets no reply.
pub fn udp_answer(text: &str, hostname: &str, client: &str) -> Option<String> {
    let t = text.trim().to_lowercase();
    if t == "hostname" {
        Some(hostname.to_string())
    } else if let Some(msg) = t.strip_prefix("echo ") {
        Some(msg.to_string())
    } else if t == "clientip" {
        Some(client.to_string())
    } else {
        None
    }
}

/// JSON as Go's `encoding/json` writes it: `<`, `>`, `&` escaped.
fn go_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Go's `FormValue`/`Query().Get` on a raw query: the first value of `key`,
/// percent- and `+`-decoded; empty when absent.
pub fn form_value(query: &str, key: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .next()
        .unwrap_or_default()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

    #[test]
    fn recognises_netexec_and_its_ports() {
        let n = from_container(IMAGE, &[], &s(&["netexec"])).unwrap();
        assert_eq!((n.http_port, n.udp_port), (8080, Some(8081)));
        let n = from_container(
            IMAGE,
            &[],
            &s(&["netexec", "--http-port=8000", "--udp-port", "-1"]),
        )
        .unwrap();
        assert_eq!((n.http_port, n.udp_port), (8000, None));
        let n = from_container(
            IMAGE,
            &s(&["/agnhost", "netexec"]),
            &s(&["--http-port", "9000"]),
        )
        .unwrap();
        assert_eq!(n.http_port, 9000);
        assert_eq!(from_container(IMAGE, &[], &s(&["pause"])), None);
        assert_eq!(from_container("nginx:1.27", &[], &s(&["netexec"])), None);
        assert_eq!(
            from_container(IMAGE, &[], &s(&["netexec", "--http-port=x"])),
            None
        );
        assert_eq!(
            from_container(IMAGE, &[], &s(&["netexec", "--http-port"])),
            None
        );
    }

    #[test]
    fn start_log_lines() {
        let n = from_container(IMAGE, &[], &s(&["netexec"])).unwrap();
        assert_eq!(
            n.start_log(),
            [
                "Started HTTP server on port 8080",
                "Started UDP server on port  8081"
            ]
        );
        let n = from_container(
            IMAGE,
            &[],
            &s(&["netexec", "--udp-listen-addresses", "10.0.0.1,::1"]),
        )
        .unwrap();
        assert_eq!(
            n.start_log(),
            [
                "Started HTTP server on port 8080",
                "Started UDP server on port 10.0.0.1 8081",
                "Started UDP server on port ::1 8081"
            ]
        );
        // The pod spec's form, `command` and `args` as JSON.
        let c = serde_json::json!({"image": IMAGE, "command": ["/agnhost"],
            "args": ["netexec", "--http-port=9000", "--udp-port=-1"]});
        assert_eq!(
            in_container(&c).unwrap().start_log(),
            ["Started HTTP server on port 9000"]
        );
        assert_eq!(in_container(&serde_json::json!({"image": "nginx"})), None);
    }

    struct Fake {
        refuse: bool,
        calls: Vec<String>,
    }
    impl Dialer for Fake {
        fn resolve(&mut self, host: &str, port: &str) -> Result<SocketAddrV4, String> {
            let ip: Ipv4Addr = host
                .parse()
                .map_err(|_| format!("lookup {host} on 10.43.0.10:53: no such host"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("address {host}:{port}: invalid port"))?;
            Ok(SocketAddrV4::new(ip, port))
        }
        fn http_get(&mut self, addr: SocketAddrV4, request: &str) -> Result<String, String> {
            let url = format!("http://{addr}/{request}");
            self.calls.push(url.clone());
            if self.refuse {
                Err(format!(
                    "Get \"{url}\": dial tcp {addr}: connect: connection refused"
                ))
            } else {
                Ok("pod-b".into())
            }
        }
        fn udp(&mut self, _: SocketAddrV4, request: &str) -> Result<String, String> {
            Ok(udp_answer(request, "pod-b", "10.42.0.2:1234").unwrap_or_default())
        }
    }

    fn get(path: &str, query: &str, refuse: bool) -> (Reply, Vec<String>) {
        let n = Netexec {
            http_port: 8080,
            udp_port: Some(8081),
            udp_listen: vec![],
        };
        let mut f = Fake {
            refuse,
            calls: vec![],
        };
        let r = n.http(path, query, "pod-a", "10.42.1.2:40000", "T", &mut f);
        (r, f.calls)
    }

    #[test]
    fn simple_endpoints() {
        assert_eq!(get("/hostname", "", false).0, Reply::ok("pod-a"));
        assert_eq!(get("/hostName", "", false).0, Reply::ok("pod-a"));
        assert_eq!(get("/clientip", "", false).0, Reply::ok("10.42.1.2:40000"));
        assert_eq!(
            get("/echo", "msg=hello+w%21", false).0,
            Reply::ok("hello w!")
        );
        assert_eq!(get("/echo", "msg=x&code=503", false).0.status, 503);
        assert_eq!(get("/healthz", "", false).0.status, 200);
        assert_eq!(get("/anything", "", false).0, Reply::ok("NOW: T"));
        assert_eq!(get("/shell", "cmd=ls", false).0.status, 501);
        let no_udp = Netexec {
            http_port: 8080,
            udp_port: None,
            udp_listen: vec![],
        };
        let mut f = Fake {
            refuse: false,
            calls: vec![],
        };
        assert_eq!(
            no_udp.http("/healthz", "", "p", "c", "T", &mut f).status,
            412
        );
    }

    #[test]
    fn dial_answers_as_netexec_does() {
        let (r, calls) = get(
            "/dial",
            "host=10.42.2.5&port=8080&request=hostname&protocol=http&tries=2",
            false,
        );
        assert_eq!(r, Reply::ok(r#"{"responses":["pod-b","pod-b"]}"#));
        assert_eq!(
            calls,
            [
                "http://10.42.2.5:8080/hostname",
                "http://10.42.2.5:8080/hostname"
            ]
        );
        // Failures are 200 too, with Go's error text.
        let (r, _) = get("/dial", "host=10.42.2.5&port=8080&request=hostname", true);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            r#"{"errors":["Get \"http://10.42.2.5:8080/hostname\": dial tcp 10.42.2.5:8080: connect: connection refused"]}"#
        );
        // An encoded request reaches the target whole.
        let (_, calls) = get(
            "/dial",
            "host=10.42.2.5&port=8080&request=echo%3Fmsg%3D%3Cb%3E",
            false,
        );
        assert_eq!(calls, ["http://10.42.2.5:8080/echo?msg=<b>"]);
        let (r, _) = get(
            "/dial",
            "host=10.42.2.5&port=8081&request=echo+a%26b&protocol=udp",
            false,
        );
        assert_eq!(r.body, r#"{"responses":["a\u0026b"]}"#);
    }

    #[test]
    fn dial_refuses_bad_parameters() {
        let (r, _) = get("/dial", "host=10.42.2.5&port=8080", false);
        assert_eq!(
            r,
            Reply::error(400, "request parameter not specified. <nil>")
        );
        let (r, _) = get(
            "/dial",
            "host=10.42.2.5&port=8080&request=x&tries=two",
            false,
        );
        assert_eq!(r.status, 400);
        let (r, _) = get(
            "/dial",
            "host=10.42.2.5&port=8080&request=x&protocol=ftp",
            false,
        );
        assert_eq!(r, Reply::error(400, "unsupported protocol. ftp"));
        let (r, calls) = get("/dial", "host=web&port=8080&request=x", false);
        assert_eq!(
            r,
            Reply::error(
                400,
                "host and/or port param are invalid. lookup web on 10.43.0.10:53: no such host"
            )
        );
        assert!(calls.is_empty());
    }

    #[test]
    fn udp_server_commands() {
        assert_eq!(udp_answer(" HOSTNAME\n", "p", "c"), Some("p".into()));
        assert_eq!(
            udp_answer("echo Hi There", "p", "c"),
            Some("hi there".into())
        );
        assert_eq!(
            udp_answer("clientip", "p", "1.2.3.4:5"),
            Some("1.2.3.4:5".into())
        );
        assert_eq!(udp_answer("what", "p", "c"), None);
    }

    #[test]
    fn form_values_decode_like_go() {
        assert_eq!(form_value("a=1&b=x%20y+z&a=2", "a"), "1");
        assert_eq!(form_value("a=1&b=x%20y+z", "b"), "x y z");
        assert_eq!(form_value("a=%zz%", "a"), "%zz%");
        assert_eq!(form_value("", "a"), "");
    }
}
