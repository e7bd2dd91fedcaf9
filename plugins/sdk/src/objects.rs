//! Helpers to build outcomes: objects as JSON, conditions, events, defaults.

use serde::Serialize;

use crate::{Condition, Effects, Event, StepError};

impl Default for Effects {
    fn default() -> Self {
        Self {
            apply: Vec::new(),
            delete: Vec::new(),
            actions: Vec::new(),
            conditions: Vec::new(),
            events: Vec::new(),
            requeue_after_ms: None,
        }
    }
}

impl Effects {
    /// Adds an object to apply. `object` must carry `apiVersion` and `kind`: use
    /// [`with_type`] for k8s-openapi types, which leave them out.
    pub fn apply(&mut self, object: &impl Serialize) -> Result<(), StepError> {
        let json = serde_json::to_string(object)
            .map_err(|e| StepError::Internal(format!("serializing an object: {e}")))?;
        self.apply.push(json);
        Ok(())
    }

    /// Sets a condition.
    pub fn condition(
        &mut self,
        condition_type: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.conditions.push(Condition {
            condition_type: condition_type.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
        });
    }

    /// Records a `Normal` event.
    pub fn event(&mut self, reason: &str, message: impl Into<String>) {
        self.events.push(Event {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        });
    }

    /// Records a `Warning` event.
    pub fn warning(&mut self, reason: &str, message: impl Into<String>) {
        self.events.push(Event {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        });
    }

    /// Asks to be called again after `ms` milliseconds (the smallest request wins).
    pub fn requeue_after(&mut self, ms: u64) {
        self.requeue_after_ms = Some(self.requeue_after_ms.map_or(ms, |current| current.min(ms)));
    }
}

/// A k8s-openapi object as JSON with its `apiVersion` and `kind` filled in.
pub fn with_type<K: k8s_openapi::Resource + Serialize>(
    object: &K,
) -> Result<serde_json::Value, StepError> {
    let mut value = serde_json::to_value(object)
        .map_err(|e| StepError::Internal(format!("serializing {}: {e}", K::KIND)))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    Ok(value)
}

/// The value of a condition in a Kubernetes object's `status.conditions`.
pub fn condition_status<'a>(
    object: &'a serde_json::Value,
    condition_type: &str,
) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition_type)?["status"]
        .as_str()
}
