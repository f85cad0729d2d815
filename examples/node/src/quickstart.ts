// calgate from TypeScript on Node: connect a user, write an event, delete it.
//
// Runs against a calgate sandbox (its embedded fake Cronofy approves consent at once):
//   cargo run --release -- sandbox --config examples/calgate.toml
//   cd examples/node && npm ci && npm run build && npm start
// CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default demo-api-key) override.

import * as http from "node:http";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const addr = process.env.CALGATE_ADDR ?? "localhost:50051";
const apiKey = process.env.CALGATE_API_KEY ?? "demo-api-key";
const redirectUri = "http://localhost:3000/cronofy/callback";

// The proto is the contract: load it from the repository, keeping field names as written.
const definition = protoLoader.loadSync("calgate/v1/calgate.proto", {
  includeDirs: [path.join(__dirname, "../../../proto")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const calgate = (grpc.loadPackageDefinition(definition) as any).calgate.v1;
const client = new calgate.CalendarWriteService(addr, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${apiKey}`);

/** Calls a unary RPC and resolves with its response. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function call<T>(method: string, request: object): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, (error: grpc.ServiceError | null, response: T) =>
      error ? reject(error) : resolve(response),
    ),
  );
}

/** Plays the user's browser: open the consent URL, read code and state from the redirect. */
function consent(url: string): Promise<{ code: string; state: string }> {
  return new Promise((resolve, reject) =>
    http
      // A one-shot connection: a kept-alive socket would hold the process open after main().
      .get(url, { agent: false }, (response) => {
        response.resume();
        const location = new URL(response.headers.location ?? "");
        resolve({ code: location.searchParams.get("code") ?? "", state: location.searchParams.get("state") ?? "" });
      })
      .on("error", reject),
  );
}

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
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
