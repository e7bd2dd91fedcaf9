//! What the operator tells about itself: Prometheus metrics, and the health endpoints
//! Kubernetes probes (`/healthz`, `/readyz`), served together on `--metrics-addr`.

pub mod metrics;
mod phases;
pub mod requests;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};

pub use metrics::Metrics;

/// CPU time the calling thread has used (zero where the clock is not available).
pub fn thread_cpu_time() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(std::time::Duration::from)
        .unwrap_or_default()
}

/// The process's state as the probes see it.
///
/// - `/healthz` (liveness): the process answers; nothing else is checked, so a slow
///   apiserver never gets a healthy operator restarted.
/// - `/readyz` (readiness): the backends are loaded and, on the leader, the controller
///   runs. A standby (waiting for the lease) with its backends loaded is ready too: it is
///   healthy and able to take over, and nothing routes traffic to the operator, so
///   readiness only says "this replica is fit", which keeps rolling updates moving.
#[derive(Debug, Default)]
pub struct Health {
    backends_loaded: AtomicBool,
    leading: AtomicBool,
    controller_running: AtomicBool,
}

impl Health {
    pub fn set_backends_loaded(&self, loaded: bool) {
        self.backends_loaded.store(loaded, Ordering::Release);
    }

    /// This replica leads (or runs without leader election).
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }

    pub fn set_controller_running(&self, running: bool) {
        self.controller_running.store(running, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.backends_loaded.load(Ordering::Acquire)
            && (!self.leading.load(Ordering::Acquire)
                || self.controller_running.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_loaded_and_if_leading_running() {
        let health = Health::default();
        assert!(!health.is_ready(), "nothing loaded yet");
        health.set_backends_loaded(true);
        assert!(health.is_ready(), "a standby with its backends is ready");
        health.set_leading(true);
        assert!(
            !health.is_ready(),
            "a leader whose controller is not running is not"
        );
        health.set_controller_running(true);
        assert!(health.is_ready());
    }
}
