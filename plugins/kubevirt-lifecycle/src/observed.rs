//! What the cluster shows about the VM and its instance, in the terms the actions decide
//! on — is it running, paused, did a stop or start already take effect — judged the way
//! KubeVirt's subresource API judges them (`pkg/virt-api/rest/lifecycle.go`).

use serde_json::Value;
use wukong_plugin_sdk::objects::condition_status;

use crate::run_strategy;

/// The VM (it exists when an action runs) and its instance.
pub struct Observed<'a> {
    pub vm: &'a Value,
    pub vmi: Option<&'a Value>,
}

impl Observed<'_> {
    /// The instance's `status.phase` (empty when it has none yet).
    pub fn vmi_phase(&self) -> &str {
        self.vmi
            .and_then(|v| v["status"]["phase"].as_str())
            .unwrap_or_default()
    }

    /// The instance is being deleted.
    pub fn vmi_deleting(&self) -> bool {
        self.vmi
            .is_some_and(|v| !v["metadata"]["deletionTimestamp"].is_null())
    }

    /// The instance finished (`Succeeded` or `Failed`): KubeVirt's `IsFinal`.
    pub fn vmi_final(&self) -> bool {
        matches!(self.vmi_phase(), "Succeeded" | "Failed")
    }

    /// An instance that is running or on its way (not finished, not being deleted).
    pub fn alive(&self) -> bool {
        self.vmi.is_some() && !self.vmi_deleting() && !self.vmi_final()
    }

    /// An instance that is not final, deleted or not: what `stop` counts as "has a VMI".
    pub fn has_live_vmi(&self) -> bool {
        self.vmi.is_some() && !self.vmi_final()
    }

    /// What `start` refuses as "VM is already running": an instance not final whose phase
    /// is known (KubeVirt lets a start through for an `Unknown` or unset phase).
    pub fn start_blocked(&self) -> bool {
        self.has_live_vmi() && !matches!(self.vmi_phase(), "" | "Unknown")
    }

    /// The instance's phase is `Running` (paused or not): what pause, unpause and soft
    /// reboot require.
    pub fn running(&self) -> bool {
        self.vmi.is_some() && self.vmi_phase() == "Running"
    }

    /// The instance failed.
    pub fn failed(&self) -> bool {
        self.vmi.is_some() && !self.vmi_deleting() && self.vmi_phase() == "Failed"
    }

    pub fn paused(&self) -> bool {
        self.vmi
            .and_then(|v| condition_status(v, "Paused"))
            .is_some_and(|s| s == "True")
    }

    pub fn gone(&self) -> bool {
        self.vmi.is_none()
    }

    pub fn strategy(&self) -> &str {
        run_strategy::live(self.vm)
    }

    /// The instance's grace period (`spec.terminationGracePeriodSeconds`), if set.
    pub fn vmi_grace(&self) -> Option<u64> {
        self.vmi
            .and_then(|v| v["spec"]["terminationGracePeriodSeconds"].as_u64())
    }

    fn requests(&self) -> &[Value] {
        self.vm["status"]["stateChangeRequests"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    fn requested(&self, action: &str) -> bool {
        self.requests().iter().any(|r| r["action"] == action)
    }

    /// A `start` now would add a state-change request while others are pending, which
    /// KubeVirt answers with 500 "stop/start already underway": only `Manual` and
    /// `RerunOnFailure` start through requests (`Halted` switches the run strategy).
    pub fn start_would_collide(&self) -> bool {
        matches!(self.strategy(), "Manual" | "RerunOnFailure") && !self.requests().is_empty()
    }

    /// KubeVirt has taken a `stop`: the run strategy is `Halted` (what stop sets for
    /// `Always` and `Once`), or with `Manual` and `RerunOnFailure` (which stop keeps) a
    /// stop request is queued; or the instance is going or gone.
    pub fn stop_took_effect(&self) -> bool {
        let by_request = match self.strategy() {
            "Manual" | "RerunOnFailure" => self.requested("Stop"),
            "Halted" => true,
            _ => false,
        };
        by_request || self.vmi_deleting() || self.gone()
    }

    /// A forced stop (`gracePeriod: 0`) has reached the instance.
    pub fn force_took_effect(&self) -> bool {
        self.gone() || self.vmi_grace() == Some(0)
    }

    /// KubeVirt has taken a `start`: `Halted` became a running strategy (a start on
    /// `Halted` switches it to `Always`); with `Manual` or `RerunOnFailure` a start
    /// request is queued; or an instance is on its way.
    pub fn start_took_effect(&self) -> bool {
        match self.strategy() {
            "Halted" => self.alive(),
            "Manual" | "RerunOnFailure" => self.requested("Start") || self.alive(),
            _ => true,
        }
    }
}
