//! Tests of `ssh::run` and `ssh::tunnel` against stub `ssh` programs. The
//! library finds its ssh program only in `EXEDEV_K8S_SSH` (`ssh::program`),
//! so these tests set that variable for the whole process: they live in a
//! crate of their own (not `tests/it`, whose tests spawn processes and
//! read the environment in parallel), and take [`ENV`] for their whole run
//! so they never see each other's stub.

mod output;
mod tunnel;

/// Held by each test from before it sets `EXEDEV_K8S_SSH` until it ends.
static ENV: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));
