//! What the cluster shows about the VM and its instance, in the terms the actions decide
//! on: is it running, paused, did a stop or start already take effect.

use serde_json::Value;
use wukong_plugin_sdk::objects::condition_status;

use crate::run_strategy;

/// The VM (it exists when an action runs) and its instance.
pub struct Observed<'a> {
    pub vm: &'a Value,
    pub vmi: Option<&'a Value>,
}

impl Observed<'_> {
    fn vmi_phase(&self) -> &str {
        self.vmi
            .and_then(|v| v["status"]["phase"].as_str())
            .unwrap_or_default()
    }

    fn vmi_deleting(&self) -> bool {
        self.vmi
            .is_some_and(|v| !v["metadata"]["deletionTimestamp"].is_null())
    }

    /// An instance that is running or on its way (not finished, not being deleted).
    pub fn alive(&self) -> bool {
        self.vmi.is_some()
            && !self.vmi_deleting()
            && !matches!(self.vmi_phase(), "Succeeded" | "Failed")
    }

    /// The instance runs (paused or not).
    pub fn running(&self) -> bool {
        self.alive() && self.vmi_phase() == "Running"
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

    fn requested(&self, action: &str) -> bool {
        self.vm["status"]["stateChangeRequests"]
            .as_array()
            .is_some_and(|list| list.iter().any(|r| r["action"] == action))
    }

    /// KubeVirt has taken a `stop`: the run strategy is `Halted` (or, with `Manual`, a
    /// stop request is queued), or the instance is going or gone.
    pub fn stop_took_effect(&self) -> bool {
        let manual = self.strategy() == "Manual";
        (!manual && self.strategy() == "Halted")
            || (manual && self.requested("Stop"))
            || self.vmi_deleting()
            || self.gone()
    }

    /// A forced stop (`gracePeriod: 0`) has reached the instance.
    pub fn force_took_effect(&self) -> bool {
        self.gone()
            || self
                .vmi
                .is_some_and(|v| v["spec"]["terminationGracePeriodSeconds"].as_u64() == Some(0))
    }

    /// KubeVirt has taken a `start`: the run strategy lets it run (or, with `Manual`, a
    /// start request is queued), or an instance exists.
    pub fn start_took_effect(&self) -> bool {
        let strategy = self.strategy();
        (strategy != "Halted" && strategy != "Manual")
            || self.requested("Start")
            || (self.vmi.is_some() && !self.vmi_deleting())
    }
}
