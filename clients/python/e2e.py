"""End-to-end check of calgate.v1 from Python (grpcio), the way a polyglot caller uses it.

Runs the real `calgate serve` binary against the project's fake Cronofy
(`calgate fake-cronofy`) on loopback and drives connect -> exchange -> list ->
upsert -> delete, plus the error details a caller depends on, then stops
calgate with SIGTERM and expects exit code 0.

    python clients/python/generate.py
    python clients/python/e2e.py --calgate target/release/calgate
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

from calgate.v1 import calgate_pb2 as pb  # noqa: E402
from calgate.v1 import calgate_pb2_grpc as pb_grpc  # noqa: E402

REDIRECT_URI = "https://py.example/cronofy/callback"
CHECKS = {"passed": 0, "failed": 0}


def check(name, condition, detail=""):
    if condition:
        CHECKS["passed"] += 1
        print(f"ok   {name}")
    else:
        CHECKS["failed"] += 1
        print(f"FAIL {name} {detail}")


def succeeds(name, call):
    """Runs one RPC and records whether it returned OK."""
    try:
        call()
        check(name, True)
    except grpc.RpcError as error:
        check(name, False, f"{error.code()} {error.details()}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def follow_consent(url):
    """Opens the consent URL at the fake and returns (code, state) from its redirect."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", f"{parts.path}?{parts.query}")
    response = conn.getresponse()
    location = response.getheader("Location")
    conn.close()
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    return query["code"], query["state"]


def error_details(error):
    """ErrorInfo reason and BadRequest field paths of a failed call."""
    status = rpc_status.from_call(error)
    reason, fields = None, []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


def write_config(work, port, fake, api_key):
    (work / "state.key").write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    (work / "k1.key").write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    (work / "client.secret").write_text(os.environ["FAKE_CLIENT_SECRET"])
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    config = f"""
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[store]
url = "sqlite://{work / 'calgate.db'}"
[state]
signing_key_file = "{work / 'state.key'}"
[encryption]
keys = [{{ id = "k1", key_file = "{work / 'k1.key'}" }}]
[[tenants]]
id = "python"
api_key_sha256 = ["{digest}"]
client_id = "py-client"
client_secret_file = "{work / 'client.secret'}"
data_center = "de"
redirect_uris = ["{REDIRECT_URI}"]
api_base_url = "{fake['api_base_url']}"
app_base_url = "{fake['app_base_url']}"
"""
    path = work / "calgate.toml"
    path.write_text(config)
    return path


def wait_serving(channel, deadline_s=20):
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service="calgate.v1.CalendarWriteService"), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    return False


def run_flow(stub, metadata):
    built = stub.BuildAuthorizeUrl(
        pb.BuildAuthorizeUrlRequest(redirect_uri=REDIRECT_URI, user_ref="py-user-1"), metadata=metadata
    )
    check("BuildAuthorizeUrl returns a consent URL", "/oauth/authorize?" in built.url and built.state)
    code, state = follow_consent(built.url)
    try:
        stub.ExchangeCode(
            pb.ExchangeCodeRequest(
                code=code, redirect_uri=REDIRECT_URI, state=state, expected_user_ref="someone-else"
            ),
            metadata=metadata,
        )
        check("a state for another user is refused", False)
    except grpc.RpcError as error:
        check(
            "a state for another user is refused (STATE_USER_MISMATCH)",
            error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_details(error)[0] == "STATE_USER_MISMATCH",
            str(error),
        )
    grant = stub.ExchangeCode(
        pb.ExchangeCodeRequest(code=code, redirect_uri=REDIRECT_URI, state=state, expected_user_ref="py-user-1"),
        metadata=metadata,
    ).grant
    check("ExchangeCode returns an active grant", grant.status == pb.GRANT_STATUS_ACTIVE and grant.sub, str(grant))
    check("the grant is bound to user_ref", grant.user_ref == "py-user-1")

    calendars = stub.ListCalendars(pb.ListCalendarsRequest(user_ref="py-user-1"), metadata=metadata).calendars
    writable = [c for c in calendars if not c.readonly]
    check("ListCalendars lists a writable calendar", len(writable) == 1, str(calendars))
    calendar_id = writable[0].calendar_id

    start = timestamp_pb2.Timestamp(seconds=1_790_000_000)
    end = timestamp_pb2.Timestamp(seconds=1_790_001_800)
    event = pb.Event(
        event_id="py-event-1",
        summary="Written from Python",
        start=pb.EventTime(time=start, tzid="Europe/Berlin"),
        end=pb.EventTime(time=end),
        reminders=[pb.Reminder(minutes=15)],
    )
    upsert = pb.UpsertEventRequest(user_ref="py-user-1", calendar_id=calendar_id, event=event)
    succeeds("UpsertEvent succeeds", lambda: stub.UpsertEvent(upsert, metadata=metadata))
    delivered = stub.UpsertEvent(upsert, metadata=metadata).delivery
    check("UpsertEvent says the write goes into the calendar", delivered == pb.DELIVERY_CALENDAR_WRITE, str(delivered))

    bad = pb.Event(event_id="py-event-2", summary="x" * 1025, start=pb.EventTime(time=start), end=pb.EventTime(time=end))
    try:
        stub.UpsertEvent(pb.UpsertEventRequest(user_ref="py-user-1", calendar_id=calendar_id, event=bad), metadata=metadata)
        check("an over-long summary is refused", False)
    except grpc.RpcError as error:
        reason, fields = error_details(error)
        check(
            "an over-long summary is INVALID_ARGUMENT naming event.summary",
            error.code() == grpc.StatusCode.INVALID_ARGUMENT and reason == "FIELD_INVALID" and fields == ["event.summary"],
            f"{error.code()} {reason} {fields}",
        )

    delete = pb.DeleteEventRequest(sub=grant.sub, calendar_id=calendar_id, event_id="py-event-1")
    succeeds("DeleteEvent succeeds", lambda: stub.DeleteEvent(delete, metadata=metadata))
    succeeds("DeleteEvent of an event already gone succeeds", lambda: stub.DeleteEvent(delete, metadata=metadata))

    try:
        stub.GetGrant(pb.GetGrantRequest(sub=grant.sub), metadata=[("authorization", "Bearer wrong-key")])
        check("a wrong API key is refused", False)
    except grpc.RpcError as error:
        reason, _ = error_details(error)
        check(
            "a wrong API key is UNAUTHENTICATED / API_KEY_INVALID",
            error.code() == grpc.StatusCode.UNAUTHENTICATED and reason == "API_KEY_INVALID",
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calgate", required=True, help="path to the calgate binary")
    args = parser.parse_args()
    os.environ["FAKE_CLIENT_SECRET"] = secrets.token_urlsafe(24)
    api_key = secrets.token_urlsafe(24)

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        fake = subprocess.Popen(
            [args.calgate, "fake-cronofy", "--client-id", "py-client", "--client-secret-env", "FAKE_CLIENT_SECRET"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        calgate = None
        try:
            fake_urls = json.loads(fake.stdout.readline())
            port = free_port()
            config = write_config(work, port, fake_urls, api_key)
            calgate = subprocess.Popen([args.calgate, "serve", "--config", str(config)], stderr=subprocess.DEVNULL)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            check("calgate reports SERVING", wait_serving(channel))
            run_flow(pb_grpc.CalendarWriteServiceStub(channel), [("authorization", f"Bearer {api_key}")])
            channel.close()
            calgate.send_signal(signal.SIGTERM)
            check("calgate exits 0 after SIGTERM", calgate.wait(timeout=20) == 0)
        finally:
            for process in (calgate, fake):
                if process and process.poll() is None:
                    process.kill()
    print(f"python e2e: {CHECKS['passed']} passed, {CHECKS['failed']} failed")
    return 1 if CHECKS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
