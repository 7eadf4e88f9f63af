//! `proto/restate/` → `crates/taskwire-restate/src/generated/`: Restate's vendored service
//! protocol schema, with the same tools as taskwire's own (protox, prost-build,
//! pbjson-build), plus the registry of its 16-bit message types and the field shapes of
//! the decoded-size budget.
//!
//! The schema gives each message's type in a comment above it (`// Type: 0x0400 + C`:
//! a namespace base and a hex offset); the registry is read from those comments, so it
//! changes with the schema.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use prost_build::Module;
use prost_reflect::{DescriptorPool, MessageDescriptor};

use super::{HEADER, shapes};
use crate::files::GeneratedDir;

/// Where the generated code lives, relative to the workspace root.
pub(crate) const OUT_DIR: &str = "crates/taskwire-restate/src/generated";

/// The schema, relative to `proto/restate/`.
const SCHEMA: &str = "dev/restate/service/protocol.proto";

const PACKAGE: &str = "dev.restate.service.protocol";

/// Messages V7 changed incompatibly: the crate's own V5/V6 form is used in their place.
/// (The schema is the current one; taskwire speaks V5 and V6, what restate-server 1.7
/// invokes.)
const V6_FORMS: [(&str, &str); 1] = [("SuspensionMessage", "crate::v6::SuspensionMessage")];

/// The namespaces of the 16-bit type, as the protocol document gives them.
const NAMESPACES: [(u16, &str); 3] = [
    (0x0000, "control"),
    (0x0400, "command"),
    (0x8000, "notification"),
];

pub(super) fn generate(root: &Path) -> Result<GeneratedDir, String> {
    let proto_dir = root.join("proto/restate");
    let mut compiler = protox::Compiler::new([&proto_dir]).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files([SCHEMA])
        .map_err(|e| format!("compiling proto/restate/{SCHEMA}: {e:?}"))?;
    let pool = compiler.descriptor_pool();
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    let fds = compiler.file_descriptor_set();
    let file = fds
        .file
        .iter()
        .find(|f| f.package() == PACKAGE)
        .ok_or_else(|| format!("no package {PACKAGE} in {SCHEMA}"))?
        .clone();

    let mut out = GeneratedDir::new(root.join(OUT_DIR));
    let mut config = prost_build::Config::new();
    // Payloads, keys and ids borrow from the frame they were decoded from.
    config.bytes(["."]);
    let modules = config
        .generate(vec![(
            Module::from_protobuf_package_name(PACKAGE),
            file.clone(),
        )])
        .map_err(|e| format!("prost-build: {e}"))?;
    for (_, code) in modules {
        out.add(format!("{PACKAGE}.rs"), format!("{HEADER}{code}"));
    }
    let mut json = pbjson_build::Builder::new();
    json.register_descriptors(&descriptor_bytes)
        .map_err(|e| format!("pbjson-build: {e}"))?
        .ignore_unknown_fields();
    for (_, code) in json
        .generate(&[format!(".{PACKAGE}")], |_| Ok(Vec::new()))
        .map_err(|e| format!("pbjson-build: {e}"))?
    {
        let code = String::from_utf8(code).map_err(|e| e.to_string())?;
        let code = super::check_unknown_members(&code, "taskwire_proto::json::UnknownValue");
        out.add(format!("{PACKAGE}.serde.rs"), format!("{HEADER}{code}"));
    }

    let types = message_types(&file, &pool)?;
    out.add("registry.rs", registry(&types));
    let registered: BTreeMap<u16, MessageDescriptor> =
        types.iter().map(|t| (t.id, t.message.clone())).collect();
    let tables = shapes::tables(&registered, "taskwire_proto::budget");
    let mut shapes_rs = String::from(HEADER);
    shapes_rs.push_str("//! Wire shapes of Restate's messages for the decoded-size budget (`taskwire_proto::budget`).\n\n");
    shapes_rs.push_str(&tables.source);
    shapes_rs.push_str("/// The table `taskwire_proto::budget::decoded_size_in` walks.\npub(crate) static TABLE: taskwire_proto::budget::ShapeTable = taskwire_proto::budget::ShapeTable {\n    shapes: SHAPES,\n    registered: REGISTERED,\n};\n");
    out.add("shapes.rs", shapes_rs);
    out.add(
        "mod.rs",
        format!(
            "{HEADER}pub(crate) mod registry;\npub(crate) mod shapes;\n#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub, unused_qualifications)]\n#[rustfmt::skip]\npub mod protocol {{\n    include!(\"{PACKAGE}.rs\");\n    include!(\"{PACKAGE}.serde.rs\");\n}}\n"
        ),
    );
    Ok(out)
}

/// A message with a wire type.
struct MessageType {
    id: u16,
    message: MessageDescriptor,
    /// The Rust variant name: the message name without `Message`.
    variant: String,
}

impl MessageType {
    /// The Rust type of its body: the generated one, or the V5/V6 form.
    fn rust_type(&self) -> String {
        let name = self.message.name();
        V6_FORMS.iter().find(|(n, _)| *n == name).map_or_else(
            || format!("protocol::{name}"),
            |(_, path)| (*path).to_owned(),
        )
    }
}

/// Reads `Type: 0xBASE + OFFSET` (or `Type: 0xID`) from the comments above each top-level
/// message.
fn message_types(
    file: &prost_types::FileDescriptorProto,
    pool: &DescriptorPool,
) -> Result<Vec<MessageType>, String> {
    let locations = file
        .source_code_info
        .as_ref()
        .map(|info| info.location.as_slice())
        .unwrap_or_default();
    let mut types = Vec::new();
    for (i, message) in file.message_type.iter().enumerate() {
        let index = i32::try_from(i).map_err(|e| e.to_string())?;
        let comments: Vec<&str> = locations
            .iter()
            .filter(|l| l.path == [4, index])
            .flat_map(|l| {
                l.leading_detached_comments
                    .iter()
                    .map(String::as_str)
                    .chain(l.leading_comments.as_deref())
            })
            .collect();
        let Some(line) = comments
            .iter()
            .flat_map(|c| c.lines())
            .find_map(|line| line.trim().strip_prefix("Type:"))
        else {
            continue;
        };
        let name = message.name();
        let id = parse_type(line.trim()).map_err(|e| format!("{name}: {e}"))?;
        let full = format!("{PACKAGE}.{name}");
        let descriptor = pool
            .get_message_by_name(&full)
            .ok_or_else(|| format!("{full} is not in the pool"))?;
        let variant = name.strip_suffix("Message").unwrap_or(name).to_owned();
        types.push(MessageType {
            id,
            message: descriptor,
            variant,
        });
    }
    types.sort_by_key(|t| t.id);
    if let Some(pair) = types.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(format!(
            "{} and {} share type {:#06x}",
            pair[0].variant, pair[1].variant, pair[0].id
        ));
    }
    Ok(types)
}

/// `0x0400 + C` → 0x040C; `0xFBFF` → 0xFBFF. The offset is hex, as every comment in the
/// schema writes it. One comment writes its base with an extra zero (`0x04000 + 10` for
/// SendSignalCommandMessage, type 0x0410 by Restate's header table); a base is one of
/// the namespaces, so a base that is none of them but a namespace times 16 is read as
/// that namespace.
fn parse_type(text: &str) -> Result<u16, String> {
    let hex = |s: &str| {
        let digits = s.trim().trim_start_matches("0x").trim_start_matches("0X");
        u32::from_str_radix(digits, 16).map_err(|e| format!("{s:?} is not hex: {e}"))
    };
    let value = match text.split_once('+') {
        None => hex(text)?,
        Some((base, offset)) => {
            let base = hex(base)?;
            let base = NAMESPACES
                .iter()
                .map(|(b, _)| u32::from(*b))
                .find(|b| *b == base || b * 16 == base)
                .ok_or_else(|| format!("base {base:#x} is no namespace"))?;
            base + hex(offset)?
        }
    };
    u16::try_from(value).map_err(|_| format!("{value:#x} is over 16 bits"))
}

fn registry(types: &[MessageType]) -> String {
    let mut out = String::from(HEADER);
    out.push_str("//! Restate's message types, read from the `// Type:` comments of the vendored schema.\n\n");
    out.push_str("use super::protocol;\n\n");
    out.push_str("/// A message type of the service protocol, by its 16-bit code.\n");
    out.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[non_exhaustive]\npub enum MessageType {\n");
    for t in types {
        let _ = writeln!(out, "    /// `{}` ({:#06x}).", t.message.name(), t.id);
        let _ = writeln!(out, "    {},", t.variant);
    }
    out.push_str(
        "    /// A custom command (0xFC00..=0xFFFF), opaque to the runtime.\n    Custom(u16),\n",
    );
    out.push_str("    /// A code the schema does not define.\n    Unknown(u16),\n}\n\n");

    out.push_str("impl MessageType {\n");
    out.push_str("    /// The type of `code`.\n    pub const fn from_code(code: u16) -> MessageType {\n        match code {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            {:#06x} => MessageType::{},",
            t.id, t.variant
        );
    }
    out.push_str("            0xFC00..=0xFFFF => MessageType::Custom(code),\n            _ => MessageType::Unknown(code),\n        }\n    }\n\n");
    out.push_str(
        "    /// The 16-bit code.\n    pub const fn code(self) -> u16 {\n        match self {\n",
    );
    for t in types {
        let _ = writeln!(
            out,
            "            MessageType::{} => {:#06x},",
            t.variant, t.id
        );
    }
    out.push_str("            MessageType::Custom(code) | MessageType::Unknown(code) => code,\n        }\n    }\n\n");
    out.push_str("    /// The message's name in the schema, or `None` for a custom or unknown type.\n    pub const fn name(self) -> Option<&'static str> {\n        match self {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            MessageType::{} => Some({:?}),",
            t.variant,
            t.message.name()
        );
    }
    out.push_str("            MessageType::Custom(_) | MessageType::Unknown(_) => None,\n        }\n    }\n}\n\n");

    out.push_str(
        "/// Every message type the schema defines, by code.\npub const ALL: &[MessageType] = &[\n",
    );
    for t in types {
        let _ = writeln!(out, "    MessageType::{},", t.variant);
    }
    out.push_str("];\n\n");

    out.push_str("/// A decoded message of any type the schema defines, in its V5/V6 form.\n#[derive(Clone, Debug, PartialEq)]\n#[non_exhaustive]\npub enum Message {\n");
    for t in types {
        let _ = writeln!(out, "    /// `{}`.", t.message.name());
        let _ = writeln!(out, "    {}({}),", t.variant, t.rust_type());
    }
    out.push_str("}\n\nimpl Message {\n");
    out.push_str("    /// This message's type.\n    pub const fn message_type(&self) -> MessageType {\n        match self {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            Message::{}(_) => MessageType::{},",
            t.variant, t.variant
        );
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// Decodes the body of a message of type `ty`; `None` for a custom or unknown type.\n    pub fn decode(ty: MessageType, body: bytes::Bytes) -> Option<Result<Message, prost::DecodeError>> {\n        use prost::Message as _;\n        Some(match ty {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            MessageType::{v} => {n}::decode(body).map(Message::{v}),",
            v = t.variant,
            n = t.rust_type()
        );
    }
    out.push_str("            MessageType::Custom(_) | MessageType::Unknown(_) => return None,\n        })\n    }\n\n");
    out.push_str("    /// The protobuf body.\n    pub fn encode_body(&self) -> Vec<u8> {\n        use prost::Message as _;\n        match self {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            Message::{}(m) => m.encode_to_vec(),",
            t.variant
        );
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// The message as proto3 JSON.\n    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {\n        match self {\n");
    for t in types {
        let _ = writeln!(
            out,
            "            Message::{}(m) => serde_json::to_value(m),",
            t.variant
        );
    }
    out.push_str("        }\n    }\n}\n");
    for t in types {
        let _ = writeln!(
            out,
            "\nimpl From<{n}> for Message {{\n    fn from(message: {n}) -> Message {{\n        Message::{v}(message)\n    }}\n}}",
            n = t.rust_type(),
            v = t.variant
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_type;

    #[test]
    fn type_comments_parse_with_hex_offsets_and_the_one_extra_zero() {
        assert_eq!(parse_type("0x0000 + 7"), Ok(0x0007));
        assert_eq!(parse_type("0x0400 + C"), Ok(0x040C));
        assert_eq!(parse_type("0x8000 + 11"), Ok(0x8011));
        assert_eq!(parse_type("0x04000 + 10"), Ok(0x0410));
        assert_eq!(parse_type("0xFBFF"), Ok(0xFBFF));
        assert!(parse_type("0x1234 + 1").is_err());
    }
}
