//! An in-place change of one VM, node by node: the harmless exe.dev calls
//! first, then, when the node restarts, cordon and drain, the k3s change
//! over SSH and/or the resize, Ready again (at the plan's release after a
//! k3s change), uncordon; labels through the API; the comment last.

use crate::core::plan::Change;
use crate::core::plan::spec;

use super::error::StepError;
use super::steps::{Ctx, Phase, call, node_op, node_ready, phase, step, wait_running};

/// Carries out an in-place change ([`Phase`] says where each op goes). A
/// failure after the drain leaves the node cordoned, and says so.
pub(super) async fn in_place(ctx: &Ctx, c: &Change, is_server: bool) -> Result<(), StepError> {
    let d = ctx.desired(&c.vm)?;
    let vm = c.vm.as_str();
    let phases: Vec<Phase> = c.ops.iter().map(phase).collect();
    for p in &phases {
        if let Phase::Before(c) = p {
            call(ctx, vm, *c).await?;
        }
    }
    let k3s = phases.contains(&Phase::K3s);
    if c.restart.is_some() {
        node_op(
            ctx,
            vm,
            ctx.opts.ops.drain(vm),
            "cordon + drain",
            "not drained: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::NotDrained {
            vm: vm.to_string(),
            source,
        })?;
        if let Err(e) = restart(ctx, vm, &d, &phases).await {
            return Err(StepError::LeftCordoned {
                vm: vm.to_string(),
                source: Box::new(e),
            });
        }
        if is_server {
            ctx.server_up(vm);
        }
        node_op(
            ctx,
            vm,
            ctx.opts.ops.uncordon(vm),
            "uncordon",
            "not uncordoned: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::StillCordoned {
            vm: vm.to_string(),
            source,
        })?;
    }
    if phases.contains(&Phase::Labels) {
        node_op(
            ctx,
            vm,
            ctx.opts.ops.label(vm),
            "labels and taints through the API",
            "labels and taints not set: the Kubernetes API is not reachable",
        )
        .await
        .map_err(|source| StepError::NotLabelled {
            vm: vm.to_string(),
            source,
        })?;
    }
    // The comment records what the plan brought up to date (the node's
    // new release after a k3s change, its labels once known).
    let comment = phases
        .iter()
        .find_map(|p| match p {
            Phase::Comment(text) => Some(text.to_string()),
            _ => None,
        })
        .or_else(|| k3s.then(|| spec::comment_for(&ctx.fleet, &d, Some(&ctx.version))));
    if let Some(text) = comment {
        step(ctx, vm, "comment");
        ctx.client.comment(vm, &text).await?;
    }
    Ok(())
}

/// The restart of a drained node: the k3s change over SSH, then the
/// resize (and running again), then Ready (at the plan's release after a
/// k3s change).
async fn restart(
    ctx: &Ctx,
    vm: &str,
    d: &crate::core::fleet::DesiredVm,
    phases: &[Phase<'_>],
) -> Result<(), StepError> {
    let k3s = phases.contains(&Phase::K3s);
    if k3s {
        let script = spec::change_script(&ctx.fleet, d, &ctx.secrets, &ctx.version)?;
        let change = ctx
            .opts
            .ops
            .change(vm, script)
            .ok_or_else(|| StepError::NeedsSsh { vm: vm.to_string() })?;
        step(ctx, vm, format!("k3s {} over SSH", ctx.version));
        let outcome = change.await.map_err(|source| StepError::Change {
            vm: vm.to_string(),
            source,
        })?;
        step(ctx, vm, outcome);
    }
    let resize = phases.iter().find_map(|p| match p {
        Phase::Restart(c) => Some(*c),
        _ => None,
    });
    if let Some(c) = resize {
        call(ctx, vm, c).await?;
        wait_running(ctx, vm).await?;
    }
    node_ready(ctx, vm, k3s.then_some(ctx.version.as_str())).await
}
