//! The labels and annotations Wukong puts on objects. The host writes and judges them,
//! plugins read them, the simulator and tests look for them: one definition keeps the
//! three agreeing.

/// The uid of the Wukong an object was made for, written by the host: on cluster-scoped
/// objects (a StorageClass, a MigrationPolicy, which cannot carry an owner reference to a
/// namespaced Wukong) and on retained namespaced ones (which carry no owner reference).
/// The host refuses a plugin outcome whose object carries it.
pub const OWNER_UID_ANNOTATION: &str = "vm.novasphere.dev/owner-uid";

/// The backend (`step/name`, e.g. `storage/longhorn`) that made a cluster-scoped object,
/// written by the host next to [`OWNER_UID_ANNOTATION`].
pub const BACKEND_ANNOTATION: &str = "vm.novasphere.dev/backend";

/// Set by a plugin on an object that must outlive its Wukong (a retained disk's claim): the
/// host gives it no owner reference, only [`OWNER_UID_ANNOTATION`].
pub const RETAIN_ANNOTATION: &str = "vm.novasphere.dev/retain";

/// The Wukong's name, on every object applied for it (and on the VM template, so every
/// VMI of the Wukong carries it too).
pub const WUKONG_LABEL: &str = "vm.novasphere.dev/wukong";

/// Set (key, value) on every object the operator applies for a Wukong, and on the
/// cluster-scoped objects backends share between Wukongs.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "wukong");

/// Set to `"true"` by the migration plugin on the migration objects its policy starts;
/// the host's limit on concurrent automatic migrations counts these.
pub const AUTOMATIC_LABEL: &str = "vm.novasphere.dev/automatic";
