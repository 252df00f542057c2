//! One `EventFeedV2` stream per TiKV store, shared by every subscription of a feed.
//!
//! TiKV multiplexes all regions of a connection onto one ordered stream, and per region that
//! order is the contract (rows before the resolved ts that covers them). So each store gets one
//! task that reads the stream and dispatches every event, synchronously and in order, to the
//! subscription owning its request id. Requests go the other way through an unbounded queue:
//! they are small and few (one per region registration).
//!
//! Before reading the next message the task waits for room in the feed's memory quota, which
//! is how a slow consumer slows TiKV down. When the stream breaks (error, EOF, connect failure)
//! every registration that was sent on it is failed and retried after the reconnect delay; a
//! later registration for the store opens a fresh stream.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tidal_proto::cdcpb::change_data_client::ChangeDataClient;
use tidal_proto::cdcpb::{ChangeDataEvent, ChangeDataRequest};
use tidal_proto::features::{EVENT_FEED_FEATURES_KEY, MAX_MESSAGE_SIZE, STREAM_MULTIPLEXING};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::Shared;
use super::subscription::{SlotKey, SubState};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Registrations sent on a stream, and whether the stream is gone.
#[derive(Debug, Default)]
struct Regs {
    dead: bool,
    keys: HashSet<SlotKey>,
}

/// The sending half of a store stream and its bookkeeping.
#[derive(Debug)]
pub(crate) struct StoreConn {
    id: u64,
    store_id: u64,
    tx: mpsc::UnboundedSender<ChangeDataRequest>,
    regs: Arc<Mutex<Regs>>,
    stop: Arc<Notify>,
}

impl Drop for StoreConn {
    fn drop(&mut self) {
        // Nobody can send on it any more: end the reader task.
        self.stop.notify_one();
    }
}

impl StoreConn {
    /// Starts a stream to `address` in the background.
    pub(crate) fn open(
        shared: Weak<Shared>,
        store_id: u64,
        address: String,
        tls: Option<ClientTlsConfig>,
    ) -> Arc<StoreConn> {
        let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let regs = Arc::new(Mutex::new(Regs::default()));
        let stop = Arc::new(Notify::new());
        let task = Task {
            shared,
            id,
            store_id,
            address,
            tls,
            regs: Arc::clone(&regs),
        };
        let stop2 = Arc::clone(&stop);
        tokio::spawn(task.run(rx, stop2));
        Arc::new(StoreConn {
            id,
            store_id,
            tx,
            regs,
            stop,
        })
    }

    /// Unique id of this stream (a reconnect gets a new one).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The store it talks to.
    pub(crate) fn store_id(&self) -> u64 {
        self.store_id
    }

    /// False once the stream has failed.
    pub(crate) fn is_alive(&self) -> bool {
        !self.regs.lock().dead
    }

    /// Records a registration about to be sent; false if the stream already failed (then the
    /// failure sweep would miss it, so the caller must retry elsewhere).
    pub(crate) fn track(&self, key: SlotKey) -> bool {
        let mut regs = self.regs.lock();
        if regs.dead {
            return false;
        }
        regs.keys.insert(key);
        true
    }

    /// Forgets a registration that ended.
    pub(crate) fn untrack(&self, key: SlotKey) {
        self.regs.lock().keys.remove(&key);
    }

    /// Queues a request; false if the stream is gone.
    pub(crate) fn send(&self, req: ChangeDataRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

/// The reading half.
struct Task {
    shared: Weak<Shared>,
    id: u64,
    store_id: u64,
    address: String,
    tls: Option<ClientTlsConfig>,
    regs: Arc<Mutex<Regs>>,
}

impl Task {
    async fn run(self, rx: mpsc::UnboundedReceiver<ChangeDataRequest>, stop: Arc<Notify>) {
        let why = tokio::select! {
            _ = stop.notified() => {
                self.regs.lock().dead = true;
                return;
            }
            why = self.serve(rx) => why,
        };
        let keys = {
            let mut regs = self.regs.lock();
            regs.dead = true;
            std::mem::take(&mut regs.keys)
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.remove_conn(self.store_id, self.id);
        shared.pd().invalidate_store(self.store_id);
        tracing::warn!(
            store_id = self.store_id,
            address = %self.address,
            regions = keys.len(),
            error = %why,
            "cdc stream failed; its regions will be retried"
        );
        let why = format!("stream to store {} failed: {why}", self.store_id);
        for key in keys {
            if let Some(sub) = shared.lookup(key.0) {
                sub.on_stream_failure(&shared, key, self.id, &why);
            }
        }
    }

    /// Connects and reads until the stream ends; returns why it ended.
    async fn serve(&self, rx: mpsc::UnboundedReceiver<ChangeDataRequest>) -> String {
        let Some(shared) = self.shared.upgrade() else {
            return "feed dropped".into();
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("{scheme}://{}", self.address)
        };
        let mut endpoint = match Endpoint::from_shared(uri) {
            Ok(e) => e,
            Err(e) => return format!("bad store address {:?}: {e}", self.address),
        };
        endpoint = endpoint
            .connect_timeout(shared.cfg().connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(8 << 20)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = match endpoint.tls_config(tls.clone()) {
                Ok(e) => e,
                Err(e) => return format!("TLS: {e}"),
            };
        }
        let connect_timeout = shared.cfg().connect_timeout;
        drop(shared);
        let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return format!("connect: {e}"),
            Err(_) => return format!("connect: timed out after {connect_timeout:?}"),
        };
        let mut client = ChangeDataClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        request.metadata_mut().insert(
            EVENT_FEED_FEATURES_KEY,
            MetadataValue::from_static(STREAM_MULTIPLEXING),
        );
        let mut stream = match client.event_feed_v2(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return format!("EventFeedV2: {status}"),
        };
        loop {
            {
                let Some(shared) = self.shared.upgrade() else {
                    return "feed dropped".into();
                };
                shared.quota().wait_for_room().await;
            }
            match stream.message().await {
                Ok(Some(ev)) => {
                    let Some(shared) = self.shared.upgrade() else {
                        return "feed dropped".into();
                    };
                    dispatch(&shared, self.id, self.store_id, ev);
                }
                Ok(None) => return "closed by the store".into(),
                Err(status) => return format!("{status}"),
            }
        }
    }
}

/// Hands every part of one message to its subscription, in order, then wakes the consumers.
pub(crate) fn dispatch(shared: &Arc<Shared>, conn_id: u64, store_id: u64, ev: ChangeDataEvent) {
    let mut touched: Vec<Arc<SubState>> = Vec::new();
    let mut last: Option<(u64, Option<Arc<SubState>>)> = None;
    let mut find = |request_id: u64| -> Option<Arc<SubState>> {
        match &last {
            Some((id, sub)) if *id == request_id => sub.clone(),
            _ => {
                let sub = shared.lookup(request_id);
                last = Some((request_id, sub.clone()));
                sub
            }
        }
    };
    let touch = |sub: Arc<SubState>, touched: &mut Vec<Arc<SubState>>| {
        if !touched.iter().any(|t| Arc::ptr_eq(t, &sub)) {
            touched.push(sub);
        }
    };
    for event in ev.events {
        // Events for request ids we no longer know (a deregistered subscription, whose
        // region_not_found answers arrive afterwards) are dropped here.
        if let Some(sub) = find(event.request_id)
            && sub.on_event(shared, conn_id, store_id, event)
        {
            touch(sub, &mut touched);
        }
    }
    if let Some(rts) = ev.resolved_ts
        && let Some(sub) = find(rts.request_id)
        && sub.on_resolved_batch(shared, conn_id, &rts)
    {
        touch(sub, &mut touched);
    }
    for sub in touched {
        sub.wake();
    }
}
