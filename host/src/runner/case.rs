//! Case files (see the format in [`crate::runner`]): loading, running one, running a
//! directory, and the report plugin authors assert on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::compare::{subset_diff, to_yaml};
use super::{FixtureCluster, Input, RunnerError, outcome_to_value};
use crate::plugin::{Phase, Plugin};

/// One case: the inputs of a call and what it must give.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The file's stem; set by [`Case::load`].
    #[serde(skip)]
    pub name: String,
    /// One line saying what the case proves.
    #[serde(default)]
    pub description: String,
    #[serde(default = "reconcile")]
    pub phase: Phase,
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The call's time (RFC 3339); `DEFAULT_NOW` when absent.
    #[serde(default = "default_now")]
    pub now: String,
    #[serde(default = "empty_map")]
    pub config: Value,
    /// A Wukong manifest as users write it.
    pub wukong: Value,
    #[serde(default)]
    pub upstream: Option<Value>,
    /// Fixture objects answering the plugin's reads.
    #[serde(default)]
    pub cluster: Vec<Value>,
    pub expect: Expect,
}

/// What a case expects: exactly one of these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawExpect")]
pub enum Expect {
    /// An outcome, matched as a subset of the actual one.
    Outcome(Value),
    /// A failure whose message contains this.
    Error(String),
}

/// `expect` as written: a map with one key. NB: serde_yaml 0.9 reads enums from YAML
/// tags (`!outcome`), not from maps, hence this detour.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    outcome: Option<Value>,
    error: Option<String>,
}

impl TryFrom<RawExpect> for Expect {
    type Error = &'static str;

    fn try_from(raw: RawExpect) -> Result<Self, &'static str> {
        match (raw.outcome, raw.error) {
            (Some(outcome), None) => Ok(Self::Outcome(outcome)),
            (None, Some(error)) => Ok(Self::Error(error)),
            _ => Err("expect needs exactly one of `outcome` and `error`"),
        }
    }
}

fn reconcile() -> Phase {
    Phase::Reconcile
}

fn default_now() -> String {
    super::input::DEFAULT_NOW.into()
}

fn default_backend() -> String {
    "default".into()
}

fn empty_map() -> Value {
    Value::Object(serde_json::Map::new())
}

impl Case {
    /// Reads a case file; the file's stem names the case.
    pub fn load(path: &Path) -> Result<Self, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(RunnerError::io(path))?;
        let mut case: Self = serde_yaml::from_str(&text).map_err(|e| RunnerError::Parse {
            origin: path.display().to_string(),
            reason: e.to_string(),
        })?;
        case.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(case)
    }

    /// The call this case makes.
    pub fn input(&self) -> Input {
        Input {
            phase: self.phase,
            backend: self.backend.clone(),
            now: self.now.clone(),
            // `config:` left empty in YAML is null: the same as no config.
            config: if self.config.is_null() {
                empty_map()
            } else {
                self.config.clone()
            },
            wukong: self.wukong.clone(),
            upstream: self.upstream.clone(),
        }
    }
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    pub name: String,
    pub description: String,
    /// Why it failed, with a diff where there is one; `None` when it passed.
    pub failure: Option<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// How a set of cases went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// In the order run.
    pub cases: Vec<CaseReport>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// True when every case passed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// The report of the case called `name`.
    pub fn case(&self, name: &str) -> Option<&CaseReport> {
        self.cases.iter().find(|c| c.name == name)
    }
}

/// One `ok NAME` or `FAILED NAME` line per case, each failure's reason indented below
/// it, then the summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            match &case.failure {
                None => writeln!(f, "ok {}", case.name)?,
                Some(failure) => {
                    writeln!(f, "FAILED {}", case.name)?;
                    if !case.description.is_empty() {
                        writeln!(f, "    ({})", case.description)?;
                    }
                    for line in failure.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        write!(f, "{}", self.summary())
    }
}

/// Runs one case against `plugin`, its reads answered by the case's fixtures.
pub fn run_case(plugin: &Plugin, case: &Case) -> CaseReport {
    let report = |failure| CaseReport {
        name: case.name.clone(),
        description: case.description.clone(),
        failure,
    };
    let cluster = match FixtureCluster::new(case.cluster.iter().cloned()) {
        Ok(cluster) => cluster,
        Err(e) => return report(Some(format!("invalid case: {e}"))),
    };
    let result = super::run(plugin, &case.input(), Arc::new(cluster));
    report(judge(&case.expect, result))
}

/// Loads and runs one case file; a file that does not load is a failed case.
pub fn run_case_file(plugin: &Plugin, path: &Path) -> CaseReport {
    match Case::load(path) {
        Ok(case) => run_case(plugin, &case),
        Err(e) => CaseReport {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            description: String::new(),
            failure: Some(format!("invalid case file: {e}")),
        },
    }
}

/// Runs every `DIR/*.yaml` case, in name order.
pub fn run_dir(plugin: &Plugin, dir: &Path) -> Result<Report, RunnerError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(RunnerError::io(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(RunnerError::io(dir))?;
    files.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    if files.is_empty() {
        return Err(RunnerError::NoCases(dir.to_owned()));
    }
    Ok(Report {
        cases: files.iter().map(|f| run_case_file(plugin, f)).collect(),
    })
}

/// `None` when the result is what the case expects, else why not.
fn judge(expect: &Expect, result: Result<crate::plugin::Outcome, RunnerError>) -> Option<String> {
    match (expect, result) {
        (Expect::Outcome(expected), Ok(outcome)) => {
            let diff = subset_diff(expected, &outcome_to_value(&outcome));
            (!diff.is_empty()).then(|| format!("outcome differs:\n{diff}"))
        }
        (Expect::Outcome(_), Err(error)) => {
            Some(format!("expected an outcome, the call failed: {error}"))
        }
        (Expect::Error(wanted), Err(error)) => {
            let message = error.to_string();
            (!message.contains(wanted.as_str()))
                .then(|| format!("expected an error containing {wanted:?}, got: {message}"))
        }
        (Expect::Error(wanted), Ok(outcome)) => Some(format!(
            "expected an error containing {wanted:?}, got an outcome:\n{}",
            to_yaml(&outcome_to_value(&outcome))
        )),
    }
}
