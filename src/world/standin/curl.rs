//! `curl` in a VM: curl's flags, redirects, `--fail`, output files,
//! `--write-out` and its retry rules, over a network that is the emulator
//! (see `applets::fetch` for what answers). Retry rules from curl's
//! documentation (facts: "`curl --retry` does not retry every failure
//! (DNS)"): `--retry` retries timeouts and HTTP 408, 429, 500, 502, 503 and
//! 504; `--retry-connrefused` adds refused connections; `--retry-all-errors`
//! retries everything. The delay is `--retry-delay`, else 1 s doubling.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;

use super::client;
use crate::world::protocol::{FETCH, Fetch, FetchReply};

#[derive(Debug, Default)]
struct Opts {
    silent: bool,
    show_error: bool,
    fail: bool,
    location: bool,
    output: Option<String>,
    remote_name: bool,
    insecure: bool,
    retry: u32,
    retry_delay: Option<u64>,
    retry_max_time: Option<u64>,
    retry_connrefused: bool,
    retry_all: bool,
    write_out: Option<String>,
    method: Option<String>,
    head: bool,
    cacert: Option<String>,
    urls: Vec<String>,
}

fn usage(msg: &str) -> Result<Opts, (i32, String)> {
    Err((
        2,
        format!("curl: {msg}\ncurl: try 'curl --help' for more information"),
    ))
}

fn parse(args: Vec<String>) -> Result<Opts, (i32, String)> {
    let mut o = Opts::default();
    let mut it = args.into_iter();
    let num = |v: Option<String>, flag: &str| -> Result<u64, (i32, String)> {
        v.and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as u64)
            .ok_or((
                2,
                format!("curl: option {flag}: expected a proper numerical parameter"),
            ))
    };
    while let Some(a) = it.next() {
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            let value = |it: &mut std::vec::IntoIter<String>| inline.clone().or_else(|| it.next());
            match name.as_str() {
                "silent" => o.silent = true,
                "show-error" => o.show_error = true,
                "fail" | "fail-with-body" | "fail-early" => o.fail = true,
                "location" => o.location = true,
                "insecure" => o.insecure = true,
                "remote-name" => o.remote_name = true,
                "head" => o.head = true,
                "retry-connrefused" => o.retry_connrefused = true,
                "retry-all-errors" => o.retry_all = true,
                "output" => o.output = value(&mut it),
                "retry" => o.retry = num(value(&mut it), "--retry")? as u32,
                "retry-delay" => o.retry_delay = Some(num(value(&mut it), "--retry-delay")?),
                "retry-max-time" => {
                    o.retry_max_time = Some(num(value(&mut it), "--retry-max-time")?)
                }
                "write-out" => o.write_out = value(&mut it),
                "request" => o.method = value(&mut it),
                "cacert" => o.cacert = value(&mut it),
                "connect-timeout" | "max-time" | "header" | "user-agent" | "data" | "data-raw"
                | "data-binary" | "proto" | "proto-redir" | "proto-default" | "output-dir" => {
                    let _ = value(&mut it);
                }
                "tlsv1.2" | "tlsv1.3" | "http1.1" | "http2" | "compressed" | "create-dirs"
                | "no-progress-meter" | "ipv4" | "ipv6" | "verbose" | "globoff" => {}
                "url" => o.urls.extend(value(&mut it)),
                other => return usage(&format!("option --{other}: is unknown")),
            }
        } else if a.starts_with('-') && a.len() > 1 {
            let flags: Vec<char> = a[1..].chars().collect();
            let mut i = 0;
            while i < flags.len() {
                let c = flags[i];
                let rest: String = flags[i + 1..].iter().collect();
                let take = |it: &mut std::vec::IntoIter<String>| {
                    if rest.is_empty() {
                        it.next()
                    } else {
                        Some(rest.clone())
                    }
                };
                match c {
                    's' => o.silent = true,
                    'S' => o.show_error = true,
                    'f' => o.fail = true,
                    'L' => o.location = true,
                    'k' => o.insecure = true,
                    'O' => o.remote_name = true,
                    'I' => o.head = true,
                    'v' | 'q' | '4' | '6' | '#' | 'g' => {}
                    'o' => {
                        o.output = take(&mut it);
                        break;
                    }
                    'w' => {
                        o.write_out = take(&mut it);
                        break;
                    }
                    'X' => {
                        o.method = take(&mut it);
                        break;
                    }
                    'm' | 'H' | 'A' | 'd' | 'e' | 'u' => {
                        let _ = take(&mut it);
                        break;
                    }
                    other => return usage(&format!("option -{other}: is unknown")),
                }
                i += 1;
            }
        } else {
            o.urls.push(a);
        }
    }
    if o.urls.is_empty() {
        return usage("no URL specified");
    }
    if o.urls.len() > 1 {
        return usage("the world's curl fetches one URL per call");
    }
    Ok(o)
}

fn transient_status(s: u16) -> bool {
    matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
}

enum Done {
    Body {
        status: u16,
        body: Vec<u8>,
        url: String,
    },
    Fail {
        code: i32,
        message: String,
        retry: bool,
    },
}

fn fetch_once(meta: &client::Meta, o: &Opts, cacert: &Option<String>) -> Done {
    let mut url = o.urls[0].clone();
    let method = o
        .method
        .clone()
        .unwrap_or_else(|| if o.head { "HEAD".into() } else { "GET".into() });
    for _ in 0..50 {
        let req = Fetch {
            vm: meta.vm.clone(),
            boot: meta.boot,
            url: url.clone(),
            method: method.clone(),
            insecure: o.insecure,
            cacert: cacert.clone(),
        };
        let reply: FetchReply = match client::post(&meta.url, FETCH, &req) {
            Ok(r) => r,
            Err(e) => {
                return Done::Fail {
                    code: 7,
                    message: e,
                    retry: false,
                };
            }
        };
        match reply {
            FetchReply::Error { code, message } => {
                let retry = code == 28 || (code == 7 && o.retry_connrefused) || o.retry_all;
                return Done::Fail {
                    code,
                    message,
                    retry,
                };
            }
            FetchReply::Response {
                status,
                location,
                body,
            } => {
                if o.location
                    && (300..400).contains(&status)
                    && let Some(l) = location
                {
                    url = l;
                    continue;
                }
                let body = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default();
                if o.fail && status >= 400 {
                    return Done::Fail {
                        code: 22,
                        message: format!("The requested URL returned error: {status}"),
                        retry: transient_status(status) || o.retry_all,
                    };
                }
                return Done::Body { status, body, url };
            }
        }
    }
    Done::Fail {
        code: 47,
        message: "Maximum (50) redirects followed".into(),
        retry: false,
    }
}

fn write_out(fmt: &str, status: u16, url: &str) -> String {
    fmt.replace("%{url_effective}", url)
        .replace("%{http_code}", &format!("{status:03}"))
        .replace("%{response_code}", &format!("{status:03}"))
        .replace("\\n", "\n")
}

/// `curl ARGS...`
pub fn run(args: Vec<String>) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err((code, msg)) => {
            eprintln!("{msg}");
            return code;
        }
    };
    let meta = match client::meta() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("curl: {e}");
            return 2;
        }
    };
    let cacert = match &o.cacert {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("curl: (77) error setting certificate file: {p}: {e}");
                return 77;
            }
        },
        None => None,
    };
    let start = Instant::now();
    let mut delay = Duration::from_secs(o.retry_delay.unwrap_or(1).max(1));
    let mut attempt = 0;
    loop {
        match fetch_once(&meta, &o, &cacert) {
            Done::Body { status, body, url } => {
                let target = o.output.clone().or_else(|| {
                    o.remote_name
                        .then(|| url.rsplit('/').next().unwrap_or("index.html").to_string())
                });
                match target {
                    Some(path) => {
                        if let Err(e) = std::fs::write(&path, &body) {
                            if !o.silent || o.show_error {
                                eprintln!(
                                    "curl: (23) Failure writing output to destination: {path}: {e}"
                                );
                            }
                            return 23;
                        }
                    }
                    None => {
                        let mut out = std::io::stdout();
                        if o.head {
                            let _ = write!(out, "HTTP/1.1 {status}\r\n\r\n");
                        } else {
                            let _ = out.write_all(&body);
                        }
                    }
                }
                if let Some(f) = &o.write_out {
                    print!("{}", write_out(f, status, &url));
                }
                let _ = std::io::stdout().flush();
                return 0;
            }
            Done::Fail {
                code,
                message,
                retry,
            } => {
                let out_of_time = o
                    .retry_max_time
                    .is_some_and(|m| m > 0 && start.elapsed() + delay > Duration::from_secs(m));
                if retry && attempt < o.retry && !out_of_time {
                    attempt += 1;
                    if !o.silent {
                        eprintln!(
                            "Warning: Problem: {message}. Will retry in {} seconds. {} retries left.",
                            delay.as_secs(),
                            o.retry - attempt + 1
                        );
                    }
                    std::thread::sleep(delay);
                    if o.retry_delay.is_none_or(|d| d == 0) {
                        delay = (delay * 2).min(Duration::from_secs(600));
                    }
                    continue;
                }
                if !o.silent || o.show_error {
                    eprintln!("curl: ({code}) {message}");
                }
                return code;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_as_scripts_write_them() {
        let o = parse(args(
            "-sfL --retry 5 --retry-delay 3 --retry-connrefused -o /tmp/x https://get.k3s.io",
        ))
        .unwrap();
        assert!(o.silent && o.fail && o.location && o.retry_connrefused);
        assert_eq!((o.retry, o.retry_delay), (5, Some(3)));
        assert_eq!(o.output.as_deref(), Some("/tmp/x"));
        let o = parse(args("-w %{url_effective} -L -s -S https://update.k3s.io/v1-release/channels/stable -o /dev/null")).unwrap();
        assert_eq!(o.write_out.as_deref(), Some("%{url_effective}"));
        assert!(o.show_error);
        let o = parse(args("-fsSLo/tmp/y --output=/tmp/z https://x")).unwrap();
        assert_eq!(o.output.as_deref(), Some("/tmp/z"));
        assert!(parse(args("--bogus https://x")).is_err());
        assert!(parse(args("-s")).is_err());
        assert_eq!(write_out("%{http_code}\\n", 200, "u"), "200\n");
    }
}
