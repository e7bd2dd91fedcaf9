//! Which `spec.runStrategy` the VM is applied with. KubeVirt's start and stop change the
//! VM's run strategy themselves (stop sets `Halted`), so re-applying the Wukong's value on
//! every call would undo them. The value last applied from the spec is kept in an
//! annotation on the VM; the spec wins only when it differs from that (the user changed
//! it) or the VM is new, otherwise the VM's live value stands.

use serde_json::Value;

/// Annotation on the VM: the Wukong's `spec.runStrategy` the VM was last applied with.
pub const APPLIED_ANNOTATION: &str = "vm.novasphere.dev/applied-run-strategy";

/// The run strategy to apply: `spec` when the VM is new or the spec changed since it was
/// last applied, else the VM's live value.
pub fn effective(spec: &str, vm: Option<&Value>) -> String {
    let Some(vm) = vm else {
        return spec.to_owned();
    };
    let applied = vm["metadata"]["annotations"][APPLIED_ANNOTATION].as_str();
    let live = vm["spec"]["runStrategy"].as_str();
    match (applied, live) {
        (Some(applied), Some(live)) if applied == spec => live.to_owned(),
        _ => spec.to_owned(),
    }
}

/// The VM's live run strategy (`spec.running: true` reads as `Always`).
pub fn live(vm: &Value) -> &str {
    match (
        vm["spec"]["runStrategy"].as_str(),
        vm["spec"]["running"].as_bool(),
    ) {
        (Some(strategy), _) => strategy,
        (None, Some(true)) => "Always",
        (None, _) => "Halted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(applied: Option<&str>, live: &str) -> Value {
        let mut vm = json!({"metadata": {}, "spec": {"runStrategy": live}});
        if let Some(applied) = applied {
            vm["metadata"]["annotations"] = json!({APPLIED_ANNOTATION: applied});
        }
        vm
    }

    #[test]
    fn a_new_vm_gets_the_spec_value() {
        assert_eq!(effective("Always", None), "Always");
    }

    #[test]
    fn an_action_s_change_stands_while_the_spec_is_unchanged() {
        assert_eq!(
            effective("Always", Some(&vm(Some("Always"), "Halted"))),
            "Halted"
        );
    }

    #[test]
    fn a_changed_spec_wins_and_a_vm_without_annotation_takes_the_spec() {
        assert_eq!(
            effective("Halted", Some(&vm(Some("Always"), "Always"))),
            "Halted"
        );
        assert_eq!(effective("Always", Some(&vm(None, "Halted"))), "Always");
    }

    #[test]
    fn live_reads_the_deprecated_running_field() {
        assert_eq!(live(&json!({"spec": {"running": true}})), "Always");
        assert_eq!(live(&json!({"spec": {}})), "Halted");
    }
}
