//! The `taskwire` binary, run as a user runs it: certificates in a temporary directory,
//! frames built with the codec, help texts, and how failures are reported.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use taskwire_codec::io::SyncWriter;
use taskwire_codec::{Builder, Frame};
use taskwire_proto::instance::v1::RegisterInstanceRequest;
use taskwire_proto::registry::{AnyMessage, InstanceMessage, SessionMessage};
use taskwire_proto::session::v1::{Ping, Status};

fn taskwire(args: &[&str]) -> Output {
    taskwire_with_stdin(args, &[])
}

fn taskwire_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the taskwire binary starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("stdin accepts the input");
    child.wait_with_output().expect("taskwire runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "taskwire failed with {:?}: {}\nstdout: {}",
        output.status,
        stderr(output),
        stdout(output)
    );
}

/// Asserts the failure contract: exit code 1 and exactly one line on stderr, no panic.
#[track_caller]
fn assert_one_line_failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(output));
    let stderr = stderr(output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    stderr.trim_end().to_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Every line of stdout as JSON.
fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

fn register_request() -> RegisterInstanceRequest {
    RegisterInstanceRequest {
        instance_id: "order-7".into(),
        tenant_id: "acme".into(),
        input: b"hi".to_vec().into(),
        ..Default::default()
    }
}

/// Two binary frames: a RegisterInstanceRequest on stream 5, then a status frame ending
/// the stream.
fn two_binary_frames() -> (Vec<u8>, usize) {
    let mut wire = Vec::new();
    let mut writer = SyncWriter::new(&mut wire, Builder::new().new_binary_codec());
    writer
        .write(Frame::new(register_request()).with_stream_id(5))
        .unwrap();
    let first_len = writer.into_inner().len();
    let mut writer = SyncWriter::new(&mut wire, Builder::new().new_binary_codec());
    let status = Status {
        code: 5,
        message: "no such instance".into(),
        ..Default::default()
    };
    writer
        .write(Frame::new(status).with_stream_id(5).end_stream())
        .unwrap();
    (wire, first_len)
}

#[test]
fn ca_server_and_client_certificates_then_inspect_shows_tenant_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs = path(&certs);

    let ca = taskwire(&["cert", "ca", "--out", certs, "--name", "test CA"]);
    assert_success(&ca);
    let server = taskwire(&[
        "cert",
        "server",
        "--ca",
        certs,
        "--out",
        certs,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--ip",
        "::1",
    ]);
    assert_success(&server);
    let client = taskwire(&[
        "cert", "client", "--ca", certs, "--out", certs, "--tenant", "acme", "--id", "worker-7",
    ]);
    assert_success(&client);
    assert!(stdout(&client).contains("taskwire://acme/worker-7"));
    for file in [
        "ca.pem",
        "ca.key.pem",
        "server.pem",
        "server.key.pem",
        "client.pem",
        "client.key.pem",
    ] {
        assert!(dir.path().join("certs").join(file).is_file(), "{file}");
    }

    let client_pem = dir.path().join("certs/client.pem");
    let text = taskwire(&["cert", "inspect", path(&client_pem)]);
    assert_success(&text);
    let text = stdout(&text);
    assert!(
        text.contains("Subject:            CN=acme/worker-7"),
        "{text}"
    );
    assert!(text.contains("Issuer:             CN=test CA"), "{text}");
    assert!(text.contains("Tenant:             acme"), "{text}");
    assert!(text.contains("Id:                 worker-7"), "{text}");

    let json = taskwire(&["cert", "inspect", path(&client_pem), "--json"]);
    assert_success(&json);
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["id"], "worker-7");
    assert_eq!(
        json["uris"],
        serde_json::json!(["taskwire://acme/worker-7"])
    );
    assert_eq!(
        json["extended_key_usages"],
        serde_json::json!(["clientAuth"])
    );
    // The fingerprint `cert client` printed is the one `inspect` reads from the file.
    let fingerprint = json["spki_sha256"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 64);
    assert!(stdout(&client).contains(&format!("SPKI SHA-256: {fingerprint}")));

    let server_pem = dir.path().join("certs/server.pem");
    let json = taskwire(&["cert", "inspect", path(&server_pem), "--json"]);
    assert_success(&json);
    let json: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["dns_names"], serde_json::json!(["localhost"]));
    assert_eq!(
        json["ip_addresses"],
        serde_json::json!(["127.0.0.1", "::1"])
    );
    assert_eq!(json["tenant"], Value::Null);
    assert_eq!(json["issuer"], "CN=test CA");
    assert!(json["not_before"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn cert_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path());
    assert_success(&taskwire(&["cert", "ca", "--out", out]));
    let first = std::fs::read(dir.path().join("ca.pem")).unwrap();

    let again = taskwire(&["cert", "ca", "--out", out]);
    let message = assert_one_line_failure(&again);
    assert!(message.starts_with("error: "), "{message}");
    assert!(message.contains("ca.pem already exists"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), first);

    assert_success(&taskwire(&["cert", "ca", "--out", out, "--force"]));
    assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), first);
}

#[test]
fn decode_binary_frames_prints_both_with_type_names_and_offsets() {
    let (wire, first_len) = two_binary_frames();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.bin");
    std::fs::write(&file, &wire).unwrap();

    let output = taskwire(&["decode", path(&file)]);
    assert_success(&output);
    let frames = json_lines(&output);
    assert_eq!(frames.len(), 2, "{}", stdout(&output));

    let first = &frames[0];
    assert_eq!(first["offset"], 0);
    assert_eq!(first["framing"], "binary");
    assert_eq!(first["version"], 1);
    assert_eq!(first["flags"], serde_json::json!([]));
    assert_eq!(first["type_id"], "0x0105");
    assert_eq!(
        first["type"],
        "taskwire.instance.v1.RegisterInstanceRequest"
    );
    assert_eq!(first["stream"], 5);
    assert_eq!(first["length"], first_len - 12);
    assert_eq!(
        first["body"],
        serde_json::json!({"instanceId": "order-7", "tenantId": "acme", "input": "aGk="})
    );

    let second = &frames[1];
    assert_eq!(second["offset"], first_len);
    assert_eq!(second["type_id"], "0x0004");
    assert_eq!(second["type"], "taskwire.session.v1.Status");
    assert_eq!(second["flags"], serde_json::json!(["END_STREAM", "STATUS"]));
    assert_eq!(second["length"], wire.len() - first_len - 12);
    assert_eq!(second["body"]["message"], "no such instance");

    // The same bytes from standard input, pretty-printed, give the same frames.
    let pretty = taskwire_with_stdin(&["decode", "--pretty", "-"], &wire);
    assert_success(&pretty);
    let text = stdout(&pretty);
    assert!(
        text.lines().count() > 2,
        "pretty output spans lines: {text}"
    );
    let values: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(values, frames);
}

#[test]
fn decode_json_framed_input_from_stdin() {
    let mut wire = Vec::new();
    let mut writer = SyncWriter::new(&mut wire, Builder::new().new_any_json_codec());
    let register = AnyMessage::from(InstanceMessage::from(register_request()));
    writer
        .write(Frame::new(register).with_stream_id(3))
        .unwrap();
    let first_len = writer.into_inner().len();
    let mut writer = SyncWriter::new(&mut wire, Builder::new().new_any_json_codec());
    let ping = AnyMessage::from(SessionMessage::from(Ping {
        nonce: 42,
        ..Default::default()
    }));
    writer.write(Frame::new(ping).end_stream()).unwrap();

    let output = taskwire_with_stdin(&["decode"], &wire);
    assert_success(&output);
    let frames = json_lines(&output);
    assert_eq!(frames.len(), 2, "{}", stdout(&output));
    assert_eq!(frames[0]["framing"], "json");
    assert_eq!(frames[0]["version"], Value::Null);
    assert_eq!(frames[0]["offset"], 0);
    assert_eq!(
        frames[0]["type"],
        "taskwire.instance.v1.RegisterInstanceRequest"
    );
    assert_eq!(frames[0]["type_id"], "0x0105");
    assert_eq!(frames[0]["stream"], 3);
    assert_eq!(frames[0]["length"], first_len - 4);
    assert_eq!(frames[0]["body"]["instanceId"], "order-7");
    assert_eq!(frames[1]["offset"], first_len);
    assert_eq!(frames[1]["type"], "taskwire.session.v1.Ping");
    assert_eq!(frames[1]["type_id"], "0x0007");
    assert_eq!(frames[1]["flags"], serde_json::json!(["END_STREAM"]));
    assert_eq!(frames[1]["stream"], 0);
    assert_eq!(frames[1]["body"], serde_json::json!({"nonce": "42"}));

    // `--framing json` says the same as the first byte does.
    let forced = taskwire_with_stdin(&["decode", "--framing", "json"], &wire);
    assert_success(&forced);
    assert_eq!(json_lines(&forced), frames);
}

#[test]
fn decode_hex_with_a_bad_version_byte_fails_naming_the_byte_offset() {
    let (wire, first_len) = two_binary_frames();
    let mut bad = wire[..first_len].to_vec();
    let mut second = wire[first_len..].to_vec();
    second[0] = 0x02;
    bad.extend_from_slice(&second);

    let output = taskwire(&["decode", "--hex", &hex::encode(&bad)]);
    let message = assert_one_line_failure(&output);
    assert_eq!(
        message,
        format!("error at byte {first_len}: unsupported frame version 2; supported: 1..=1")
    );
    // The good frame before it was printed.
    let frames = json_lines(&output);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0]["type"],
        "taskwire.instance.v1.RegisterInstanceRequest"
    );

    // A bad first byte read as binary.
    let output = taskwire(&[
        "decode",
        "--framing",
        "binary",
        "--hex",
        "02 01 0007 00000000 00000000",
    ]);
    let message = assert_one_line_failure(&output);
    assert!(
        message.starts_with("error at byte 0: unsupported frame version 2"),
        "{message}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn decode_truncated_final_frame_fails_naming_its_offset() {
    let (wire, first_len) = two_binary_frames();
    let output = taskwire_with_stdin(&["decode"], &wire[..wire.len() - 1]);
    let message = assert_one_line_failure(&output);
    assert!(
        message.starts_with(&format!(
            "error at byte {first_len}: input ended inside a frame"
        )),
        "{message}"
    );
    assert_eq!(json_lines(&output).len(), 1);
}

#[test]
fn decode_first_frame_over_64_kib_then_unknown_type_names_its_offset() {
    // Larger than the Hello's 64 KiB limit and than one read of the input.
    let big = RegisterInstanceRequest {
        input: vec![7u8; 200 * 1024].into(),
        ..register_request()
    };
    let mut wire = Vec::new();
    let mut builder = Builder::new();
    builder.first_frame_done(true);
    SyncWriter::new(&mut wire, builder.new_binary_codec())
        .write(Frame::new(big))
        .unwrap();
    let first_len = wire.len();
    // A well-formed header with a type id nobody registered.
    wire.extend_from_slice(&[0x01, 0x00, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);

    let output = taskwire_with_stdin(&["decode"], &wire);
    let message = assert_one_line_failure(&output);
    assert_eq!(
        message,
        format!("error at byte {first_len}: unknown message type id 0x7fff")
    );
    let frames = json_lines(&output);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["length"], first_len - 12);
}

#[test]
fn decode_frame_over_max_frame_length_fails() {
    let (wire, _) = two_binary_frames();
    let output = taskwire_with_stdin(&["decode", "--max-frame-length", "4"], &wire);
    let message = assert_one_line_failure(&output);
    assert!(
        message.starts_with("error at byte 0: frame length"),
        "{message}"
    );
    assert!(message.contains("limit of 4 bytes"), "{message}");
}

#[test]
fn decode_dialect_rrq_prints_each_rrq_frame_of_a_real_capture() {
    let capture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../taskwire-rrq/tests/captures/conn1.s2c.bin");
    let output = taskwire(&["decode", "--dialect", "rrq", path(&capture)]);
    assert_success(&output);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 6, "the Python runner's six answers");
    assert_eq!(lines[0]["dialect"], "rrq");
    assert_eq!(lines[0]["offset"], 0);
    assert_eq!(lines[1]["offset"], lines[0]["length"].as_u64().unwrap() + 4);
    assert!(lines.iter().all(|line| line["type"] == "response"));
    let retry = lines
        .iter()
        .find(|line| line["payload"]["status"] == "retry")
        .expect("the retry answer");
    assert_eq!(retry["payload"]["retry_after_seconds"], 1.0);
    assert_eq!(retry["payload"]["error"]["message"], "not yet");

    let empty = taskwire(&["decode", "--dialect", "rrq", "--hex", "00000000"]);
    let message = assert_one_line_failure(&empty);
    assert!(
        message.contains("byte 0") && message.contains("empty frame"),
        "{message}"
    );
}

#[test]
fn decode_dialect_restate_prints_a_recorded_http2_invocation_and_its_headers() {
    let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../taskwire-restate/tests/captures");
    let output = taskwire(&[
        "decode",
        "--dialect",
        "restate",
        path(&captures.join("h2/conn2.c2s.bin")),
    ]);
    assert_success(&output);
    let lines = json_lines(&output);
    let headers = &lines[0]["headers"];
    assert!(
        headers
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == ":path" && h[1] == "/invoke/Greeter/greet"),
        "{headers}"
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "StartMessage",
            "InputCommandMessage",
            "RunCompletionNotificationMessage",
            "SleepCompletionNotificationMessage"
        ]
    );
    assert_eq!(lines[1]["type"], "0x0000");
    assert_eq!(lines[1]["message"]["knownEntries"], 1);

    // Over HTTP/1.1: the SDK's three answers, the first ending in a V6 suspension.
    let output = taskwire(&[
        "decode",
        "--dialect",
        "restate",
        path(&captures.join("http1/conn2.s2c.bin")),
    ]);
    assert_success(&output);
    let lines = json_lines(&output);
    let suspension = lines
        .iter()
        .find(|l| l["name"] == "SuspensionMessage")
        .expect("a suspension");
    assert_eq!(suspension["http_message"], 0);
    assert_eq!(
        suspension["message"]["waitingCompletions"],
        serde_json::json!([1])
    );

    // A bare stream, and one cut short.
    let bare = taskwire(&[
        "decode",
        "--dialect",
        "restate",
        "--hex",
        "0003000000000000",
    ]);
    assert_success(&bare);
    assert_eq!(json_lines(&bare)[0]["name"], "EndMessage");
    let cut = taskwire(&[
        "decode",
        "--dialect",
        "restate",
        "--hex",
        "04000000000000ff01",
    ]);
    let message = assert_one_line_failure(&cut);
    assert!(
        message.contains("byte 0") && message.contains("9 of 263"),
        "{message}"
    );
}

#[test]
fn every_help_has_an_examples_section() {
    let commands: [&[&str]; 13] = [
        &[],
        &["cert"],
        &["cert", "ca"],
        &["cert", "server"],
        &["cert", "client"],
        &["cert", "inspect"],
        &["decode"],
        &["serve"],
        &["call"],
        &["demo"],
        &["bench"],
        &["bridge", "rrq"],
        &["completions"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = taskwire(&args);
        assert_success(&output);
        let help = stdout(&output);
        assert!(help.contains("\nExamples:\n"), "{args:?}:\n{help}");
        assert!(help.contains("  taskwire "), "{args:?}:\n{help}");
    }
}

#[test]
fn bad_flag_values_exit_nonzero_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path());
    let usage_errors: [&[&str]; 10] = [
        &["serve", "--quic", "not-an-address"],
        &["call", "--timeout", "soon"],
        &["bench", "--concurrency", "-3"],
        &["serve", "--cert", "only-a-cert.pem"],
        &["decode", "--framing", "xml"],
        &["decode", "--max-frame-length", "-1"],
        &["decode", "--max-frame-length", "lots"],
        &["cert", "ca", "--out", out, "--validity-days", "0"],
        &[
            "cert",
            "server",
            "--ca",
            out,
            "--out",
            out,
            "--ip",
            "not-an-ip",
        ],
        &["cert", "server", "--ca", out, "--out", out],
    ];
    for args in usage_errors {
        let output = taskwire(args);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }

    // Values clap accepts but the command cannot use: one line, exit code 1.
    let runtime_errors: [&[&str]; 8] = [
        &["serve", "--cert", "missing.pem", "--key", "missing.key.pem"],
        &["call", "HealthRequest", "--pin", "abc"],
        &["bench", "--embedded", "--duration", "0"],
        &["call", "HealthRequest", "--ca", "missing-ca.pem"],
        &["decode", "--hex", "0g"],
        &["cert", "inspect", "does-not-exist.pem"],
        &[
            "cert",
            "server",
            "--ca",
            out,
            "--out",
            out,
            "--dns",
            "localhost",
        ],
        &["cert", "ca", "--out", out, "--validity-days", "4294967295"],
    ];
    for args in runtime_errors {
        let message = assert_one_line_failure(&taskwire(args));
        assert!(message.starts_with("error: "), "{args:?}: {message}");
    }
}

/// A `taskwire serve` process, killed when dropped.
struct Served {
    child: std::process::Child,
    quic: String,
    /// `tcp://ADDR` when started with `--tcp`, else empty.
    tcp: String,
    pin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `taskwire serve` with `args` on an ephemeral port and waits for its LISTENING line.
fn serve(args: &[&str]) -> Served {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(["serve", "--quic", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskwire serve starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut pin = String::new();
    for line in lines.by_ref() {
        let line = line.expect("serve prints UTF-8 lines");
        if let Some(rest) = line.strip_prefix("server key pin: ") {
            pin = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(rest) = line.strip_prefix("LISTENING quic=") {
            let mut parts = rest.split_whitespace();
            let quic = parts.next().unwrap().to_owned();
            let tcp = parts
                .next()
                .and_then(|p| p.strip_prefix("tcp="))
                .filter(|addr| *addr != "-")
                .map_or_else(String::new, |addr| format!("tcp://{addr}"));
            // Keep reading stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Served {
                child,
                quic,
                tcp,
                pin,
            };
        }
    }
    panic!("taskwire serve exited before listening: {:?}", child.wait());
}

#[test]
fn serve_in_development_mode_answers_calls_pinned_to_its_key() {
    let server = serve(&[]);
    assert_eq!(
        server.pin.len(),
        64,
        "a SHA-256 pin in hex: {:?}",
        server.pin
    );
    let pinned = [
        "--addr",
        &server.quic,
        "--pin",
        &server.pin,
        "--tenant",
        "acme",
    ];
    let register = taskwire(
        &[
            &["call", "RegisterInstanceRequest", "--json"][..],
            &[r#"{"instanceId":"order-7","imageId":"img-1"}"#],
            &pinned,
        ]
        .concat(),
    );
    assert_success(&register);
    let answer = &json_lines(&register)[0];
    assert_eq!(
        answer["type"],
        "taskwire.instance.v1.RegisterInstanceResponse"
    );
    assert_eq!(answer["body"]["accepted"], true);

    let status = taskwire(
        &[
            &[
                "call",
                "taskwire.management.v1.GetInstanceStatusRequest",
                "--json",
            ][..],
            &[r#"{"instanceId":"order-7"}"#],
            &pinned,
        ]
        .concat(),
    );
    assert_success(&status);
    let body = &json_lines(&status)[0]["body"]["status"];
    assert_eq!(body["state"], "INSTANCE_STATE_RUNNING");
    assert_eq!(body["tenantId"], "acme", "the tenant claimed in the Hello");

    let missing = taskwire(
        &[
            &[
                "call",
                "taskwire.management.v1.GetInstanceStatusRequest",
                "--json",
            ][..],
            &[r#"{"instanceId":"nope"}"#],
            &pinned,
        ]
        .concat(),
    );
    let line = assert_one_line_failure(&missing);
    assert!(line.contains("NOT_FOUND"), "{line}");
}

#[test]
fn call_streams_every_item_of_a_server_streaming_rpc() {
    let server = serve(&[]);
    let pinned = ["--addr", &server.quic, "--pin", &server.pin];
    let call = |name: &str, json: &str| {
        let output = taskwire(&[&["call", name, "--json", json][..], &pinned].concat());
        assert_success(&output);
        json_lines(&output)
    };
    call(
        "RegisterInstanceRequest",
        r#"{"instanceId":"i","imageId":"img"}"#,
    );
    for sequence in 1..=3 {
        call(
            "CheckpointRequest",
            &format!(
                r#"{{"instanceId":"i","checkpointId":"c{sequence}","sequence":"{sequence}"}}"#
            ),
        );
    }
    let items = call(
        "taskwire.instance.v1.ListCheckpointsRequest",
        r#"{"instanceId":"i"}"#,
    );
    let ids: Vec<&str> = items
        .iter()
        .map(|item| item["body"]["checkpointId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);
}

#[test]
fn serve_with_a_ca_requires_client_certificates_and_takes_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let certs = path(dir.path());
    for args in [
        &["cert", "ca", "--out", certs][..],
        &[
            "cert",
            "server",
            "--ca",
            certs,
            "--out",
            certs,
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
        &[
            "cert", "client", "--ca", certs, "--out", certs, "--tenant", "acme", "--id", "w1",
        ],
    ] {
        assert_success(&taskwire(args));
    }
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let server = serve(&[
        "--cert",
        &file("server.pem"),
        "--key",
        &file("server.key.pem"),
        "--ca",
        &file("ca.pem"),
    ]);
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key.pem"));
    let trusted = ["--addr", &server.quic, "--ca", &ca];
    let with_cert = [
        &trusted[..],
        &["--cert", &cert, "--key", &key, "--tenant", "globex"],
    ]
    .concat();

    let register = taskwire(
        &[
            &[
                "call",
                "RegisterInstanceRequest",
                "--json",
                r#"{"instanceId":"o1","imageId":"img"}"#,
            ][..],
            &with_cert,
        ]
        .concat(),
    );
    assert_success(&register);
    let status = taskwire(
        &[
            &[
                "call",
                "taskwire.management.v1.GetInstanceStatusRequest",
                "--json",
                r#"{"instanceId":"o1"}"#,
            ][..],
            &with_cert,
        ]
        .concat(),
    );
    assert_success(&status);
    assert_eq!(
        json_lines(&status)[0]["body"]["status"]["tenantId"],
        "acme",
        "the certificate's tenant, not the one claimed in the Hello"
    );

    let without_cert = taskwire(
        &[
            &["call", "taskwire.management.v1.HealthRequest"][..],
            &trusted,
        ]
        .concat(),
    );
    assert_one_line_failure(&without_cert);
}

#[test]
fn call_rejects_bad_input_with_one_line_errors() {
    let server = serve(&[]);
    let pinned = ["--addr", &server.quic, "--pin", &server.pin];
    let bad_json = taskwire(
        &[
            &["call", "CheckpointRequest", "--json", r#"{"sequence":"x"}"#][..],
            &pinned,
        ]
        .concat(),
    );
    assert!(
        assert_one_line_failure(&bad_json)
            .contains("not a valid taskwire.instance.v1.CheckpointRequest")
    );
    let ambiguous = taskwire(&[&["call", "GetInstanceStatusRequest"][..], &pinned].concat());
    assert!(assert_one_line_failure(&ambiguous).contains("several packages"));
    let unknown = taskwire(&[&["call", "NoSuchRequest"][..], &pinned].concat());
    assert!(assert_one_line_failure(&unknown).contains("not a taskwire message"));
    let not_a_request = taskwire(&[&["call", "taskwire.instance.v1.Signal"][..], &pinned].concat());
    assert!(assert_one_line_failure(&not_a_request).contains("not the request of any rpc"));
    let wrong_pin = taskwire(&[
        "call",
        "taskwire.management.v1.HealthRequest",
        "--addr",
        &server.quic,
        "--pin",
        &"00".repeat(32),
        "--timeout",
        "5",
    ]);
    assert_one_line_failure(&wrong_pin);
    let untrusted = taskwire(&[
        "call",
        "taskwire.management.v1.HealthRequest",
        "--addr",
        &server.quic,
    ]);
    assert!(assert_one_line_failure(&untrusted).contains("--pin"));
}

#[test]
fn call_list_names_every_rpc_request() {
    let listed = taskwire(&["call", "--list", "--list-json"]);
    assert_success(&listed);
    let rows = json_lines(&listed);
    assert_eq!(rows.len(), taskwire_proto::registry::rpcs().len());
    assert!(rows.iter().any(
        |row| row["request"] == "taskwire.runner.v1.ExecutionRequest"
            && row["response"] == "taskwire.runner.v1.ExecutionOutcome"
    ));
}

#[test]
fn demo_runs_every_conversation_and_reports_no_failed_step() {
    let demo = taskwire(&["demo", "--json"]);
    assert_success(&demo);
    let report = &json_lines(&demo)[0];
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    for section in ["environment", "instance", "management", "runner", "journal"] {
        assert!(
            steps
                .iter()
                .any(|s| s["section"] == section && s["ok"] == true),
            "no successful {section} step: {report:#}"
        );
    }
    let text = taskwire(&["demo"]);
    assert_success(&text);
    assert!(stdout(&text).contains("summary: "), "{}", stdout(&text));
}

#[test]
fn bench_loads_an_embedded_server_and_reports_json() {
    let bench = taskwire(&[
        "bench",
        "--embedded",
        "--duration",
        "0.5",
        "--concurrency",
        "4",
        "--connections",
        "2",
        "--json",
    ]);
    assert_success(&bench);
    let summary = &json_lines(&bench)[0];
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["connections"], 2);
    assert!(
        summary["calls_per_second"][0].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["p50_us"][0].as_f64().unwrap() > 0.0, "{summary}");

    let streaming = taskwire(&[
        "bench",
        "taskwire.instance.v1.ListCheckpointsRequest",
        "--embedded",
    ]);
    assert!(assert_one_line_failure(&streaming).contains("not the request of a unary rpc"));
    let refused = taskwire(&[
        "bench",
        "taskwire.management.v1.GetInstanceStatusRequest",
        "--body",
        r#"{"instanceId":"nope"}"#,
        "--embedded",
    ]);
    assert!(assert_one_line_failure(&refused).contains("NOT_FOUND"));
}

#[test]
fn call_and_bench_reach_a_server_over_quic_and_over_tcp() {
    let server = serve(&["--tcp", "127.0.0.1:0"]);
    assert!(server.tcp.starts_with("tcp://127.0.0.1:"), "{}", server.tcp);
    let quic_url = format!("quic://{}", server.quic);
    for addr in [server.quic.as_str(), quic_url.as_str(), server.tcp.as_str()] {
        let pinned = ["--addr", addr, "--pin", &server.pin, "--tenant", "acme"];
        let health = taskwire(&[&["call", "HealthRequest"][..], &pinned].concat());
        assert_success(&health);
        assert_eq!(
            json_lines(&health)[0]["type"],
            "taskwire.management.v1.HealthResponse",
            "{addr}"
        );

        let bench = taskwire(
            &[
                &["bench", "--duration", "1.5", "--concurrency", "4", "--json"][..],
                &pinned,
            ]
            .concat(),
        );
        assert_success(&bench);
        assert!(
            !stderr(&bench).contains("run 1/1"),
            "no progress bar off a terminal: {}",
            stderr(&bench)
        );
        let summary = &json_lines(&bench)[0];
        let transport = if addr.starts_with("tcp://") {
            "taskwire-tcp"
        } else {
            "taskwire-quic"
        };
        assert_eq!(summary["transport"], transport, "{addr}");
        assert!(
            summary["calls_per_second"][0].as_f64().unwrap() > 0.0,
            "{summary}"
        );
        assert_eq!(summary["errors"], 0);
    }
    for bad in ["udp://127.0.0.1:1", "127.0.0.1", "tcp://nohost"] {
        let output = taskwire(&["call", "HealthRequest", "--addr", bad, "--pin", &server.pin]);
        assert_eq!(output.status.code(), Some(2), "{bad}: a usage error");
        assert!(
            stderr(&output).contains("--addr"),
            "{bad}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn conformance_passes_every_check_against_serve_over_quic_and_tcp() {
    let server = serve(&["--tcp", "127.0.0.1:0"]);
    let tcp = server.tcp.trim_start_matches("tcp://").to_owned();
    for (addr, transport) in [
        (vec!["--addr", server.quic.as_str()], "quic"),
        (vec!["--addr", tcp.as_str(), "--tcp"], "tcp"),
    ] {
        let output = taskwire(
            &[
                &["conformance", "--pin", &server.pin][..],
                &addr,
                &["--json"],
            ]
            .concat(),
        );
        assert_success(&output);
        let report = &json_lines(&output)[0];
        assert_eq!(report["failed"], 0, "{report}");
        let checks = report["checks"].as_array().unwrap();
        assert!(checks.len() > 30, "{} checks", checks.len());
        assert!(
            checks.iter().all(|c| c["transport"] == transport),
            "{report}"
        );
    }
    // A check that fails makes the exit code 1 and names the script and the step: a
    // server that is not taskwire at all (the QUIC port spoken to over TCP) fails them all.
    let output = taskwire(&[
        "conformance",
        "--addr",
        &server.quic,
        "--tcp",
        "--pin",
        &server.pin,
        "--only",
        "calls/unary",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("FAIL tcp"), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("checks failed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = taskwire(&["completions", shell]);
        assert_success(&output);
        let script = stdout(&output);
        for subcommand in ["serve", "call", "bench", "bridge", "decode", "cert"] {
            assert!(
                script.contains(subcommand),
                "{shell} completions name {subcommand}"
            );
        }
    }
    let unknown = taskwire(&["completions", "cmd.exe"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_revoked_client_is_refused_over_quic_and_tcp_and_sighup_reloads_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let certs = path(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for args in [
        &["cert", "ca", "--out", certs][..],
        &[
            "cert",
            "server",
            "--ca",
            certs,
            "--out",
            certs,
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
        &[
            "cert",
            "client",
            "--ca",
            certs,
            "--out",
            &file("lost"),
            "--tenant",
            "acme",
            "--id",
            "lost",
        ],
        &[
            "cert",
            "client",
            "--ca",
            certs,
            "--out",
            &file("kept"),
            "--tenant",
            "acme",
            "--id",
            "kept",
        ],
    ] {
        assert_success(&taskwire(args));
    }
    let revoke = taskwire(&["cert", "revoke", "--ca", certs, &file("lost/client.pem")]);
    assert_success(&revoke);
    assert!(stdout(&revoke).contains("crl.pem"), "{}", stdout(&revoke));
    let server = serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--cert",
        &file("server.pem"),
        "--key",
        &file("server.key.pem"),
        "--ca",
        &file("ca.pem"),
        "--crl",
        &file("crl.pem"),
    ]);
    let call = |who: &str, addr: &str| {
        taskwire(&[
            "call",
            "taskwire.management.v1.HealthRequest",
            "--addr",
            addr,
            "--ca",
            &file("ca.pem"),
            "--cert",
            &file(&format!("{who}/client.pem")),
            "--key",
            &file(&format!("{who}/client.key.pem")),
        ])
    };
    for addr in [server.quic.as_str(), server.tcp.as_str()] {
        assert_one_line_failure(&call("lost", addr));
        assert_success(&call("kept", addr));
    }
    // Revoke the other one too, and tell the server: it is refused from then on.
    assert_success(&taskwire(&[
        "cert",
        "revoke",
        "--ca",
        certs,
        &file("kept/client.pem"),
    ]));
    let hangup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for addr in [server.quic.as_str(), server.tcp.as_str()] {
        loop {
            let output = call("kept", addr);
            if !output.status.success() {
                assert_one_line_failure(&output);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{addr}: the revoked certificate still works 10 s after SIGHUP"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_one_line_failure(&call("lost", addr));
    }
    // A certificate of another CA cannot be added to this CA's list.
    let other = tempfile::tempdir().unwrap();
    assert_success(&taskwire(&["cert", "ca", "--out", path(other.path())]));
    assert_success(&taskwire(&[
        "cert",
        "client",
        "--ca",
        path(other.path()),
        "--out",
        path(other.path()),
        "--tenant",
        "acme",
        "--id",
        "x",
    ]));
    let foreign = taskwire(&[
        "cert",
        "revoke",
        "--ca",
        certs,
        other.path().join("client.pem").to_str().unwrap(),
    ]);
    assert_one_line_failure(&foreign);
    assert!(
        stderr(&foreign).contains("not signed by this CA"),
        "{}",
        stderr(&foreign)
    );
}

#[test]
fn serve_without_a_ca_refuses_a_non_loopback_address_unless_told_and_warns() {
    let refused = taskwire(&["serve", "--quic", "0.0.0.0:0"]);
    assert_one_line_failure(&refused);
    assert!(
        stderr(&refused).contains("--insecure-claimed-tenants"),
        "{}",
        stderr(&refused)
    );
    let refused = taskwire(&["serve", "--tcp", "0.0.0.0:0"]);
    assert!(
        stderr(&refused).contains("--tcp 0.0.0.0:0"),
        "{}",
        stderr(&refused)
    );

    // Told so, it serves, and says at WARN level that tenants are only claimed.
    let child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(["serve", "--quic", "0.0.0.0:0", "--insecure-claimed-tenants"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let warned = stderr_line(child, |line| {
        line.contains("WARN") && line.contains("any client can claim any tenant")
    });
    assert!(warned.is_some(), "no WARN line about claimed tenants");
}

#[test]
fn a_client_certificate_is_not_silently_ignored_by_a_server_without_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = path(dir.path());
    assert_success(&taskwire(&["cert", "ca", "--out", certs]));
    assert_success(&taskwire(&[
        "cert", "client", "--ca", certs, "--out", certs, "--tenant", "acme", "--id", "w1",
    ]));
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let server = serve(&["--tcp", "127.0.0.1:0"]);
    for addr in [server.quic.as_str(), server.tcp.as_str()] {
        let output = taskwire(&[
            "call",
            "taskwire.management.v1.HealthRequest",
            "--addr",
            addr,
            "--pin",
            &server.pin,
            "--cert",
            &file("client.pem"),
            "--key",
            &file("client.key.pem"),
        ]);
        let line = assert_one_line_failure(&output);
        assert!(
            line.contains("did not ask for a client certificate"),
            "{addr}: {line}"
        );
        // Without --cert the same call goes through: the refusal is about the certificate.
        assert_success(&taskwire(&[
            "call",
            "taskwire.management.v1.HealthRequest",
            "--addr",
            addr,
            "--pin",
            &server.pin,
            "--tenant",
            "acme",
        ]));
    }
}

#[test]
fn serve_warns_when_its_certificate_has_expired() {
    use taskwire_tls::{CaParams, CertificateAuthority, ServerCertParams, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&CaParams::new("ca")).unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let expired = ca
        .issue_server(&ServerCertParams::new(["localhost"]).validity(Validity {
            not_before: now - 10 * day,
            not_after: now - day,
        }))
        .unwrap();
    let (cert, key) = (
        dir.path().join("server.pem"),
        dir.path().join("server.key.pem"),
    );
    expired.write_pem_files(&cert, &key, false).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(["serve", "--quic", "127.0.0.1:0", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let warned = stderr_line(child, |line| {
        line.contains("WARN") && line.contains("server certificate has expired")
    });
    assert!(
        warned.is_some(),
        "no WARN line about the expired certificate"
    );
}

/// The first line of `child`'s stderr that `wanted` accepts, within 10 s; the child is
/// killed either way.
fn stderr_line(
    mut child: std::process::Child,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> Option<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        for text in lines.map_while(Result::ok) {
            if wanted(&text) {
                let _ = found.send(text);
                return;
            }
        }
    });
    let line = line.recv_timeout(std::time::Duration::from_secs(10)).ok();
    let _ = child.kill();
    let _ = child.wait();
    line
}
