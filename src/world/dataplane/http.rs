//! HTTP over the data plane: one `GET` from a pod or a node to `IP:port`,
//! answered by the netexec pod it reaches, whose own `/dial` goes out
//! through the same data plane from that pod. Go's client error texts for
//! netexec's `/dial` (facts "agnhost netexec", wording marked [?]).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::netexec::{self, Dialer, Reply};
use super::{App, Failure, From, Net, Proto, Underlay};

/// Bytes an HTTP exchange adds to its body (request line, headers): an
/// estimate for the MTU rule, which only needs to know whether an exchange
/// has full-size packets.
const HEADERS: u32 = 200;
/// How deep `/dial` may call `/dial` (a loop would otherwise recurse).
const MAX_DEPTH: u8 = 4;
/// The source port a client's connection shows (`/clientip`). Real ones
/// are ephemeral; the world's is fixed.
pub const CLIENT_PORT: u16 = 41234;

/// Requests through one snapshot of the data plane.
pub struct Session<'a> {
    pub net: &'a Net,
    pub underlay: &'a dyn Underlay,
    /// What netexec's `/` prints after `NOW: `.
    pub now: String,
}

impl Session<'_> {
    /// `GET target` (path and query) from `from` to `ip:port`.
    pub fn get(
        &self,
        from: From<'_>,
        ip: Ipv4Addr,
        port: u16,
        target: &str,
    ) -> Result<Reply, Failure> {
        self.get_at(from, ip, port, target, 0)
    }

    fn get_at(
        &self,
        from: From<'_>,
        ip: Ipv4Addr,
        port: u16,
        target: &str,
        depth: u8,
    ) -> Result<Reply, Failure> {
        let size = target.len() as u32 + HEADERS;
        let r = self
            .net
            .connect(from, ip, port, Proto::Tcp, size, self.underlay)?;
        let n = match &r.pod.app {
            App::Netexec(n) => n,
            App::ApiServer => return Ok(api_server_reply()),
            _ => return Err(Failure::Refused(SocketAddrV4::new(ip, port))),
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let client = format!("{}:{CLIENT_PORT}", r.client_ip);
        let reply = if depth >= MAX_DEPTH && path == "/dial" {
            Reply {
                status: 508,
                body: "the VM world stops /dial nested this deep\n".into(),
            }
        } else {
            let mut d = PodDialer {
                session: self,
                ns: &r.pod.ns,
                name: &r.pod.name,
                depth: depth + 1,
            };
            n.http(path, query, &r.pod.name, &client, &self.now, &mut d)
        };
        // The answer travels back the same way: big answers meet the MTU.
        let back = reply.body.len() as u32 + HEADERS;
        if back > size {
            self.net
                .connect(from, ip, port, Proto::Tcp, back, self.underlay)?;
        }
        Ok(reply)
    }
}

/// What the API server's TLS listener answers a plain-HTTP request: Go's
/// `net/http` server (`(*conn).serve`) writes `HTTP/1.0 400 Bad Request`
/// and this body (facts "`exedev-k8s check`": recalled, quoted by
/// third-party code, not read in Go's source here).
pub fn api_server_reply() -> Reply {
    Reply {
        status: 400,
        body: "Client sent an HTTP request to an HTTPS server.\n".into(),
    }
}

/// The network as a netexec pod's `/dial` sees it.
struct PodDialer<'a, 'b> {
    session: &'a Session<'b>,
    ns: &'a str,
    name: &'a str,
    depth: u8,
}

impl PodDialer<'_, '_> {
    fn from(&self) -> From<'_> {
        From::Pod(self.ns, self.name)
    }
}

impl Dialer for PodDialer<'_, '_> {
    fn resolve(&mut self, host: &str, port: &str) -> Result<SocketAddrV4, String> {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("lookup tcp/{port}: unknown port"))?;
        let net = self.session.net;
        let dns = net.cluster_dns;
        match net.resolve(self.from(), host, self.session.underlay) {
            Ok(ip) => Ok(SocketAddrV4::new(ip, port)),
            Err(Failure::NoSuchHost(_)) => Err(format!("lookup {host} on {dns}:53: no such host")),
            Err(_) => Err(format!("lookup {host} on {dns}:53: read udp: i/o timeout")),
        }
    }

    fn http_get(&mut self, addr: SocketAddrV4, request: &str) -> Result<String, String> {
        let url = format!("http://{addr}/{request}");
        let target = format!("/{request}");
        self.session
            .get_at(self.from(), *addr.ip(), addr.port(), &target, self.depth)
            .map(|r| r.body)
            .map_err(|f| go_http_error(&url, addr, &f))
    }

    fn udp(&mut self, addr: SocketAddrV4, request: &str) -> Result<String, String> {
        let net = self.session.net;
        let r = net.connect(
            self.from(),
            *addr.ip(),
            addr.port(),
            Proto::Udp,
            request.len() as u32 + 28,
            self.session.underlay,
        );
        let timeout =
            format!("reading from udp connection failed. err:'read udp {addr}: i/o timeout'");
        match r {
            Ok(r) => match r.pod.app {
                App::Netexec(_) => {
                    let client = format!("{}:{CLIENT_PORT}", r.client_ip);
                    netexec::udp_answer(request, &r.pod.name, &client).ok_or(timeout)
                }
                _ => Err(timeout),
            },
            Err(f) if !f.times_out() => Err(format!(
                "reading from udp connection failed. err:'read udp {addr}: read: connection refused'"
            )),
            Err(_) => Err(timeout),
        }
    }
}

/// Go's `http.Client` error for a failed `GET url`: refused at once, or
/// its 5 s timeout. [?] the exact text varies across Go versions.
fn go_http_error(url: &str, addr: SocketAddrV4, f: &Failure) -> String {
    if f.times_out() {
        format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )
    } else {
        format!("Get \"{url}\": dial tcp {addr}: connect: connection refused")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{net, open, open_but};
    use super::*;

    fn session<'a>(n: &'a Net, u: &'a dyn Underlay) -> Session<'a> {
        Session {
            net: n,
            underlay: u,
            now: "T".into(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_reaches_a_pod_and_the_pod_dials_another() {
        let n = net();
        let u = open();
        let s = session(&n, &u);
        let r = s
            .get(From::Node("a"), ip("10.42.1.2"), 8080, "/hostname")
            .unwrap();
        assert_eq!(r.body, "pb");
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.0.2"),
                8080,
                "/dial?host=10.42.1.2&port=8080&request=hostname",
            )
            .unwrap();
        assert_eq!(r.body, r#"{"responses":["pb"]}"#);
        // Through DNS and the Service: the first Ready endpoint answers.
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.1.2"),
                8080,
                "/dial?host=web&port=80&request=hostname&tries=2",
            )
            .unwrap();
        assert_eq!(r.body, r#"{"responses":["pa","pa"]}"#);
        let r = s
            .get(From::Node("a"), ip("10.42.1.2"), 8080, "/clientip")
            .unwrap();
        assert_eq!(r.body, "100.64.0.1:41234");
    }

    #[test]
    fn dial_reports_what_a_blocked_vxlan_looks_like_from_inside() {
        let n = net();
        let u = open_but("a", "b");
        let s = session(&n, &u);
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.0.2"),
                8080,
                "/dial?host=10.42.1.2&port=8080&request=hostname",
            )
            .unwrap();
        assert_eq!(
            r.body,
            r#"{"errors":["Get \"http://10.42.1.2:8080/hostname\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"]}"#
        );
        // A port nothing listens on refuses at once.
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.0.2"),
                8080,
                "/dial?host=10.42.0.2&port=9999&request=x",
            )
            .unwrap();
        assert!(
            r.body
                .contains("dial tcp 10.42.0.2:9999: connect: connection refused"),
            "{}",
            r.body
        );
        // DNS from b to CoreDNS on a is cut as well.
        let r = s
            .get(
                From::Node("b"),
                ip("10.42.1.2"),
                8080,
                "/dial?host=web&port=80&request=hostname",
            )
            .unwrap();
        assert_eq!(r.status, 400);
        assert!(r.body.contains("lookup web on 10.43.0.10:53"), "{}", r.body);
        // And the node cannot reach the other node's pods at all.
        assert_eq!(
            s.get(From::Node("a"), ip("10.42.1.2"), 8080, "/hostname"),
            Err(Failure::VxlanBlocked {
                from: "a".into(),
                to: "b".into()
            })
        );
    }

    #[test]
    fn udp_dial_and_nesting_limit() {
        let n = net();
        let u = open();
        let s = session(&n, &u);
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.0.2"),
                8080,
                "/dial?host=10.42.1.2&port=8081&request=hostname&protocol=udp",
            )
            .unwrap();
        assert_eq!(r.body, r#"{"responses":["pb"]}"#);
        // /dial of /dial of ... stops, it does not recurse for ever.
        let inner = "dial%3Fhost%3D10.42.0.2%26port%3D8080%26request%3Ddial";
        let r = s
            .get(
                From::Node("a"),
                ip("10.42.0.2"),
                8080,
                &format!("/dial?host=10.42.0.2&port=8080&request={inner}"),
            )
            .unwrap();
        assert_eq!(r.status, 200);
    }
}
