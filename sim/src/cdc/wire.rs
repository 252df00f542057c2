//! The bytes a CDC stream puts on the wire, encoded by hand where it pays.
//!
//! Why: building a `cdcpb::event::Row` per row change (copying the key and value into it) and
//! letting prost encode it on the gRPC runtime cost more than everything else the feed does per
//! row. Live rows are therefore encoded straight from the MVCC apply events into protobuf bytes
//! on the writer, grouped into `Event`s there, and the stream's queue holds bytes: the sender
//! only concatenates already framed pieces into a `ChangeDataEvent`, and the codec copies them
//! into tonic's buffer.
//!
//! The encoding is byte-for-byte what prost produces for the equivalent message (fields in tag
//! order, proto3 defaults left out); unit tests compare the two, so a client sees exactly the
//! messages it saw before, and any protobuf decoder reads them.
//!
//! A queued piece is a *framed field of `ChangeDataEvent`*: tag, length and the message
//! (`events = 1` or `resolved_ts = 2`). A message is the concatenation of its pieces.

use bytes::{BufMut, Bytes};
use prost::Message;
use tidal_proto::cdcpb::{ChangeDataRequest, Event, ResolvedTs, event};
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

#[cfg(test)]
use crate::mvcc::ApplyEvent;
use crate::mvcc::{ApplyEventRef, Op};

/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of length-delimited fields.
const LEN: u8 = 2;

const fn tag(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

/// Encoded length of a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Length of a varint field (tag + value), 0 when the value is the default.
fn varint_field_len(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

/// Length of a bytes field (tag + length + bytes), 0 when empty.
fn bytes_field_len(b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        1 + varint_len(b.len() as u64) + b.len()
    }
}

/// A `cdcpb::event::Row` by reference: the fields the sim ever sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowRef<'a> {
    start_ts: u64,
    commit_ts: u64,
    log_type: event::LogType,
    op_type: event::row::OpType,
    key: &'a [u8],
    value: &'a [u8],
    old_value: &'a [u8],
    txn_source: u64,
    generation: u64,
}

fn op_type(op: Op) -> event::row::OpType {
    match op {
        Op::Put => event::row::OpType::Put,
        Op::Delete => event::row::OpType::Delete,
    }
}

impl<'a> RowRef<'a> {
    /// The row TiKV emits for an apply event (TiDB mode): COMMIT rows carry neither value nor
    /// old value (the client takes both from the matching PREWRITE), a Delete carries no value,
    /// ROLLBACK rows have commit_ts 0 and op UNKNOWN, and a 1PC write is a self-contained
    /// COMMITTED row.
    pub(crate) fn of(ev: &ApplyEventRef<'a>) -> Self {
        let value_of = |op: Op, value: &'a [u8]| -> &'a [u8] {
            if matches!(op, Op::Delete) { &[] } else { value }
        };
        match *ev {
            ApplyEventRef::Prewrite {
                key,
                start_ts,
                op,
                value,
                old_value,
                generation,
                txn_source,
            } => RowRef {
                start_ts,
                commit_ts: 0,
                log_type: event::LogType::Prewrite,
                op_type: op_type(op),
                key,
                value: value_of(op, value),
                old_value,
                txn_source,
                generation,
            },
            ApplyEventRef::Commit {
                key,
                start_ts,
                commit_ts,
                op,
                txn_source,
            } => RowRef {
                start_ts,
                commit_ts,
                log_type: event::LogType::Commit,
                op_type: op_type(op),
                key,
                value: &[],
                old_value: &[],
                txn_source,
                generation: 0,
            },
            ApplyEventRef::Rollback { key, start_ts } => RowRef {
                start_ts,
                commit_ts: 0,
                log_type: event::LogType::Rollback,
                op_type: event::row::OpType::Unknown,
                key,
                value: &[],
                old_value: &[],
                txn_source: 0,
                generation: 0,
            },
            ApplyEventRef::OnePc {
                key,
                start_ts,
                commit_ts,
                op,
                value,
                old_value,
                txn_source,
            } => RowRef {
                start_ts,
                commit_ts,
                log_type: event::LogType::Committed,
                op_type: op_type(op),
                key,
                value: value_of(op, value),
                old_value,
                txn_source,
                generation: 0,
            },
        }
    }

    /// The row's commit ts (0 for PREWRITE and ROLLBACK rows).
    pub(crate) fn commit_ts(&self) -> u64 {
        self.commit_ts
    }

    /// The row's txn_source bitmap.
    pub(crate) fn txn_source(&self) -> u64 {
        self.txn_source
    }

    /// The raw key.
    pub(crate) fn key(&self) -> &'a [u8] {
        self.key
    }

    /// Payload size as TiKV measures it for the 32 KiB `Entries` limit (key + value + old value).
    pub(crate) fn payload(&self) -> usize {
        self.key
            .len()
            .saturating_add(self.value.len())
            .saturating_add(self.old_value.len())
    }

    fn encoded_len(&self) -> usize {
        varint_field_len(self.start_ts)
            + varint_field_len(self.commit_ts)
            + varint_field_len(self.log_type as u64)
            + varint_field_len(self.op_type as u64)
            + bytes_field_len(self.key)
            + bytes_field_len(self.value)
            + bytes_field_len(self.old_value)
            + varint_field_len(self.txn_source)
            + varint_field_len(self.generation)
    }

    /// Bytes [`put_entry`](Self::put_entry) appends.
    pub(crate) fn entry_len(&self) -> usize {
        let len = self.encoded_len();
        1 + varint_len(len as u64) + len
    }

    /// Appends the row as one element of `Entries.entries` (field 1: tag, length, row).
    pub(crate) fn put_entry(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len();
        out.reserve(1 + varint_len(len as u64) + len);
        // The fixed-size fields go through a stack buffer, the byte fields are copied straight.
        let mut head = Small::default();
        head.len_prefix(1, len);
        head.varint_field(1, self.start_ts);
        head.varint_field(2, self.commit_ts);
        head.varint_field(3, self.log_type as u64);
        head.varint_field(4, self.op_type as u64);
        out.extend_from_slice(head.bytes());
        for (field, b) in [(5, self.key), (6, self.value), (7, self.old_value)] {
            if !b.is_empty() {
                let mut h = Small::default();
                h.len_prefix(field, b.len());
                out.extend_from_slice(h.bytes());
                out.extend_from_slice(b);
            }
        }
        // Field 8 (expire_ts_unix_secs) is RawKV only: never set here.
        let mut tail = Small::default();
        tail.varint_field(9, self.txn_source);
        tail.varint_field(10, self.generation);
        out.extend_from_slice(tail.bytes());
    }
}

/// A few protobuf header bytes assembled on the stack: at most a length prefix and four varint
/// fields (37 bytes), so the buffer never fills.
struct Small {
    buf: [u8; 48],
    len: usize,
}

impl Default for Small {
    fn default() -> Self {
        Small {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl Small {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    fn varint_field(&mut self, field: u8, v: u64) {
        if v != 0 {
            self.byte(tag(field, VARINT));
            self.varint(v);
        }
    }

    /// The tag and length of a length-delimited field.
    fn len_prefix(&mut self, field: u8, len: usize) {
        self.byte(tag(field, LEN));
        self.varint(len as u64);
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Room kept in front of an entries body for the `Event` header written once the body is
/// complete: the piece tag and length (1 + 10), region_id (1 + 10) and the entries field's tag
/// and length (1 + 10).
const HEADER_ROOM: usize = 33;

/// One region's rows for one downstream being encoded into `Event`s of at most about
/// `max_bytes` of row payload each (TiKV's 32 KiB `Entries` limit): a new `Event` starts when
/// adding a row would reach the limit, and a single oversized row still gets its own `Event`.
#[derive(Debug)]
pub(crate) struct EntriesWriter {
    region_id: u64,
    request_id: u64,
    max_bytes: usize,
    /// `HEADER_ROOM` spare bytes, then the current `Event`'s `Entries` body.
    body: Vec<u8>,
    payload: usize,
    done: Vec<Bytes>,
}

impl EntriesWriter {
    /// An empty writer; `bytes_hint` (the expected encoded size of the rows) sizes the first
    /// body, capped at what one `Event` holds.
    pub(crate) fn new(
        region_id: u64,
        request_id: u64,
        max_bytes: usize,
        bytes_hint: usize,
    ) -> Self {
        let room = bytes_hint
            .min(max_bytes.saturating_mul(2))
            .saturating_add(16);
        let mut body = Vec::with_capacity(HEADER_ROOM + room);
        body.resize(HEADER_ROOM, 0);
        EntriesWriter {
            region_id,
            request_id,
            max_bytes,
            body,
            payload: 0,
            done: Vec::new(),
        }
    }

    /// The region the rows belong to.
    pub(crate) fn region_id(&self) -> u64 {
        self.region_id
    }

    /// Appends one row.
    pub(crate) fn push(&mut self, row: &RowRef<'_>) {
        let size = row.payload();
        if self.body.len() > HEADER_ROOM && self.payload.saturating_add(size) >= self.max_bytes {
            self.seal(false);
        }
        self.payload = self.payload.saturating_add(size);
        row.put_entry(&mut self.body);
    }

    /// Appends a row already encoded by [`RowRef::put_entry`] (one row going to several
    /// downstreams is encoded once); `payload` is its [`RowRef::payload`].
    pub(crate) fn push_encoded(&mut self, entry: &[u8], payload: usize) {
        if self.body.len() > HEADER_ROOM && self.payload.saturating_add(payload) >= self.max_bytes {
            self.seal(false);
        }
        self.payload = self.payload.saturating_add(payload);
        self.body.extend_from_slice(entry);
    }

    /// Closes the current `Event` (if it has rows) into a framed piece.
    fn seal(&mut self, last: bool) {
        if self.body.len() <= HEADER_ROOM {
            return;
        }
        let mut body = if last {
            std::mem::take(&mut self.body)
        } else {
            let next = Vec::with_capacity(self.body.capacity());
            let body = std::mem::replace(&mut self.body, next);
            self.body.resize(HEADER_ROOM, 0);
            body
        };
        self.payload = 0;
        let entries_len = body.len() - HEADER_ROOM;
        let event_len = varint_field_len(self.region_id)
            + 1
            + varint_len(entries_len as u64)
            + entries_len
            + varint_field_len(self.request_id);
        let mut tail = Small::default();
        tail.varint_field(7, self.request_id);
        body.extend_from_slice(tail.bytes());
        // The header, built on the side, then copied right-aligned into the spare room.
        let mut head = Small::default();
        head.len_prefix(1, event_len);
        head.varint_field(1, self.region_id);
        head.len_prefix(3, entries_len);
        let start = HEADER_ROOM - head.bytes().len();
        if let Some(room) = body.get_mut(start..HEADER_ROOM) {
            room.copy_from_slice(head.bytes());
        }
        let mut piece = Bytes::from(body);
        let _ = piece.split_to(start);
        self.done.push(piece);
    }

    /// The encoded `Event`s, as framed pieces, in order.
    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        self.seal(true);
        self.done
    }
}

/// Frames an `Event` built as a struct (scan chunks, errors, legacy resolved ts).
pub(crate) fn event_piece(ev: &Event) -> Bytes {
    piece(1, ev)
}

/// Frames a batched `ResolvedTs`.
pub(crate) fn resolved_piece(rts: &ResolvedTs) -> Bytes {
    piece(2, rts)
}

/// `msg` as field `field` of `ChangeDataEvent`.
fn piece(field: u8, msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut head = Small::default();
    head.len_prefix(field, len);
    let mut out = Vec::with_capacity(head.bytes().len() + len);
    out.extend_from_slice(head.bytes());
    msg.encode_raw(&mut out);
    Bytes::from(out)
}

/// One `ChangeDataEvent` as its framed fields; the message is their concatenation.
#[derive(Debug, Default, Clone)]
pub(crate) struct WireMessage {
    pieces: Vec<Bytes>,
    len: usize,
}

impl WireMessage {
    /// Adds one framed field.
    pub(crate) fn push(&mut self, piece: Bytes) {
        self.len = self.len.saturating_add(piece.len());
        self.pieces.push(piece);
    }

    /// The message's encoded length.
    pub(crate) fn encoded_len(&self) -> usize {
        self.len
    }

    /// The message's bytes (copies; for tests).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for p in &self.pieces {
            out.extend_from_slice(p);
        }
        out
    }
}

/// Writes [`WireMessage`]s as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WireEncoder;

impl Encoder for WireEncoder {
    type Item = WireMessage;
    type Error = Status;

    fn encode(&mut self, item: WireMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len);
        for p in &item.pieces {
            dst.put_slice(p);
        }
        Ok(())
    }
}

/// The `ChangeData` codec of the sim's stores: requests decoded by prost, responses written
/// from pre-encoded bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FeedCodec;

impl Codec for FeedCodec {
    type Encode = WireMessage;
    type Decode = ChangeDataRequest;
    type Encoder = WireEncoder;
    type Decoder = ProstDecoder<ChangeDataRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidal_proto::cdcpb::ChangeDataEvent;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Put), Just(Op::Delete)]
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn ts() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), any::<u64>(), 0u64..300]
    }

    fn apply_event() -> impl Strategy<Value = ApplyEvent> {
        prop_oneof![
            (bytes(40), ts(), op(), bytes(300), bytes(40), ts(), ts()).prop_map(
                |(key, start_ts, op, value, old_value, generation, txn_source)| {
                    ApplyEvent::Prewrite {
                        key,
                        start_ts,
                        op,
                        value,
                        old_value,
                        generation,
                        txn_source,
                    }
                }
            ),
            (bytes(40), ts(), ts(), op(), ts()).prop_map(
                |(key, start_ts, commit_ts, op, txn_source)| ApplyEvent::Commit {
                    key,
                    start_ts,
                    commit_ts,
                    op,
                    txn_source,
                }
            ),
            (bytes(40), ts()).prop_map(|(key, start_ts)| ApplyEvent::Rollback { key, start_ts }),
            (bytes(40), ts(), ts(), op(), bytes(300), bytes(40), ts()).prop_map(
                |(key, start_ts, commit_ts, op, value, old_value, txn_source)| {
                    ApplyEvent::OnePc {
                        key,
                        start_ts,
                        commit_ts,
                        op,
                        value,
                        old_value,
                        txn_source,
                    }
                }
            ),
        ]
    }

    /// The reference: the row as a prost struct, built field by field from the event.
    fn row_struct(ev: &ApplyEvent) -> event::Row {
        let r = RowRef::of(&ev.as_event_ref());
        event::Row {
            start_ts: r.start_ts,
            commit_ts: r.commit_ts,
            r#type: r.log_type as i32,
            op_type: r.op_type as i32,
            key: r.key.to_vec(),
            value: r.value.to_vec(),
            old_value: r.old_value.to_vec(),
            txn_source: r.txn_source,
            generation: r.generation,
            ..Default::default()
        }
    }

    /// What prost sends for `rows` packed under `max` bytes, as `pack_rows` does.
    fn prost_pieces(region: u64, request: u64, rows: Vec<event::Row>, max: usize) -> Vec<u8> {
        let events = super::super::delegate::pack_rows(region, request, rows, max);
        ChangeDataEvent {
            events,
            resolved_ts: None,
        }
        .encode_to_vec()
    }

    proptest! {
        #[test]
        fn encoded_events_equal_prost(
            evs in prop::collection::vec(apply_event(), 1..40),
            region in ts(),
            request in ts(),
            max in prop_oneof![Just(32 * 1024usize), 1usize..800],
        ) {
            let mut w = EntriesWriter::new(region, request, max, evs.len() * 100);
            for ev in &evs {
                w.push(&RowRef::of(&ev.as_event_ref()));
            }
            let mut msg = WireMessage::default();
            for p in w.finish() {
                msg.push(p);
            }
            let rows = evs.iter().map(row_struct).collect();
            prop_assert_eq!(msg.to_bytes(), prost_pieces(region, request, rows, max));
        }

        #[test]
        fn copied_entries_equal_pushed_ones(
            evs in prop::collection::vec(apply_event(), 1..20),
            max in 1usize..600,
        ) {
            let mut a = EntriesWriter::new(3, 4, max, 0);
            let mut b = EntriesWriter::new(3, 4, max, 0);
            let mut scratch = Vec::new();
            for ev in &evs {
                let row = RowRef::of(&ev.as_event_ref());
                a.push(&row);
                scratch.clear();
                row.put_entry(&mut scratch);
                b.push_encoded(&scratch, row.payload());
            }
            prop_assert_eq!(a.finish(), b.finish());
        }

        #[test]
        fn varint_len_matches_prost(v in any::<u64>()) {
            prop_assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v));
        }
    }

    /// Decodes what a writer produced for `evs` (one region, request 1).
    fn decoded_rows(evs: &[ApplyEvent]) -> Vec<event::Row> {
        let mut w = EntriesWriter::new(1, 1, usize::MAX, evs.len());
        for ev in evs {
            w.push(&RowRef::of(&ev.as_event_ref()));
        }
        let mut msg = WireMessage::default();
        for p in w.finish() {
            msg.push(p);
        }
        let decoded = ChangeDataEvent::decode(msg.to_bytes().as_slice()).unwrap_or_default();
        decoded
            .events
            .into_iter()
            .flat_map(|e| match e.event {
                Some(event::Event::Entries(en)) => en.entries,
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn live_rows_follow_tikv_shapes() {
        let rows = decoded_rows(&[
            ApplyEvent::Prewrite {
                key: b"k".to_vec(),
                start_ts: 10,
                op: Op::Delete,
                value: b"ignored for a delete".to_vec(),
                old_value: b"old".to_vec(),
                generation: 2,
                txn_source: 4,
            },
            ApplyEvent::Commit {
                key: b"k".to_vec(),
                start_ts: 10,
                commit_ts: 11,
                op: Op::Delete,
                txn_source: 4,
            },
            ApplyEvent::Rollback {
                key: b"r".to_vec(),
                start_ts: 12,
            },
            ApplyEvent::OnePc {
                key: b"p".to_vec(),
                start_ts: 13,
                commit_ts: 14,
                op: Op::Put,
                value: b"v".to_vec(),
                old_value: Vec::new(),
                txn_source: 0,
            },
        ]);
        let expected = vec![
            event::Row {
                start_ts: 10,
                r#type: event::LogType::Prewrite as i32,
                op_type: event::row::OpType::Delete as i32,
                key: b"k".to_vec(),
                old_value: b"old".to_vec(),
                generation: 2,
                txn_source: 4,
                ..Default::default()
            },
            event::Row {
                start_ts: 10,
                commit_ts: 11,
                r#type: event::LogType::Commit as i32,
                op_type: event::row::OpType::Delete as i32,
                key: b"k".to_vec(),
                txn_source: 4,
                ..Default::default()
            },
            event::Row {
                start_ts: 12,
                r#type: event::LogType::Rollback as i32,
                op_type: event::row::OpType::Unknown as i32,
                key: b"r".to_vec(),
                ..Default::default()
            },
            event::Row {
                start_ts: 13,
                commit_ts: 14,
                r#type: event::LogType::Committed as i32,
                op_type: event::row::OpType::Put as i32,
                key: b"p".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            },
        ];
        assert_eq!(rows, expected);
    }

    #[test]
    fn struct_pieces_decode_back() {
        let ev = Event {
            region_id: 5,
            request_id: 6,
            event: Some(event::Event::ResolvedTs(9)),
            ..Default::default()
        };
        let rts = ResolvedTs {
            regions: vec![1, 2],
            ts: 77,
            request_id: 3,
        };
        let mut msg = WireMessage::default();
        msg.push(event_piece(&ev));
        msg.push(event_piece(&ev));
        assert_eq!(
            ChangeDataEvent::decode(msg.to_bytes().as_slice()).ok(),
            Some(ChangeDataEvent {
                events: vec![ev.clone(), ev],
                resolved_ts: None
            })
        );
        let mut msg = WireMessage::default();
        msg.push(resolved_piece(&rts));
        assert_eq!(msg.encoded_len(), msg.to_bytes().len());
        assert_eq!(
            ChangeDataEvent::decode(msg.to_bytes().as_slice()).ok(),
            Some(ChangeDataEvent {
                events: Vec::new(),
                resolved_ts: Some(rts)
            })
        );
    }
}
