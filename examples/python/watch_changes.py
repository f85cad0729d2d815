"""calgate from Python: follow WatchChanges, resume by cursor after a disconnect.

Runs against a calgate sandbox with [callbacks] configured (its embedded fake
Cronofy sends push notifications, and offers controls that play the user):

    cargo run --release -- sandbox --config examples/calgate.toml
    python clients/python/generate.py
    python examples/python/watch_changes.py

A real consumer keeps the last cursor it processed in its own database and
passes it as `after` when it reconnects: it then misses nothing.
"""

import json
import os
import pathlib
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python" / "generated"))

import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from calgate.v1 import calgate_pb2 as pb  # noqa: E402
from calgate.v1 import calgate_pb2_grpc as pb_grpc  # noqa: E402
from quickstart import AUTH, REDIRECT_URI, consent  # noqa: E402

ADDR = os.environ.get("CALGATE_ADDR", "localhost:50051")
USER = "py-watcher"


def sandbox_control(fake_host, path, body=None):
    """Plays the user in the sandbox: POST to the embedded fake Cronofy's controls."""
    request = urllib.request.Request(
        f"{fake_host}/sandbox/{path}", data=json.dumps(body or {}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def next_change(stream):
    change = next(stream)
    kind = change.WhichOneof("change")
    detail = getattr(change, kind)
    if kind == "grant":
        what = f"grant {pb.GrantStatus.Name(detail.status)} ({detail.reason})"
    else:
        what = f"event {detail.event_id} {pb.EventChangeKind.Name(detail.kind)}"
    print(f"{change.cursor}: {change.user_ref or change.sub}: {what}")
    return change


def main():
    stub = pb_grpc.CalendarWriteServiceStub(grpc.insecure_channel(ADDR))
    # Only changes recorded from now on (after=""); the deadline bounds the example.
    stream = stub.WatchChanges(pb.WatchChangesRequest(after=""), metadata=AUTH, timeout=60)

    built = stub.BuildAuthorizeUrl(pb.BuildAuthorizeUrlRequest(redirect_uri=REDIRECT_URI, user_ref=USER), metadata=AUTH)
    fake = urllib.parse.urlsplit(built.url)
    fake_host = f"{fake.scheme}://{fake.netloc}"
    code, state = consent(built.url)
    grant = stub.ExchangeCode(
        pb.ExchangeCodeRequest(code=code, redirect_uri=REDIRECT_URI, state=state, expected_user_ref=USER),
        metadata=AUTH,
    ).grant
    connected = next_change(stream)
    assert connected.grant.reason == "CONNECTED", connected

    # The push notification channel opens in the background.
    deadline = time.monotonic() + 30
    while stub.GetGrant(pb.GetGrantRequest(user_ref=USER), metadata=AUTH).grant.change_tracking != pb.CHANGE_TRACKING_EVENTS:
        assert time.monotonic() < deadline, "the channel never opened"
        time.sleep(0.2)

    calendars = stub.ListCalendars(pb.ListCalendarsRequest(user_ref=USER), metadata=AUTH).calendars
    calendar_id = next(c.calendar_id for c in calendars if not c.readonly)
    stub.UpsertEvent(
        pb.UpsertEventRequest(
            user_ref=USER,
            calendar_id=calendar_id,
            event=pb.Event(
                event_id="watch-1",
                summary="Interview",
                start=pb.EventTime(time=Timestamp(seconds=1_800_000_000)),
                end=pb.EventTime(time=Timestamp(seconds=1_800_003_600)),
            ),
        ),
        metadata=AUTH,
    )
    # The user deletes the interview in their calendar app.
    sandbox_control(fake_host, f"accounts/{grant.sub}/events/delete", {"calendar_id": calendar_id, "event_id": "watch-1"})
    deleted = next_change(stream)
    assert deleted.event.event_id == "watch-1" and deleted.event.kind == pb.EVENT_CHANGE_KIND_DELETED, deleted
    cursor = deleted.cursor  # a real consumer stores this with the work it did

    # The consumer goes away; meanwhile the user's calendar disconnects.
    stream.cancel()
    sandbox_control(fake_host, f"accounts/{grant.sub}/profile/disconnect")

    # Back, it resumes after its cursor and misses nothing.
    resumed = stub.WatchChanges(pb.WatchChangesRequest(after=cursor), metadata=AUTH, timeout=60)
    disconnected = next_change(resumed)
    assert disconnected.grant.reason == "PROFILE_DISCONNECTED", disconnected
    print(f"relink at {disconnected.grant.relink_url}")
    resumed.cancel()


if __name__ == "__main__":
    main()
