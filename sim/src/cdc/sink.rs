//! One CDC stream's outbound side: an ordered queue and the task that batches it onto the wire.
//!
//! Everything a stream sends — scan rows, live rows, error events, resolved timestamps — goes
//! through ONE FIFO queue per stream. That single queue is what gives the per-region ordering
//! TiKV guarantees with its barriers: a live event queued before a scan chunk is sent before it,
//! and a ResolvedTs queued after a commit is sent after it.
//!
//! Batching (TiKV `channel.rs`): consecutive `Event`s are packed into one `ChangeDataEvent`, at
//! most `max_events_per_message` of them and at most about 6 MiB; a `ResolvedTs` always travels
//! alone in its own message.
//!
//! Backpressure: the queue never blocks a producer that runs under the MVCC write lock. Live
//! events are refused once the queued bytes exceed the stream's memory quota (the caller then ends
//! the subscription with a `congested` error, as TiKV does when its sink memory quota is
//! exhausted); resolved timestamps are skipped while over quota (a later one supersedes them);
//! error events are always queued (TiKV force-sends them, and each ends a subscription, so they
//! are bounded). The initial scan is the only producer that waits: it awaits room below a smaller
//! threshold, like TiKV's bounded scan channel.
//!
//! The `set_event_delay` fault stamps each item with a release time; the sender holds the head of
//! the queue until then, which delays delivery without reordering.
//!
//! Linger: after sending, the sender waits out `CdcConfig::send_linger` (unless a full message is
//! already queued) before it takes the next one, so a busy stream sends one message per batch
//! of transactions rather than one per transaction; an idle stream is not delayed.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tidal_proto::cdcpb::ResolvedTs;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::wire::{self, WireMessage};

/// TiKV's upper bound for one `ChangeDataEvent` (CDC_RESP_MAX_BYTES).
pub(crate) const RESP_MAX_BYTES: usize = 6 * 1024 * 1024;

/// Feature gates of a stream, fixed by its first request (TiKV `FeatureGate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FeatureGates {
    /// ticdc_version ≥ 4.0.8: store-level batched resolved ts.
    pub batch_resolved_ts: bool,
    /// ticdc_version ≥ 5.3.0: the header's cluster id is checked.
    pub validate_cluster_id: bool,
}

#[derive(Debug)]
enum Item {
    /// One `Event`, encoded and framed as a field of `ChangeDataEvent` (see `wire`).
    Event(Bytes),
    Resolved(ResolvedTs),
}

#[derive(Debug)]
struct Queued {
    ready_at: Instant,
    item: Item,
}

#[derive(Debug)]
enum Closing {
    Open,
    /// Flush what is queued, then end the response stream with OK.
    Graceful,
    /// Drop what is queued and end the response stream with this status.
    Abort(Status),
}

#[derive(Debug)]
struct OutQueue {
    items: VecDeque<Queued>,
    bytes: usize,
    closing: Closing,
}

/// Result of offering live events to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Queued,
    /// Over the memory quota; nothing was queued.
    Congested,
    /// The stream is closing; nothing was queued.
    Closed,
}

/// One `EventFeed`/`EventFeedV2` call on one store.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Unique stream id.
    pub id: u64,
    /// The store whose service accepted the stream.
    pub store_id: u64,
    /// `stream-multiplexing` negotiated (EventFeedV2 header).
    pub multiplexing: bool,
    gates: OnceLock<FeatureGates>,
    limits: SendLimits,
    out: Mutex<OutQueue>,
    wake: Notify,
    space: Notify,
    cancel: watch::Sender<bool>,
}

impl Conn {
    /// A new open stream.
    pub(crate) fn new(id: u64, store_id: u64, multiplexing: bool, limits: SendLimits) -> Self {
        Conn {
            id,
            store_id,
            multiplexing,
            gates: OnceLock::new(),
            limits,
            out: Mutex::new(OutQueue {
                items: VecDeque::new(),
                bytes: 0,
                closing: Closing::Open,
            }),
            wake: Notify::new(),
            space: Notify::new(),
            cancel: watch::channel(false).0,
        }
    }

    /// Fixes the feature gates (first request only; later calls are ignored).
    pub(crate) fn set_gates(&self, gates: FeatureGates) {
        let _ = self.gates.set(gates);
    }

    /// The feature gates (all off before the first request).
    pub(crate) fn gates(&self) -> FeatureGates {
        self.gates.get().copied().unwrap_or_default()
    }

    /// A receiver that flips to `true` when the stream is closed or aborted by the server.
    pub(crate) fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    /// Whether the stream still accepts items.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.out.lock().closing, Closing::Open)
    }

    /// Queued bytes.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out.lock().bytes
    }

    fn push_locked(q: &mut OutQueue, ready_at: Instant, ev: Bytes) {
        q.bytes = q.bytes.saturating_add(ev.len());
        q.items.push_back(Queued {
            ready_at,
            item: Item::Event(ev),
        });
    }

    /// Whether `q` holds a full message (`max_events` events or `RESP_MAX_BYTES`).
    fn is_full(&self, q: &OutQueue) -> bool {
        q.items.len() >= self.limits.max_events.max(1) || q.bytes >= RESP_MAX_BYTES
    }

    /// Wakes the sender if it may be waiting for this push: the queue was empty (the sender
    /// idles or lingers with nothing to send) or just became full (a lingering sender sends it
    /// now). Otherwise the sender already has work and will find the new items; not waking it
    /// per push saves a thread wake-up per transaction on a busy stream.
    fn wake_after_push(&self, q: &OutQueue, was_empty: bool) {
        if was_empty || self.is_full(q) {
            self.wake.notify_one();
        }
    }

    /// Offers live events (encoded `Event`s, see `wire`); all or nothing. Refused with
    /// `Congested` when the queue already holds more than `quota` bytes.
    pub(crate) fn offer_live(&self, events: Vec<Bytes>, delay: Duration, quota: usize) -> Offer {
        let mut q = self.out.lock();
        if !matches!(q.closing, Closing::Open) {
            return Offer::Closed;
        }
        if q.bytes > quota {
            return Offer::Congested;
        }
        let ready_at = Instant::now() + delay;
        let was_empty = q.items.is_empty();
        for ev in events {
            Self::push_locked(&mut q, ready_at, ev);
        }
        self.wake_after_push(&q, was_empty);
        Offer::Queued
    }

    /// Queues events regardless of the quota (error events, scan chunks after waiting for room).
    /// Returns false if the stream is closing.
    pub(crate) fn push_forced(&self, events: Vec<Bytes>, delay: Duration) -> bool {
        let mut q = self.out.lock();
        if !matches!(q.closing, Closing::Open) {
            return false;
        }
        let ready_at = Instant::now() + delay;
        let was_empty = q.items.is_empty();
        for ev in events {
            Self::push_locked(&mut q, ready_at, ev);
        }
        self.wake_after_push(&q, was_empty);
        true
    }

    /// Queues a resolved ts unless the queue is over `quota` bytes (then it is skipped: a later
    /// resolved ts supersedes it).
    pub(crate) fn offer_resolved(&self, rts: ResolvedTs, delay: Duration, quota: usize) {
        let mut q = self.out.lock();
        if !matches!(q.closing, Closing::Open) || q.bytes > quota {
            return;
        }
        let was_empty = q.items.is_empty();
        q.items.push_back(Queued {
            ready_at: Instant::now() + delay,
            item: Item::Resolved(rts),
        });
        self.wake_after_push(&q, was_empty);
    }

    /// Waits until the queue holds at most `limit` bytes or the stream closes.
    pub(crate) async fn wait_for_room(&self, limit: usize) {
        loop {
            let notified = self.space.notified();
            {
                let q = self.out.lock();
                if q.bytes <= limit || !matches!(q.closing, Closing::Open) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Ends the stream after flushing what is queued (the request side ended).
    pub(crate) fn close_graceful(&self) {
        let mut q = self.out.lock();
        if matches!(q.closing, Closing::Open) {
            q.closing = Closing::Graceful;
        }
        drop(q);
        self.finish_close();
    }

    /// Aborts the stream with a gRPC error; queued items are dropped.
    pub(crate) fn abort(&self, status: Status) {
        let mut q = self.out.lock();
        if !matches!(q.closing, Closing::Abort(_)) {
            q.closing = Closing::Abort(status);
            q.items.clear();
            q.bytes = 0;
        }
        drop(q);
        self.finish_close();
    }

    fn finish_close(&self) {
        self.cancel.send_replace(true);
        self.wake.notify_one();
        self.space.notify_waiters();
    }

    /// Whether a full message is queued or the stream is closing: then the sender does not
    /// linger.
    fn full_or_closing(&self) -> bool {
        let q = self.out.lock();
        self.is_full(&q) || !matches!(q.closing, Closing::Open)
    }

    /// Takes the next message to send, or the terminal status. `Ok(None)` means "nothing ready
    /// yet", with the instant the head becomes ready if it is delayed.
    fn next_message(&self, max_events: usize) -> Next {
        let mut q = self.out.lock();
        if let Closing::Abort(status) = &q.closing {
            return Next::End(Some(status.clone()));
        }
        let now = Instant::now();
        let Some(head) = q.items.front() else {
            return if matches!(q.closing, Closing::Graceful) {
                Next::End(None)
            } else {
                Next::Wait(None)
            };
        };
        if head.ready_at > now {
            return Next::Wait(Some(head.ready_at));
        }
        if matches!(head.item, Item::Resolved(_)) {
            let Some(Queued {
                item: Item::Resolved(rts),
                ..
            }) = q.items.pop_front()
            else {
                return Next::Wait(None);
            };
            let mut msg = WireMessage::default();
            msg.push(wire::resolved_piece(&rts));
            return Next::Send(msg);
        }
        let mut msg = WireMessage::default();
        let mut events = 0usize;
        while events < max_events.max(1) {
            let take = match q.items.front() {
                Some(Queued {
                    ready_at,
                    item: Item::Event(ev),
                }) if *ready_at <= now => {
                    events == 0 || msg.encoded_len().saturating_add(ev.len()) < RESP_MAX_BYTES
                }
                _ => false,
            };
            if !take {
                break;
            }
            if let Some(Queued {
                item: Item::Event(ev),
                ..
            }) = q.items.pop_front()
            {
                q.bytes = q.bytes.saturating_sub(ev.len());
                events += 1;
                msg.push(ev);
            }
        }
        Next::Send(msg)
    }
}

enum Next {
    Send(WireMessage),
    Wait(Option<Instant>),
    End(Option<Status>),
}

/// Why the sender task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenderExit {
    /// The server closed or aborted the stream.
    ServerClosed,
    /// The client dropped the response stream.
    ClientGone,
}

/// How a sender batches its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendLimits {
    /// At most this many `Event`s per message.
    pub max_events: usize,
    /// Minimum spacing of messages while the stream is busy (see the module docs).
    pub linger: Duration,
}

/// Drains the stream's queue into the gRPC response channel until the stream ends.
pub(crate) async fn run_sender(
    conn: &Conn,
    tx: mpsc::Sender<Result<WireMessage, Status>>,
) -> SenderExit {
    let SendLimits { max_events, linger } = conn.limits;
    let mut last_sent: Option<Instant> = None;
    loop {
        // Linger after a send until the deadline, a full message or the stream closing.
        while let Some(at) = last_sent.map(|t| t + linger) {
            let notified = conn.wake.notified();
            if Instant::now() >= at || conn.full_or_closing() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => break,
                () = notified => {}
                () = tx.closed() => return SenderExit::ClientGone,
            }
        }
        let notified = conn.wake.notified();
        match conn.next_message(max_events) {
            Next::Send(msg) => {
                conn.space.notify_waiters();
                if tx.send(Ok(msg)).await.is_err() {
                    return SenderExit::ClientGone;
                }
                last_sent = (!linger.is_zero()).then(Instant::now);
            }
            Next::Wait(None) => {
                tokio::select! {
                    () = notified => {}
                    () = tx.closed() => return SenderExit::ClientGone,
                }
            }
            Next::Wait(Some(at)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = notified => {}
                    () = tx.closed() => return SenderExit::ClientGone,
                }
            }
            Next::End(status) => {
                if let Some(status) = status {
                    let _ = tx.send(Err(status)).await;
                }
                return SenderExit::ServerClosed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::sync::Arc;
    use tidal_proto::cdcpb::{ChangeDataEvent, Event, event};

    fn ev(region: u64) -> Bytes {
        wire::event_piece(&Event {
            region_id: region,
            event: Some(event::Event::ResolvedTs(1)),
            ..Default::default()
        })
    }

    fn limits(max_events: usize) -> SendLimits {
        SendLimits {
            max_events,
            linger: Duration::ZERO,
        }
    }

    fn decoded(msg: WireMessage) -> ChangeDataEvent {
        ChangeDataEvent::decode(msg.to_bytes().as_slice()).unwrap_or_default()
    }

    #[tokio::test]
    async fn batches_events_and_isolates_resolved_ts() {
        let conn = Conn::new(1, 1, true, limits(2));
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..5 {
            assert_eq!(
                conn.offer_live(vec![ev(i)], Duration::ZERO, usize::MAX),
                Offer::Queued
            );
        }
        conn.offer_resolved(
            ResolvedTs {
                regions: vec![1],
                ts: 5,
                request_id: 0,
            },
            Duration::ZERO,
            usize::MAX,
        );
        assert!(conn.push_forced(vec![ev(9)], Duration::ZERO));
        conn.close_graceful();
        assert_eq!(run_sender(&conn, tx).await, SenderExit::ServerClosed);
        let mut shapes = Vec::new();
        while let Some(Ok(msg)) = rx.recv().await {
            let msg = decoded(msg);
            shapes.push((msg.events.len(), msg.resolved_ts.map(|r| r.ts)));
        }
        assert_eq!(
            shapes,
            vec![(2, None), (2, None), (1, None), (0, Some(5)), (1, None)]
        );
    }

    #[tokio::test]
    async fn congestion_refuses_live_but_not_forced() {
        let conn = Conn::new(1, 1, false, limits(64));
        assert_eq!(
            conn.offer_live(vec![ev(1)], Duration::ZERO, 0),
            Offer::Queued
        );
        assert!(conn.queued_bytes() > 0);
        assert_eq!(
            conn.offer_live(vec![ev(2)], Duration::ZERO, 0),
            Offer::Congested
        );
        assert!(conn.push_forced(vec![ev(3)], Duration::ZERO));
        conn.abort(Status::unavailable("reset"));
        assert_eq!(
            conn.offer_live(vec![ev(4)], Duration::ZERO, usize::MAX),
            Offer::Closed
        );
        let (tx, mut rx) = mpsc::channel(4);
        assert_eq!(run_sender(&conn, tx).await, SenderExit::ServerClosed);
        let first = rx.recv().await;
        assert!(matches!(first, Some(Err(ref s)) if s.code() == tonic::Code::Unavailable));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn delay_holds_events_back_in_order() {
        let conn = Conn::new(1, 1, false, limits(1));
        assert_eq!(
            conn.offer_live(vec![ev(1)], Duration::from_millis(150), usize::MAX),
            Offer::Queued
        );
        assert_eq!(
            conn.offer_live(vec![ev(2)], Duration::ZERO, usize::MAX),
            Offer::Queued
        );
        conn.close_graceful();
        let (tx, mut rx) = mpsc::channel(4);
        let start = Instant::now();
        assert_eq!(run_sender(&conn, tx).await, SenderExit::ServerClosed);
        assert!(start.elapsed() >= Duration::from_millis(150));
        let order: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(Result::ok)
            .map(|m| decoded(m).events.first().map_or(0, |e| e.region_id))
            .collect();
        assert_eq!(order, vec![1, 2]);
    }

    /// A busy stream's later events wait out the linger and leave together; a full message does
    /// not wait; an idle stream's first event leaves at once.
    #[tokio::test(start_paused = true)]
    async fn linger_batches_a_busy_stream() {
        let linger = Duration::from_millis(100);
        let limits = SendLimits {
            max_events: 3,
            linger,
        };
        let conn = Arc::new(Conn::new(1, 1, false, limits));
        let (tx, mut rx) = mpsc::channel(16);
        let sender = {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move { run_sender(&conn, tx).await })
        };
        let start = Instant::now();
        let offer = |region| conn.offer_live(vec![ev(region)], Duration::ZERO, usize::MAX);
        assert_eq!(offer(1), Offer::Queued);
        let first = rx.recv().await.and_then(Result::ok).map(decoded);
        assert_eq!(first.map(|m| m.events.len()), Some(1));
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "an idle stream sends at once"
        );
        for region in [2, 3] {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(offer(region), Offer::Queued);
        }
        let second = rx.recv().await.and_then(Result::ok).map(decoded);
        let regions: Vec<u64> = second
            .map(|m| m.events.iter().map(|e| e.region_id).collect())
            .unwrap_or_default();
        assert_eq!(
            regions,
            vec![2, 3],
            "events queued during the linger leave together"
        );
        assert_eq!(start.elapsed(), linger);
        // A full message (3 events) leaves without waiting out the linger.
        let sent_at = Instant::now();
        for region in [4, 5, 6] {
            assert_eq!(offer(region), Offer::Queued);
        }
        let third = rx.recv().await.and_then(Result::ok).map(decoded);
        assert_eq!(third.map(|m| m.events.len()), Some(3));
        assert_eq!(sent_at.elapsed(), Duration::ZERO);
        conn.close_graceful();
        assert_eq!(sender.await.ok(), Some(SenderExit::ServerClosed));
    }
}
