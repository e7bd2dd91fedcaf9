//! The one-shot requests the verbs write: each sets `spec.lifecycleAction` or
//! `spec.migration` with a new `requestId`, and nothing else of the spec.

use serde_json::{Value, json};

/// What a verb asks of the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop {
        force: bool,
        grace_period: Option<u32>,
    },
    Restart {
        force: bool,
        grace_period: Option<u32>,
    },
    Pause,
    Unpause,
    SoftReboot,
    Migrate {
        to: Option<String>,
        allow_post_copy: bool,
        allow_auto_converge: bool,
    },
    MigrateCancel,
}

impl Verb {
    /// The verb as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop { .. } => "stop",
            Self::Restart { .. } => "restart",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
            Self::SoftReboot => "soft-reboot",
            Self::Migrate { .. } => "migrate",
            Self::MigrateCancel => "migrate-cancel",
        }
    }
}

/// What `--wait` follows until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The lifecycle request with this id, in `status.lifecycleState`.
    Action(String),
    /// The migration with this id in `status.migrationStatus`; `None`: the running one,
    /// being aborted.
    Migration { request_id: Option<String> },
}

pub struct Request {
    /// A merge patch of the Wukong.
    pub patch: Value,
    pub followed: Followed,
}

/// The request for `verb`, identified by `request_id`.
pub fn build(verb: &Verb, request_id: &str) -> Request {
    let action = |name: &str, force: bool, grace: Option<u32>| {
        let mut spec = json!({"action": name, "force": force, "requestId": request_id});
        if let Some(grace) = grace {
            spec["gracePeriodSeconds"] = grace.into();
        }
        Request {
            patch: json!({"spec": {"lifecycleAction": spec}}),
            followed: Followed::Action(request_id.to_owned()),
        }
    };
    match verb {
        Verb::Start => action("start", false, None),
        Verb::Stop {
            force,
            grace_period,
        } => action("stop", *force, *grace_period),
        Verb::Restart {
            force,
            grace_period,
        } => action("restart", *force, *grace_period),
        Verb::Pause => action("suspend", false, None),
        Verb::Unpause => action("resume", false, None),
        Verb::SoftReboot => action("softReboot", false, None),
        Verb::Migrate {
            to,
            allow_post_copy,
            allow_auto_converge,
        } => Request {
            patch: json!({"spec": {"migration": {"targetNode": to, "allowPostCopy": allow_post_copy,
                "allowAutoConverge": allow_auto_converge, "abort": false, "requestId": request_id}}}),
            followed: Followed::Migration {
                request_id: Some(request_id.to_owned()),
            },
        },
        // An abort keeps the running request's id: it is that request that stops.
        Verb::MigrateCancel => Request {
            patch: json!({"spec": {"migration": {"abort": true}}}),
            followed: Followed::Migration { request_id: None },
        },
    }
}

/// The apiserver's refusal of the write, in a user's words.
pub fn explain(error: kube::Error, namespace: &str, name: &str) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.code == 404 => {
            anyhow::anyhow!("wukong {name:?} not found in namespace {namespace:?}")
        }
        kube::Error::Api(status) if status.code == 403 => anyhow::anyhow!(
            "not allowed to update wukong {namespace}/{name}: {}",
            status.message
        ),
        _ => anyhow::Error::new(error).context(format!("updating wukong {namespace}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_and_unpause_are_the_operator_s_suspend_and_resume() {
        let pause = build(&Verb::Pause, "r1");
        assert_eq!(pause.patch["spec"]["lifecycleAction"]["action"], "suspend");
        assert_eq!(pause.followed, Followed::Action("r1".into()));
        let unpause = build(&Verb::Unpause, "r2");
        assert_eq!(unpause.patch["spec"]["lifecycleAction"]["action"], "resume");
    }

    #[test]
    fn a_stop_carries_its_grace_only_when_given() {
        let stop = build(
            &Verb::Stop {
                force: false,
                grace_period: None,
            },
            "r",
        );
        assert!(
            stop.patch["spec"]["lifecycleAction"]
                .get("gracePeriodSeconds")
                .is_none()
        );
        let stop = build(
            &Verb::Stop {
                force: true,
                grace_period: Some(5),
            },
            "r",
        );
        assert_eq!(
            stop.patch["spec"]["lifecycleAction"]["gracePeriodSeconds"],
            5
        );
        assert_eq!(stop.patch["spec"]["lifecycleAction"]["force"], true);
    }

    #[test]
    fn a_cancel_follows_the_running_migration_and_writes_no_id() {
        let cancel = build(&Verb::MigrateCancel, "r");
        assert_eq!(cancel.followed, Followed::Migration { request_id: None });
        assert!(cancel.patch["spec"]["migration"].get("requestId").is_none());
    }
}
