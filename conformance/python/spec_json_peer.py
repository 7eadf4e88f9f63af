#!/usr/bin/env python3
"""The JSON framing of taskwire, written from docs/protocol.md alone (§3, §8, §9, §11).

Standard library only (json and struct): no protobuf package, no code from the Rust
crates. Run on its own, it checks the golden vectors in conformance/vectors/:

* every JSON-framing valid vector: split `hex` into frames (a 4-byte big-endian length,
  then the envelope), parse each envelope as §3 says (members in any order, `type` and
  `body` required, `stream` and `end` defaulting to 0 and false), check the frame
  against the vector's listed `type`, `type_id` (from the §11 registry table of the
  spec), `stream`, `flags` and `body` (as JSON values), then encode the frames again
  canonically (members `type`, `stream`, `end`, `body`; defaults left out; no
  whitespace) and compare the bytes with `hex`;
* every JSON-framing invalid vector whose error kind a schema-free peer can see
  (`frame_too_large`, `truncated`, `decoded_too_large`, `json_syntax`, `json_envelope`,
  `json_unknown_type`, and the `json_body` faults that need no schema: a body that is
  not an object, a member given twice): the peer must refuse it with that kind after
  the listed number of good frames. The other `json_body` vectors need the schema and
  are left to check_vectors.py;
* the framing code of examples/python-runner/runner.py (read_frame, Connection.send),
  imported without running it: it must read every valid JSON vector and write it back
  byte for byte.

The bodies stay JSON values here: check_vectors.py imports this module and compares the
re-encoded bodies with the vectors' as protobuf messages (json_format), which is the
comparison §12 asks for.

    python3 conformance/python/spec_json_peer.py [--vectors conformance/vectors]

Exits 1 if any vector disagrees.
"""

import argparse
import json
import math
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VECTORS = ROOT / "conformance" / "vectors"
SPEC = ROOT / "docs" / "protocol.md"

# §8: the default limits of a fresh connection.
MAX_FRAME_LENGTH = 16 * 1024 * 1024
MAX_FIRST_FRAME_LENGTH = 64 * 1024
MAX_DECODED_SIZE = 64 * 1024 * 1024
# §3: arrays and objects nested 128 or more deep are refused; the envelope is level 1.
MAX_JSON_DEPTH = 127
# §8.1: the decoded-size cost of every object or array a JSON text opens.
JSON_CONTAINER_COST = 1024

END_STREAM = 0x01
STATUS = 0x02
STATUS_TYPE = "taskwire.session.v1.Status"
U32_MAX = 2**32 - 1
ENVELOPE_MEMBERS = ("type", "stream", "end", "body")


class FramingError(Exception):
    """A frame the peer refuses; `kind` is the §9 error name."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def spec_registry(spec_path=SPEC):
    """The §11.1 table of the spec: {full message name: type id}."""
    text = Path(spec_path).read_text(encoding="utf-8")
    start = text.index("<!-- registry:messages:start -->")
    end = text.index("<!-- registry:messages:end -->")
    rows = re.findall(r"^\| `0x([0-9a-fA-F]{4})` \| `([A-Za-z0-9_.]+)` \|", text[start:end], re.M)
    if not rows:
        raise SystemExit(f"{spec_path}: no registry table between the registry markers")
    return {name: int(type_id, 16) for type_id, name in rows}


# ---- JSON text (§3 "Decoding", first bullet: json_syntax) -------------------------------


class _Duplicates(list):
    """The members of one JSON object in text order, so a member given twice is visible."""


def _reject_constant(name):
    raise FramingError("json_syntax", f"{name} is not JSON")


def _float(text):
    value = float(text)
    if math.isinf(value):
        raise FramingError("json_syntax", f"the number {text[:40]} is beyond a 64-bit float")
    return value


def _int(text):
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise FramingError("json_syntax", f"the number {text[:40]}... is beyond a 64-bit float") from None
    return value


def _check_value(value, depth):
    """Depth and surrogates over the whole value, unknown body members included."""
    if isinstance(value, (_Duplicates, list)):
        if depth > MAX_JSON_DEPTH:
            raise FramingError("json_syntax", f"arrays and objects nested {depth} deep")
        items = value
        if isinstance(value, _Duplicates):
            for key, _ in value:
                _check_string(key)
            items = [item for _, item in value]
        for item in items:
            _check_value(item, depth + 1)
    elif isinstance(value, str):
        _check_string(value)


def _check_string(text):
    # json.loads joins a valid surrogate pair into one code point; a lone one stays.
    for char in text:
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise FramingError("json_syntax", f"a lone surrogate \\u{ord(char):04x}")


def parse_json_text(data):
    """One well-formed UTF-8 JSON value, with objects as _Duplicates (pairs in order)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FramingError("json_syntax", f"invalid UTF-8: {error}") from None
    try:
        # json.loads refuses raw control characters in strings and anything after the
        # value but JSON whitespace (space, tab, LF, CR), as RFC 8259 does.
        value = json.loads(
            text,
            object_pairs_hook=_Duplicates,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise FramingError("json_syntax", "nested too deep for this parser") from None
    except json.JSONDecodeError as error:
        raise FramingError("json_syntax", str(error)) from None
    _check_value(value, 1)
    return value


def _plain(value, where):
    """A _Duplicates tree as plain dicts, refusing a member given twice."""
    if isinstance(value, _Duplicates):
        out = {}
        for key, item in value:
            if key in out:
                raise FramingError("json_body", f"{where}: the member {key!r} is given twice")
            out[key] = _plain(item, where)
        return out
    if isinstance(value, list):
        return [_plain(item, where) for item in value]
    return value


# ---- the envelope (§3 "Decoding", second and third bullets) -----------------------------


def parse_envelope(data, registry=None):
    """A JSON frame's text as a dict {type, stream, end, body}; body stays a JSON value.

    With `registry` ({name: type id}), a type it does not list is `json_unknown_type`.
    Body faults other than a body that is not an object (json_body) need the schema.
    """
    value = parse_json_text(data)
    if not isinstance(value, _Duplicates):
        raise FramingError("json_envelope", f"the envelope is a {type(value).__name__}, not an object")
    members = {}
    for key, item in value:
        if key not in ENVELOPE_MEMBERS:
            raise FramingError("json_envelope", f"the member {key!r} is not an envelope member")
        if key in members:
            raise FramingError("json_envelope", f"the member {key!r} is given twice")
        members[key] = item
    for key in ("type", "body"):
        if key not in members:
            raise FramingError("json_envelope", f"the envelope has no {key!r}")
    type_name = members["type"]
    if not isinstance(type_name, str):
        raise FramingError("json_envelope", "`type` is not a string")
    stream = members.get("stream", 0)
    # parse_float turned any number with a fraction or exponent into a float.
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= U32_MAX:
        raise FramingError("json_envelope", f"`stream` {stream!r} is not an integer from 0 to 2^32-1")
    end = members.get("end", False)
    if not isinstance(end, bool):
        raise FramingError("json_envelope", f"`end` {end!r} is not true or false")
    if registry is not None and type_name not in registry:
        raise FramingError("json_unknown_type", f"no message is named {type_name!r}")
    body = members["body"]
    if not isinstance(body, _Duplicates):
        raise FramingError("json_body", f"the body of {type_name} is not an object")
    return {"type": type_name, "stream": stream, "end": end, "body": _plain(body, type_name)}


def json_decoded_size(data):
    """§8.1: the text's length plus 1,024 for every object or array opened outside strings.

    Counted over the whole frame text, envelope included: §8.1 says "a JSON body", and the
    frame's body in the JSON framing is its text.
    """
    counted = len(data)
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            counted += JSON_CONTAINER_COST
    return counted


def split_frames(data, registry=None, max_frame_length=MAX_FRAME_LENGTH,
                 max_first_frame_length=MAX_FIRST_FRAME_LENGTH, max_decoded_size=MAX_DECODED_SIZE):
    """Yields each frame of `data` (the end of `data` is the end of input) as a dict with
    the envelope's members and `text` (its raw bytes); raises FramingError at a bad one."""
    offset = 0
    first = True
    while offset < len(data):
        if len(data) - offset < 4:
            raise FramingError("truncated", f"the input ends {len(data) - offset} bytes into a length prefix")
        (length,) = struct.unpack_from(">I", data, offset)
        limit = min(max_frame_length, max_first_frame_length) if first else max_frame_length
        if length > limit:
            raise FramingError("frame_too_large", f"a {length}-byte frame over the limit of {limit}")
        offset += 4
        if len(data) - offset < length:
            raise FramingError("truncated", f"a {length}-byte frame with {len(data) - offset} bytes left")
        text = data[offset:offset + length]
        offset += length
        first = False
        counted = json_decoded_size(text)
        if counted > max_decoded_size:
            raise FramingError("decoded_too_large", f"decoded size {counted} over {max_decoded_size}")
        frame = parse_envelope(text, registry)
        frame["text"] = text
        yield frame


def encode_frame(type_name, body, stream=0, end=False):
    """§3 "Encoding": members type, stream, end, body; stream 0 and end false left out;
    no whitespace outside strings. `body` is a JSON value (the message's proto3 JSON)."""
    envelope = {"type": type_name}
    if stream:
        envelope["stream"] = stream
    if end:
        envelope["end"] = True
    envelope["body"] = body
    # The spec does not say how strings are escaped: UTF-8 as it is (ensure_ascii=False)
    # is what the vectors' producer writes; every vector string is ASCII today.
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return struct.pack(">I", len(text)) + text


def flags_of(frame):
    """The binary framing's flags byte a JSON frame stands for (§3: STATUS is implied)."""
    return (END_STREAM if frame["end"] else 0) | (STATUS if frame["type"] == STATUS_TYPE else 0)


# ---- checking the vectors -----------------------------------------------------------------


def load(vectors_dir, name):
    with open(Path(vectors_dir) / name, encoding="utf-8") as f:
        return json.load(f)


def check_valid(vector, registry):
    """(problems, frames, re-encoded bytes) for one JSON-framing valid vector."""
    data = bytes.fromhex(vector["hex"])
    problems = []
    try:
        frames = list(split_frames(data, registry))
    except FramingError as error:
        return [f"refused: {error}"], [], b""
    listed = vector["frames"]
    if len(frames) != len(listed):
        problems.append(f"{len(frames)} frames, the vector lists {len(listed)}")
    for i, (frame, spec) in enumerate(zip(frames, listed)):
        got = {
            "type": frame["type"],
            "type_id": registry.get(frame["type"]),
            "stream": frame["stream"],
            "flags": flags_of(frame),
        }
        for key, value in got.items():
            if spec[key] != value:
                problems.append(f"frame {i}: {key} is {value!r}, the vector lists {spec[key]!r}")
        if not same_json(frame["body"], spec["body"]):
            problems.append(f"frame {i}: the body differs from the listed body as JSON values")
    encoded = b"".join(
        encode_frame(f["type"], f["body"], f["stream"], f["end"]) for f in frames
    )
    return problems, frames, encoded


def same_json(a, b):
    """Equality of JSON values, where true is not 1 and 1 is not 1.0 (as Python's == has it)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b


def check_invalid(vector, registry):
    """None if the peer refuses the vector as listed; a problem, or "skip" for a kind a
    schema-free peer cannot see."""
    if vector["error"] not in SEEN_WITHOUT_SCHEMA | {"json_body"}:
        return "skip"
    data = bytes.fromhex(vector["hex"])
    limits = vector.get("limits", {})
    kwargs = {
        "max_frame_length": limits.get("max_frame_length", MAX_FRAME_LENGTH),
        "max_first_frame_length": limits.get("max_first_frame_length", MAX_FIRST_FRAME_LENGTH),
        "max_decoded_size": limits.get("max_decoded_size", MAX_DECODED_SIZE),
    }
    good = 0
    try:
        for _ in split_frames(data, registry, **kwargs):
            good += 1
    except FramingError as error:
        if error.kind == vector["error"] and good == vector["frames_before_error"]:
            return None
        return f"refused as {error} after {good} frames; expected {vector['error']} after {vector['frames_before_error']}"
    if vector["error"] == "json_body":
        return "skip"  # a body fault only the schema shows (field types, enum names, ranges)
    return f"accepted {good} frames; expected {vector['error']} after {vector['frames_before_error']}"


SEEN_WITHOUT_SCHEMA = {
    "frame_too_large",
    "truncated",
    "decoded_too_large",
    "json_syntax",
    "json_envelope",
    "json_unknown_type",
}


# ---- the example runner's framing ------------------------------------------------------------


class _BytesSocket:
    """Just enough of a socket for the runner's framing: recv from bytes, sendall to bytes."""

    def __init__(self, data=b""):
        self.data = data
        self.sent = bytearray()

    def recv(self, n):
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    def sendall(self, data):
        self.sent += data


def check_runner_framing(vectors):
    """examples/python-runner/runner.py reads every frame of each vector (read_frame) and
    writes them back (Connection.send) to exactly the vector's bytes. Returns problems."""
    import importlib.util

    path = ROOT / "examples" / "python-runner" / "runner.py"
    spec = importlib.util.spec_from_file_location("taskwire_python_runner", path)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)  # only definitions: main() runs under __main__ alone
    problems = []
    for vector in vectors:
        data = bytes.fromhex(vector["hex"])
        source = _BytesSocket(data)
        out = _BytesSocket()
        connection = runner.Connection(out, {})
        frames = 0
        try:
            while True:
                frame = runner.read_frame(source, runner.MAX_FRAME)
                frames += 1
                connection.send(frame["type"], frame["body"], int(frame.get("stream", 0)),
                                bool(frame.get("end", False)))
        except EOFError:
            pass
        except Exception as error:  # noqa: BLE001 - any failure is a finding
            problems.append(f"{vector['name']}: the runner's read_frame failed: {error!r}")
            continue
        if frames != len(vector["frames"]) or bytes(out.sent) != data:
            problems.append(f"{vector['name']}: the runner wrote other bytes: "
                            + first_difference(data, bytes(out.sent)))
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", default=str(DEFAULT_VECTORS), help="the vectors directory")
    args = parser.parse_args()
    registry = spec_registry()
    failed = 0
    passed = 0

    valid = [v for v in load(args.vectors, "valid.json")["vectors"] if v["framing"] == "json"]
    identical = 0
    frame_count = 0
    for vector in valid:
        problems, frames, encoded = check_valid(vector, registry)
        frame_count += len(frames)
        if encoded == bytes.fromhex(vector["hex"]):
            identical += 1
        elif not problems:
            problems.append("re-encoding the frames gives other bytes: " + first_difference(
                bytes.fromhex(vector["hex"]), encoded))
        if problems:
            failed += 1
            for problem in problems:
                print(f"FAIL {vector['name']}: {problem}")
        else:
            passed += 1
    print(f"spec_json_peer: valid JSON vectors: {len(valid)} vectors, {frame_count} frames; "
          f"re-encoded byte for byte: {identical}/{len(valid)}")

    runner_problems = check_runner_framing(valid)
    for problem in runner_problems:
        print(f"FAIL runner: {problem}")
    failed += len(runner_problems)
    passed += len(valid) - len(runner_problems)
    print(f"spec_json_peer: examples/python-runner framing (read_frame, then Connection.send): "
          f"{len(valid) - len(runner_problems)}/{len(valid)} vectors read and written back byte for byte")

    invalid = [v for v in load(args.vectors, "invalid.json")["vectors"] if v["framing"] == "json"]
    skipped = []
    checked = 0
    for vector in invalid:
        problem = check_invalid(vector, registry)
        if problem == "skip":
            skipped.append(f"{vector['name']} ({vector['error']})")
            continue
        checked += 1
        if problem is None:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {vector['name']}: {problem}")
    print(f"spec_json_peer: invalid JSON vectors: {checked} refused as listed; "
          f"{len(skipped)} need the schema (check_vectors.py): {', '.join(skipped)}")
    print(f"spec_json_peer: {passed} passed, {failed} failed")
    return 1 if failed else 0


def first_difference(expected, got):
    at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    return (f"first difference at byte {at}: vector {expected[at:at + 40]!r}, "
            f"re-encoded {got[at:at + 40]!r}")


if __name__ == "__main__":
    sys.exit(main())
