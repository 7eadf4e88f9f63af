//! Generates `shapes.rs`: the wire shape of every message a registered type can contain,
//! which `taskwire_proto::budget` walks to bound a body's decoded size before decoding it.
//!
//! A shape lists, per field number, whether the field holds an embedded message (and
//! which), string or bytes data, or scalars. That is all the decoded-size rule of
//! docs/protocol.md (§8) needs, so the table is small and language-neutral.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

use super::HEADER;

const TYPE_ID_OPTION: &str = "taskwire.options.v1.type_id";

pub(super) fn generate(pool: &DescriptorPool) -> Result<String, String> {
    let type_id_ext = pool
        .get_extension_by_name(TYPE_ID_OPTION)
        .ok_or_else(|| format!("option {TYPE_ID_OPTION} is not defined in proto/"))?;
    // The registered (top-level, typed) messages, by type id.
    let mut registered: BTreeMap<u16, MessageDescriptor> = BTreeMap::new();
    for message in pool.all_messages() {
        let options = message.options();
        if options.has_extension(&type_id_ext) {
            let raw = options.get_extension(&type_id_ext).as_u32().unwrap_or(0);
            let type_id = u16::try_from(raw)
                .map_err(|_| format!("{}: type id {raw:#x}", message.full_name()))?;
            registered.insert(type_id, message);
        }
    }
    let tables = tables(&registered, "crate::budget");
    let mut out = String::from(HEADER);
    out.push_str("//! Wire shapes for the decoded-size rule (docs/protocol.md §8), walked by `crate::budget`.\n\n");
    out.push_str(&tables.source);
    let (order, index) = (tables.order, tables.index);

    // Which registered messages reach a cycle of embedded messages (google.protobuf.Value
    // and Struct make one): only they can nest without bound, in protobuf or in JSON.
    let edges: Vec<Vec<usize>> = order
        .iter()
        .map(|message| {
            message
                .fields()
                .filter_map(|f| match f.kind() {
                    Kind::Message(sub) => Some(index[sub.full_name()]),
                    _ => None,
                })
                .collect()
        })
        .collect();
    out.push_str(
        "/// Type ids of the registered messages that can nest without bound (they contain a\n/// cycle of embedded messages), sorted.\n",
    );
    out.push_str("pub(crate) static UNBOUNDED_NESTING: &[u16] = &[\n");
    for (type_id, message) in &registered {
        if reaches_cycle(index[message.full_name()], &edges) {
            let _ = writeln!(out, "    {type_id:#06x},");
        }
    }
    out.push_str("];\n");
    Ok(out)
}

/// The shape tables of `registered` and every message they can contain.
pub(super) struct Tables {
    /// `SHAPES` and `REGISTERED`, as Rust statics of the types at `budget_path`.
    pub(super) source: String,
    /// The messages in `SHAPES` order.
    order: Vec<MessageDescriptor>,
    /// Full name → index in `SHAPES`.
    index: HashMap<String, usize>,
}

/// Generates `SHAPES` (every message reachable from `registered`, numbered in the order
/// first reached: type id order, then field order, so the output is deterministic) and
/// `REGISTERED`, with `budget_path` naming the module of `Shape` and `FieldShape`.
pub(super) fn tables(registered: &BTreeMap<u16, MessageDescriptor>, budget_path: &str) -> Tables {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<MessageDescriptor> = Vec::new();
    let mut pending: Vec<MessageDescriptor> = registered.values().cloned().collect();
    pending.reverse();
    while let Some(message) = pending.pop() {
        if index.contains_key(message.full_name()) {
            continue;
        }
        index.insert(message.full_name().to_owned(), order.len());
        order.push(message.clone());
        let mut fields: Vec<_> = message.fields().collect();
        fields.sort_by_key(|f| f.number());
        for field in fields.iter().rev() {
            if let Kind::Message(sub) = field.kind() {
                pending.push(sub);
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "use {budget_path}::{{FieldShape::{{Message as M, Data as D, Scalar as S}}, Shape}};\n"
    );
    out.push_str("/// Every message a registered message can contain, by index.\n");
    out.push_str("pub(crate) static SHAPES: &[Shape] = &[\n");
    for (i, message) in order.iter().enumerate() {
        let mut fields: Vec<_> = message.fields().collect();
        fields.sort_by_key(|f| f.number());
        let mut list = String::new();
        for field in fields {
            let shape = match field.kind() {
                Kind::Message(sub) => format!("M({})", index[sub.full_name()]),
                Kind::String | Kind::Bytes => "D".to_owned(),
                _ => "S".to_owned(),
            };
            let _ = write!(list, "({}, {shape}), ", field.number());
        }
        let _ = writeln!(
            out,
            "    /* {i} */ Shape {{ name: {:?}, fields: &[{}] }},",
            message.full_name(),
            list.trim_end_matches(", ")
        );
    }
    out.push_str("];\n\n");
    out.push_str(
        "/// `(type id, index in SHAPES)` of every registered message, sorted by type id.\n",
    );
    out.push_str("pub(crate) static REGISTERED: &[(u16, u16)] = &[\n");
    for (type_id, message) in registered {
        let _ = writeln!(out, "    ({type_id:#06x}, {}),", index[message.full_name()]);
    }
    out.push_str("];\n\n");
    Tables {
        source: out,
        order,
        index,
    }
}

/// Whether a walk from `start` along `edges` can reach a cycle.
fn reaches_cycle(start: usize, edges: &[Vec<usize>]) -> bool {
    // Depth-first with three states: 0 unseen, 1 on the current path, 2 finished.
    fn visit(node: usize, edges: &[Vec<usize>], state: &mut [u8]) -> bool {
        match state[node] {
            1 => return true,
            2 => return false,
            _ => {}
        }
        state[node] = 1;
        if edges[node].iter().any(|&next| visit(next, edges, state)) {
            return true;
        }
        state[node] = 2;
        false
    }
    visit(start, edges, &mut vec![0; edges.len()])
}
