//! The plugin's memory between calls: the action record and history it reported last time,
//! read back from the Wukong's `status.lifecycleState` (the host wrote it), and the time
//! arithmetic on the call's `now`.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use wukong_plugin_sdk::ActionRecord;

/// How many finished actions the history keeps.
pub const HISTORY_LEN: usize = 10;

/// `InProgress`, the outcome of an action not finished.
pub const IN_PROGRESS: &str = "InProgress";

/// What the last call reported: the action in progress (if any) and the history.
#[derive(Debug, Default)]
pub struct Previous {
    pub current: Option<ActionRecord>,
    pub history: Vec<ActionRecord>,
}

/// Reads `status.lifecycleState` (camelCase, as the host writes it) from the Wukong.
pub fn previous(wukong: &Value) -> Previous {
    let state = &wukong["status"]["lifecycleState"];
    let history = state["history"]
        .as_array()
        .map(|list| list.iter().filter_map(parse).collect())
        .unwrap_or_default();
    Previous {
        current: parse(&state["currentAction"]),
        history,
    }
}

fn parse(value: &Value) -> Option<ActionRecord> {
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    let request_id = value["requestId"].as_str()?;
    Some(ActionRecord {
        action: text("action"),
        request_id: request_id.to_owned(),
        started_at: text("startedAt"),
        finished_at: value["finishedAt"].as_str().map(str::to_owned),
        outcome: text("outcome"),
        message: text("message"),
        stage: text("stage"),
    })
}

/// Puts a finished record first in the history, keeping [`HISTORY_LEN`].
pub fn push(history: &mut Vec<ActionRecord>, record: ActionRecord) {
    history.retain(|r| r.request_id != record.request_id || r.started_at != record.started_at);
    history.insert(0, record);
    history.truncate(HISTORY_LEN);
}

/// Milliseconds from `from` to `to` (RFC 3339); `None` when either does not parse.
pub fn millis_between(from: &str, to: &str) -> Option<i64> {
    let from: Timestamp = from.parse().ok()?;
    let to: Timestamp = to.parse().ok()?;
    Some(to.as_millisecond() - from.as_millisecond())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_back_what_the_host_wrote() {
        let wukong = json!({"status": {"lifecycleState": {
            "currentAction": {"action": "restart", "requestId": "r1", "startedAt": "2026-01-01T00:00:00Z",
                "outcome": "InProgress", "stage": "stop-issued"},
            "history": [{"action": "stop", "requestId": "r0", "startedAt": "2025-12-31T00:00:00Z",
                "finishedAt": "2025-12-31T00:00:05Z", "outcome": "Succeeded"}]}}});
        let previous = previous(&wukong);
        let current = previous.current.unwrap();
        assert_eq!(
            (current.request_id.as_str(), current.stage.as_str()),
            ("r1", "stop-issued")
        );
        assert_eq!(
            previous.history[0].finished_at.as_deref(),
            Some("2025-12-31T00:00:05Z")
        );
        assert!(super::previous(&json!({})).current.is_none());
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut history = Vec::new();
        for i in 0..12 {
            let record = ActionRecord {
                action: "stop".into(),
                request_id: format!("r{i}"),
                started_at: String::new(),
                finished_at: None,
                outcome: "Succeeded".into(),
                message: String::new(),
                stage: String::new(),
            };
            push(&mut history, record);
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].request_id, "r11");
    }

    #[test]
    fn time_arithmetic() {
        assert_eq!(
            millis_between("2026-01-01T00:00:00Z", "2026-01-01T00:00:02.5Z"),
            Some(2500)
        );
        assert_eq!(millis_between("soon", "2026-01-01T00:00:00Z"), None);
    }
}
