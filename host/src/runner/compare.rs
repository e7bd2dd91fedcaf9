//! Subset matching of an expected outcome against the actual one, and a readable diff.

use serde_json::Value;
use similar::TextDiff;

/// True when every key and value of `expected` is in `actual`: maps by key, recursively;
/// lists element by element with the same length; numbers by value. An expected `null`
/// or `[]` also matches a missing key.
pub fn matches_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(key, ev)| match a.get(key) {
            Some(av) => matches_subset(ev, av),
            None => is_empty(ev),
        }),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches_subset(ev, av))
        }
        (Value::Number(e), Value::Number(a)) => {
            e == a || matches!((e.as_f64(), a.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (e, a) => e == a,
    }
}

/// A unified diff of `expected` against `actual` cut down to the keys `expected` gives,
/// both as YAML; empty when they match.
pub fn subset_diff(expected: &Value, actual: &Value) -> String {
    if matches_subset(expected, actual) {
        return String::new();
    }
    let expected_yaml = to_yaml(expected);
    let actual_yaml = to_yaml(&project(expected, actual));
    TextDiff::from_lines(&expected_yaml, &actual_yaml)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// `actual` with only the keys `expected` has (list elements beyond `expected`'s are
/// kept whole), so the diff shows only what the case checks.
fn project(expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => Value::Object(
            e.iter()
                .filter_map(|(key, ev)| match a.get(key) {
                    Some(av) => Some((key.clone(), project(ev, av))),
                    // A missing key that matches stays out of the diff.
                    None if is_empty(ev) => Some((key.clone(), ev.clone())),
                    None => None,
                })
                .collect(),
        ),
        (Value::Array(e), Value::Array(a)) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, av)| e.get(i).map_or_else(|| av.clone(), |ev| project(ev, av)))
                .collect(),
        ),
        (Value::Number(_), Value::Number(_)) if matches_subset(expected, actual) => {
            expected.clone()
        }
        _ => actual.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// YAML for people; a value that cannot be printed (none here) shows as JSON.
pub(crate) fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|_| format!("{value:#}\n"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_subset_matches_and_extra_keys_are_ignored() {
        let actual = json!({"status": {"volumes": [{"name": "root", "bound": false, "phase": "Pending"}]},
                            "requeueAfterMs": 5000});
        assert!(matches_subset(
            &json!({"status": {"volumes": [{"name": "root"}]}}),
            &actual
        ));
        assert!(matches_subset(
            &json!({"requeueAfterMs": 5000.0, "apply": [], "events": null}),
            &actual
        ));
        assert!(
            !matches_subset(&json!({"status": {"volumes": []}}), &actual),
            "list lengths differ"
        );
        assert!(
            !matches_subset(&json!({"apply": [{}]}), &actual),
            "a missing key is not a list"
        );
        assert!(!matches_subset(
            &json!({"status": {"volumes": [{"bound": true}]}}),
            &actual
        ));
    }

    #[test]
    fn the_diff_shows_only_the_checked_keys() {
        let actual =
            json!({"status": {"volumes": [{"name": "root", "bound": false, "phase": "Pending"}]}});
        let expected = json!({"status": {"volumes": [{"name": "root", "bound": true}]}});
        let diff = subset_diff(&expected, &actual);
        assert!(
            diff.contains("-  - bound: true") && diff.contains("+  - bound: false"),
            "{diff}"
        );
        assert!(!diff.contains("phase"), "unchecked keys stay out: {diff}");
        assert_eq!(subset_diff(&actual, &actual), "");
    }
}
