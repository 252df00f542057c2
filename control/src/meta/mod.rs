//! Persistent metadata for the control plane.
//!
//! Everything a coordinator must survive a restart with — changefeed definitions, their
//! checkpoints, the owner election key — lives in a revisioned key-value store with
//! compare-and-swap transactions. Two back ends implement the same [`MetaStore`] trait and pass
//! the same conformance suite: [`EtcdStore`] for clusters (compatible with TiCDC's etcd layout, so
//! existing tooling that reads the keys keeps working) and [`EmbeddedStore`] for a single process
//! (a write-ahead-logged map on local disk, no external service needed).
//!
//! On top of the store sit the [`keys`] layout, the TiCDC-shaped JSON documents in
//! [`changefeed`], and the [`epoch`] rules that fence a stale owner out of every write.

pub mod changefeed;
pub mod embedded;
pub mod epoch;
pub mod etcd;
pub mod keys;
pub mod store;

pub use changefeed::{
    AdminJobType, ChangeFeedInfo, ChangeFeedStatus, FeedState, Progress, ReplicaConfig,
    RunningError,
};
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use epoch::{
    BumpOptions, LoadedChangefeed, StatusChange, advance_epoch, bump_epoch, create_changefeed,
    delete_changefeed, epoch_matches, load_changefeed, pause_changefeed, remove_changefeed,
    resume_changefeed, update_checkpoint_fenced, update_progress_fenced, update_state_fenced,
    write_status_fenced,
};
pub use etcd::EtcdStore;
pub use keys::{ChangefeedRef, KeyLayout, ParsedKey, validate_changefeed_id};
pub use store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, Lease, LeaseId, MetaError, MetaStore,
    Op, OpResponse, Revision, Txn, TxnResult, WatchEvent, WatchStream,
};
