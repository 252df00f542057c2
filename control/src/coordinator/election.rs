//! Coordinator election over the metadata store, the way TiCDC elects its owner.
//!
//! Every candidate writes `/tidb/cdc/<cluster>/__cdc_meta__/owner/<lease>` bound to its own
//! lease; the key with the lowest create revision is the owner. Keys vanish with their lease, so
//! an owner that stops refreshing (crash, partition, long pause) is replaced once its lease
//! expires, and the next-oldest candidate takes over without any extra protocol.
//!
//! Ownership here is advisory: a deposed owner may still believe it owns for up to one lease
//! period. What keeps that harmless is the epoch fence (ticdc.md §4): the new owner bumps every
//! changefeed's epoch before starting it, and every write of the old one is guarded by its old
//! epoch, so it is refused by the store.
//!
//! Every candidate also registers its capture key, `…/__cdc_meta__/capture/<capture id>`,
//! under the same lease (TiCDC's node registration): the live capture keys are the live
//! nodes. In a multi-process cluster the value carries the node's process index, and the owner
//! plans each run over the processes whose keys exist. A cluster node also refreshes its lease
//! from a task of its own, so a control loop busy starting a dataflow cannot let it expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::meta::{KeyLayout, LeaseId, MetaError, MetaStore};

/// One candidate's view of the election.
#[derive(Debug)]
pub(crate) struct Election {
    store: Arc<dyn MetaStore>,
    keys: KeyLayout,
    ttl: Duration,
    value: String,
    lease: Option<LeaseId>,
    key: Option<String>,
    last_refresh: Instant,
    /// Last time ownership was confirmed (lease alive and our key the oldest).
    last_ok: Option<Instant>,
    owner: bool,
    /// The capture key registered under the lease (with the same value as the owner key).
    capture_key: Option<String>,
    /// Refresh the lease from a separate task too.
    background_keepalive: bool,
    keeper: Option<JoinHandle<()>>,
}

impl Election {
    pub(crate) fn new(
        store: Arc<dyn MetaStore>,
        keys: KeyLayout,
        ttl: Duration,
        value: String,
        capture_key: Option<String>,
        background_keepalive: bool,
    ) -> Self {
        Election {
            store,
            keys,
            ttl: ttl.max(Duration::from_secs(1)),
            value,
            lease: None,
            key: None,
            last_refresh: Instant::now(),
            last_ok: None,
            owner: false,
            capture_key,
            background_keepalive,
            keeper: None,
        }
    }

    fn stop_keeper(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }

    fn start_keeper(&mut self, lease: LeaseId) {
        self.stop_keeper();
        if !self.background_keepalive {
            return;
        }
        let store = Arc::clone(&self.store);
        let every = self.ttl / 3;
        self.keeper = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.lease_keep_alive(lease).await {
                    Ok(_) => {}
                    Err(MetaError::LeaseNotFound { .. }) => return,
                    Err(e) => tracing::debug!(lease, error = %e, "background lease refresh failed"),
                }
            }
        }));
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }

    async fn campaign(&mut self) -> Result<(), MetaError> {
        let lease = self.store.lease_grant(self.ttl_secs()).await?;
        let key = self.keys.owner(lease.id);
        if let Err(e) = self
            .store
            .put(key.as_bytes(), self.value.as_bytes(), Some(lease.id))
            .await
        {
            let _ = self.store.lease_revoke(lease.id).await;
            return Err(e);
        }
        if let Some(capture) = &self.capture_key
            && let Err(e) = self
                .store
                .put(capture.as_bytes(), self.value.as_bytes(), Some(lease.id))
                .await
        {
            let _ = self.store.lease_revoke(lease.id).await;
            return Err(e);
        }
        self.start_keeper(lease.id);
        tracing::info!(owner_key = %key, "campaigning for coordinator");
        self.lease = Some(lease.id);
        self.key = Some(key);
        self.last_refresh = Instant::now();
        Ok(())
    }

    async fn try_step(&mut self) -> Result<bool, MetaError> {
        if self.lease.is_none() {
            self.campaign().await?;
        } else if self.last_refresh.elapsed() >= self.ttl / 3 {
            let id = self.lease.unwrap_or_default();
            match self.store.lease_keep_alive(id).await {
                Ok(_) => self.last_refresh = Instant::now(),
                Err(MetaError::LeaseNotFound { .. }) => {
                    tracing::warn!(lease = id, "coordinator lease expired; ownership lost");
                    self.stop_keeper();
                    self.lease = None;
                    self.key = None;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        let Some(key) = self.key.clone() else {
            return Ok(false);
        };
        let owners = self
            .store
            .get_prefix(self.keys.owner_prefix().as_bytes())
            .await?;
        let oldest = owners
            .iter()
            .min_by_key(|kv| (kv.create_revision, kv.key.clone()));
        match oldest {
            Some(kv) => Ok(kv.key == key.as_bytes()),
            // Our key is gone although the lease answered: campaign again next time.
            None => {
                self.stop_keeper();
                self.lease = None;
                self.key = None;
                Ok(false)
            }
        }
    }

    /// Refreshes the lease when due and reports whether this candidate owns. A store error
    /// keeps the previous answer while the last confirmation is younger than the lease TTL
    /// (the lease cannot have expired yet), and means "not owner" after that.
    pub(crate) async fn step(&mut self) -> bool {
        match self.try_step().await {
            Ok(owner) => {
                if owner {
                    self.last_ok = Some(Instant::now());
                }
                if owner != self.owner {
                    tracing::info!(owner, key = ?self.key, "coordinator ownership changed");
                }
                self.owner = owner;
            }
            Err(e) => {
                let fresh = self.last_ok.is_some_and(|t| t.elapsed() < self.ttl);
                tracing::warn!(error = %e, keep_ownership = self.owner && fresh, "election step failed");
                self.owner = self.owner && fresh;
            }
        }
        self.owner
    }

    /// Gives up ownership: revokes the lease (deleting the owner key).
    pub(crate) async fn resign(&mut self) {
        self.stop_keeper();
        if let Some(id) = self.lease.take()
            && let Err(e) = self.store.lease_revoke(id).await
        {
            tracing::warn!(lease = id, error = %e, "cannot revoke the coordinator lease");
        }
        self.key = None;
        self.owner = false;
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop_keeper();
    }
}
