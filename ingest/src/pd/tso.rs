//! Timestamp allocation with request batching over one TSO stream.
//!
//! Every transaction read, resolved-ts comparison and lag measurement needs a fresh PD timestamp,
//! often from many tasks at once. One gRPC round trip per caller would put PD latency on every
//! path and flood PD with requests, so (like PD's own client) a single background task owns the
//! bidirectional `Tso` stream: callers enqueue into an mpsc channel, the task drains whatever is
//! queued (up to [`MAX_BATCH`] timestamps), sends **one** `TsoRequest { count: N }` and hands the
//! N consecutive timestamps out in queue order. While one request is in flight, new callers
//! queue up and form the next batch, so the batch size adapts to load.
//!
//! # Guarantees
//!
//! * PD returns the **largest** timestamp of the batch; the first one is
//!   `logical − ((N−1) << suffix_bits)` (wire.md §3.3). The arithmetic lives in [`TsoBatch`] and
//!   is checked: a response that would underflow or overflow is rejected, never wrapped.
//! * No timestamp is handed out twice: a batch is distributed exactly once, and the task also
//!   refuses a response whose first timestamp is not above the last one it handed out.
//! * Order: within a batch, earlier callers get smaller timestamps; a caller that asks again only
//!   after its previous answer lands in a later batch, so each caller sees strictly increasing
//!   timestamps.
//! * Failures: when the stream breaks (PD restart, leader change, timeout), the stream is dropped
//!   together with any answer still in flight on it, the leader is re-discovered, and the same
//!   callers are retried on a new stream until their own deadline (`request_timeout` from when
//!   they asked). Timestamps from an abandoned stream are never used, so a retry cannot produce a
//!   duplicate. Errors that retrying cannot fix fail the whole batch at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use tidal_proto::features::PHYSICAL_SHIFT_BITS;
use tidal_proto::pdpb::{Timestamp, TsoRequest, TsoResponse};

use super::PdError;
use super::conn::{Backoff, Inner, check_header, classify_status};
use super::error::detail_of;

/// Most timestamps requested in one `TsoRequest`. PD's logical counter has 18 bits, so a batch
/// must stay well below 2^18; PD's own client caps batches at 10 000 as well.
pub const MAX_BATCH: u32 = 10_000;

/// Depth of the queue between callers and the TSO task.
pub(crate) const QUEUE_DEPTH: usize = 10_000;

/// `last_error` before any attempt failed.
const NO_RESPONSE: &str = "no response";

/// Exclusive upper bound of the logical part (2^18).
const LOGICAL_LIMIT: i64 = 1 << PHYSICAL_SHIFT_BITS;

/// `count` timestamps `first, first + step, ...` allocated by one TSO response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsoBatch {
    /// The smallest timestamp of the batch.
    pub first: u64,
    /// How many timestamps the batch holds.
    pub count: u32,
    /// Distance between consecutive timestamps: `1 << suffix_bits` (1 in normal clusters).
    pub step: u64,
}

impl TsoBatch {
    /// Interprets PD's answer to a request for `count` timestamps: `ts` is the **largest** one.
    pub fn from_response(ts: &Timestamp, count: u32) -> Result<TsoBatch, String> {
        if count == 0 {
            return Err("empty batch".into());
        }
        if ts.suffix_bits >= PHYSICAL_SHIFT_BITS {
            return Err(format!("suffix_bits {} out of range", ts.suffix_bits));
        }
        if ts.physical < 0 || ts.physical >= 1 << (64 - PHYSICAL_SHIFT_BITS) {
            return Err(format!("physical {} out of range", ts.physical));
        }
        if ts.logical < 0 || ts.logical >= LOGICAL_LIMIT {
            return Err(format!("logical {} out of range", ts.logical));
        }
        let step = 1i64 << ts.suffix_bits;
        let span = i64::from(count - 1)
            .checked_mul(step)
            .ok_or_else(|| "batch span overflows".to_string())?;
        let first_logical = ts.logical - span;
        if first_logical < 0 {
            return Err(format!(
                "largest logical {} is smaller than the batch span {span} for count {count}",
                ts.logical
            ));
        }
        // Both parts were range-checked above, so the composition cannot overflow.
        let first = ((ts.physical as u64) << PHYSICAL_SHIFT_BITS) | first_logical as u64;
        Ok(TsoBatch {
            first,
            count,
            step: step as u64,
        })
    }

    /// The largest timestamp of the batch.
    pub fn last(&self) -> u64 {
        self.first + u64::from(self.count - 1) * self.step
    }

    /// Splits off the next `n` timestamps (in order) from the front of the batch.
    pub fn take_front(&mut self, n: u32) -> Option<TsoBatch> {
        if n == 0 || n > self.count {
            return None;
        }
        let head = TsoBatch {
            first: self.first,
            count: n,
            step: self.step,
        };
        self.count -= n;
        self.first += u64::from(n) * self.step;
        Some(head)
    }

    /// The timestamps of the batch, smallest first.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..u64::from(self.count)).map(move |i| self.first + i * self.step)
    }
}

/// One caller waiting for `count` timestamps.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) count: u32,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Result<TsoBatch, PdError>>,
}

/// The open stream: requests go into `tx`, answers come out of `rx`, in order.
struct TsoStream {
    tx: mpsc::Sender<TsoRequest>,
    rx: Streaming<TsoResponse>,
}

/// The background task: batches queued callers and serves them over one stream.
pub(crate) async fn run(inner: Arc<Inner>, mut queue: mpsc::Receiver<Waiter>) {
    let mut stream: Option<TsoStream> = None;
    let mut carry: Option<Waiter> = None;
    let mut last_issued: u64 = 0;
    loop {
        let first = match carry.take() {
            Some(w) => w,
            None => match queue.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut total = first.count;
        let mut batch = vec![first];
        while total < MAX_BATCH {
            match queue.try_recv() {
                Ok(w) if total.saturating_add(w.count) > MAX_BATCH => {
                    carry = Some(w);
                    break;
                }
                Ok(w) => {
                    total += w.count;
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        serve(&inner, &mut stream, batch, &mut last_issued).await;
    }
}

/// Serves one batch of callers, retrying across stream failures until each caller's deadline.
async fn serve(
    inner: &Inner,
    stream: &mut Option<TsoStream>,
    mut batch: Vec<Waiter>,
    last_issued: &mut u64,
) {
    let started = Instant::now();
    let mut backoff = Backoff::new();
    let mut last_error = String::from(NO_RESPONSE);
    loop {
        // Callers that gave up do not consume timestamps; callers past their deadline fail.
        let now = Instant::now();
        let (expired, live): (Vec<Waiter>, Vec<Waiter>) = batch
            .into_iter()
            .filter(|w| !w.reply.is_closed())
            .partition(|w| w.deadline <= now);
        batch = live;
        if !expired.is_empty() {
            let err = inner.timeout_error("Tso", now - started, &last_error);
            for w in expired {
                let _ = w.reply.send(Err(err.clone()));
            }
        }
        let Some(deadline) = batch.iter().map(|w| w.deadline).min() else {
            return;
        };
        let total: u32 = batch.iter().map(|w| w.count).sum();
        let generation = inner.generation();
        let attempt = tokio::time::timeout_at(deadline, request(inner, stream, total)).await;
        let err = match attempt {
            Ok(Ok(mut allocated)) => {
                if allocated.first <= *last_issued {
                    // PD went backwards (or replayed): never hand these out.
                    *stream = None;
                    PdError::InvalidResponse {
                        what: "Tso",
                        detail: format!(
                            "timestamp {} is not above the last issued {}",
                            allocated.first, *last_issued
                        ),
                    }
                } else {
                    *last_issued = allocated.last();
                    for w in batch {
                        if let Some(part) = allocated.take_front(w.count) {
                            let _ = w.reply.send(Ok(part));
                        }
                    }
                    return;
                }
            }
            Ok(Err(e)) => {
                *stream = None;
                e
            }
            Err(_) => {
                // The earliest deadline passed mid-request: drop the stream (and whatever it
                // might still answer), fail the expired callers at the top of the loop, and
                // retry for the others.
                *stream = None;
                if last_error == NO_RESPONSE {
                    last_error = "no TSO response before the deadline".into();
                }
                continue;
            }
        };
        // Leader/connection trouble and a bad answer are retried on a fresh stream; anything
        // else (a PD error in the header, a cluster id mismatch) fails the batch.
        let retry = matches!(
            &err,
            PdError::Unreachable { .. } | PdError::InvalidResponse { .. }
        );
        if !retry {
            for w in batch {
                let _ = w.reply.send(Err(err.clone()));
            }
            return;
        }
        last_error = detail_of(&err);
        tracing::debug!(error = %last_error, "TSO request failed; retrying on a new stream");
        let now = Instant::now();
        if now < deadline {
            tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
        }
        if let Ok(Err(e)) = tokio::time::timeout_at(deadline, inner.rediscover(generation)).await {
            last_error = detail_of(&e);
        }
    }
}

/// Sends one request for `count` timestamps (opening the stream if needed) and reads its answer.
async fn request(
    inner: &Inner,
    stream: &mut Option<TsoStream>,
    count: u32,
) -> Result<TsoBatch, PdError> {
    let req = TsoRequest {
        header: Some(inner.header()),
        count,
        dc_location: "global".into(),
    };
    inner.tso_requests.fetch_add(1, Ordering::Relaxed);
    let s = match stream {
        Some(s) => {
            if s.tx.send(req).await.is_err() {
                return Err(unreachable(inner, "TSO stream closed by the server"));
            }
            s
        }
        None => {
            // Queue the first request before opening the stream: a gRPC server may send response
            // headers only together with its first message.
            let (tx, rx) = mpsc::channel(16);
            if tx.send(req).await.is_err() {
                return Err(PdError::Closed);
            }
            let mut client = inner.client();
            let resp = client
                .tso(ReceiverStream::new(rx))
                .await
                .map_err(|s| classify_status("Tso", &s, inner))?;
            stream.insert(TsoStream {
                tx,
                rx: resp.into_inner(),
            })
        }
    };
    let resp = match s.rx.message().await {
        Ok(Some(resp)) => resp,
        Ok(None) => return Err(unreachable(inner, "TSO stream ended")),
        Err(status) => return Err(classify_status("Tso", &status, inner)),
    };
    check_header("Tso", resp.header.as_ref(), inner)?;
    if resp.count != count {
        return Err(PdError::InvalidResponse {
            what: "Tso",
            detail: format!("asked for {count} timestamps, PD granted {}", resp.count),
        });
    }
    let ts = resp.timestamp.ok_or_else(|| PdError::InvalidResponse {
        what: "Tso",
        detail: "response without a timestamp".into(),
    })?;
    TsoBatch::from_response(&ts, count).map_err(|detail| PdError::InvalidResponse {
        what: "Tso",
        detail,
    })
}

fn unreachable(inner: &Inner, why: &str) -> PdError {
    PdError::Unreachable {
        endpoints: vec![inner.leader_url()],
        last_error: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(physical: i64, logical: i64, suffix_bits: u32) -> Timestamp {
        Timestamp {
            physical,
            logical,
            suffix_bits,
        }
    }

    #[test]
    fn batch_starts_count_minus_one_below_the_answer() {
        // PD answered logical 100 for a batch of 10: the batch is logical 91..=100.
        let b = TsoBatch::from_response(&ts(1_700_000_000_000, 100, 0), 10).unwrap();
        assert_eq!(b.first, (1_700_000_000_000u64 << 18) | 91);
        assert_eq!(b.last(), (1_700_000_000_000u64 << 18) | 100);
        assert_eq!(b.count, 10);
        assert_eq!(b.step, 1);
        // The example from wire.md §7: physical 1_700_000_000_000, logical 5.
        let one = TsoBatch::from_response(&ts(1_700_000_000_000, 5, 0), 1).unwrap();
        assert_eq!(one.first, 445_644_800_000_000_005);
        assert_eq!(one.last(), 445_644_800_000_000_005);
    }

    #[test]
    fn suffix_bits_widen_the_step() {
        let b = TsoBatch::from_response(&ts(1, 0b1_0110, 2), 3).unwrap();
        // largest logical 22, step 4: 14, 18, 22.
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![(1 << 18) | 14, (1 << 18) | 18, (1 << 18) | 22]
        );
    }

    #[test]
    fn malformed_answers_are_rejected() {
        assert!(
            TsoBatch::from_response(&ts(1, 3, 0), 5).is_err(),
            "underflow"
        );
        assert!(TsoBatch::from_response(&ts(1, 4, 0), 5).is_ok());
        assert!(TsoBatch::from_response(&ts(-1, 4, 0), 1).is_err());
        assert!(TsoBatch::from_response(&ts(1, -1, 0), 1).is_err());
        assert!(TsoBatch::from_response(&ts(1, 1 << 18, 0), 1).is_err());
        assert!(TsoBatch::from_response(&ts(1 << 46, 0, 0), 1).is_err());
        assert!(TsoBatch::from_response(&ts(1, 0, 18), 1).is_err());
        assert!(TsoBatch::from_response(&ts(1, 5, 0), 0).is_err());
    }

    #[test]
    fn take_front_hands_out_in_order() {
        let mut b = TsoBatch::from_response(&ts(2, 9, 0), 10).unwrap();
        let base = 2u64 << 18;
        let a = b.take_front(3).unwrap();
        let c = b.take_front(1).unwrap();
        let d = b.take_front(6).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![base, base + 1, base + 2]);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![base + 3]);
        assert_eq!(d.first, base + 4);
        assert_eq!(d.last(), base + 9);
        assert_eq!(b.count, 0);
        assert_eq!(b.take_front(1), None);
        assert_eq!(d.clone().take_front(0), None);
    }

    proptest! {
        #[test]
        fn any_answer_never_panics(physical in any::<i64>(), logical in any::<i64>(),
                                   suffix in any::<u32>(), count in any::<u32>()) {
            let _ = TsoBatch::from_response(&ts(physical, logical, suffix), count);
        }

        #[test]
        fn split_batches_are_consecutive_and_unique(
            physical in 0i64..(1 << 45), logical in 0i64..(1 << 18),
            parts in proptest::collection::vec(1u32..50, 1..20)
        ) {
            let count: u32 = parts.iter().sum();
            prop_assume!(i64::from(count) <= logical + 1);
            let mut b = TsoBatch::from_response(&ts(physical, logical, 0), count).unwrap();
            prop_assert_eq!(b.last(), ((physical as u64) << 18) | logical as u64);
            let mut all = Vec::new();
            for n in parts {
                all.extend(b.take_front(n).unwrap().iter());
            }
            prop_assert_eq!(all.len() as u32, count);
            prop_assert!(all.windows(2).all(|w| w[1] == w[0] + 1));
            prop_assert_eq!(*all.last().unwrap(), ((physical as u64) << 18) | logical as u64);
        }
    }
}
