"""calgate from Python: connect a user, write an event, delete it, and forget the user.

Runs against a calgate sandbox (its embedded fake Cronofy approves consent at once):

    cargo run --release -- sandbox --config examples/calgate.toml
    python clients/python/generate.py
    python examples/python/quickstart.py

CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default demo-api-key) override.
"""

import http.client
import os
import pathlib
import sys
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python" / "generated"))

import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from calgate.v1 import calgate_pb2 as pb  # noqa: E402
from calgate.v1 import calgate_pb2_grpc as pb_grpc  # noqa: E402

ADDR = os.environ.get("CALGATE_ADDR", "localhost:50051")
AUTH = [("authorization", f"Bearer {os.environ.get('CALGATE_API_KEY', 'demo-api-key')}")]
REDIRECT_URI = "http://localhost:3000/cronofy/callback"


def consent(url):
    """Plays the user's browser: open the consent URL, read code and state from the redirect."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    conn.request("GET", f"{parts.path}?{parts.query}")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(conn.getresponse().getheader("Location")).query))
    return query["code"], query["state"]


def main():
    stub = pb_grpc.CalendarWriteServiceStub(grpc.insecure_channel(ADDR))
    built = stub.BuildAuthorizeUrl(
        pb.BuildAuthorizeUrlRequest(redirect_uri=REDIRECT_URI, user_ref="py-quickstart"), metadata=AUTH
    )
    code, state = consent(built.url)
    # expected_user_ref: the user of the browser session the redirect reached (OAuth CSRF protection).
    grant = stub.ExchangeCode(
        pb.ExchangeCodeRequest(
            code=code, redirect_uri=REDIRECT_URI, state=state, expected_user_ref="py-quickstart"
        ),
        metadata=AUTH,
    ).grant
    print(f"connected {grant.sub} ({pb.GrantStatus.Name(grant.status)})")

    calendars = stub.ListCalendars(pb.ListCalendarsRequest(user_ref="py-quickstart"), metadata=AUTH).calendars
    calendar_id = next(c.calendar_id for c in calendars if not c.readonly)
    event = pb.Event(
        event_id="quickstart-1",
        summary="Written by examples/python/quickstart.py",
        start=pb.EventTime(time=Timestamp(seconds=1_800_000_000)),
        end=pb.EventTime(time=Timestamp(seconds=1_800_001_800)),
    )
    answer = stub.UpsertEvent(
        pb.UpsertEventRequest(user_ref="py-quickstart", calendar_id=calendar_id, event=event), metadata=AUTH
    )
    # DELIVERY_EMAIL_INVITE when the user chose Free/Busy or No-Access mode at consent.
    print(f"upserted quickstart-1 into {calendar_id} ({pb.Delivery.Name(answer.delivery)})")
    stub.DeleteEvent(
        pb.DeleteEventRequest(user_ref="py-quickstart", calendar_id=calendar_id, event_id="quickstart-1"),
        metadata=AUTH,
    )
    print("deleted quickstart-1")

    # The user leaves (a privacy request): their events, their Cronofy authorization and every row
    # calgate held about them go; the audit trail keeps only keyed hashes of their ids.
    forgotten = stub.ForgetUser(pb.ForgetUserRequest(user_ref="py-quickstart", delete_events=True), metadata=AUTH)
    # CONFIRMED: the events were seen gone before the authorization was revoked (PENDING: calgate's
    # erasure worker finishes once Cronofy has applied the deletes).
    print(f"forgot {forgotten.sub} (events: {pb.EventsDeletion.Name(forgotten.events_deletion)})")
    try:
        stub.GetGrant(pb.GetGrantRequest(user_ref="py-quickstart"), metadata=AUTH)
        raise SystemExit("a forgotten user is still known")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise


if __name__ == "__main__":
    main()
