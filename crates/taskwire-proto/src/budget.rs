//! The decoded-size budget: how much memory a body may expand into, checked before it is
//! decoded.
//!
//! Protobuf lets a few bytes stand for a whole object: an empty embedded message is two
//! bytes on the wire and a few hundred in memory, so a 16 MiB frame of them would decode
//! into gigabytes. The frame-length limit cannot catch that; this does. The rule is the
//! language-neutral one of `docs/protocol.md` §8, so every implementation refuses the
//! same bodies:
//!
//! * [`MESSAGE_COST`] for the message itself and for every embedded message at any depth
//!   (elements of repeated message fields and map entries included);
//! * the length of every string and bytes field;
//! * [`SCALAR_COST`] for every scalar field occurrence, and per byte of a packed field;
//! * nothing for fields the schema does not know (they are skipped, not stored).
//!
//! [`decoded_size`] walks a body with the schema's field shapes and no allocation, and
//! stops as soon as the running total passes the budget. A malformed body is walked up to
//! the point where it breaks (the decoder then reports the real error), so the budget
//! still covers everything a decoder would have built before failing.

use crate::generated::shapes::{REGISTERED, SHAPES, UNBOUNDED_NESTING};

/// Decoded size counted for each message, top level and embedded. Twice the largest
/// struct of taskwire's types (`InstanceStatus`, 456 bytes), so that a `Vec` that doubles
/// its capacity as elements arrive still stays within the count.
pub const MESSAGE_COST: usize = 1024;
/// Decoded size counted for each scalar value.
pub const SCALAR_COST: usize = 8;
/// The default budget: 64 MiB, four times the default frame limit, so a legitimate
/// 16 MiB body of strings or bytes always fits.
pub const DEFAULT_MAX_DECODED_SIZE: usize = 64 << 20;
/// Embedded messages deeper than this are not walked (decoders refuse them anyway; prost
/// stops at 100): their bytes count as data.
const MAX_DEPTH: usize = 100;

/// What a field holds, as far as the budget is concerned. Generated code builds these
/// (`cargo xtask codegen`), for taskwire's schemas and for a dialect's ([`ShapeTable`]).
#[derive(Clone, Copy, Debug)]
pub enum FieldShape {
    /// An embedded message: the index of its shape.
    Message(u16),
    /// String or bytes.
    Data,
    /// A number, bool or enum (packed when length-delimited).
    Scalar,
}

/// The fields of one message type, sorted by number.
#[derive(Debug)]
pub struct Shape {
    /// The message's full name: for tests and debugging, not needed by the walk.
    pub name: &'static str,
    /// `(field number, what it holds)`, sorted by number.
    pub fields: &'static [(u32, FieldShape)],
}

/// The shapes of one schema's messages and its type ids: what [`decoded_size_in`] walks.
/// taskwire's own table is behind [`decoded_size`]; a dialect crate (Restate's protocol,
/// say) has `cargo xtask codegen` generate one of its own.
#[derive(Debug)]
pub struct ShapeTable {
    /// Every message a registered message can contain; [`FieldShape::Message`] indexes it.
    pub shapes: &'static [Shape],
    /// `(type id, index in shapes)` of each registered message, sorted by type id.
    pub registered: &'static [(u16, u16)],
}

impl Shape {
    fn field(&self, number: u32) -> Option<FieldShape> {
        self.fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| self.fields[i].1)
    }
}

/// A body whose decoded size passes the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The decoded size counted when the walk stopped: more than `max`.
    pub counted: usize,
    /// The budget.
    pub max: usize,
}

/// The most a body can expand, as a factor of its length, under the rule: an empty
/// embedded message (2 bytes) counts [`MESSAGE_COST`].
pub const MAX_EXPANSION: usize = MESSAGE_COST / 2;

/// Checks the decoded size of `body`, a message of the registered type `type_id`, against
/// `max`; returns the size counted. Types outside the registry (users' extensions) are
/// not walked and count their length.
///
/// ```
/// use taskwire_proto::budget::{MESSAGE_COST, decoded_size};
/// use taskwire_proto::WireMessage;
/// use taskwire_proto::instance::v1::PollSignalsResponse;
///
/// // Field 1 (repeated Signal), 1,000 empty elements: 2,000 bytes on the wire.
/// let body: Vec<u8> = [0x0a, 0x00].repeat(1_000);
/// let over = decoded_size(PollSignalsResponse::TYPE_ID, &body, 64 * 1024).unwrap_err();
/// assert!(over.counted > over.max);
/// let size = decoded_size(PollSignalsResponse::TYPE_ID, &body, usize::MAX).unwrap();
/// assert_eq!(size, 1_001 * MESSAGE_COST);
/// ```
pub fn decoded_size(type_id: u16, body: &[u8], max: usize) -> Result<usize, OverBudget> {
    decoded_size_in(&TASKWIRE, type_id, body, max)
}

static TASKWIRE: ShapeTable = ShapeTable {
    shapes: SHAPES,
    registered: REGISTERED,
};

/// [`decoded_size`] for a message of another schema's `table`, by the same rule. A type id
/// the table does not register counts its length.
pub fn decoded_size_in(
    table: &ShapeTable,
    type_id: u16,
    body: &[u8],
    max: usize,
) -> Result<usize, OverBudget> {
    let shape = table
        .registered
        .binary_search_by_key(&type_id, |(id, _)| *id)
        .ok()
        .map(|i| &table.shapes[usize::from(table.registered[i].1)]);
    let mut walk = Walk {
        counted: 0,
        max,
        shapes: table.shapes,
    };
    match shape {
        Some(shape) => walk.message(shape, body, 0)?,
        None => walk.add(body.len())?,
    }
    Ok(walk.counted)
}

/// Whether `body` can pass a budget of `max` at all, without walking it: a body that
/// could not reach the budget even at [`MAX_EXPANSION`] needs no walk.
pub fn needs_walk(body_len: usize, max: usize) -> bool {
    body_len
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(MESSAGE_COST)
        > max
}

/// Whether messages of the type `type_id` can nest without bound: they embed a cycle of
/// messages (through `google.protobuf.Value`, say), so only the nesting limits of
/// docs/protocol.md stop them. Every other registered type nests no deeper than its schema
/// allows, far below those limits. An unregistered type id gives `true`.
///
/// ```
/// use taskwire_proto::budget::nests_without_bound;
/// use taskwire_proto::WireMessage;
/// use taskwire_proto::instance::v1::CheckpointRequest;
/// use taskwire_proto::runner::v1::ExecutionRequest;
///
/// assert!(!nests_without_bound(CheckpointRequest::TYPE_ID));
/// assert!(nests_without_bound(ExecutionRequest::TYPE_ID), "its params are a Struct");
/// ```
pub fn nests_without_bound(type_id: u16) -> bool {
    UNBOUNDED_NESTING.binary_search(&type_id).is_ok()
        || REGISTERED
            .binary_search_by_key(&type_id, |(id, _)| *id)
            .is_err()
}

/// The decoded size of a JSON body under the same budget: [`MESSAGE_COST`] per object or
/// array opened (outside strings) plus the body's length. JSON's shortest object, `{}`,
/// is two bytes, like protobuf's.
pub fn json_decoded_size(body: &[u8], max: usize) -> Result<usize, OverBudget> {
    let mut walk = Walk {
        counted: 0,
        max,
        shapes: SHAPES,
    };
    walk.add(body.len())?;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => walk.add(MESSAGE_COST)?,
                _ => {}
            }
        }
    }
    Ok(walk.counted)
}

struct Walk {
    counted: usize,
    max: usize,
    shapes: &'static [Shape],
}

impl Walk {
    fn add(&mut self, n: usize) -> Result<(), OverBudget> {
        self.counted = self.counted.saturating_add(n);
        if self.counted > self.max {
            Err(OverBudget {
                counted: self.counted,
                max: self.max,
            })
        } else {
            Ok(())
        }
    }

    fn message(&mut self, shape: &Shape, mut body: &[u8], depth: usize) -> Result<(), OverBudget> {
        self.add(MESSAGE_COST)?;
        while !body.is_empty() {
            let Some(key) = varint(&mut body) else {
                return Ok(());
            };
            let number = u32::try_from(key >> 3).unwrap_or(0);
            let field = shape.field(number);
            match key & 7 {
                0 => {
                    if varint(&mut body).is_none() {
                        return Ok(());
                    }
                    if field.is_some() {
                        self.add(SCALAR_COST)?;
                    }
                }
                1 | 5 => {
                    let width = if key & 7 == 1 { 8 } else { 4 };
                    let Some(rest) = body.get(width..) else {
                        return Ok(());
                    };
                    body = rest;
                    if field.is_some() {
                        self.add(SCALAR_COST)?;
                    }
                }
                2 => {
                    let Some(len) = varint(&mut body).and_then(|l| usize::try_from(l).ok()) else {
                        return Ok(());
                    };
                    let Some(data) = body.get(..len) else {
                        return Ok(());
                    };
                    body = &body[len..];
                    match field {
                        Some(FieldShape::Message(index)) if depth < MAX_DEPTH => {
                            let shapes = self.shapes;
                            self.message(&shapes[usize::from(index)], data, depth + 1)?;
                        }
                        Some(FieldShape::Message(_) | FieldShape::Data) => self.add(len)?,
                        // A packed run: at most one value per byte.
                        Some(FieldShape::Scalar) => self.add(len.saturating_mul(SCALAR_COST))?,
                        None => {}
                    }
                }
                // Group delimiters: walking on counts the group's fields as if they were
                // this message's, which can only count more.
                3 | 4 => {}
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Reads a varint; `None` if it is cut short or longer than ten bytes.
fn varint(body: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in body.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *body = &body[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WireMessage;
    use crate::instance::v1::{InstanceStatus, PollSignalsResponse, Signal};

    #[test]
    fn every_registered_type_has_a_shape_and_shapes_name_their_message() {
        for info in crate::registry::messages() {
            let i = REGISTERED
                .binary_search_by_key(&info.type_id, |(id, _)| *id)
                .unwrap_or_else(|_| panic!("{} has no shape", info.name));
            assert_eq!(SHAPES[usize::from(REGISTERED[i].1)].name, info.name);
        }
    }

    #[test]
    fn strings_count_their_length_and_embedded_messages_their_cost() {
        let response = PollSignalsResponse {
            signals: vec![
                Signal {
                    signal_id: "s1".into(),
                    instance_id: "order-7".into(),
                    ..Default::default()
                };
                3
            ],
        };
        let body = prost::Message::encode_to_vec(&response);
        let size = decoded_size(PollSignalsResponse::TYPE_ID, &body, usize::MAX).unwrap();
        assert_eq!(size, MESSAGE_COST + 3 * (MESSAGE_COST + 2 + 7));
    }

    #[test]
    fn the_walk_stops_as_soon_as_the_budget_is_passed() {
        let body = [0x0a, 0x00].repeat(1_000_000);
        let over =
            decoded_size(PollSignalsResponse::TYPE_ID, &body, 10 * MESSAGE_COST).unwrap_err();
        assert_eq!(
            over.counted,
            11 * MESSAGE_COST,
            "stopped at the first message past the budget"
        );
        assert!(needs_walk(body.len(), DEFAULT_MAX_DECODED_SIZE));
        assert!(!needs_walk(1_000, DEFAULT_MAX_DECODED_SIZE));
    }

    #[test]
    fn unknown_fields_and_malformed_tails_do_not_count_or_fail() {
        // Field 99 (unknown), then a length that runs past the end.
        let body = [0xfa, 0x06, 0x01, b'x', 0x0a, 0x7f];
        assert_eq!(
            decoded_size(InstanceStatus::TYPE_ID, &body, usize::MAX),
            Ok(MESSAGE_COST)
        );
        assert_eq!(
            decoded_size(0x7fff, &[0; 10], usize::MAX),
            Ok(10),
            "an extension type counts its length"
        );
    }

    /// The deepest chain of embedded messages from `shape`, or `None` on a cycle.
    fn message_depth(shape: usize, path: &mut Vec<usize>) -> Option<usize> {
        if path.contains(&shape) {
            return None;
        }
        path.push(shape);
        let mut deepest = 0;
        for (_, field) in SHAPES[shape].fields {
            if let FieldShape::Message(sub) = field {
                deepest = deepest.max(message_depth(usize::from(*sub), path)?);
            }
        }
        path.pop();
        Some(deepest + 1)
    }

    #[test]
    fn types_of_bounded_nesting_stay_far_below_the_nesting_limits() {
        for &(type_id, shape) in REGISTERED {
            let depth = message_depth(usize::from(shape), &mut Vec::new());
            assert_eq!(
                depth.is_none(),
                nests_without_bound(type_id),
                "{type_id:#06x}: the generated table disagrees with the shapes"
            );
            // In JSON each message level is an object and may add an array or a map:
            // two levels at most, under the envelope.
            if let Some(depth) = depth {
                assert!(
                    1 + 2 * depth < 100,
                    "{type_id:#06x} nests {depth} messages deep"
                );
            }
        }
    }

    #[test]
    fn json_counts_objects_and_arrays_outside_strings() {
        let body = br#"{"signals":[{},{"id":"{[\"{"}]}"#;
        let size = json_decoded_size(body, usize::MAX).unwrap();
        assert_eq!(size, body.len() + 4 * MESSAGE_COST);
    }
}
