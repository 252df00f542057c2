//! [`EtcdStore`]: the [`MetaStore`] for clusters, backed by etcd v3 (etcd-client).
//!
//! A thin mapping: our [`Txn`]/[`Compare`]/[`Op`] become etcd's, revisions and versions are
//! passed through untouched (they *are* etcd's), watches become one etcd watch stream each, and
//! lease keep-alive is one request/response on a keep-alive stream. Connecting verifies that the
//! endpoint answers (a status call under a timeout), so a missing etcd is reported at start-up
//! with its address instead of as a hang on the first write.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, TxnOpResponse,
    WatchOptions,
};
use futures::StreamExt;

use super::store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, Lease, LeaseId, MetaError, MetaStore,
    Op, OpResponse, Revision, Txn, TxnResult, WatchEvent, WatchStream,
};

/// Default time allowed for connecting and for each request.
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`MetaStore`] on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoint: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn convert_op(op: CompareOp) -> etcd_client::CompareOp {
    match op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
        CompareOp::Less => etcd_client::CompareOp::Less,
    }
}

fn convert_compare(c: Compare) -> etcd_client::Compare {
    let op = convert_op(c.op);
    match c.target {
        CompareTarget::Value(v) => etcd_client::Compare::value(c.key, op, v),
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(c.key, op, r),
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(c.key, op, r),
        CompareTarget::Version(v) => etcd_client::Compare::version(c.key, op, v),
    }
}

fn convert_txn_op(op: Op) -> etcd_client::TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            etcd_client::TxnOp::put(key, value, opts)
        }
        Op::Delete { key } => etcd_client::TxnOp::delete(key, None),
        Op::Get { key } => etcd_client::TxnOp::get(key, None),
    }
}

impl EtcdStore {
    /// Connects to `endpoint` (`host:port` or `http://host:port`) with [`DEFAULT_ETCD_TIMEOUT`].
    pub async fn connect(endpoint: &str) -> Result<Self, MetaError> {
        Self::connect_with_timeout(endpoint, DEFAULT_ETCD_TIMEOUT).await
    }

    /// Connects with an explicit connect/request timeout and checks the endpoint answers.
    pub async fn connect_with_timeout(
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Self, MetaError> {
        let unavailable = |reason: String| MetaError::Unavailable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let connect = Client::connect([endpoint], Some(opts));
        let mut client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unavailable(format!("connect timed out after {timeout:?}")))?
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        // The channel connects lazily: ask for the status to know the server is really there.
        tokio::time::timeout(timeout, client.status())
            .await
            .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unavailable(format!("status request failed: {e}")))?;
        Ok(EtcdStore {
            client,
            endpoint: endpoint.to_string(),
            timeout,
        })
    }

    /// The endpoint this store talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Maps an etcd-client error to a [`MetaError`].
    fn map_err(&self, e: etcd_client::Error, lease: Option<LeaseId>) -> MetaError {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(s) => {
                let msg = s.message().to_string();
                if msg.contains("lease not found") {
                    return MetaError::LeaseNotFound {
                        id: lease.unwrap_or(0),
                    };
                }
                if msg.contains("has been compacted") {
                    return MetaError::Compacted {
                        requested: 0,
                        compacted: 0,
                    };
                }
                // gRPC status codes: 3 invalid argument, 4 deadline exceeded, 14 unavailable.
                match i32::from(s.code()) {
                    4 | 14 => MetaError::Unavailable {
                        endpoint: self.endpoint.clone(),
                        reason: msg,
                    },
                    3 => MetaError::InvalidArgument(msg),
                    _ => MetaError::Backend(format!("{:?}: {msg}", s.code())),
                }
            }
            E::TransportError(t) => MetaError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: t.to_string(),
            },
            E::IoError(io) => MetaError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: io.to_string(),
            },
            E::LeaseKeepAliveError(msg) if msg.contains("not found") => MetaError::LeaseNotFound {
                id: lease.unwrap_or(0),
            },
            other => MetaError::Backend(other.to_string()),
        }
    }

    fn txn_result(&self, resp: etcd_client::TxnResponse) -> TxnResult {
        let revision = resp.header().map_or(0, |h| h.revision());
        let responses = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Put(_) => OpResponse::Put,
                TxnOpResponse::Delete(d) => OpResponse::Delete {
                    deleted: u64::try_from(d.deleted()).unwrap_or(0),
                },
                TxnOpResponse::Get(g) => OpResponse::Get(g.kvs().first().map(convert_kv)),
                TxnOpResponse::Txn(_) => OpResponse::Put,
            })
            .collect();
        TxnResult {
            succeeded: resp.succeeded(),
            revision,
            responses,
        }
    }
}

#[async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MetaError> {
        let mut c = self.client.clone();
        let resp = c.get(key, None).await.map_err(|e| self.map_err(e, None))?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaError> {
        let mut c = self.client.clone();
        let resp = c
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.map_err(e, None))?;
        Ok(resp.kvs().iter().map(convert_kv).collect())
    }

    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, MetaError> {
        let mut c = self.client.clone();
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = c
            .put(key, value, opts)
            .await
            .map_err(|e| self.map_err(e, lease))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &[u8]) -> Result<bool, MetaError> {
        let mut c = self.client.clone();
        let resp = c
            .delete(key, None)
            .await
            .map_err(|e| self.map_err(e, None))?;
        Ok(resp.deleted() > 0)
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<u64, MetaError> {
        let mut c = self.client.clone();
        let resp = c
            .delete(prefix, Some(DeleteOptions::new().with_prefix()))
            .await
            .map_err(|e| self.map_err(e, None))?;
        Ok(u64::try_from(resp.deleted()).unwrap_or(0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        let lease = txn
            .success
            .iter()
            .chain(txn.failure.iter())
            .find_map(|op| match op {
                Op::Put { lease, .. } => *lease,
                _ => None,
            });
        let etxn = etcd_client::Txn::new()
            .when(
                txn.compares
                    .into_iter()
                    .map(convert_compare)
                    .collect::<Vec<_>>(),
            )
            .and_then(
                txn.success
                    .into_iter()
                    .map(convert_txn_op)
                    .collect::<Vec<_>>(),
            )
            .or_else(
                txn.failure
                    .into_iter()
                    .map(convert_txn_op)
                    .collect::<Vec<_>>(),
            );
        let mut c = self.client.clone();
        let resp = c.txn(etxn).await.map_err(|e| self.map_err(e, lease))?;
        Ok(self.txn_result(resp))
    }

    async fn current_revision(&self) -> Result<Revision, MetaError> {
        let mut c = self.client.clone();
        // A count-only read of one (probably absent) key still carries the store revision.
        let resp = c
            .get(&b"\0"[..], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.map_err(e, None))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn watch_prefix(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, MetaError> {
        let mut c = self.client.clone();
        let mut opts = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let stream = c
            .watch(prefix, Some(opts))
            .await
            .map_err(|e| self.map_err(e, None))?;
        let endpoint = self.endpoint.clone();
        let state = (stream, VecDeque::<WatchEvent>::new(), false);
        let out = futures::stream::unfold(state, move |(mut stream, mut queue, done)| {
            let endpoint = endpoint.clone();
            async move {
                loop {
                    if let Some(ev) = queue.pop_front() {
                        return Some((Ok(ev), (stream, queue, done)));
                    }
                    if done {
                        return None;
                    }
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let err = MetaError::Compacted {
                                    requested: from_revision,
                                    compacted: resp.compact_revision(),
                                };
                                return Some((Err(err), (stream, queue, true)));
                            }
                            if resp.canceled() {
                                let err = MetaError::Unavailable {
                                    endpoint,
                                    reason: format!("watch canceled: {}", resp.cancel_reason()),
                                };
                                return Some((Err(err), (stream, queue, true)));
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                let kind = match ev.event_type() {
                                    EventType::Put => EventKind::Put,
                                    EventType::Delete => EventKind::Delete,
                                };
                                queue.push_back(WatchEvent {
                                    kind,
                                    kv: convert_kv(kv),
                                });
                            }
                        }
                        Ok(None) => return None,
                        Err(e) => {
                            let err = MetaError::Unavailable {
                                endpoint,
                                reason: format!("watch stream failed: {e}"),
                            };
                            return Some((Err(err), (stream, queue, true)));
                        }
                    }
                }
            }
        });
        Ok(out.boxed())
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<Lease, MetaError> {
        let mut c = self.client.clone();
        let resp = c
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| self.map_err(e, None))?;
        Ok(Lease {
            id: resp.id(),
            ttl: resp.ttl(),
        })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, MetaError> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c
            .lease_keep_alive(id)
            .await
            .map_err(|e| self.map_err(e, Some(id)))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| self.map_err(e, Some(id)))?;
        let resp = tokio::time::timeout(self.timeout, stream.message())
            .await
            .map_err(|_| MetaError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: "lease keep-alive timed out".into(),
            })?
            .map_err(|e| self.map_err(e, Some(id)))?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok(r.ttl()),
            _ => Err(MetaError::LeaseNotFound { id }),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), MetaError> {
        let mut c = self.client.clone();
        c.lease_revoke(id)
            .await
            .map_err(|e| self.map_err(e, Some(id)))?;
        Ok(())
    }
}
