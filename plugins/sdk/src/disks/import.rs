//! What a CDI DataVolume's status says about its import, as CDI really reports it
//! (`pkg/controller/datavolume/`): a failing importer is retried (the phase stays
//! `ImportInProgress`, `status.restartCount` rises, the `Running` condition is `False`
//! with the error) rather than turning `Failed`; a `WaitForFirstConsumer` class with no
//! consumer yet gives `PendingPopulation`; `progress` is a percentage with two decimals
//! (`45.20%`), or `N/A`.

use serde_json::Value;

/// The importer's error, when CDI reports one: `Running=False` with an error reason, or
/// any `Running=False` once the importer has restarted.
fn failing(dv: &Value, restarts: u64) -> Option<String> {
    let running = dv["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Running" && c["status"] == "False")?;
    let text = |key: &str| running[key].as_str().filter(|t| !t.is_empty());
    let reason = text("reason");
    // Not running because it has not started or has finished: not an error.
    let error_reason = !matches!(reason, None | Some("Pending" | "Completed" | "Succeeded"));
    if restarts == 0 && !error_reason {
        return None;
    }
    Some(
        text("message")
            .or(reason)
            .unwrap_or("the importer stopped")
            .to_owned(),
    )
}

/// `status.progress` while it says something: `45.20%`, not `N/A` or empty.
pub fn progress(dv: &Value) -> Option<&str> {
    dv["status"]["progress"]
        .as_str()
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "N/A" && p.trim_end_matches('%').parse::<f64>().is_ok())
}

/// What the DataVolume `claim` says while it is not done; `None` when it has nothing to
/// say yet (no status, `Pending`, `PVCBound`) and its PVC speaks instead.
///
/// NB: with CDI's populators the target PVC stays `Pending` until the import ends, so an
/// importing DataVolume is judged by its own status, never by its PVC's phase.
pub fn describe(dv: &Value, claim: &str) -> Option<String> {
    let phase = dv["status"]["phase"].as_str().unwrap_or_default();
    let restarts = dv["status"]["restartCount"].as_u64().unwrap_or(0);
    if phase == "Failed" {
        let reason = failing(dv, 1).unwrap_or_else(|| "import failed".to_owned());
        return Some(format!("DataVolume {claim} failed: {reason}"));
    }
    if matches!(phase, "PendingPopulation" | "WaitForFirstConsumer") {
        return Some(
            "waiting for a consumer: its StorageClass binds on first use, so the import \
             starts once the VM's pod is scheduled"
                .to_owned(),
        );
    }
    if let Some(error) = failing(dv, restarts) {
        return Some(match restarts {
            0 => format!("import failing: {error}"),
            n => format!("import failing, retry {n}: {error}"),
        });
    }
    if let Some(progress) = progress(dv) {
        return Some(format!("importing: {progress}"));
    }
    match phase {
        "" | "Pending" | "PVCBound" | "Unknown" => None,
        "ImportScheduled" => Some("import scheduled".to_owned()),
        "ImportInProgress" => Some("importing".to_owned()),
        other => Some(format!("DataVolume {claim} is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dv(status: &Value) -> Value {
        json!({"status": status})
    }

    #[test]
    fn a_retried_import_says_so_with_the_error_and_the_retry() {
        let failing = dv(
            &json!({"phase": "ImportInProgress", "restartCount": 3, "progress": "N/A",
            "conditions": [{"type": "Running", "status": "False", "reason": "Error",
                "message": "Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found"}]}),
        );
        assert_eq!(
            describe(&failing, "c").as_deref(),
            Some(
                "import failing, retry 3: Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found"
            )
        );
        // Before the first restart, an error reason is enough.
        let first = dv(&json!({"phase": "ImportInProgress",
            "conditions": [{"type": "Running", "status": "False", "reason": "ImagePullFailed", "message": ""}]}));
        assert_eq!(
            describe(&first, "c").as_deref(),
            Some("import failing: ImagePullFailed")
        );
        // Running again after a restart: progress, not an error.
        let recovered = dv(
            &json!({"phase": "ImportInProgress", "restartCount": 1, "progress": "45.20%",
            "conditions": [{"type": "Running", "status": "True", "reason": "Pod is running"}]}),
        );
        assert_eq!(
            describe(&recovered, "c").as_deref(),
            Some("importing: 45.20%")
        );
    }

    #[test]
    fn pending_population_waits_for_a_consumer_and_progress_is_read() {
        let waiting = dv(&json!({"phase": "PendingPopulation", "progress": "N/A"}));
        assert!(describe(&waiting, "c").is_some_and(|m| m.starts_with("waiting for a consumer")),);
        assert_eq!(
            progress(&dv(&json!({"progress": "45.20%"}))),
            Some("45.20%")
        );
        assert_eq!(progress(&dv(&json!({"progress": "N/A"}))), None);
        assert_eq!(progress(&dv(&json!({"progress": "soon"}))), None);
        // Not running because not started or done: no error.
        let scheduled = dv(&json!({"phase": "ImportScheduled",
            "conditions": [{"type": "Running", "status": "False", "reason": "Pending"}]}));
        assert_eq!(
            describe(&scheduled, "c").as_deref(),
            Some("import scheduled")
        );
        assert_eq!(describe(&dv(&json!({"phase": "Pending"})), "c"), None);
        let failed = dv(&json!({"phase": "Failed",
            "conditions": [{"type": "Running", "status": "False", "reason": "Error", "message": "fatal: bad image"}]}));
        assert_eq!(
            describe(&failed, "c").as_deref(),
            Some("DataVolume c failed: fatal: bad image")
        );
    }
}
