// calgate from TypeScript on Node: follow WatchChanges, resume by cursor after a disconnect.
//
// Runs against a calgate sandbox with [callbacks] configured (its embedded fake
// Cronofy sends push notifications and offers controls that play the user):
//   cargo run --release -- sandbox --config examples/calgate.toml
//   cd examples/node && npm ci && npm run build && node dist/watchChanges.js
//
// A real consumer keeps the last cursor it processed in its own database and
// passes it as `after` when it reconnects: it then misses nothing.

import * as grpc from "@grpc/grpc-js";
import { call, client, consent, metadata, redirectUri } from "./client";

const user = "ts-watcher";

interface Change {
  cursor: string;
  sub: string;
  user_ref: string;
  change: "grant" | "event";
  grant?: { status: string; reason: string; relink_url: string };
  event?: { event_id: string; kind: string };
}

/** Reads a WatchChanges stream one change at a time. */
class Watcher {
  private readonly stream: grpc.ClientReadableStream<Change>;
  private readonly queue: Change[] = [];
  private waiting?: { resolve: (change: Change) => void; reject: (error: Error) => void };
  private failure?: Error;

  constructor(after: string) {
    // The deadline bounds the example; a consumer keeps its stream open and reconnects when it ends.
    this.stream = client.WatchChanges({ after }, metadata, { deadline: Date.now() + 60_000 });
    this.stream.on("data", (change: Change) => {
      if (this.waiting) {
        this.waiting.resolve(change);
        this.waiting = undefined;
      } else {
        this.queue.push(change);
      }
    });
    this.stream.on("error", (error: grpc.ServiceError) => {
      if (error.code === grpc.status.CANCELLED) return;
      this.failure = error;
      this.waiting?.reject(error);
    });
  }

  next(): Promise<Change> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(log(queued));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve: (change) => resolve(log(change)), reject };
    });
  }

  close(): void {
    this.stream.cancel();
  }
}

function log(change: Change): Change {
  const what =
    change.change === "grant"
      ? `grant ${change.grant?.status} (${change.grant?.reason})`
      : `event ${change.event?.event_id} ${change.event?.kind}`;
  console.log(`${change.cursor}: ${change.user_ref || change.sub}: ${what}`);
  return change;
}

/** Plays the user in the sandbox: POST to the embedded fake Cronofy's controls. */
async function sandboxControl(fakeHost: string, path: string, body: object = {}): Promise<void> {
  const answer = await fetch(`${fakeHost}/sandbox/${path}`, { method: "POST", body: JSON.stringify(body) });
  if (!answer.ok) throw new Error(`sandbox control ${path} answered ${answer.status}`);
}

function expect(condition: boolean, what: string, change: Change): void {
  if (!condition) throw new Error(`${what}: got ${JSON.stringify(change)}`);
}

async function main(): Promise<void> {
  // Only changes recorded from now on.
  const watcher = new Watcher("");
  const built = await call<{ url: string }>("BuildAuthorizeUrl", { redirect_uri: redirectUri, user_ref: user });
  const fakeHost = new URL(built.url).origin;
  const { code, state } = await consent(built.url);
  const { grant } = await call<{ grant: { sub: string } }>("ExchangeCode", {
    code,
    redirect_uri: redirectUri,
    state,
    expected_user_ref: user,
  });
  const connected = await watcher.next();
  expect(connected.grant?.reason === "CONNECTED", "a CONNECTED change", connected);

  // The push notification channel opens in the background.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { grant: described } = await call<{ grant: { change_tracking: string } }>("GetGrant", { user_ref: user });
    if (described.change_tracking === "CHANGE_TRACKING_EVENTS") break;
    if (Date.now() > deadline) throw new Error("the channel never opened");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }

  const { calendars } = await call<{ calendars: { calendar_id: string; readonly: boolean }[] }>("ListCalendars", {
    user_ref: user,
  });
  const calendarId = calendars.find((c) => !c.readonly)!.calendar_id;
  await call("UpsertEvent", {
    user_ref: user,
    calendar_id: calendarId,
    event: {
      event_id: "watch-1",
      summary: "Interview",
      start: { time: { seconds: 1_800_000_000 } },
      end: { time: { seconds: 1_800_003_600 } },
    },
  });
  // The user deletes the interview in their calendar app.
  await sandboxControl(fakeHost, `accounts/${grant.sub}/events/delete`, { calendar_id: calendarId, event_id: "watch-1" });
  const deleted = await watcher.next();
  expect(deleted.event?.event_id === "watch-1" && deleted.event?.kind === "EVENT_CHANGE_KIND_DELETED", "a deletion", deleted);
  const cursor = deleted.cursor; // a real consumer stores this with the work it did

  // The consumer goes away; meanwhile the user's calendar disconnects.
  watcher.close();
  await sandboxControl(fakeHost, `accounts/${grant.sub}/profile/disconnect`);

  // Back, it resumes after its cursor and misses nothing.
  const resumed = new Watcher(cursor);
  const disconnected = await resumed.next();
  expect(disconnected.grant?.reason === "PROFILE_DISCONNECTED", "a PROFILE_DISCONNECTED change", disconnected);
  console.log(`relink at ${disconnected.grant?.relink_url}`);
  resumed.close();
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
