//! A storage plugin that breaks one rule of the sandbox per `mode`, so the host's tests can
//! prove each rule holds: runaway loops, memory, stack, panics, traps, capability
//! violations, oversized or malformed output, escapes to the host, host-call floods.
//! The storage modes (`well-behaved-storage` and one flaw each) serve the conformance kit.

mod storage;

use serde::Deserialize;
use wukong_plugin_sdk::marks::{BACKEND_ANNOTATION, OWNER_UID_ANNOTATION, WUKONG_LABEL};
use wukong_plugin_sdk::{
    Call, Effects, Manifest, ObjectRef, Plugin, StepError, StepResult, StorageOutcome,
    StoragePlugin,
};

/// Which misbehaviour to perform.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Behave: return an empty outcome.
    #[default]
    Noop,
    Loop,
    Alloc,
    Stack,
    Panic,
    Trap,
    UndeclaredKind,
    OtherNamespace,
    DeleteUnowned,
    HugeOutput,
    BadJson,
    UndeclaredRead,
    Escape,
    HostCallFlood,
    /// Applies a claim onto an existing object of the name `target` it did not make.
    ApplyForeign,
    /// Applies onto the first claim another Wukong of the namespace owns.
    ApplyOtherWukongs,
    /// Applies a StorageClass `target` carrying the host's ownership marks, made up.
    SpoofOwnerMark,
    /// Applies onto the cluster-scoped StorageClass `target`, which it did not make.
    RewriteForeignClass,
    /// Stops the VirtualMachine `target` (another Wukong's).
    StopOtherVm,
    /// Stops a VM whose name is a path: `target` plus `/../restart?x=`.
    PathInName,
    /// Migrates the VMI `target` (another Wukong's).
    MigrateOtherVmi,
    /// A storage step setting the lifecycle step's `Ready`.
    SetReady,
    /// A storage step setting the host's own `StepFailed`.
    SetStepFailed,
    /// Thousands of conditions.
    ManyConditions,
    /// Ten thousand log messages.
    LogFlood,
    /// Fails every finalize.
    FailsFinalize,
    /// Asks to be called again at once, every call.
    RequeueZero,
    /// Reports the same event 32 times in every call, and asks to be called again at once.
    EventFlood,
    /// Reads its claim `target`, writes it with the counter label it read plus one, then
    /// writes it again with the value it read: an undo decided on what is by then a stale
    /// read.
    UndoesFromStaleRead,
    /// A correct storage backend on PersistentVolumeClaims: passes the conformance kit.
    WellBehavedStorage,
    /// That backend with claim names that carry the time of the call.
    UnstableNames,
    /// That backend applying a smaller size to a claim.
    Shrinks,
    /// That backend deleting nothing on finalize.
    LeaksOnFinalize,
    /// That backend deleting retained disks' claims on finalize.
    DeletesRetained,
    /// That backend reporting every volume bound.
    AlwaysBound,
    /// That backend panicking on a size it cannot parse.
    PanicsOnOddSizes,
    /// That backend refusing image disks (it serves blank disks and existing claims).
    RefusesImages,
}

impl Mode {
    /// The storage flaw of a storage mode; `None` for the sandbox modes.
    fn storage_flaw(&self) -> Option<storage::Flaw> {
        use storage::Flaw;
        Some(match self {
            Self::WellBehavedStorage => Flaw::None,
            Self::UnstableNames => Flaw::UnstableNames,
            Self::Shrinks => Flaw::Shrinks,
            Self::LeaksOnFinalize => Flaw::LeaksOnFinalize,
            Self::DeletesRetained => Flaw::DeletesRetained,
            Self::AlwaysBound => Flaw::AlwaysBound,
            Self::PanicsOnOddSizes => Flaw::PanicsOnOddSizes,
            Self::RefusesImages => Flaw::RefusesImages,
            _ => return None,
        })
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    /// Bytes of output for `huge-output`.
    #[serde(default)]
    pub output_bytes: Option<usize>,
    /// The object the ownership modes aim at.
    #[serde(default)]
    pub target: Option<String>,
}

pub struct Hostile;

impl Plugin for Hostile {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("hostile", "0.1.0")
            .description("misbehaves on purpose; for the sandbox tests")
            .writes("v1", "PersistentVolumeClaim")
            .writes("storage.k8s.io/v1", "StorageClass")
            .writes("kubevirt.io/v1", "VirtualMachineInstanceMigration")
            .action("virtualmachines/stop")
    }
}

impl StoragePlugin for Hostile {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<StorageOutcome> {
        if let Some(flaw) = call.config.mode.storage_flaw() {
            return storage::reconcile(call, flaw);
        }
        let mut effects = Effects::default();
        match call.config.mode {
            Mode::Noop => {}
            Mode::Loop => spin_forever(),
            Mode::Alloc => allocate_forever(),
            Mode::Stack => {
                std::hint::black_box(recurse(1, std::hint::black_box(next)));
            }
            Mode::Panic => panic!("hostile plugin panics on purpose"),
            Mode::Trap => trap(),
            Mode::UndeclaredKind => {
                effects
                    .apply
                    .push(pvc_like("v1", "Secret", &call.wukong.namespace, "stolen"))
            }
            Mode::OtherNamespace => effects.apply.push(pvc_like(
                "v1",
                "PersistentVolumeClaim",
                "kube-system",
                "intruder",
            )),
            Mode::DeleteUnowned => effects.delete.push(call.object_ref(
                "v1",
                "PersistentVolumeClaim",
                "someone-elses-disk",
            )),
            Mode::HugeOutput => effects
                .apply
                .push("x".repeat(call.config.output_bytes.unwrap_or(16 << 20))),
            Mode::BadJson => effects
                .apply
                .push("{\"apiVersion\": \"v1\", \"kind\": ".into()),
            Mode::UndeclaredRead => {
                let secret = ObjectRef {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace: Some(call.wukong.namespace.clone()),
                    name: "db-password".into(),
                };
                call.cluster.get(&secret).map_err(StepError::Cluster)?;
            }
            Mode::Escape => effects.event("EscapeReport", escape_report()),
            Mode::ApplyForeign => effects.apply.push(claim(call, &target(call))),
            Mode::StopOtherVm => effects.actions.push(stop(&target(call))),
            Mode::SetReady => effects.condition("Ready", true, "Running", "trust me"),
            Mode::RequeueZero => effects.requeue_after(0),
            Mode::EventFlood => {
                for _ in 0..32 {
                    effects.warning("Flooding", "the same words, every call");
                }
                effects.requeue_after(0);
            }
            Mode::SetStepFailed => effects.condition("StepFailed", false, "AllFine", "nothing to see"),
            Mode::ManyConditions => {
                for i in 0..5_000 {
                    effects.condition(&format!("Noise{i}"), true, "Noise", "x".repeat(100));
                }
            }
            Mode::LogFlood => {
                for i in 0..10_000 {
                    wukong_plugin_sdk::log(wukong_plugin_sdk::Level::Info, &format!("flood {i}: {}", "x".repeat(100)));
                }
            }
            Mode::PathInName => effects
                .actions
                .push(stop(&format!("{}/../restart?x=", target(call)))),
            Mode::MigrateOtherVmi => effects.apply.push(
                serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                    "metadata": {"name": format!("{}-hijack", call.wukong.name), "namespace": call.wukong.namespace},
                    "spec": {"vmiName": target(call)}})
                .to_string(),
            ),
            Mode::ApplyOtherWukongs => {
                let claims: Vec<serde_json::Value> =
                    call.list_as("v1", "PersistentVolumeClaim", None, Some(WUKONG_LABEL))?;
                let other = claims
                    .iter()
                    .find(|c| c["metadata"]["labels"][WUKONG_LABEL] != call.wukong.name.as_str());
                if let Some(name) = other.as_ref().and_then(|c| c["metadata"]["name"].as_str()) {
                    effects.apply.push(claim(call, name));
                }
            }
            Mode::SpoofOwnerMark => effects.apply.push(
                serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": target(call), "annotations": {
                        OWNER_UID_ANNOTATION: call.wukong.uid,
                        BACKEND_ANNOTATION: "storage/hostile"}},
                    "provisioner": "hostile.example.com"})
                .to_string(),
            ),
            Mode::RewriteForeignClass => effects.apply.push(
                serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": target(call)}, "provisioner": "hostile.example.com",
                    "parameters": {"rewritten": "true"}})
                .to_string(),
            ),
            Mode::UndoesFromStaleRead => {
                let name = target(call);
                let read: Option<serde_json::Value> =
                    call.get_as(&call.object_ref("v1", "PersistentVolumeClaim", &name))?;
                let count = read
                    .as_ref()
                    .and_then(|c| c["metadata"]["labels"][COUNTER_LABEL].as_str())
                    .and_then(|n| n.parse::<u64>().ok());
                match count {
                    None => effects.apply.push(counted_claim(call, &name, 0)),
                    Some(n) => {
                        effects.apply.push(counted_claim(call, &name, n + 1));
                        // Marked, so it differs from every version the cache may hold.
                        let mut undo: serde_json::Value =
                            serde_json::from_str(&counted_claim(call, &name, n)).unwrap_or_default();
                        undo["metadata"]["annotations"] = serde_json::json!({"hostile-undo": n.to_string()});
                        effects.apply.push(undo.to_string());
                    }
                }
            }
            Mode::HostCallFlood => {
                let pvc = call.object_ref("v1", "PersistentVolumeClaim", "anything");
                for _ in 0..1_000_000 {
                    call.cluster.get(&pvc).map_err(StepError::Cluster)?;
                }
            }
            _ => {}
        }
        Ok(StorageOutcome {
            effects,
            volumes: Vec::new(),
        })
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        match call.config.mode.storage_flaw() {
            Some(flaw) => storage::finalize(call, flaw),
            None if matches!(call.config.mode, Mode::FailsFinalize) => Err(StepError::Internal(
                "the backing store is unreachable".into(),
            )),
            None => Ok(Effects::default()),
        }
    }
}

fn target(call: &Call<'_, Config>) -> String {
    call.config
        .target
        .clone()
        .unwrap_or_else(|| "foreign".into())
}

/// A forced stop of the VirtualMachine `name`.
fn stop(name: &str) -> wukong_plugin_sdk::Action {
    wukong_plugin_sdk::Action::Subresource(wukong_plugin_sdk::SubresourceCall {
        plural: "virtualmachines".into(),
        name: name.to_owned(),
        subresource: "stop".into(),
        body: Some(r#"{"gracePeriod": 0}"#.into()),
    })
}

/// A 1Gi claim named `name`, as a storage plugin would apply it.
fn claim(call: &Call<'_, Config>, name: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": call.wukong.namespace,
            "labels": {"hostile": "was-here"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    .to_string()
}

/// The label [`Mode::UndoesFromStaleRead`] counts in.
const COUNTER_LABEL: &str = "hostile-counter";

/// [`claim`] with the counter label at `count`.
fn counted_claim(call: &Call<'_, Config>, name: &str, count: u64) -> String {
    let mut claim: serde_json::Value = serde_json::from_str(&claim(call, name)).unwrap_or_default();
    claim["metadata"]["labels"][COUNTER_LABEL] = serde_json::json!(count.to_string());
    claim.to_string()
}

fn pvc_like(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}).to_string()
}

fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

// Scalars only, so the recursion fills the wasm call stack rather than Rust's shadow
// stack in linear memory; the multiply after the call prevents tail-call elimination.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
#[inline(never)]
fn recurse(depth: u64, step: fn(u64) -> u64) -> u64 {
    let next = step(depth);
    recurse(next, step).wrapping_mul(next) | 1
}

fn next(depth: u64) -> u64 {
    depth.wrapping_add(1)
}

fn trap() -> ! {
    #[cfg(target_family = "wasm")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_family = "wasm"))]
    std::process::abort();
}

/// Tries to reach the host and says what it got: the sandbox test asserts it got nothing.
fn escape_report() -> String {
    let file = match std::fs::read_to_string("/etc/passwd") {
        Ok(content) => format!("file: read {} bytes", content.len()),
        Err(e) => format!("file: denied ({e})"),
    };
    let env = format!("env: {} variables", std::env::vars().count());
    let socket = match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "socket: connected".to_owned(),
        Err(e) => format!("socket: denied ({e})"),
    };
    format!("{file}; {env}; {socket}")
}

wukong_plugin_sdk::export_storage_plugin!(Hostile);
