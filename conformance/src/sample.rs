//! A message of every registered type, built from the descriptor set.
//!
//! Values respect the proto3 JSON mapping's ranges (timestamps in years 1..=9999,
//! durations within ±10,000 years, finite `Value` numbers, known enum values), so every
//! sample has a canonical JSON form.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use taskwire_proto::registry::{self, AnyMessage};
use taskwire_proto::{FILE_DESCRIPTOR_SET, MessageSet};

/// The schema pool, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    })
}

/// The descriptor of the registered message with this type id.
pub fn descriptor(type_id: u16) -> MessageDescriptor {
    let info =
        registry::by_type_id(type_id).unwrap_or_else(|| panic!("{type_id:#06x} unregistered"));
    pool()
        .get_message_by_name(info.name)
        .unwrap_or_else(|| panic!("{} not in pool", info.name))
}

/// A small deterministic generator (SplitMix64), so samples depend only on their seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// How fields are filled.
enum Fill<'a> {
    /// Every field set once, with fixed readable values.
    Example,
    /// Random values, random presence, random lengths.
    Random(&'a mut Rng),
}

/// The deterministic filled-in example of the message `type_id` names: every field set
/// (one member per oneof), nested messages two levels deep.
pub fn example(type_id: u16) -> AnyMessage {
    to_typed(type_id, &fill(&descriptor(type_id), &mut Fill::Example, 0))
}

/// A random message of the type `type_id` names, from `rng`.
pub fn random(type_id: u16, rng: &mut Rng) -> AnyMessage {
    to_typed(
        type_id,
        &fill(&descriptor(type_id), &mut Fill::Random(rng), 0),
    )
}

/// The same message as a reflection `DynamicMessage`, for cross-checks.
pub fn to_dynamic(message: &AnyMessage) -> DynamicMessage {
    let mut body = Vec::new();
    message.encode_body(&mut body);
    DynamicMessage::decode(descriptor(message.type_id()), body.as_slice())
        .expect("typed message decodes dynamically")
}

fn to_typed(type_id: u16, message: &DynamicMessage) -> AnyMessage {
    let bytes = message.encode_to_vec();
    AnyMessage::decode_body(type_id, bytes.into())
        .expect("registered")
        .unwrap_or_else(|e| panic!("generated types disagree with the descriptor set: {e}"))
}

const MAX_DEPTH: usize = 3;

fn fill(desc: &MessageDescriptor, mode: &mut Fill<'_>, depth: usize) -> DynamicMessage {
    if let Some(wkt) = well_known(desc, mode, depth) {
        return wkt;
    }
    let mut message = DynamicMessage::new(desc.clone());
    // One member per oneof: the first in examples, a random one (or none) otherwise.
    let mut chosen_oneof_members: HashMap<String, Option<u32>> = HashMap::new();
    for oneof in desc.oneofs() {
        let members: Vec<u32> = oneof.fields().map(|f| f.number()).collect();
        let pick = match mode {
            Fill::Example => members.first().copied(),
            Fill::Random(rng) => {
                let i = rng.below(members.len() as u64 + 1) as usize;
                members.get(i).copied()
            }
        };
        chosen_oneof_members.insert(oneof.full_name().to_owned(), pick);
    }
    for field in desc.fields() {
        if let Some(oneof) = field.containing_oneof() {
            if chosen_oneof_members.get(oneof.full_name()) != Some(&Some(field.number())) {
                continue;
            }
        } else if let Fill::Random(rng) = mode
            && rng.chance(3)
        {
            continue;
        }
        if depth >= MAX_DEPTH && matches!(field.kind(), Kind::Message(_)) && !field.is_map() {
            continue;
        }
        if let Some(value) = field_value(&field, mode, depth) {
            message.set_field(&field, value);
        }
    }
    message
}

fn count(mode: &mut Fill<'_>, depth: usize) -> usize {
    match mode {
        Fill::Example => 1,
        Fill::Random(rng) if depth < MAX_DEPTH => rng.below(4) as usize,
        Fill::Random(_) => 0,
    }
}

fn field_value(field: &FieldDescriptor, mode: &mut Fill<'_>, depth: usize) -> Option<Value> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("map fields are messages")
        };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let mut map = HashMap::new();
        for i in 0..count(mode, depth) {
            let key = map_key(&key_field.kind(), mode, i);
            let value = single_value(&value_field.kind(), mode, depth + 1)?;
            map.insert(key, value);
        }
        return Some(Value::Map(map));
    }
    if field.is_list() {
        let n = count(mode, depth);
        let items: Option<Vec<Value>> = (0..n)
            .map(|_| single_value(&field.kind(), mode, depth + 1))
            .collect();
        return Some(Value::List(items?));
    }
    single_value(&field.kind(), mode, depth + 1)
}

fn map_key(kind: &Kind, mode: &mut Fill<'_>, index: usize) -> MapKey {
    let n = match mode {
        Fill::Example => index as u64,
        Fill::Random(rng) => rng.next_u64(),
    };
    match kind {
        Kind::String => MapKey::String(match mode {
            Fill::Example => format!("key-{index}"),
            Fill::Random(rng) => random_string(rng),
        }),
        Kind::Bool => MapKey::Bool(n % 2 == 1),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(n as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(n as i64),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(n as u32),
        _ => MapKey::U64(n),
    }
}

fn random_string(rng: &mut Rng) -> String {
    const ALPHABET: &[char] = &[
        'a', 'z', '0', ' ', '"', '\\', '/', '\n', 'é', 'ß', '中', '😀', '\u{7f}', '\u{0}',
    ];
    let len = rng.below(12) as usize;
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

fn single_value(kind: &Kind, mode: &mut Fill<'_>, depth: usize) -> Option<Value> {
    let example = matches!(mode, Fill::Example);
    let bits = match mode {
        Fill::Example => 0,
        Fill::Random(rng) => rng.next_u64(),
    };
    let value = match kind {
        Kind::Double => Value::F64(if example { 2.5 } else { finite_f64(bits) }),
        Kind::Float => Value::F32(if example {
            1.25
        } else {
            finite_f64(bits) as f32
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(if example { -42 } else { bits as i32 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(if example {
            -9_007_199_254_740_993
        } else {
            bits as i64
        }),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(if example { 42 } else { bits as u32 }),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(if example {
            18_446_744_073_709_551_615
        } else {
            bits
        }),
        Kind::Bool => Value::Bool(example || bits % 2 == 1),
        Kind::String => Value::String(match mode {
            Fill::Example => "example".to_owned(),
            Fill::Random(rng) => random_string(rng),
        }),
        Kind::Bytes => Value::Bytes(match mode {
            Fill::Example => bytes::Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            Fill::Random(rng) => (0..rng.below(40))
                .map(|_| rng.next_u64() as u8)
                .collect::<Vec<u8>>()
                .into(),
        }),
        Kind::Enum(e) => {
            let values: Vec<i32> = e.values().map(|v| v.number()).filter(|n| *n != 0).collect();
            let pick = match mode {
                Fill::Example => values.first().copied().unwrap_or(0),
                Fill::Random(rng) => values
                    .get(rng.below(values.len().max(1) as u64) as usize)
                    .copied()
                    .unwrap_or(0),
            };
            Value::EnumNumber(pick)
        }
        Kind::Message(m) => {
            if depth > MAX_DEPTH + 1 {
                return None;
            }
            Value::Message(fill(m, mode, depth))
        }
    };
    Some(value)
}

fn finite_f64(bits: u64) -> f64 {
    let value = f64::from_bits(bits);
    if value.is_finite() {
        value
    } else {
        (bits >> 11) as f64
    }
}

/// Valid values for the well-known types the schemas use.
fn well_known(
    desc: &MessageDescriptor,
    mode: &mut Fill<'_>,
    depth: usize,
) -> Option<DynamicMessage> {
    let mut message = DynamicMessage::new(desc.clone());
    let rng = match mode {
        Fill::Example => None,
        Fill::Random(rng) => Some(rng),
    };
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            // 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z.
            let (seconds, nanos) = match rng {
                None => (1_700_000_000, 250_000_000),
                Some(rng) => (
                    -62_135_596_800 + rng.below(253_402_300_799 + 62_135_596_800 + 1) as i64,
                    rng.below(1_000_000_000) as i32,
                ),
            };
            message.set_field_by_name("seconds", Value::I64(seconds));
            message.set_field_by_name("nanos", Value::I32(nanos));
        }
        "google.protobuf.Duration" => {
            let (seconds, nanos) = match rng {
                None => (90, 500_000_000),
                Some(rng) => {
                    let seconds = rng.below(315_576_000_001) as i64;
                    let nanos = rng.below(1_000_000_000) as i32;
                    if rng.chance(2) {
                        (-seconds, -nanos)
                    } else {
                        (seconds, nanos)
                    }
                }
            };
            message.set_field_by_name("seconds", Value::I64(seconds));
            message.set_field_by_name("nanos", Value::I32(nanos));
        }
        "google.protobuf.Struct" => {
            let entry_kind = desc
                .get_field_by_name("fields")
                .expect("Struct.fields")
                .kind();
            let Kind::Message(entry) = entry_kind else {
                unreachable!()
            };
            let Kind::Message(value_desc) = entry.map_entry_value_field().kind() else {
                unreachable!()
            };
            let mut fields = HashMap::new();
            let mut inner = match rng {
                None => Fill::Example,
                Some(rng) => Fill::Random(rng),
            };
            let n = match &mut inner {
                Fill::Example => 1,
                Fill::Random(rng) if depth < MAX_DEPTH => rng.below(4) as usize,
                Fill::Random(_) => 0,
            };
            for i in 0..n {
                let key = match &mut inner {
                    Fill::Example => format!("field{i}"),
                    Fill::Random(rng) => random_string(rng),
                };
                fields.insert(
                    MapKey::String(key),
                    Value::Message(json_value(&value_desc, &mut inner, depth + 1)),
                );
            }
            message.set_field_by_name("fields", Value::Map(fields));
        }
        "google.protobuf.Value" => return Some(json_value(desc, mode, depth)),
        "google.protobuf.Empty" => {}
        _ => return None,
    }
    Some(message)
}

/// A `google.protobuf.Value` with a kind that survives JSON: finite numbers only.
fn json_value(desc: &MessageDescriptor, mode: &mut Fill<'_>, depth: usize) -> DynamicMessage {
    let mut value = DynamicMessage::new(desc.clone());
    // No null values: reflection drops a oneof member at its default, leaving a Value with
    // no kind, which has no JSON form.
    let choice = match mode {
        Fill::Example => 2,
        Fill::Random(rng) if depth < MAX_DEPTH => 1 + rng.below(5),
        Fill::Random(rng) => 1 + rng.below(3),
    };
    match choice {
        1 => {
            let bits = match mode {
                Fill::Random(rng) => rng.next_u64(),
                Fill::Example => 0,
            };
            value.set_field_by_name("number_value", Value::F64(finite_f64(bits)));
        }
        2 => {
            let text = match mode {
                Fill::Random(rng) => random_string(rng),
                Fill::Example => "value".to_owned(),
            };
            value.set_field_by_name("string_value", Value::String(text));
        }
        3 => value.set_field_by_name("bool_value", Value::Bool(true)),
        4 => {
            let struct_desc = pool()
                .get_message_by_name("google.protobuf.Struct")
                .expect("Struct");
            let inner = well_known(&struct_desc, mode, depth + 1).expect("Struct is well known");
            value.set_field_by_name("struct_value", Value::Message(inner));
        }
        _ => {
            let list_desc = pool()
                .get_message_by_name("google.protobuf.ListValue")
                .expect("ListValue");
            let mut list = DynamicMessage::new(list_desc);
            let n = match mode {
                Fill::Random(rng) => rng.below(3),
                Fill::Example => 1,
            };
            let items = (0..n)
                .map(|_| Value::Message(json_value(desc, mode, depth + 1)))
                .collect();
            list.set_field_by_name("values", Value::List(items));
            value.set_field_by_name("list_value", Value::Message(list));
        }
    }
    value
}
