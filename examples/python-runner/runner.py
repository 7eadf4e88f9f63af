#!/usr/bin/env python3
"""A taskwire runner in Python, using only the standard library.

It speaks the JSON framing of docs/protocol.md over TCP (TLS, or plaintext on
loopback): every frame is a 4-byte big-endian length, then a JSON object
{"type": <full protobuf name>, "stream": <call id>, "end": <last frame of the call>,
"body": <the message in canonical proto3 JSON>}.

An orchestrator connects, sends a Hello, and then runs jobs with
taskwire.runner.v1.ExecutionRequest (answered by ExecutionOutcome) and cancels them
with CancelRequest (answered by CancelResponse) or by a CancelCall on stream 0.

    python3 runner.py --port 0                      # plaintext on 127.0.0.1
    python3 runner.py --port 0 --cert c.pem --key k.pem   # TLS

It prints "LISTENING <port>" once it accepts connections.
"""

import argparse
import json
import socket
import ssl
import struct
import sys
import threading
import time

MAX_FRAME = 16 * 1024 * 1024
MAX_HELLO = 64 * 1024
HELLO_TIMEOUT = 10.0

HELLO = "taskwire.session.v1.Hello"
NEGOTIATED = "taskwire.session.v1.Negotiated"
REFUSED = "taskwire.session.v1.Refused"
STATUS = "taskwire.session.v1.Status"
CALL_HEADER = "taskwire.session.v1.CallHeader"
CANCEL_CALL = "taskwire.session.v1.CancelCall"
PING = "taskwire.session.v1.Ping"
PONG = "taskwire.session.v1.Pong"
GO_AWAY = "taskwire.session.v1.GoAway"
EXECUTION_REQUEST = "taskwire.runner.v1.ExecutionRequest"
EXECUTION_OUTCOME = "taskwire.runner.v1.ExecutionOutcome"
CANCEL_REQUEST = "taskwire.runner.v1.CancelRequest"
CANCEL_RESPONSE = "taskwire.runner.v1.CancelResponse"


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed."""


def read_exactly(sock, n):
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock, limit):
    """One JSON frame, or EOFError at a clean end. Lengths are checked before reading."""
    prefix = read_exactly(sock, 4)
    (length,) = struct.unpack(">I", prefix)
    if length > limit:
        raise ProtocolError(f"frame length {length} exceeds the limit of {limit}")
    frame = json.loads(read_exactly(sock, length).decode("utf-8"))
    if not isinstance(frame, dict) or "type" not in frame or "body" not in frame:
        raise ProtocolError("not a taskwire JSON frame envelope")
    return frame


class Connection:
    """One orchestrator connection: frames in, handler threads, frames out."""

    def __init__(self, sock, handlers):
        self.sock = sock
        self.handlers = handlers
        self.write_lock = threading.Lock()
        self.headers = {}
        self.jobs = {}  # stream id -> (job_id, cancel event)
        self.jobs_lock = threading.Lock()

    def send(self, type_name, body, stream=0, end=False):
        envelope = {"type": type_name}
        if stream:
            envelope["stream"] = stream
        if end:
            envelope["end"] = True
        envelope["body"] = body
        data = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
        with self.write_lock:
            self.sock.sendall(struct.pack(">I", len(data)) + data)

    def handshake(self):
        self.sock.settimeout(HELLO_TIMEOUT)
        frame = read_frame(self.sock, MAX_HELLO)
        self.sock.settimeout(None)
        if frame["type"] != HELLO:
            raise ProtocolError("the first frame must be a Hello")
        hello = frame["body"]
        if int(hello.get("minVersion", 0)) > 1 or int(hello.get("maxVersion", 0)) < 1:
            self.send(REFUSED, {"reason": "REFUSAL_REASON_UNSUPPORTED_VERSION", "message": "this runner speaks version 1", "minVersion": 1, "maxVersion": 1}, end=True)
            raise ProtocolError("unsupported version")
        self.send(NEGOTIATED, {
            "version": 1,
            "codec": "CODEC_JSON",
            "maxFrameLength": MAX_FRAME,
            "maxConcurrentCalls": 64,
            "serverName": "taskwire-python-runner",
            "serverVersion": "0.1.0",
            "conversations": ["CONVERSATION_SESSION", "CONVERSATION_RUNNER"],
        })

    def serve(self):
        try:
            self.handshake()
            while True:
                frame = read_frame(self.sock, MAX_FRAME)
                self.dispatch(frame)
        except (EOFError, ConnectionError, OSError):
            pass
        except (ProtocolError, ValueError) as error:
            print(f"runner: closing a connection: {error}", file=sys.stderr)
        finally:
            with self.jobs_lock:
                for _, cancel in self.jobs.values():
                    cancel.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def dispatch(self, frame):
        stream = int(frame.get("stream", 0))
        kind, body = frame["type"], frame["body"]
        if stream == 0:
            if kind == PING:
                self.send(PONG, body)
            elif kind == CANCEL_CALL:
                with self.jobs_lock:
                    job = self.jobs.get(int(body.get("requestId", 0)))
                if job:
                    job[1].set()
            elif kind == GO_AWAY:
                pass
            else:
                raise ProtocolError(f"{kind} is not a control frame")
            return
        if kind == CALL_HEADER:
            self.headers[stream] = body
            return
        self.headers.pop(stream, None)
        if kind == EXECUTION_REQUEST:
            cancel = threading.Event()
            with self.jobs_lock:
                self.jobs[stream] = (body.get("jobId", ""), cancel)
            threading.Thread(target=self.execute, args=(stream, body, cancel), daemon=True).start()
        elif kind == CANCEL_REQUEST:
            self.cancel(stream, body)
        else:
            self.send(STATUS, {"code": "STATUS_CODE_UNIMPLEMENTED", "message": f"this runner does not serve {kind}"}, stream, end=True)

    def cancel(self, stream, body):
        found = None
        with self.jobs_lock:
            for job_id, cancel in self.jobs.values():
                if job_id == body.get("jobId"):
                    found = cancel
        if found:
            found.set()
        state = "CANCEL_STATE_KILLED" if body.get("hardKill") else "CANCEL_STATE_REQUESTED"
        self.send(CANCEL_RESPONSE, {"found": True, "state": state} if found else {}, stream, end=True)

    def execute(self, stream, request, cancel):
        outcome = {"jobId": request.get("jobId", ""), "requestId": request.get("requestId", "")}
        name = request.get("functionName", "")
        handler = self.handlers.get(name)
        try:
            if handler is None:
                outcome["handlerNotFound"] = {"functionName": name}
            else:
                outcome.update(handler(request.get("params", {}), cancel))
        except Exception as error:  # a failing handler is an outcome, not a crash
            outcome["failure"] = {"message": str(error), "type": type(error).__name__, "code": "HANDLER_ERROR"}
        finally:
            with self.jobs_lock:
                self.jobs.pop(stream, None)
        if cancel.is_set() and "cancelled" not in outcome:
            return  # the orchestrator gave up on this call; nobody reads an answer
        self.send(EXECUTION_OUTCOME, outcome, stream, end=True)


# The handlers: each returns the outcome's oneof member.

def add(params, cancel):
    return {"success": {"result": params.get("a", 0) + params.get("b", 0)}}


def fail(params, cancel):
    raise RuntimeError(params.get("message", "the handler failed"))


def rate_limited(params, cancel):
    return {"retryAfter": {"message": "rate limited by the mail provider", "delay": "30s"}}


def sleep(params, cancel):
    seconds = float(params.get("seconds", 1))
    if cancel.wait(seconds):
        return {"cancelled": {"reason": "cancelled while sleeping", "hardKilled": False}}
    return {"success": {"result": {"slept": seconds}}}


HANDLERS = {"add": add, "fail": fail, "rate_limited": rate_limited, "sleep": sleep}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", help="PEM certificate chain for TLS")
    parser.add_argument("--key", help="PEM private key for TLS")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.cert, args.key)
        context.set_alpn_protocols(["taskwire/1"])
    elif args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("plaintext is allowed only on loopback; give --cert and --key")
    listener = socket.create_server((args.host, args.port))
    print(f"LISTENING {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as error:
                print(f"runner: TLS handshake failed: {error}", file=sys.stderr)
                sock.close()
                continue
        threading.Thread(target=Connection(sock, HANDLERS).serve, daemon=True).start()


if __name__ == "__main__":
    main()
