/**
 * Helpers for tests of the messages module: a server with users, and user
 * sessions that call the module.
 *
 * @module
 */

import type { AmtpClient, Push, Response } from "../client/mod.ts";
import {
  adminCaller,
  login,
  startTestServer,
  type TestKey,
  type TestServer,
  userMaker,
  waitFor,
} from "./helpers.ts";
import { sha256Hex } from "../shared/pem.ts";

/** A logged-in user session. */
export interface MailSession {
  /** The client. */
  client: AmtpClient;
  /** Its address. */
  address: string;
  /** Its token. */
  token: string;
  /** Pushes received. */
  pushes: Push[];
  /** Call a messages command; the whole response. */
  request(command: string, params?: Record<string, unknown>): Promise<Response>;
  /** Call a messages command; `data`, or throw on error. */
  call<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
}

/** A server with an admin and helpers to add users and sessions. */
export interface MailWorld {
  /** The server. */
  t: TestServer;
  /** Call an admin command. */
  admin(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<Record<string, unknown>>;
  /** Create a user (once) and open a logged-in session for it. */
  session(
    address: string,
    options?: { transport?: "webtransport" | "websocket" },
  ): Promise<MailSession>;
}

/** Open a logged-in session on an existing client. */
export async function mailSession(
  client: AmtpClient,
  address: string,
  key: TestKey,
): Promise<MailSession> {
  const token = await login(client, "user", address, key);
  const pushes: Push[] = [];
  client.onPush((push) => pushes.push(push));
  const request = (command: string, params: Record<string, unknown> = {}) =>
    client.request(command, {
      module: "messages",
      user_token: token,
      ...params,
    });
  const session: MailSession = {
    client,
    address,
    token,
    pushes,
    request,
    async call<T>(command: string, params: Record<string, unknown> = {}) {
      const response = await request(command, params);
      if (response.error !== 0) {
        throw new Error(
          `${command}: error ${response.error}: ${response.message}`,
        );
      }
      return response.data as T;
    },
  };
  // Bind the session to the user so it receives pushes from now on.
  await session.call("quota");
  return session;
}

/** Start a server (with the repository's modules) holding domain example.org. */
export async function mailWorld(
  env: Record<string, string> = {},
  domains: string[] = ["example.org"],
): Promise<MailWorld> {
  const t = await startTestServer(env);
  const admin = await adminCaller(await t.connect(), t.dataDir);
  for (const domain of domains) await admin("admin_add_domain", { domain });
  const user = userMaker(admin);
  return {
    t,
    admin,
    async session(address, options = {}) {
      const key = await user(address);
      return await mailSession(await t.connect(options), address, key);
    },
  };
}

/** Wait for a push of `event` matching `match`. */
export async function pushOf(
  session: MailSession,
  event: string,
  match: (data: Record<string, unknown>) => boolean = () => true,
  timeoutMs = 5000,
): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await waitFor(
    () => {
      found = session.pushes.map((p) => p.data as Record<string, unknown>)
        .find((d, i) => session.pushes[i].event === event && match(d));
      return found !== undefined;
    },
    timeoutMs,
    `push ${event} to ${session.address}`,
  );
  return found!;
}

/** Upload bytes as an attachment, chunk by chunk; its attachment id. */
export async function uploadAttachment(
  session: MailSession,
  name: string,
  data: Uint8Array,
): Promise<string> {
  const started = await session.call<
    { upload_id: string; chunk_size: number }
  >("attachment_upload", {
    name,
    type: "application/octet-stream",
    size: data.byteLength,
    sha256: await sha256Hex(data),
  });
  const size = started.chunk_size;
  for (let index = 0; index * size < data.byteLength; index++) {
    await session.call("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index,
      data: data.subarray(index * size, (index + 1) * size),
    });
  }
  const done = await session.call<{ attachment_id: string }>(
    "attachment_upload_finish",
    { upload_id: started.upload_id },
  );
  return done.attachment_id;
}
