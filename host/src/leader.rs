//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles and a standby takes over when it dies.
//!
//! # Expected flow
//! [`Elector::acquire`] polls the Lease every retry period until this process holds it;
//! the caller then runs the controller while [`Elector::hold`] renews the Lease; `hold`
//! returns only when leadership is lost, and the caller must then stop at once (`wukong
//! run` exits non-zero and lets Kubernetes restart it). On a clean shutdown the caller
//! calls [`Elector::release`], so a standby takes over without waiting for the Lease to
//! expire.
//!
//! # Guarantees
//! - Every write is a `replace` carrying the `resourceVersion` that was read: of two
//!   replicas racing for the Lease, the apiserver lets exactly one win (the other gets
//!   409 Conflict and stays a standby). Only `get`, `create` and `update` are used.
//! - A standby takes an expired Lease only after it has seen the Lease unchanged for
//!   `leaseDurationSeconds` of its *own* monotonic clock (as client-go does): no clocks
//!   of different machines are compared.
//! - A leader that cannot renew within `renew_deadline` (shorter than the lease
//!   duration) gives up leadership, so it has stopped before a standby may take over.
//!
//! # Assumptions
//! - Identities are unique per process (the pod name; hostname and pid locally).
//! - The clocks of the machines *run* at about the same rate (the gap between the renew
//!   deadline and the lease duration absorbs the difference), not that they agree.
//!
//! # Caveats
//! - A write the old leader sent just before it stopped may still land after a standby
//!   took over; the controller's one-shot actions are recorded before they are executed,
//!   which is what keeps them exactly once across such a handover (as across a crash).
//!
//! # Errors
//! API errors while acquiring are logged and retried; while holding, they count against
//! the renew deadline.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// Settings of one election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// Who this process is, written as the holder.
    pub identity: String,
    /// How long a standby waits, after the Lease last changed, before it takes it over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// The one check before use: the timings must nest, or a standby could take over
    /// while the old leader still believes it leads.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::Settings(reason));
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return invalid("the lease name, namespace and identity must not be empty".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid(format!(
                "lease duration {:?} is under the Lease's 1 s resolution",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return invalid(format!(
                "retry period {:?} must be above zero and shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// `leaseDurationSeconds`, rounded up so a standby never waits less than configured.
    fn duration_seconds(&self) -> i32 {
        let seconds =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(seconds).unwrap_or(i32::MAX)
    }
}

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Settings(String),
    #[error("lease {lease}: {source}")]
    Kube { lease: String, source: kube::Error },
    #[error("lost the lease {lease}: {reason}")]
    Lost { lease: String, reason: String },
}

/// The Lease as last seen, and when (on this process's clock) it last changed.
struct Observed {
    spec: LeaseSpec,
    changed_at: Instant,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This process holds the Lease.
    Held,
    /// Another holder has it (`None`: we lost a race for it just now).
    HeldBy(Option<String>),
}

/// Competes for one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
    /// When the last successful write of ours was *sent* (conservative: the Lease runs
    /// from at least then).
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Result<Self, Error> {
        settings.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
            renewed_at: None,
        })
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    fn kube_error(&self, source: kube::Error) -> Error {
        Error::Kube {
            lease: self.lease_name(),
            source,
        }
    }

    /// Returns once this process holds the Lease.
    pub async fn acquire(&mut self) -> Result<(), Error> {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.settings.identity, "acquired the lease; leading");
                    return Ok(());
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if holder.is_some() && holder != last_holder {
                        tracing::info!(lease = %self.lease_name(), holder = ?holder, "another replica leads; standing by");
                        last_holder = holder;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot acquire the lease yet"),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns why leadership was lost.
    pub async fn hold(&mut self) -> Error {
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let deadline = self
                .renewed_at
                .map_or(Instant::now(), |at| at + self.settings.renew_deadline);
            let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
                return self.lost(format!(
                    "not renewed within the renew deadline of {:?}",
                    self.settings.renew_deadline
                ));
            };
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held)) => {}
                Ok(Ok(Attempt::HeldBy(Some(holder)))) => {
                    return self.lost(format!("now held by {holder}"));
                }
                // A conflicting write (perhaps only to the Lease's metadata): read again;
                // the renew deadline still bounds how long this may go on.
                Ok(Ok(Attempt::HeldBy(None))) => {
                    tracing::warn!("the lease changed while renewing it; retrying");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                Err(_) => {
                    return self.lost(format!(
                        "not renewed within the renew deadline of {:?}",
                        self.settings.renew_deadline
                    ));
                }
            }
        }
    }

    fn lost(&self, reason: String) -> Error {
        Error::Lost {
            lease: self.lease_name(),
            reason,
        }
    }

    /// Gives the Lease up if this process still holds it, so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.kube_error(e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        // As client-go: no holder, a 1 s duration, so no standby waits on a stale record.
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.lease_name(), "released the lease");
                self.renewed_at = None;
                Ok(())
            }
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.kube_error(e)),
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`: read, decide, write with the
    /// `resourceVersion` read.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, Error> {
        let sent_at = Instant::now();
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let identity = self.settings.identity.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.kube_error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(self.settings.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.won(created, sent_at)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy(None)),
                Err(e) => Err(self.kube_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let observed_now = Instant::now();
        if self.observed.as_ref().is_none_or(|o| o.spec != spec) {
            self.observed = Some(Observed {
                spec: spec.clone(),
                changed_at: observed_now,
            });
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(identity.as_str());
        if let Some(other) = holder.as_ref().filter(|_| !ours) {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            let changed_at = self
                .observed
                .as_ref()
                .map_or(observed_now, |o| o.changed_at);
            if observed_now.duration_since(changed_at) < duration {
                return Ok(Attempt::HeldBy(Some(other.clone())));
            }
            tracing::info!(lease = %self.lease_name(), holder = %other, "the lease expired; taking it over");
        }
        let mut next = spec.clone();
        if !ours {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        next.holder_identity = Some(identity);
        next.lease_duration_seconds = Some(self.settings.duration_seconds());
        next.renew_time = Some(now);
        lease.spec = Some(next);
        // NB: `replace` sends metadata.resourceVersion as read: a write by anyone since
        // makes this one fail with 409 instead of overwriting it.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(self.won(written, sent_at)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy(None)),
            Err(e) => Err(self.kube_error(e)),
        }
    }

    fn won(&mut self, written: Lease, sent_at: Instant) -> Attempt {
        self.observed = Some(Observed {
            spec: written.spec.unwrap_or_default(),
            changed_at: sent_at,
        });
        self.renewed_at = Some(sent_at);
        Attempt::Held
    }
}

/// This process's identity: `POD_NAME` in a cluster, else `hostname-pid`.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let host = hostname::get()
                .map_or_else(|_| "wukong".into(), |h| h.to_string_lossy().into_owned());
            format!("{host}-{}", std::process::id())
        })
}

/// Where the Lease lives when not given: `POD_NAMESPACE`, else the service account's
/// namespace, else `default`.
pub fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, deadline: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            name: "wukong-operator".into(),
            namespace: "default".into(),
            identity: "a".into(),
            lease_duration: Duration::from_millis(duration),
            renew_deadline: Duration::from_millis(deadline),
            retry_period: Duration::from_millis(retry),
        }
    }

    #[test]
    fn timings_must_nest() {
        assert!(settings(15_000, 10_000, 2_000).validate().is_ok());
        assert!(settings(4_000, 3_000, 500).validate().is_ok());
        for (d, r, p) in [
            (10_000, 10_000, 2_000),
            (10_000, 5_000, 5_000),
            (500, 400, 100),
            (4_000, 3_000, 0),
        ] {
            assert!(settings(d, r, p).validate().is_err(), "{d} {r} {p}");
        }
    }

    #[test]
    fn duration_rounds_up_to_whole_seconds() {
        assert_eq!(settings(4_000, 3_000, 500).duration_seconds(), 4);
        assert_eq!(settings(4_200, 3_000, 500).duration_seconds(), 5);
    }
}
