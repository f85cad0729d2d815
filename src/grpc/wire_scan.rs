//! A pre-scan of a request's protobuf wire format, run before prost decodes
//! it. prost allocates every element of a repeated field before any rule
//! runs, so 4 MiB of empty `items {}` (two bytes each) would become hundreds
//! of megabytes of structs. The scan walks the bytes without allocating,
//! counts each repeated field's elements per enclosing message, and refuses
//! a request that holds more than the field's cap — the same cap the
//! request's validation applies afterwards, so nothing valid is refused.
//! What one request can make calgate allocate is then proportional to what
//! its RPC legitimately needs.
//!
//! Field shapes come from calgate's own descriptor set (the one reflection
//! serves); only the service's request messages are scanned.

use std::{collections::HashMap, sync::LazyLock};

use prost::Message;
use prost_types::{
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

use super::{convert::reads, pb};
use crate::domain::{MAX_BATCH_ITEMS, Violations, event::limits};

/// Elements a repeated field may hold when it has no tighter cap below.
/// Larger than any cap calgate validates, so it refuses only what
/// validation would refuse too.
pub const MAX_REPEATED: usize = 1000;

/// Nesting deeper than this is refused (calgate's messages nest 6 deep).
const MAX_DEPTH: usize = 32;

/// The cap of a repeated field (`package.Message.field`).
fn cap(field: &str) -> usize {
    match field {
        "calgate.v1.BatchWriteEventsRequest.items"
        | "calgate.v1.DeleteAllEventsRequest.calendar_ids"
        | "calgate.v1.ReadFreeBusyRequest.calendar_ids" => MAX_BATCH_ITEMS,
        "calgate.v1.Attendees.invite" | "calgate.v1.Attendees.remove" => limits::ATTENDEES,
        "calgate.v1.Event.reminders" => limits::REMINDERS,
        "calgate.v1.Event.subscriptions"
        | "calgate.v1.Event.attachment_ids"
        | "calgate.v1.Recurrence.rules"
        | "calgate.v1.Subscription.interaction_types" => limits::SMALL_LIST,
        "calgate.v1.RecurrenceRule.by_day" => limits::WEEKDAYS,
        "calgate.v1.QueryAvailabilityRequest.participants" => reads::MAX_GROUPS,
        "calgate.v1.ParticipantGroup.members" => reads::MAX_MEMBERS,
        "calgate.v1.QueryAvailabilityRequest.query_periods" => reads::MAX_PERIODS,
        _ => MAX_REPEATED,
    }
}

/// Why a request was refused before decoding.
#[derive(Debug)]
pub enum Refusal {
    /// Repeated fields hold more than their caps: each such field once, by
    /// path (`items[3].upsert.event.attendees.invite`), with its cap and count.
    TooMany(Violations),
    /// Not protobuf calgate could decode (or nested beyond reason).
    Malformed {
        /// The path of the message where the bytes broke (`request` at the top).
        at: String,
    },
}

impl Refusal {
    /// The refusal as field violations (INVALID_ARGUMENT with BadRequest).
    pub fn into_violations(self) -> Violations {
        match self {
            Refusal::TooMany(violations) => violations,
            Refusal::Malformed { at } => {
                let mut violations = Violations::default();
                violations.add(at, "not valid protobuf for this field's message");
                violations
            }
        }
    }

    /// The refused fields' paths.
    pub fn fields(self) -> Vec<String> {
        self.into_violations()
            .into_inner()
            .listed
            .into_iter()
            .map(|v| v.field)
            .collect()
    }
}

/// One field of a message, as the scan needs it.
#[derive(Debug)]
struct FieldShape {
    name: String,
    repeated: bool,
    /// The message type's full name, for message fields.
    message: Option<String>,
    /// Whether a repeated field of this type may come packed (numbers,
    /// enums, bools; not strings, bytes or messages).
    packable: bool,
    /// Bytes per element of a packed fixed-width scalar; 0 for varints.
    fixed_width: usize,
    max: usize,
}

/// calgate's messages by full name (`calgate.v1.Event`), and which of them
/// are request messages.
#[derive(Debug, Default)]
pub struct Shapes {
    /// Each message's fields, indexed by field number (calgate's are small).
    messages: HashMap<String, Vec<Option<FieldShape>>>,
    requests: Vec<String>,
}

/// The shapes of calgate.v1, read once from the descriptor set.
pub static SHAPES: LazyLock<Shapes> = LazyLock::new(|| Shapes::from_descriptors(pb::FILE_DESCRIPTOR_SET));

impl Shapes {
    /// Reads the shapes from an encoded `FileDescriptorSet`.
    pub fn from_descriptors(bytes: &[u8]) -> Shapes {
        let mut shapes = Shapes::default();
        // Built at compile time by build.rs: a failure here is a build fault.
        let Ok(set) = FileDescriptorSet::decode(bytes) else {
            return shapes;
        };
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                shapes.add_message(package, message);
            }
            for service in &file.service {
                for method in &service.method {
                    shapes
                        .requests
                        .push(method.input_type().trim_start_matches('.').to_owned());
                }
            }
        }
        shapes
    }

    fn add_message(&mut self, scope: &str, message: &prost_types::DescriptorProto) {
        let full = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&full, nested);
        }
        let mut fields: Vec<Option<FieldShape>> = Vec::new();
        for field in &message.field {
            let Ok(number) = usize::try_from(field.number()) else {
                continue;
            };
            let fixed_width = match field.r#type() {
                Type::Fixed64 | Type::Sfixed64 | Type::Double => 8,
                Type::Fixed32 | Type::Sfixed32 | Type::Float => 4,
                _ => 0,
            };
            let packable = !matches!(field.r#type(), Type::String | Type::Bytes | Type::Message | Type::Group);
            let shape = FieldShape {
                name: field.name().to_owned(),
                packable,
                repeated: field.label() == Label::Repeated,
                message: (field.r#type() == Type::Message)
                    .then(|| field.type_name().trim_start_matches('.').to_owned()),
                fixed_width,
                max: cap(&format!("{full}.{}", field.name())),
            };
            if fields.len() <= number {
                fields.resize_with(number + 1, || None);
            }
            fields[number] = Some(shape);
        }
        self.messages.insert(full, fields);
    }

    /// Whether `message` (full name) is one of the service's requests.
    pub fn is_request(&self, message: &str) -> bool {
        self.requests.iter().any(|request| request == message)
    }

    /// Checks `bytes`, an encoded `message` (full name), when it is one of
    /// the service's requests; anything else passes unscanned.
    pub fn check(&self, message: &str, bytes: &[u8]) -> Result<(), Refusal> {
        if !self.is_request(message) {
            return Ok(());
        }
        let mut scan = Scan {
            shapes: self,
            too_many: Violations::default(),
            merged: HashMap::new(),
        };
        scan.message(message, bytes, "", 0)?;
        if scan.too_many.is_empty() {
            Ok(())
        } else {
            Err(Refusal::TooMany(scan.too_many))
        }
    }
}

/// One request's scan.
struct Scan<'a> {
    shapes: &'a Shapes,
    /// Over-long fields, each once.
    too_many: Violations,
    /// Element counts by message path. prost merges every occurrence of a
    /// singular message field into one message, appending to its lists, so
    /// the counts of one path add up across occurrences (repeated elements
    /// have paths of their own: `items[3]`).
    merged: HashMap<String, Vec<usize>>,
}

impl Scan<'_> {
    /// Scans one occurrence of a message, noting each field that goes over
    /// its cap, once. Elements past a field's cap are counted, never
    /// scanned inside.
    fn message(&mut self, message: &str, mut bytes: &[u8], path: &str, depth: usize) -> Result<(), Refusal> {
        let malformed = || Refusal::Malformed {
            at: if path.is_empty() {
                "request".to_owned()
            } else {
                path.to_owned()
            },
        };
        if depth > MAX_DEPTH {
            return Err(malformed());
        }
        // Unknown types (well-known ones such as Timestamp) hold no repeated fields.
        let Some(fields) = self.shapes.messages.get(message) else {
            return Ok(());
        };
        // Elements seen of each field (by field number) in this message and
        // every earlier occurrence prost will merge it with.
        let mut counts = self.merged.remove(path).unwrap_or_else(|| vec![0usize; fields.len()]);
        // Only a message with lists needs its counts kept for a later merge
        // (an attendee has none: a full batch has 50,000 of them).
        let keep = fields.iter().flatten().any(|field| field.repeated);
        while !bytes.is_empty() {
            let key = varint(&mut bytes).ok_or_else(malformed)?;
            let number = usize::try_from(key >> 3).map_err(|_| malformed())?;
            let wire_type = key & 7;
            let payload = match wire_type {
                0 => {
                    varint(&mut bytes).ok_or_else(malformed)?;
                    None
                }
                1 => Some(take(&mut bytes, 8).ok_or_else(malformed)?),
                2 => {
                    let len = varint(&mut bytes).and_then(|len| usize::try_from(len).ok());
                    Some(len.and_then(|len| take(&mut bytes, len)).ok_or_else(malformed)?)
                }
                5 => Some(take(&mut bytes, 4).ok_or_else(malformed)?),
                // Groups (3, 4) are not proto3; nothing calgate accepts uses them.
                _ => return Err(malformed()),
            };
            let Some(Some(field)) = fields.get(number) else {
                continue; // Unknown fields are skipped by prost without allocating.
            };
            let index = counts[number];
            if field.repeated {
                let elements = match (field.packable, wire_type, payload) {
                    (true, 2, Some(packed)) => packed_len(packed, field.fixed_width),
                    _ => 1,
                };
                counts[number] = index.saturating_add(elements);
                if counts[number] > field.max {
                    if index <= field.max {
                        let field_path = if path.is_empty() {
                            field.name.clone()
                        } else {
                            format!("{path}.{}", field.name)
                        };
                        self.too_many.add(field_path, format!("at most {} elements", field.max));
                    }
                    continue;
                }
            }
            if let (Some(inner), 2, Some(payload)) = (&field.message, wire_type, payload) {
                let inner_path = match (path.is_empty(), field.repeated) {
                    (true, false) => field.name.clone(),
                    (true, true) => format!("{}[{index}]", field.name),
                    (false, false) => format!("{path}.{}", field.name),
                    (false, true) => format!("{path}.{}[{index}]", field.name),
                };
                self.message(inner, payload, &inner_path, depth + 1)?;
            }
        }
        if keep {
            self.merged.insert(path.to_owned(), counts);
        }
        Ok(())
    }
}

/// Elements in a packed repeated scalar's payload.
fn packed_len(payload: &[u8], fixed_width: usize) -> usize {
    if let Some(elements) = payload.len().checked_div(fixed_width) {
        return elements;
    }
    // Each varint ends with a byte whose high bit is clear.
    payload.iter().filter(|byte| **byte & 0x80 == 0).count()
}

/// The next `len` bytes, if there are that many.
fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if bytes.len() < len {
        return None;
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(head)
}

/// The next varint, if one is there (at most 10 bytes).
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields refused in `message`, if any.
    fn refused<M: Message + prost::Name>(message: &M) -> Vec<String> {
        match SHAPES.check(&M::full_name(), &message.encode_to_vec()) {
            Ok(()) => Vec::new(),
            Err(refusal) => refusal.fields(),
        }
    }

    fn batch_of(items: usize) -> pb::BatchWriteEventsRequest {
        pb::BatchWriteEventsRequest {
            items: vec![pb::BatchItem::default(); items],
            ..Default::default()
        }
    }

    #[test]
    fn every_service_request_is_known() {
        assert!(SHAPES.requests.len() >= 10, "{:?}", SHAPES.requests);
        assert!(SHAPES.requests.iter().all(|name| SHAPES.messages.contains_key(name)));
        let largest = SHAPES.messages.values().map(Vec::len).max();
        assert!(largest < Some(64), "field numbers index a vector: {largest:?}");
    }

    #[test]
    fn a_repeated_field_is_capped_where_validation_caps_it() {
        assert!(refused(&batch_of(MAX_BATCH_ITEMS)).is_empty());
        assert_eq!(refused(&batch_of(MAX_BATCH_ITEMS + 1)), ["items"]);
        let Err(Refusal::TooMany(violations)) =
            SHAPES.check("calgate.v1.BatchWriteEventsRequest", &batch_of(700).encode_to_vec())
        else {
            panic!("refused");
        };
        let listed = violations.into_inner().listed;
        assert_eq!(listed.len(), 1, "reported once");
        assert_eq!(listed[0].description, "at most 50 elements");
    }

    #[test]
    fn nested_fields_are_named_by_their_path() {
        let event = pb::Event {
            attendees: Some(pb::Attendees {
                invite: vec![pb::Attendee::default(); limits::ATTENDEES + 1],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut batch = batch_of(3);
        batch.items[2] = pb::BatchItem {
            operation: Some(pb::batch_item::Operation::Upsert(pb::BatchUpsert {
                event: Some(event.clone()),
                ..Default::default()
            })),
        };
        assert_eq!(refused(&batch), ["items[2].upsert.event.attendees.invite"]);
        let mut event = event;
        event.reminders = vec![pb::Reminder::default(); limits::REMINDERS + 1];
        let upsert = pb::UpsertEventRequest {
            event: Some(event),
            ..Default::default()
        };
        assert_eq!(
            refused(&upsert),
            ["event.attendees.invite", "event.reminders"],
            "every over-long field, once"
        );
    }

    /// prost merges every occurrence of a singular message field, appending
    /// to its lists: occurrences of one invitee each add up.
    #[test]
    fn lists_count_across_merged_occurrences_of_a_message() {
        let one_invitee = pb::UpsertEventRequest {
            event: Some(pb::Event {
                attendees: Some(pb::Attendees {
                    invite: vec![pb::Attendee::default()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let merged = one_invitee.repeat(limits::ATTENDEES + 1);
        let decoded = pb::UpsertEventRequest::decode(merged.as_slice()).expect("prost merges");
        let invitees = decoded.event.and_then(|e| e.attendees).map_or(0, |a| a.invite.len());
        assert_eq!(invitees, limits::ATTENDEES + 1, "what prost would allocate");
        let refusal = SHAPES
            .check("calgate.v1.UpsertEventRequest", &merged)
            .expect_err("refused");
        assert_eq!(refusal.fields(), ["event.attendees.invite"]);
    }

    #[test]
    fn packed_scalars_count_their_elements() {
        let rule = |days: usize| pb::UpsertEventRequest {
            event: Some(pb::Event {
                recurrence: Some(pb::Recurrence {
                    rules: vec![pb::RecurrenceRule {
                        by_day: vec![1; days],
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(refused(&rule(limits::WEEKDAYS)).is_empty());
        let empty_strings = pb::UpsertEventRequest {
            event: Some(pb::Event {
                attachment_ids: vec![String::new(); limits::SMALL_LIST + 1],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            refused(&empty_strings),
            ["event.attachment_ids"],
            "strings are never packed"
        );
        assert_eq!(
            refused(&rule(limits::WEEKDAYS + 1)),
            ["event.recurrence.rules[0].by_day"]
        );
    }

    #[test]
    fn broken_bytes_are_malformed_and_responses_pass_unscanned() {
        let bytes = batch_of(2).encode_to_vec();
        let name = "calgate.v1.BatchWriteEventsRequest";
        let malformed = |bytes: &[u8]| match SHAPES.check(name, bytes) {
            Err(Refusal::Malformed { at }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(malformed(&bytes[..bytes.len() - 1]), "request");
        assert_eq!(malformed(&[0x0b]), "request", "a group");
        // items[0] claims more bytes than it holds.
        assert_eq!(malformed(&[0x1a, 0x02, 0x0a, 0x05]), "items[0]");
        let periods = pb::ReadFreeBusyResponse {
            periods: vec![pb::FreeBusyPeriod::default(); MAX_REPEATED + 1],
        };
        assert!(refused(&periods).is_empty(), "calgate's own answers are not requests");
    }
}
