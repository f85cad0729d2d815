// Shared by the examples: the calgate client, its API key and the sandbox's consent.
// CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default demo-api-key) override.

import * as http from "node:http";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const addr = process.env.CALGATE_ADDR ?? "localhost:50051";
export const apiKey = process.env.CALGATE_API_KEY ?? "demo-api-key";
export const redirectUri = "http://localhost:3000/cronofy/callback";

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
export const calgate = (grpc.loadPackageDefinition(definition) as any).calgate.v1;
export const client = new calgate.CalendarWriteService(addr, grpc.credentials.createInsecure());
export const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${apiKey}`);

/** Calls a unary RPC and resolves with its response. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function call<T>(method: string, request: object): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, (error: grpc.ServiceError | null, response: T) =>
      error ? reject(error) : resolve(response),
    ),
  );
}

/** Plays the user's browser: open the consent URL, read code and state from the redirect. */
export function consent(url: string): Promise<{ code: string; state: string }> {
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
