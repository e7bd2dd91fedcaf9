//! Turning plugin outcomes into API calls, and serving plugins' reads: discovery of
//! kinds, watch caches, the live `ClusterReader`, server-side apply with owner references, deletes and
//! KubeVirt subresource actions.

mod apply;
mod cache;
mod kinds;
mod own_writes;
mod reader;

pub use apply::{Applier, ApplyError, ApplyStats, Owner, is_subset};
pub use cache::{CacheStats, ObjectCache};
pub use kinds::{Kind, Kinds};
pub use own_writes::OwnWrites;
pub use reader::{LiveReader, ReadVersions};
