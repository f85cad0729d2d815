"""calgate from Python: a queued write and how it settled.

Hands calgate a write with WRITE_MODE_QUEUED (it answers at once, with a
write_id, even while Cronofy is down or the budget is spent), then hears how
it ended: the WriteSettled change on WatchChanges, and GetWrite.

    cargo run --release -- sandbox --config examples/calgate.toml
    python clients/python/generate.py
    python examples/python/queued_write.py

CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default demo-api-key) override.
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python" / "generated"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from calgate.v1 import calgate_pb2 as pb  # noqa: E402
from calgate.v1 import calgate_pb2_grpc as pb_grpc  # noqa: E402
from quickstart import REDIRECT_URI, consent  # noqa: E402

ADDR = os.environ.get("CALGATE_ADDR", "localhost:50051")
AUTH = [("authorization", f"Bearer {os.environ.get('CALGATE_API_KEY', 'demo-api-key')}")]
USER = "py-queued"


def main():
    stub = pb_grpc.CalendarWriteServiceStub(grpc.insecure_channel(ADDR))
    built = stub.BuildAuthorizeUrl(pb.BuildAuthorizeUrlRequest(redirect_uri=REDIRECT_URI, user_ref=USER), metadata=AUTH)
    code, state = consent(built.url)
    stub.ExchangeCode(
        pb.ExchangeCodeRequest(code=code, redirect_uri=REDIRECT_URI, state=state, expected_user_ref=USER),
        metadata=AUTH,
    )
    calendars = stub.ListCalendars(pb.ListCalendarsRequest(user_ref=USER), metadata=AUTH).calendars
    calendar_id = next(c.calendar_id for c in calendars if not c.readonly)

    # Watch first: the settlement arrives on the tenant's change stream.
    changes = stub.WatchChanges(pb.WatchChangesRequest(), metadata=AUTH, timeout=60)
    event = pb.Event(
        event_id="queued-1",
        summary="Written by examples/python/queued_write.py",
        start=pb.EventTime(time=Timestamp(seconds=1_800_000_000)),
        end=pb.EventTime(time=Timestamp(seconds=1_800_001_800)),
    )
    accepted = stub.UpsertEvent(
        pb.UpsertEventRequest(user_ref=USER, calendar_id=calendar_id, event=event, mode=pb.WRITE_MODE_QUEUED),
        metadata=AUTH,
    )
    print(f"accepted {accepted.write_id} ({pb.WriteState.Name(accepted.state)})")
    for change in changes:
        if change.WhichOneof("change") == "write" and change.write.write_id == accepted.write_id:
            print(f"settled {change.write.write_id}: {pb.WriteState.Name(change.write.state)} (cursor {change.cursor})")
            if change.write.state != pb.WRITE_STATE_DELIVERED:
                raise SystemExit(f"not delivered: {change.write.error.message}")
            break
    changes.cancel()
    write = stub.GetWrite(pb.GetWriteRequest(write_id=accepted.write_id), metadata=AUTH).write
    print(f"GetWrite: {pb.WriteState.Name(write.state)} after {write.attempts} attempt(s)")
    stub.ForgetUser(pb.ForgetUserRequest(user_ref=USER), metadata=AUTH)


if __name__ == "__main__":
    main()
