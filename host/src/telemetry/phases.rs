//! `wukong_wukongs{phase}`: Wukongs by `status.phase`, counted at scrape time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::api::WukongPhase;

const PHASES: [WukongPhase; 11] = [
    WukongPhase::Pending,
    WukongPhase::Provisioning,
    WukongPhase::Starting,
    WukongPhase::Running,
    WukongPhase::Stopping,
    WukongPhase::Stopped,
    WukongPhase::Restarting,
    WukongPhase::Suspended,
    WukongPhase::Migrating,
    WukongPhase::Failed,
    WukongPhase::Terminating,
];

/// `wukong_wukongs{phase}`: each Wukong's phase as its last reconcile read it (the
/// reconcile reads every Wukong afresh, and each status write brings another), counted when
/// scraped; a deleted Wukong is forgotten. `None` until the controller runs (a standby).
#[derive(Clone, Default)]
pub(super) struct PhaseCollector {
    pub(super) phases: Arc<Mutex<Option<PhaseByUid>>>,
}

/// Each Wukong's phase (`None`: none yet), by uid.
pub(super) type PhaseByUid = HashMap<String, Option<WukongPhase>>;

impl std::fmt::Debug for PhaseCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseCollector")
    }
}

impl PhaseCollector {
    fn counts(&self) -> Option<Vec<(String, i64)>> {
        let phases = self.phases.lock().ok()?;
        let phases = phases.as_ref()?;
        let mut counts: Vec<(String, i64)> = PHASES.iter().map(|p| (format!("{p:?}"), 0)).collect();
        counts.push(("Unknown".into(), 0));
        for phase in phases.values() {
            let phase = phase.map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
            if let Some(entry) = counts.iter_mut().find(|(name, _)| *name == phase) {
                entry.1 += 1;
            }
        }
        Some(counts)
    }
}

impl Collector for PhaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A standby has no cache: it reports nothing rather than zeros.
        let Some(counts) = self.counts() else {
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "wukongs",
            "Wukongs by status phase (Unknown: no phase yet), as the leader sees them",
            None,
            MetricType::Gauge,
        )?;
        for (phase, count) in counts {
            let labels = [("phase", phase)];
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
