//! `pods/<name>/log`: what a container printed. The world runs no
//! processes in pods, so a log is what the image is known to print:
//! agnhost's `netexec` logs its servers' start lines
//! (kubernetes/kubernetes test/images/agnhost/netexec/netexec.go@04791b4:
//! `startServer` logs `Started HTTP server on port %d`, `startUDPServer`
//! `Started UDP server on port %s %d` with an empty address unless
//! `--udp-listen-addresses`, none when `--udp-port=-1`; Go's `log`
//! prefixes `2006/01/02 15:04:05 `); any other image printed nothing, and
//! its log is empty, as a real container's that writes nothing is. Which
//! container runs netexec, and its lines, are `dataplane::netexec`'s.

use serde_json::Value;

use super::objects;
use super::store::ApiError;

/// The log of `container` (the pod's first when `None`) of `pod`.
pub fn pod_log(pod: &Value, container: Option<&str>) -> Result<String, ApiError> {
    let (_, name) = objects::ns_name(pod);
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let c = match container {
        Some(want) => containers
            .iter()
            .find(|c| c["name"] == want)
            .copied()
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("container {want} is not valid for pod {name}"),
                )
            })?,
        None if containers.len() == 1 => containers[0],
        None => {
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ),
            ));
        }
    };
    let cname = c["name"].as_str().unwrap_or_default();
    let started = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == cname)
        .and_then(|s| s["state"]["running"]["startedAt"].as_str());
    let Some(started) = started else {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "container \"{cname}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ),
        ));
    };
    // What it printed is what netexec prints, recognised and worded in
    // one place (`dataplane::netexec`); anything else printed nothing.
    let Some(n) = crate::world::dataplane::netexec::in_container(c) else {
        return Ok(String::new());
    };
    // Go's log prefix: `2006/01/02 15:04:05 `.
    let stamp = started
        .get(..19)
        .unwrap_or(started)
        .replace('-', "/")
        .replace('T', " ");
    let mut out = String::new();
    for line in n.start_log() {
        out.push_str(&format!("{stamp} {line}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn netexec_logs_its_start_lines_and_others_nothing() {
        let pod = |image: &str, args: Value| {
            json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": image, "args": args}]},
            "status": {"containerStatuses": [{"name": "c", "state": {"running": {"startedAt": "2024-01-02T03:04:05Z"}}}]}})
        };
        let agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.53";
        assert_eq!(
            pod_log(&pod(agnhost, json!(["netexec", "--http-port=8000"])), None).unwrap(),
            "2024/01/02 03:04:05 Started HTTP server on port 8000\n2024/01/02 03:04:05 Started UDP server on port  8081\n"
        );
        assert_eq!(
            pod_log(&pod(agnhost, json!(["netexec", "--udp-port", "-1"])), None).unwrap(),
            "2024/01/02 03:04:05 Started HTTP server on port 8080\n"
        );
        assert_eq!(pod_log(&pod("nginx", json!([])), None).unwrap(), "");
        assert_eq!(
            pod_log(&pod("nginx", json!([])), Some("x"))
                .unwrap_err()
                .code,
            400
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        assert!(
            pod_log(&pending, None)
                .unwrap_err()
                .message
                .contains("waiting to start")
        );
    }
}
