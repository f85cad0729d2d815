// calgate from TypeScript on Node: connect a user, write an event, delete it, and forget the user.
//
// Runs against a calgate sandbox (its embedded fake Cronofy approves consent at once):
//   cargo run --release -- sandbox --config examples/calgate.toml
//   cd examples/node && npm ci && npm run build && npm start

import * as grpc from "@grpc/grpc-js";
import { call, client, consent, redirectUri } from "./client";

async function main(): Promise<void> {
  const built = await call<{ url: string }>("BuildAuthorizeUrl", { redirect_uri: redirectUri, user_ref: "ts-quickstart" });
  const { code, state } = await consent(built.url);
  const { grant } = await call<{ grant: { sub: string; status: string } }>("ExchangeCode", {
    code,
    redirect_uri: redirectUri,
    state,
    // The user of the browser session the redirect reached (OAuth CSRF protection).
    expected_user_ref: "ts-quickstart",
  });
  console.log(`connected ${grant.sub} (${grant.status})`);

  const { calendars } = await call<{ calendars: { calendar_id: string; readonly: boolean }[] }>("ListCalendars", {
    user_ref: "ts-quickstart",
  });
  const calendarId = calendars.find((c) => !c.readonly)!.calendar_id;
  const { delivery } = await call<{ delivery: string }>("UpsertEvent", {
    user_ref: "ts-quickstart",
    calendar_id: calendarId,
    event: {
      event_id: "quickstart-1",
      summary: "Written by examples/node/src/quickstart.ts",
      start: { time: { seconds: 1_800_000_000 } },
      end: { time: { seconds: 1_800_001_800 } },
    },
  });
  // DELIVERY_EMAIL_INVITE when the user chose Free/Busy or No-Access mode at consent.
  console.log(`upserted quickstart-1 into ${calendarId} (${delivery})`);

  // A bad request names the field: the caller learns what to fix.
  try {
    await call("UpsertEvent", { user_ref: "ts-quickstart", calendar_id: calendarId, event: { event_id: "x" } });
    throw new Error("an event without a summary was accepted");
  } catch (error) {
    const status = error as grpc.ServiceError;
    if (status.code !== grpc.status.INVALID_ARGUMENT || !status.details.includes("event.summary")) throw error;
    console.log(`refused as expected: ${status.details}`);
  }

  await call("DeleteEvent", { user_ref: "ts-quickstart", calendar_id: calendarId, event_id: "quickstart-1" });
  console.log("deleted quickstart-1");

  // The user leaves (a privacy request): their events, their Cronofy authorization and every row
  // calgate held about them go; the audit trail keeps only keyed hashes of their ids.
  // events_deletion CONFIRMED: the events were seen gone before the authorization was revoked
  // (PENDING: calgate's erasure worker finishes once Cronofy has applied the deletes).
  const forgotten = await call<{ sub: string; events_deletion: string }>("ForgetUser", {
    user_ref: "ts-quickstart",
    delete_events: true,
  });
  console.log(`forgot ${forgotten.sub} (events: ${forgotten.events_deletion})`);
  try {
    await call("GetGrant", { user_ref: "ts-quickstart" });
    throw new Error("a forgotten user is still known");
  } catch (error) {
    if ((error as grpc.ServiceError).code !== grpc.status.NOT_FOUND) throw error;
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
