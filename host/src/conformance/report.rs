//! The conformance report: one line per check, the reason under each failure, then
//! `N passed, N failed`.

use std::fmt;

use crate::plugin::types::StepKind;

/// How one check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What every plugin of the kind must do, e.g. `one volume per disk`.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// How a plugin did against the suite of its step kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `name@version` of the plugin.
    pub plugin: String,
    /// The kind read from the component, which chose the suite.
    pub step: StepKind,
    /// In the order run.
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// True when every check passed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The names of the checks that failed.
    pub fn failures(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A heading, one `ok KIND: CHECK` or `FAILED KIND: CHECK` line per check with each
/// failure's reason indented below it, then the summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of {} ({} plugin)", self.plugin, self.step)?;
        for check in &self.checks {
            match &check.failure {
                None => writeln!(f, "ok {}: {}", self.step, check.name)?,
                Some(failure) => {
                    writeln!(f, "FAILED {}: {}", self.step, check.name)?;
                    for line in failure.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        write!(f, "{}", self.summary())
    }
}
