#!/usr/bin/env python3
"""The golden vectors against Python's official protobuf runtime (the `protobuf` package).

A second implementation of docs/protocol.md §12, in another language, with the messages
handled by Google's protobuf runtime instead of the Rust crates. It loads the compiled
schema conformance/vectors/taskwire.binpb (a FileDescriptorSet that `cargo xtask vectors`
writes, so no protoc is needed) and, for every valid vector:

* splits `hex` into frames itself, from the spec: binary frames by their 12-byte header
  (§2), JSON frames by their 4-byte length and envelope (§3, the stdlib-only parser of
  spec_json_peer.py), and checks each frame's type, type id (the schema's
  `taskwire.options.v1.type_id` option), stream id and flags against the listed frame;
* parses each listed `body` (canonical proto3 JSON) with json_format.Parse
  (ignore_unknown_fields=False) into the named message, decodes each binary body with
  the runtime (or parses each JSON envelope's body with json_format) and requires the
  messages to be equal; a binary and a JSON vector of the same name must hold equal
  messages too;
* encodes each message again (SerializeToString(deterministic=True) for binary bodies;
  json_format.MessageToDict in the canonical envelope for JSON frames) and compares the
  bytes with the vector. §4.1 makes the bytes canonical only for encoders that follow its
  rules, so byte differences are reported on their own, with the first differing field,
  and do not fail the check;
* re-encodes the JSON vectors with spec_json_peer.py (a peer written from the spec with
  the standard library alone) and compares its frames with the vector as messages.

Invalid vectors: the framing faults it sees itself (binary headers, lengths, truncation;
the JSON envelope through spec_json_peer.py) must be refused as listed; for `protobuf`
and `json_body` vectors it reports whether the Python runtime refuses them too, without
failing (the runtime is not the spec). `decoded_too_large` binary vectors are skipped.

    python3 conformance/python/check_vectors.py [--vectors conformance/vectors]

Exits 1 on any frame or message mismatch.
"""

import argparse
import json
import struct
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spec_json_peer as peer  # noqa: E402 - the stdlib-only JSON framing, from the spec

from google.protobuf import __version__ as PROTOBUF_VERSION  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory  # noqa: E402
from google.protobuf.internal import api_implementation  # noqa: E402

DESCRIPTOR_SET = "taskwire.binpb"
TYPE_ID_OPTION = 50100  # taskwire.options.v1.type_id, an extension of MessageOptions

# §2
HEADER_LEN = 12
VERSION = 1
END_STREAM = 0x01
STATUS = 0x02
RESERVED_FLAGS = 0xFC
STATUS_TYPE = "taskwire.session.v1.Status"


class FramingError(Exception):
    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# ---- the schema -----------------------------------------------------------------------------


def read_varint(buf, i):
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def wire_fields(buf):
    """[(field number, wire type, value, raw bytes of the whole field)] of a protobuf body."""
    out = []
    i = 0
    while i < len(buf):
        start = i
        key, i = read_varint(buf, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = read_varint(buf, i)
        elif wire_type == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire_type == 2:
            length, i = read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire_type == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire_type}")
        if i > len(buf):
            raise ValueError("field runs past the end")
        out.append((number, wire_type, value, buf[start:i]))
    return out


def load_schema(path):
    """(descriptor pool, {full name: type id}) from a serialized FileDescriptorSet."""
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    type_ids = {}
    for file in files.file:
        pool.Add(file)
        for message in file.message_type:
            # The option's extension is not known to descriptor_pb2, so it stays an unknown
            # field of MessageOptions: read it from the options' own bytes.
            for number, wire_type, value, _ in wire_fields(message.options.SerializeToString()):
                if number == TYPE_ID_OPTION and wire_type == 0:
                    type_ids[f"{file.package}.{message.name}"] = value
    return pool, type_ids


class Schema:
    def __init__(self, path):
        self.pool, self.type_ids = load_schema(path)
        self.names = {type_id: name for name, type_id in self.type_ids.items()}
        self.classes = {}

    def message_class(self, name):
        if name not in self.classes:
            descriptor = self.pool.FindMessageTypeByName(name)
            self.classes[name] = message_factory.GetMessageClass(descriptor)
        return self.classes[name]

    def from_json(self, name, value):
        """A JSON value (the canonical proto3 JSON of `name`) as a message."""
        return json_format.Parse(json.dumps(value), self.message_class(name)(),
                                 ignore_unknown_fields=False)

    def from_binary(self, name, body):
        return self.message_class(name).FromString(body)


# ---- binary framing (§2), from the spec -------------------------------------------------------


def split_binary(data, schema, max_frame_length=peer.MAX_FRAME_LENGTH,
                 max_first_frame_length=peer.MAX_FIRST_FRAME_LENGTH):
    """Yields (type name, type id, stream, flags, body) for each frame; raises FramingError.

    The header is checked in §2's order: version, flags, type id, status flag, length."""
    offset = 0
    first = True
    while offset < len(data):
        if len(data) - offset < HEADER_LEN:
            raise FramingError("truncated", f"the input ends {len(data) - offset} bytes into a header")
        version, flags, type_id, stream, length = struct.unpack_from(">BBHII", data, offset)
        if version != VERSION:
            raise FramingError("unsupported_version", f"version {version}")
        if flags & RESERVED_FLAGS:
            raise FramingError("reserved_flags", f"flags {flags:#04x}")
        name = schema.names.get(type_id)
        if name is None:
            raise FramingError("unknown_message_type", f"type id {type_id:#06x}")
        if bool(flags & STATUS) != (name == STATUS_TYPE):
            raise FramingError("status_flag_mismatch", f"flags {flags:#04x} on {name}")
        limit = min(max_frame_length, max_first_frame_length) if first else max_frame_length
        if length > limit:
            raise FramingError("frame_too_large", f"a {length}-byte body over the limit of {limit}")
        offset += HEADER_LEN
        if len(data) - offset < length:
            raise FramingError("truncated", f"a {length}-byte body with {len(data) - offset} bytes left")
        body = data[offset:offset + length]
        offset += length
        first = False
        yield name, type_id, stream, flags, body


def encode_binary(type_id, stream, flags, body):
    return struct.pack(">BBHII", VERSION, flags, type_id, stream, len(body)) + body


# ---- describing differences ---------------------------------------------------------------------


def json_diff(a, b, path=""):
    """Paths where two JSON values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += json_diff(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += json_diff(x, y, f"{path}[{i}]")
        return out
    if peer.same_json(a, b):
        return []
    return [f"{path or '.'}: {short(a)} vs {short(b)}"]


def message_diff(a, b):
    """Where two unequal messages differ, through their JSON (both with default fields)."""
    def as_dict(m):
        return json_format.MessageToDict(m, always_print_fields_with_no_presence=True,
                                         preserving_proto_field_name=True)
    diffs = json_diff(as_dict(a), as_dict(b))
    if not diffs:
        return "equal as JSON: they differ in unknown fields"
    return "; ".join(diffs[:4]) + " (decoded vs listed)"


def short(value, limit=80):
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else value.hex()
    return text if len(text) <= limit else text[:limit] + "..."


def render_field(descriptor, field):
    if field is None:
        return "nothing"
    number, wire_type, value, raw = field
    fd = descriptor.fields_by_number.get(number)
    name = fd.name if fd else f"unknown field {number}"
    if wire_type == 0:
        shown = str(value)
    elif wire_type == 2 and fd is not None and fd.type == fd.TYPE_STRING:
        shown = json.dumps(bytes(value).decode("utf-8", "replace"))
    else:
        shown = f"{len(value)} bytes {bytes(value[:24]).hex()}"
    return f"{name} (field {number}) = {shown} [{bytes(raw).hex()}]"


def explain_bytes(descriptor, expected, got, path):
    """The first field where two encodings of one message differ, descending into
    embedded messages and map entries."""
    try:
        fa, fb = wire_fields(expected), wire_fields(got)
    except ValueError as error:
        return f"{path}: not parseable ({error})"
    for k in range(max(len(fa), len(fb))):
        x = fa[k] if k < len(fa) else None
        y = fb[k] if k < len(fb) else None
        if x is not None and y is not None and x[3] == y[3]:
            continue
        if x is not None and y is not None and x[0] == y[0] and x[1] == y[1] == 2:
            fd = descriptor.fields_by_number.get(x[0])
            if fd is not None and fd.message_type is not None:
                entry = fd.message_type
                label = fd.name + ("{entry}" if entry.GetOptions().map_entry else "")
                return explain_bytes(entry, x[2], y[2], f"{path}.{label}")
        return f"{path}: the vector has {render_field(descriptor, x)}, Python writes {render_field(descriptor, y)}"
    return f"{path}: the same fields"


def explain_json(descriptor, expected, got):
    """The first object whose members two JSON texts of one frame write in another order
    (with the message type it holds), else the first differing byte."""
    def pairs(text):
        return dict(json.loads(text, object_pairs_hook=list))["body"]

    def walk(desc, a, b, path):
        if isinstance(a, list) and isinstance(b, list) and a and isinstance(a[0], tuple) \
                or a == [] and b == []:
            keys_a, keys_b = [k for k, _ in a], [k for k, _ in b]
            if keys_a != keys_b:
                what = desc.full_name if desc is not None else "object"
                return f"{path} ({what}): the vector writes members {keys_a}, json_format {keys_b}"
            for (key, x), (_, y) in zip(a, b):
                sub = None
                if desc is not None:
                    field = next((f for f in desc.fields if key in (f.json_name, f.name)), None)
                    sub = field.message_type if field is not None else None
                found = walk(sub, x, y, f"{path}.{key}")
                if found:
                    return found
        elif isinstance(a, list) and isinstance(b, list):
            for i, (x, y) in enumerate(zip(a, b)):
                found = walk(desc, x, y, f"{path}[{i}]")
                if found:
                    return found
        return None

    try:
        found = walk(descriptor, pairs(expected), pairs(got), "body")
    except (ValueError, KeyError):
        found = None
    return found or peer.first_difference(expected, got)


# ---- the valid vectors ---------------------------------------------------------------------------


class Result:
    def __init__(self, vector):
        self.vector = vector
        self.failures = []      # frame or message mismatches: the check fails
        self.byte_diffs = []    # Python's encoding is other bytes: reported only
        self.json_diffs = []    # Python's canonical JSON is another JSON value: reported only
        self.bytes_identical = True
        self.frames = []        # (type name, message) per frame, for the cross-framing check


def check_header(result, i, got, listed):
    for key in ("type", "type_id", "stream", "flags"):
        if got[key] != listed[key]:
            result.failures.append(f"frame {i}: {key} is {got[key]!r}, the vector lists {listed[key]!r}")


def listed_message(result, i, schema, listed):
    try:
        return schema.from_json(listed["type"], listed["body"])
    except Exception as error:  # noqa: BLE001 - json_format raises ParseError and others
        result.failures.append(f"frame {i}: json_format.Parse refuses the listed body: {error}")
        return None


def check_binary_vector(vector, schema):
    result = Result(vector)
    data = bytes.fromhex(vector["hex"])
    try:
        frames = list(split_binary(data, schema))
    except FramingError as error:
        result.failures.append(f"refused: {error}")
        return result
    if len(frames) != len(vector["frames"]):
        result.failures.append(f"{len(frames)} frames, the vector lists {len(vector['frames'])}")
    encoded = b""
    for i, ((name, type_id, stream, flags, body), listed) in enumerate(zip(frames, vector["frames"])):
        check_header(result, i, {"type": name, "type_id": type_id, "stream": stream, "flags": flags}, listed)
        expected = listed_message(result, i, schema, listed)
        try:
            decoded = schema.from_binary(name, body)
        except Exception as error:  # noqa: BLE001 - DecodeError
            result.failures.append(f"frame {i}: the runtime does not decode the body: {error}")
            continue
        if expected is not None and decoded != expected:
            result.failures.append(f"frame {i} ({name}): the decoded body is not the listed message: "
                                   + message_diff(decoded, expected))
        result.frames.append((name, decoded))
        again = decoded.SerializeToString(deterministic=True)
        if expected is not None and decoded == expected \
                and expected.SerializeToString(deterministic=True) != again:
            result.failures.append(f"frame {i}: the listed and decoded messages encode differently")
        if again != body:
            result.byte_diffs.append(f"frame {i}: " + explain_bytes(decoded.DESCRIPTOR, body, again, name))
        encoded += encode_binary(type_id, stream, flags, again)
        # Python's canonical JSON of the message, against the listed body as JSON values.
        printed = json_format.MessageToDict(decoded)
        for diff in json_diff(listed["body"], printed):
            result.json_diffs.append(f"frame {i} ({name}) {diff} (vector vs Python)")
    result.bytes_identical = encoded == data and not result.failures
    return result


def check_json_vector(vector, schema):
    result = Result(vector)
    data = bytes.fromhex(vector["hex"])
    try:
        frames = list(peer.split_frames(data, schema.type_ids))
    except peer.FramingError as error:
        result.failures.append(f"refused: {error}")
        return result
    if len(frames) != len(vector["frames"]):
        result.failures.append(f"{len(frames)} frames, the vector lists {len(vector['frames'])}")
    python_encoded = b""
    for i, (frame, listed) in enumerate(zip(frames, vector["frames"])):
        name = frame["type"]
        check_header(result, i, {"type": name, "type_id": schema.type_ids.get(name),
                                 "stream": frame["stream"], "flags": peer.flags_of(frame)}, listed)
        expected = listed_message(result, i, schema, listed)
        try:
            decoded = schema.from_json(name, frame["body"])
        except Exception as error:  # noqa: BLE001
            result.failures.append(f"frame {i}: json_format.Parse refuses the envelope's body: {error}")
            continue
        if expected is not None and decoded != expected:
            result.failures.append(f"frame {i} ({name}): the envelope's body is not the listed message: "
                                   + message_diff(decoded, expected))
        result.frames.append((name, decoded))
        printed = json_format.MessageToDict(decoded)
        for diff in json_diff(frame["body"], printed):
            result.json_diffs.append(f"frame {i} ({name}) {diff} (vector vs Python)")
        mine = peer.encode_frame(name, printed, frame["stream"], frame["end"])
        python_encoded += mine
        if mine[4:] != frame["text"]:
            result.byte_diffs.append(f"frame {i}: json_format's re-encoding: "
                                     + explain_json(decoded.DESCRIPTOR, frame["text"], mine[4:]))

    # The spec-only peer's re-encoding, compared with the vector as messages.
    _, peer_frames, peer_encoded = peer.check_valid(vector, schema.type_ids)
    try:
        again = list(peer.split_frames(peer_encoded, schema.type_ids))
    except peer.FramingError as error:
        result.failures.append(f"spec_json_peer's re-encoding does not split: {error}")
        again = []
    if len(again) != len(vector["frames"]):
        result.failures.append(f"spec_json_peer's re-encoding has {len(again)} frames")
    for i, (frame, listed) in enumerate(zip(again, vector["frames"])):
        check_header(result, i, {"type": frame["type"], "type_id": schema.type_ids.get(frame["type"]),
                                 "stream": frame["stream"], "flags": peer.flags_of(frame)}, listed)
        try:
            mine = schema.from_json(frame["type"], frame["body"])
            expected = schema.from_json(listed["type"], listed["body"])
        except Exception as error:  # noqa: BLE001
            result.failures.append(f"frame {i}: spec_json_peer's body does not parse: {error}")
            continue
        if mine != expected:
            result.failures.append(f"frame {i}: spec_json_peer's body is another message: "
                                   + message_diff(mine, expected))
    if peer_encoded != data:
        result.byte_diffs.append("spec_json_peer's re-encoding: " + peer.first_difference(data, peer_encoded))
    result.bytes_identical = python_encoded == data and peer_encoded == data and not result.failures
    return result


def group_of(name):
    framing, rest = name.split("/", 1)
    if rest.startswith("stream/"):
        return f"{framing} streams"
    return f"{framing} {rest.rsplit('.', 1)[0]}"


# ---- the invalid vectors ------------------------------------------------------------------------


def check_invalid(vector, schema):
    """("pass" | "fail" | "note" | "skip", text)."""
    kind = vector["error"]
    if vector["framing"] == "json":
        if kind in peer.SEEN_WITHOUT_SCHEMA:
            problem = peer.check_invalid(vector, schema.type_ids)
            return ("pass", "") if problem is None else ("fail", problem)
        if kind != "json_body":
            return "skip", kind
        data = bytes.fromhex(vector["hex"])
        try:
            frames = list(peer.split_frames(data, schema.type_ids))
        except peer.FramingError as error:
            if error.kind == "json_body":
                return "pass", ""
            return "fail", f"refused as {error}; expected json_body"
        good = 0
        for frame in frames:
            try:
                schema.from_json(frame["type"], frame["body"])
            except Exception as error:  # noqa: BLE001
                if good == vector["frames_before_error"]:
                    return "pass", f"json_format: {str(error).splitlines()[0][:100]}"
                return "fail", f"refused after {good} frames"
            good += 1
        return "note", "json_format.Parse accepts the body the spec refuses"
    if kind == "decoded_too_large":
        return "skip", kind
    limits = vector.get("limits", {})
    data = bytes.fromhex(vector["hex"])
    good = 0
    try:
        for name, _, _, _, body in split_binary(
                data, schema,
                max_frame_length=limits.get("max_frame_length", peer.MAX_FRAME_LENGTH),
                max_first_frame_length=limits.get("max_first_frame_length", peer.MAX_FIRST_FRAME_LENGTH)):
            try:
                schema.from_binary(name, body)
            except Exception as error:  # noqa: BLE001 - DecodeError
                if kind == "protobuf" and good == vector["frames_before_error"]:
                    return "pass", f"runtime: {error}"
                return "fail", f"the runtime refuses frame {good}: {error}; expected {kind} after {vector['frames_before_error']}"
            good += 1
    except FramingError as error:
        if error.kind == kind and good == vector["frames_before_error"]:
            return "pass", ""
        return "fail", f"refused as {error} after {good} frames; expected {kind} after {vector['frames_before_error']}"
    if kind == "protobuf":
        return "note", "the Python runtime decodes the body the spec refuses"
    return "fail", f"accepted {good} frames; expected {kind}"


# ---- main ------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", default=str(peer.DEFAULT_VECTORS), help="the vectors directory")
    parser.add_argument("--verbose", action="store_true", help="print every JSON printing difference")
    args = parser.parse_args()
    print(f"check_vectors: protobuf {PROTOBUF_VERSION} ({api_implementation.Type()} backend)")
    schema = Schema(Path(args.vectors) / DESCRIPTOR_SET)
    failed = passed = 0

    # The schema's type ids against the spec's registry table.
    spec_ids = peer.spec_registry()
    if spec_ids != schema.type_ids:
        failed += 1
        diffs = sorted(set(spec_ids.items()) ^ set(schema.type_ids.items()))
        print(f"FAIL registry: the spec's §11 table and the schema's type_id options differ: {diffs[:6]}")
    else:
        passed += 1
        print(f"check_vectors: registry: {len(spec_ids)} messages, the spec's §11 table agrees with the schema")

    file = peer.load(args.vectors, "valid.json")
    groups = OrderedDict()
    results = []
    for vector in file["vectors"]:
        check = check_binary_vector if vector["framing"] == "binary" else check_json_vector
        result = check(vector, schema)
        results.append(result)
        groups.setdefault(group_of(vector["name"]), []).append(result)

    # A binary vector and the JSON vector of the same name hold the same messages.
    by_name = {r.vector["name"]: r for r in results}
    for result in results:
        name = result.vector["name"]
        if not name.startswith("binary/") or result.failures:
            continue
        twin = by_name.get("json/" + name[len("binary/"):])
        if twin is None or twin.failures:
            continue
        if [m for _, m in result.frames] != [m for _, m in twin.frames]:
            result.failures.append("the JSON vector of the same name holds other messages")

    for group, members in groups.items():
        ok = sum(not r.failures for r in members)
        frames = sum(len(r.vector["frames"]) for r in members)
        same = sum(r.bytes_identical for r in members)
        json_same = sum(not r.json_diffs for r in members)
        print(f"check_vectors: {group}: {len(members)} vectors, {frames} frames: messages equal "
              f"{ok}/{len(members)}; Python re-encodes byte for byte {same}/{len(members)}; "
              f"json_format prints the listed body {json_same}/{len(members)}")
    for result in results:
        for failure in result.failures:
            print(f"FAIL {result.vector['name']}: {failure}")
        passed += not result.failures
        failed += bool(result.failures)

    byte_diffs = [(r.vector["name"], d) for r in results for d in r.byte_diffs]
    print(f"check_vectors: byte differences (reported, not failures): {len(byte_diffs)}")
    for name, diff in byte_diffs:
        print(f"  BYTES {name}: {diff}")
    json_diffs = [(r.vector["name"], d) for r in results for d in r.json_diffs]
    print(f"check_vectors: json_format prints another JSON value than the listed body "
          f"(reported, not failures): {len(json_diffs)} differences in "
          f"{len({n for n, _ in json_diffs})} vectors")
    for name, diff in json_diffs if args.verbose else json_diffs[:10]:
        print(f"  JSON {name}: {diff}")
    if len(json_diffs) > 10 and not args.verbose:
        print("  ... (--verbose lists them all)")

    invalid = peer.load(args.vectors, "invalid.json")["vectors"]
    counts = {"pass": 0, "fail": 0, "note": 0, "skip": 0}
    for vector in invalid:
        outcome, text = check_invalid(vector, schema)
        counts[outcome] += 1
        if outcome == "fail":
            print(f"FAIL {vector['name']}: {text}")
        elif outcome == "note":
            print(f"  NOTE {vector['name']} ({vector['error']}): {text}")
    passed += counts["pass"]
    failed += counts["fail"]
    print(f"check_vectors: invalid vectors: {counts['pass']} refused as listed, "
          f"{counts['note']} accepted by the Python runtime (reported, not failures), "
          f"{counts['skip']} skipped (binary decoded_too_large)")
    print(f"check_vectors: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
