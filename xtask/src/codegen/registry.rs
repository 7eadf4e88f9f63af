//! Generates `registry.rs`: the wire registry of every top-level message.
//!
//! For each message: its stable type id (the `taskwire.options.v1.type_id` option) as a
//! `WireMessage` impl and a row of the registry table. For each conversation: an enum of
//! its messages implementing `MessageSet`. For each rpc of a `service` block: an `Rpc` impl
//! that pairs the request type with its response type and call shape at compile time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, MessageDescriptor, MethodDescriptor};

use super::HEADER;

/// One conversation: its package, its Rust names, and its type id range.
struct ConversationSpec {
    package: &'static str,
    variant: &'static str,
    first: u16,
    last: u16,
    summary: &'static str,
}

/// The registry's ranges. The proto files hold each id; this table holds the ranges.
const CONVERSATIONS: &[ConversationSpec] = &[
    ConversationSpec {
        package: "taskwire.session.v1",
        variant: "Session",
        first: 0x0001,
        last: 0x00FF,
        summary: "session control: Hello, Negotiated, Refused, Status, call headers, Ping, GoAway",
    },
    ConversationSpec {
        package: "taskwire.instance.v1",
        variant: "Instance",
        first: 0x0100,
        last: 0x01FF,
        summary: "a workflow instance and the engine core",
    },
    ConversationSpec {
        package: "taskwire.environment.v1",
        variant: "Environment",
        first: 0x0200,
        last: 0x02FF,
        summary: "a management client and the environment: images and instance lifecycle",
    },
    ConversationSpec {
        package: "taskwire.management.v1",
        variant: "Management",
        first: 0x0300,
        last: 0x03FF,
        summary: "the environment and the engine core",
    },
    ConversationSpec {
        package: "taskwire.runner.v1",
        variant: "Runner",
        first: 0x0400,
        last: 0x04FF,
        summary: "an orchestrator dispatching jobs to runners",
    },
    ConversationSpec {
        package: "taskwire.journal.v1",
        variant: "Journal",
        first: 0x0500,
        last: 0x05FF,
        summary: "a durable-execution journal stream",
    },
];

/// Messages that conversation enums hold in a `Box`: each is over 256 bytes as a Rust
/// value, and an enum is as large as its largest variant, so one of them inline would make
/// every frame of its conversation move hundreds of bytes several times on the way out of
/// the decoder (measured: decoding a 128-byte frame into a 464-byte enum took 1.8× the time
/// of decoding it into its own type). The price is one allocation per frame of these
/// types. `taskwire-proto`'s `conversation_enums_stay_small` test names any message that
/// should join this list.
const BOXED_IN_ENUMS: &[&str] = &[
    "taskwire.instance.v1.InstanceStatus",
    "taskwire.instance.v1.GetInstanceStatusResponse",
    "taskwire.instance.v1.InstanceEvent",
    "taskwire.environment.v1.GetInstanceStatusResponse",
    "taskwire.management.v1.GetInstanceStatusResponse",
];

const TYPE_ID_OPTION: &str = "taskwire.options.v1.type_id";
const ONE_WAY_OPTION: &str = "taskwire.options.v1.one_way";
const REPLAY_SAFE_OPTION: &str = "taskwire.options.v1.replay_safe";

/// One rpc of a `service` block and the options the generator reads.
struct RpcEntry {
    path: String,
    method: MethodDescriptor,
    one_way: bool,
    replay_safe: bool,
}

struct Entry {
    type_id: u16,
    name: String,
    rust: String,
    short: String,
    /// Held in a `Box` by its conversation enum (see [`BOXED_IN_ENUMS`]).
    boxed: bool,
}

impl Entry {
    /// The type a conversation enum's variant holds.
    fn variant_type(&self) -> String {
        if self.boxed {
            format!("::prost::alloc::boxed::Box<{}>", self.rust)
        } else {
            self.rust.clone()
        }
    }

    /// Wraps a decoded message, `m`, into the variant of `ty`.
    fn wrap(&self, ty: &str) -> String {
        if self.boxed {
            format!(
                "|m| {ty}::{}(::prost::alloc::boxed::Box::new(m))",
                self.short
            )
        } else {
            format!("{ty}::{}", self.short)
        }
    }
}

/// The generated registry source, and the Markdown tables of messages and rpcs for
/// docs/protocol.md.
pub(super) struct Registry {
    pub(super) source: String,
    pub(super) messages_table: String,
    pub(super) rpcs_table: String,
}

pub(super) fn generate(pool: &DescriptorPool) -> Result<Registry, String> {
    let type_id_ext = pool
        .get_extension_by_name(TYPE_ID_OPTION)
        .ok_or_else(|| format!("option {TYPE_ID_OPTION} is not defined in proto/"))?;
    let one_way_ext = pool
        .get_extension_by_name(ONE_WAY_OPTION)
        .ok_or_else(|| format!("option {ONE_WAY_OPTION} is not defined in proto/"))?;
    let replay_safe_ext = pool
        .get_extension_by_name(REPLAY_SAFE_OPTION)
        .ok_or_else(|| format!("option {REPLAY_SAFE_OPTION} is not defined in proto/"))?;
    let flag = |method: &MethodDescriptor, ext: &ExtensionDescriptor| {
        method.options().has_extension(ext)
            && method.options().get_extension(ext).as_bool() == Some(true)
    };

    let mut errors = Vec::new();
    let mut by_conversation: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
    let mut by_id: HashMap<u16, String> = HashMap::new();
    for file in pool.files() {
        let package = file.package_name();
        if !package.starts_with("taskwire.") || package == "taskwire.options.v1" {
            continue;
        }
        let Some(index) = CONVERSATIONS.iter().position(|c| c.package == package) else {
            errors.push(format!(
                "{}: package {package} is not a registered conversation (xtask/src/codegen/registry.rs)",
                file.name()
            ));
            continue;
        };
        let spec = &CONVERSATIONS[index];
        for message in file.messages() {
            let name = message.full_name().to_owned();
            let options = message.options();
            if !options.has_extension(&type_id_ext) {
                errors.push(format!(
                    "{name}: top-level message has no ({TYPE_ID_OPTION}) option"
                ));
                continue;
            }
            let raw = options.get_extension(&type_id_ext).as_u32().unwrap_or(0);
            let Ok(type_id) = u16::try_from(raw) else {
                errors.push(format!("{name}: type id {raw:#x} does not fit in u16"));
                continue;
            };
            if !(spec.first..=spec.last).contains(&type_id) {
                errors.push(format!(
                    "{name}: type id {type_id:#06x} is outside {package}'s range {:#06x}..={:#06x}",
                    spec.first, spec.last
                ));
            }
            if let Some(other) = by_id.insert(type_id, name.clone()) {
                errors.push(format!(
                    "{name}: type id {type_id:#06x} is already used by {other}"
                ));
            }
            let short = message.name().to_owned();
            if !is_upper_camel(&short) {
                errors.push(format!("{name}: message names must be UpperCamelCase"));
            }
            by_conversation.entry(index).or_default().push(Entry {
                type_id,
                rust: rust_path(&message),
                boxed: BOXED_IN_ENUMS.contains(&name.as_str()),
                name,
                short,
            });
        }
    }

    let mut rpcs = Vec::new();
    let mut request_owner: HashMap<String, String> = HashMap::new();
    for service in pool.services() {
        if !service.package_name().starts_with("taskwire.") {
            continue;
        }
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let request = method.input().full_name().to_owned();
            if let Some(other) = request_owner.insert(request.clone(), path.clone()) {
                errors.push(format!(
                    "{path}: request type {request} is already the request of {other}; give each rpc its own request message"
                ));
            }
            rpcs.push(RpcEntry {
                one_way: flag(&method, &one_way_ext),
                replay_safe: flag(&method, &replay_safe_ext),
                path,
                method,
            });
        }
    }
    for boxed in BOXED_IN_ENUMS {
        if !by_id.values().any(|name| name == boxed) {
            errors.push(format!(
                "{boxed}: named in BOXED_IN_ENUMS but not a registered message"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "proto/ breaks registry rules:\n  {}",
            errors.join("\n  ")
        ));
    }
    for entries in by_conversation.values_mut() {
        entries.sort_by_key(|e| e.type_id);
    }

    let mut out = String::from(HEADER);
    out.push_str(PRELUDE);
    conversation_enum(&mut out);
    wire_message_impls(&mut out, &by_conversation);
    registry_table(&mut out, &by_conversation);
    for (index, entries) in &by_conversation {
        message_set_enum(&mut out, &CONVERSATIONS[*index], entries);
    }
    any_message_enum(&mut out, &by_conversation);
    rpc_impls(&mut out, &rpcs, &by_id);

    let mut messages_table = String::from("| type id | message | conversation |\n|---|---|---|\n");
    let mut all: Vec<(&Entry, &ConversationSpec)> = by_conversation
        .iter()
        .flat_map(|(i, entries)| entries.iter().map(move |e| (e, &CONVERSATIONS[*i])))
        .collect();
    all.sort_by_key(|(e, _)| e.type_id);
    for (entry, spec) in all {
        let _ = writeln!(
            messages_table,
            "| `{:#06x}` | `{}` | {} |",
            entry.type_id,
            entry.name,
            spec.variant.to_lowercase()
        );
    }
    let mut rpcs_table = String::from(
        "| method | request | response | shape | replay-safe |\n|---|---|---|---|---|\n",
    );
    for RpcEntry {
        path,
        method,
        one_way,
        replay_safe,
    } in &rpcs
    {
        let shape = shape_name(*one_way, method);
        let request = if method.is_client_streaming() {
            format!("stream `{}`", method.input().full_name())
        } else {
            format!("`{}`", method.input().full_name())
        };
        let response = if *one_way {
            "none".to_owned()
        } else if method.is_server_streaming() {
            format!("stream `{}`", method.output().full_name())
        } else {
            format!("`{}`", method.output().full_name())
        };
        let replay_safe = if *replay_safe { "yes" } else { "no" };
        let _ = writeln!(
            rpcs_table,
            "| `{path}` | {request} | {response} | {shape} | {replay_safe} |"
        );
    }
    Ok(Registry {
        source: out,
        messages_table,
        rpcs_table,
    })
}

fn shape_name(one_way: bool, method: &MethodDescriptor) -> &'static str {
    match (
        one_way,
        method.is_client_streaming(),
        method.is_server_streaming(),
    ) {
        (true, _, _) => "OneWay",
        (false, false, false) => "Unary",
        (false, false, true) => "ServerStreaming",
        (false, true, false) => "ClientStreaming",
        (false, true, true) => "BidiStreaming",
    }
}

const PRELUDE: &str = r#"
use ::bytes::{BufMut, Bytes};
use ::serde::{Deserializer, Serializer};

use crate::registry::{
    CallShape, MessageInfo, MessageSet, MessageVisitor, Rpc, RpcInfo, WireMessage,
};
"#;

fn is_upper_camel(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The Rust path of a top-level message, as seen from `generated::registry`.
fn rust_path(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    match message.full_name() {
        "google.protobuf.Timestamp" => return "crate::wkt::Timestamp".to_owned(),
        "google.protobuf.Duration" => return "crate::wkt::Duration".to_owned(),
        "google.protobuf.Struct" => return "crate::wkt::Struct".to_owned(),
        "google.protobuf.Value" => return "crate::wkt::Value".to_owned(),
        "google.protobuf.ListValue" => return "crate::wkt::ListValue".to_owned(),
        _ if package == "google.protobuf" => return format!("::pbjson_types::{}", message.name()),
        _ => {}
    }
    format!("super::{}::{}", package.replace('.', "::"), message.name())
}

fn conversation_enum(out: &mut String) {
    out.push_str(
        "\n/// The conversations taskwire defines, each with its own protobuf package and type id range.\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]\n\
         #[non_exhaustive]\n\
         pub enum Conversation {\n",
    );
    for c in CONVERSATIONS {
        let _ = writeln!(
            out,
            "    /// `{}`: {}; type ids {:#06x}..={:#06x}.\n    {},",
            c.package, c.summary, c.first, c.last, c.variant
        );
    }
    out.push_str("}\n\nimpl Conversation {\n");
    let _ = writeln!(
        out,
        "    /// Every conversation, in type id order.\n    pub const ALL: [Conversation; {}] = [{}];",
        CONVERSATIONS.len(),
        CONVERSATIONS
            .iter()
            .map(|c| format!("Conversation::{}", c.variant))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str("\n    /// The protobuf package of this conversation.\n    pub const fn package(self) -> &'static str {\n        match self {\n");
    for c in CONVERSATIONS {
        let _ = writeln!(
            out,
            "            Conversation::{} => \"{}\",",
            c.variant, c.package
        );
    }
    out.push_str("        }\n    }\n\n    /// The type ids reserved for this conversation's messages.\n    pub const fn type_id_range(self) -> ::core::ops::RangeInclusive<u16> {\n        match self {\n");
    for c in CONVERSATIONS {
        let _ = writeln!(
            out,
            "            Conversation::{} => {:#06x}..={:#06x},",
            c.variant, c.first, c.last
        );
    }
    out.push_str("        }\n    }\n\n    /// The conversation whose range holds `type_id`, if any.\n    pub const fn of_type_id(type_id: u16) -> Option<Conversation> {\n        match type_id {\n");
    for c in CONVERSATIONS {
        let _ = writeln!(
            out,
            "            {:#06x}..={:#06x} => Some(Conversation::{}),",
            c.first, c.last, c.variant
        );
    }
    out.push_str("            _ => None,\n        }\n    }\n}\n");
}

fn wire_message_impls(out: &mut String, all: &BTreeMap<usize, Vec<Entry>>) {
    out.push('\n');
    for entry in all.values().flatten() {
        let _ = writeln!(
            out,
            "impl WireMessage for {} {{\n    const TYPE_ID: u16 = {:#06x};\n    const NAME: &'static str = \"{}\";\n}}",
            entry.rust, entry.type_id, entry.name
        );
    }
}

fn registry_table(out: &mut String, all: &BTreeMap<usize, Vec<Entry>>) {
    let mut rows: Vec<(&Entry, &ConversationSpec)> = all
        .iter()
        .flat_map(|(i, entries)| entries.iter().map(move |e| (e, &CONVERSATIONS[*i])))
        .collect();
    rows.sort_by_key(|(e, _)| e.type_id);
    out.push_str("\n/// Every registered message, sorted by type id.\npub(crate) static MESSAGES: &[MessageInfo] = &[\n");
    for (entry, spec) in rows {
        let _ = writeln!(
            out,
            "    MessageInfo {{ type_id: {:#06x}, name: \"{}\", conversation: Conversation::{} }},",
            entry.type_id, entry.name, spec.variant
        );
    }
    out.push_str("];\n");
}

fn message_set_enum(out: &mut String, spec: &ConversationSpec, entries: &[Entry]) {
    let ty = format!("{}Message", spec.variant);
    let _ = write!(
        out,
        "\n/// Any message of the {} conversation (`{}`): {}.\n\
         ///\n/// Decoding a frame into this enum dispatches on the frame's type id.\n\
         #[derive(Clone, PartialEq, Debug)]\n#[non_exhaustive]\npub enum {ty} {{\n",
        spec.variant.to_lowercase(),
        spec.package,
        spec.summary
    );
    for e in entries {
        let _ = writeln!(
            out,
            "    /// `{}`, type id {:#06x}.\n    {}({}),",
            e.name,
            e.type_id,
            e.short,
            e.variant_type()
        );
    }
    out.push_str("}\n");
    for e in entries {
        let value = if e.boxed {
            "::prost::alloc::boxed::Box::new(message)"
        } else {
            "message"
        };
        let _ = writeln!(
            out,
            "\nimpl From<{rust}> for {ty} {{\n    fn from(message: {rust}) -> Self {{\n        {ty}::{short}({value})\n    }}\n}}",
            rust = e.rust,
            short = e.short
        );
        if e.boxed {
            let _ = writeln!(
                out,
                "\nimpl From<{boxed}> for {ty} {{\n    fn from(message: {boxed}) -> Self {{\n        {ty}::{short}(message)\n    }}\n}}",
                boxed = e.variant_type(),
                short = e.short
            );
        }
    }
    let ids = entries
        .iter()
        .map(|e| format!("{:#06x}", e.type_id))
        .collect::<Vec<_>>()
        .join(" | ");
    let _ = writeln!(out, "\nimpl MessageSet for {ty} {{");
    let _ = writeln!(
        out,
        "    fn contains(type_id: u16) -> bool {{\n        matches!(type_id, {ids})\n    }}\n"
    );
    // The package once, then the short name: a shorter match than on the full names.
    let _ = write!(
        out,
        "    fn type_id_of(name: impl AsRef<[u8]>) -> Option<u16> {{\n        match name.as_ref().strip_prefix(b\"{}.\")? {{\n",
        spec.package
    );
    for e in entries {
        let _ = writeln!(
            out,
            "            b\"{}\" => Some({:#06x}),",
            e.short, e.type_id
        );
    }
    out.push_str("            _ => None,\n        }\n    }\n\n");
    // Each arm builds its variant first and merges the body into the message where it
    // lies: decoding into a local and then moving it into the enum, and the enum into the
    // frame, copied the whole enum on the way (callgrind on `cargo bench --bench
    // codec_ratios`, 128-byte frames: 1,522 instructions a frame that way, 1,314 to 1,349
    // this way as inlining varies between builds, against 1,188 for bare prost). The
    // `if let` always matches; it only names the message inside the variant.
    out.push_str("    #[inline(always)]\n    fn decode_body(type_id: u16, body: Bytes) -> Option<Result<Self, ::prost::DecodeError>> {\n        Some(Ok(match type_id {\n");
    for e in entries {
        let (default, inner) = if e.boxed {
            ("::prost::alloc::boxed::Box::default()", "m.as_mut()")
        } else {
            ("::core::default::Default::default()", "m")
        };
        let _ = writeln!(
            out,
            "            {id:#06x} => {{\n                let mut message = {ty}::{v}({default});\n                if let {ty}::{v}(m) = &mut message {{\n                    if let Err(error) = ::prost::Message::merge({inner}, body) {{\n                        return Some(Err(error));\n                    }}\n                }}\n                message\n            }}",
            id = e.type_id,
            v = e.short,
        );
    }
    out.push_str("            _ => return None,\n        }))\n    }\n\n");
    per_variant(out, &ty, entries, "fn type_id(&self) -> u16", |e| {
        format!("{:#06x}", e.type_id)
    });
    per_variant(out, &ty, entries, "fn name(&self) -> &'static str", |e| {
        format!("\"{}\"", e.name)
    });
    per_variant(out, &ty, entries, "fn body_len(&self) -> usize", |_| {
        "::prost::Message::encoded_len(m)".into()
    });
    per_variant(
        out,
        &ty,
        entries,
        "fn encode_body<B: BufMut>(&self, buf: &mut B)",
        |_| "::prost::Message::encode_raw(m, buf)".into(),
    );
    out.push_str("    fn deserialize_json_body<'de, D: Deserializer<'de>>(type_id: u16, body: D) -> Result<Self, D::Error> {\n        match type_id {\n");
    for e in entries {
        let _ = writeln!(
            out,
            "            {:#06x} => <{} as ::serde::Deserialize>::deserialize(body).map({}),",
            e.type_id,
            e.rust,
            e.wrap(&ty)
        );
    }
    let _ = writeln!(
        out,
        "            _ => Err(<D::Error as ::serde::de::Error>::custom(::core::format_args!(\"type id {{type_id:#06x}} is not a message of {}\"))),\n        }}\n    }}\n",
        spec.package
    );
    per_variant(
        out,
        &ty,
        entries,
        "fn serialize_json_body<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>",
        |_| "::serde::Serialize::serialize(m, serializer)".into(),
    );
    // Always inlined: an encoder's visitor is then compiled into its caller once per
    // message type, as a frame of one type is. Out of line, the call, its saved registers
    // and a `visit` too large to inline anything into cost the binary encoder of a 128 B
    // `InstanceMessage` 0.79× → 0.74× of bare prost (`--bench codec_ratios`); inlined it
    // measured 0.89–0.94×.
    per_variant_inlined(
        out,
        &ty,
        entries,
        "#[inline(always)]",
        "fn visit<V: MessageVisitor>(&self, visitor: V) -> V::Output",
        |e| {
            if e.boxed {
                "visitor.visit(m.as_ref())".into()
            } else {
                "visitor.visit(m)".into()
            }
        },
    );
    out.push_str("}\n");
}

fn per_variant(
    out: &mut String,
    ty: &str,
    entries: &[Entry],
    signature: &str,
    body: impl Fn(&Entry) -> String,
) {
    per_variant_inlined(out, ty, entries, "#[inline]", signature, body);
}

fn per_variant_inlined(
    out: &mut String,
    ty: &str,
    entries: &[Entry],
    inline: &str,
    signature: &str,
    body: impl Fn(&Entry) -> String,
) {
    let _ = writeln!(
        out,
        "    {inline}\n    {signature} {{\n        match self {{"
    );
    for e in entries {
        let value = body(e);
        let binding = if value.contains("(m") { "m" } else { "_" };
        let _ = writeln!(out, "            {ty}::{}({binding}) => {value},", e.short);
    }
    out.push_str("        }\n    }\n\n");
}

fn any_message_enum(out: &mut String, all: &BTreeMap<usize, Vec<Entry>>) {
    let specs: Vec<&ConversationSpec> = all.keys().map(|i| &CONVERSATIONS[*i]).collect();
    out.push_str(
        "\n/// Any registered message of any conversation.\n\
         #[derive(Clone, PartialEq, Debug)]\n#[non_exhaustive]\npub enum AnyMessage {\n",
    );
    for s in &specs {
        let _ = writeln!(
            out,
            "    /// A message of `{}`.\n    {}({}Message),",
            s.package, s.variant, s.variant
        );
    }
    out.push_str("}\n");
    for s in &specs {
        let _ = writeln!(
            out,
            "\nimpl From<{v}Message> for AnyMessage {{\n    fn from(message: {v}Message) -> Self {{\n        AnyMessage::{v}(message)\n    }}\n}}",
            v = s.variant
        );
    }
    out.push_str("\nimpl MessageSet for AnyMessage {\n    fn contains(type_id: u16) -> bool {\n        match Conversation::of_type_id(type_id) {\n");
    for s in &specs {
        let _ = writeln!(
            out,
            "            Some(Conversation::{v}) => {v}Message::contains(type_id),",
            v = s.variant
        );
    }
    out.push_str("            _ => false,\n        }\n    }\n\n    fn type_id_of(name: impl AsRef<[u8]>) -> Option<u16> {\n        let name = name.as_ref();\n        let package = &name[..name.iter().rposition(|&b| b == b'.').unwrap_or(0)];\n        match package {\n");
    for s in &specs {
        let _ = writeln!(
            out,
            "            b\"{}\" => {}Message::type_id_of(name),",
            s.package, s.variant
        );
    }
    out.push_str("            _ => None,\n        }\n    }\n\n    fn decode_body(type_id: u16, body: Bytes) -> Option<Result<Self, ::prost::DecodeError>> {\n        match Conversation::of_type_id(type_id)? {\n");
    for s in &specs {
        let _ = writeln!(
            out,
            "            Conversation::{v} => {v}Message::decode_body(type_id, body).map(|r| r.map(AnyMessage::{v})),",
            v = s.variant
        );
    }
    out.push_str("        }\n    }\n\n");
    let delegate = |out: &mut String, signature: &str, call: &str| {
        let _ = writeln!(
            out,
            "    #[inline]\n    {signature} {{\n        match self {{"
        );
        for s in &specs {
            let _ = writeln!(out, "            AnyMessage::{}(m) => m.{call},", s.variant);
        }
        out.push_str("        }\n    }\n\n");
    };
    delegate(out, "fn type_id(&self) -> u16", "type_id()");
    delegate(out, "fn name(&self) -> &'static str", "name()");
    delegate(out, "fn body_len(&self) -> usize", "body_len()");
    delegate(
        out,
        "fn encode_body<B: BufMut>(&self, buf: &mut B)",
        "encode_body(buf)",
    );
    out.push_str("    fn deserialize_json_body<'de, D: Deserializer<'de>>(type_id: u16, body: D) -> Result<Self, D::Error> {\n        match Conversation::of_type_id(type_id) {\n");
    for s in &specs {
        let _ = writeln!(
            out,
            "            Some(Conversation::{v}) => {v}Message::deserialize_json_body(type_id, body).map(AnyMessage::{v}),",
            v = s.variant
        );
    }
    out.push_str("            _ => Err(<D::Error as ::serde::de::Error>::custom(::core::format_args!(\"type id {type_id:#06x} is not a registered message\"))),\n        }\n    }\n\n");
    delegate(
        out,
        "fn serialize_json_body<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>",
        "serialize_json_body(serializer)",
    );
    delegate(
        out,
        "fn visit<V: MessageVisitor>(&self, visitor: V) -> V::Output",
        "visit(visitor)",
    );
    out.push_str("}\n");
}

fn rpc_impls(out: &mut String, rpcs: &[RpcEntry], ids: &HashMap<u16, String>) {
    let id_of = |name: &str| {
        ids.iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id)
    };
    let mut rows = Vec::new();
    for RpcEntry {
        path,
        method,
        one_way,
        replay_safe,
    } in rpcs
    {
        let shape = shape_name(*one_way, method);
        let input = method.input();
        let output = method.output();
        let replay_safe_const = if *replay_safe {
            "\n    const REPLAY_SAFE: bool = true;"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "\nimpl Rpc for {} {{\n    const METHOD: &'static str = \"{path}\";\n    const SHAPE: CallShape = CallShape::{shape};{replay_safe_const}\n    type Response = {};\n}}",
            rust_path(&input),
            rust_path(&output)
        );
        let response = if *one_way {
            "None".to_owned()
        } else {
            id_of(output.full_name()).map_or("None".to_owned(), |id| format!("Some({id:#06x})"))
        };
        rows.push(format!(
            "    RpcInfo {{ method: \"{path}\", request_type_id: {:#06x}, response_type_id: {response}, shape: CallShape::{shape}, replay_safe: {replay_safe} }},",
            id_of(input.full_name()).unwrap_or(0)
        ));
    }
    out.push_str("\n/// Every rpc declared in a `service` block, in schema order.\npub(crate) static RPCS: &[RpcInfo] = &[\n");
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out.push_str("];\n");
}
