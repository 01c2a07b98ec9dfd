/**
 * Mail with end-to-end encryption, for every client (the CLI and the web
 * app): sending a message (encrypted for every device the plan names, with
 * its attachments, a Bcc envelope each), opening a received one (decrypted,
 * its signature judged against the sender's pinned keys, every difference
 * between what the sender signed and what the server delivered named), and
 * fetching an attachment (checked, decrypted). Where bytes come from and go
 * to (files, a browser's file picker and downloads) is the caller's.
 *
 * @module
 */

import {
  decryptAttachment,
  decryptMessage,
  type DeviceKeys,
  E2eError,
  encryptAttachment,
  encryptMessage,
  headerMismatches,
  judgeContact,
  type KeyTrust,
  type Opened,
  type SecretAttachment,
  type Target,
  type TrustStore,
} from "./e2e.ts";
import { type EncryptionPlan, keysOf } from "./e2e_account.ts";
import { type AmtpClient, AmtpError } from "./mod.ts";
import { sha256Hex } from "../shared/pem.ts";

/** A logged-in user's view of the messages module. */
export interface MailAccount {
  /** The client. */
  client: AmtpClient;
  /** The user token. */
  token: string;
  /** The user's address. */
  address: string;
  /** Call a messages command; `data` or throws. */
  call<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
  /** {@link call} on the transfer lane (chunks of uploads and downloads). */
  transfer<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
}

/** Bind a client and user token to the messages module. */
export function mailAccount(
  client: AmtpClient,
  user: { token: string; address: string },
): MailAccount {
  return {
    client,
    token: user.token,
    address: user.address,
    call: (command, params = {}) =>
      client.call(command, {
        module: "messages",
        user_token: user.token,
        ...params,
      }),
    transfer: async <T>(command: string, params = {}) => {
      const response = await client.transferRequest(command, {
        module: "messages",
        user_token: user.token,
        ...params,
      });
      if (response.error !== 0) throw new AmtpError(response);
      return response.data as T;
    },
  };
}

/**
 * The local ids a global id `<id>@<domain>` has on a server (PROTOCOL.md
 * §13.1): `<id>` when the domain is hosted there, else the first 24 hex
 * digits of SHA-256 over `AMTP message\n<global id>`.
 */
async function localIdsOf(
  global: string | null | undefined,
): Promise<string[]> {
  if (!global) return [];
  const at = global.lastIndexOf("@");
  return [
    global.slice(0, at),
    (await sha256Hex(new TextEncoder().encode(`AMTP message\n${global}`)))
      .slice(0, 24),
  ];
}

/** SHA-256 of bytes, hex (shared with the server). */
export { sha256Hex };

/** Progress of an upload or download: bytes done of the total. */
export type Progress = (done: number, total: number) => void;

/** Upload bytes in chunks; returns the attachment id. */
export async function uploadBytes(
  m: MailAccount,
  data: Uint8Array,
  name: string,
  type: string,
  onProgress?: Progress,
): Promise<string> {
  const started = await m.call<{ upload_id: string; chunk_size: number }>(
    "attachment_upload",
    {
      name,
      type,
      size: data.byteLength,
      sha256: await sha256Hex(data),
    },
  );
  const size = started.chunk_size;
  onProgress?.(0, data.byteLength);
  for (let index = 0; index * size < data.byteLength; index++) {
    await m.transfer("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index,
      data: data.subarray(index * size, (index + 1) * size),
    });
    onProgress?.(
      Math.min((index + 1) * size, data.byteLength),
      data.byteLength,
    );
  }
  const done = await m.call<{ attachment_id: string }>(
    "attachment_upload_finish",
    { upload_id: started.upload_id },
  );
  return done.attachment_id;
}

/** The message id the messages module derives from a sender and a client id (PROTOCOL.md §13.1). */
export async function messageIdOf(
  sender: string,
  clientId: string,
): Promise<string> {
  return (await sha256Hex(new TextEncoder().encode(`${sender}\n${clientId}`)))
    .slice(0, 24);
}

/** A file to attach. */
export interface OutgoingFile {
  /** File name. */
  name: string;
  /** MIME type. */
  type: string;
  /** Its bytes. */
  data: Uint8Array;
}

/** A message to send. */
export interface Outgoing {
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Blind copy recipients. */
  bcc: string[];
  /** Subject. */
  subject: string;
  /** Body text. */
  body: string;
  /** `text` (default), `markdown` or `html`. */
  format?: string;
  /** Files. */
  attachments: OutgoingFile[];
  /** The copy id of the message answered (one of the sender's copies). */
  inReplyTo?: string;
  /** Makes a retried send idempotent (a fresh one when absent). */
  clientId?: string;
}

/** One recipient's outcome of `send`. */
export interface RecipientResult {
  /** As written. */
  address: string;
  /** `delivered`, `queued` or `failed`. */
  status: string;
  /** Error code of a failure. */
  error?: number;
  /** Why it failed. */
  message?: string;
}

/** What sending did. */
export interface Sent {
  /** The message id. */
  message_id: string;
  /** The sender's copy id. */
  id: string;
  /** Per recipient. */
  recipients: RecipientResult[];
  /** Whether it went out encrypted end to end. */
  encrypted: boolean;
  /** What the sender should know (devices ignored, aliases expanded, how many envelopes). */
  notes: string[];
}

/**
 * Send a message as `plan` decided: encrypted for its devices (attachments
 * encrypted with the same content key before upload, one envelope per Bcc
 * recipient), or in clear when the plan says it cannot be encrypted — the
 * caller has asked for the user's consent where the plan needs it.
 */
export async function sendMessage(
  m: MailAccount,
  message: Outgoing,
  options: {
    plan: EncryptionPlan;
    device?: DeviceKeys;
    onProgress?: Progress;
  },
): Promise<Sent> {
  const { plan } = options;
  const clientId = message.clientId ?? crypto.randomUUID();
  const total = message.attachments.reduce((n, f) => n + f.data.length, 0);
  let uploaded = 0;
  const progress = (done: number) =>
    options.onProgress?.(uploaded + done, total);
  const notes: string[] = [];
  let params: Record<string, unknown>;
  if (plan.encrypt) {
    notes.push(...plan.notes);
    const device = options.device;
    if (!device) throw new E2eError("malformed", "no device keys to sign with");
    // One content key for every envelope of this message and its attachments.
    const contentKey = crypto.getRandomValues(new Uint8Array(32));
    const secretAttachments: SecretAttachment[] = [];
    const attachments = [];
    for (const file of message.attachments) {
      const sealed = await encryptAttachment(contentKey, file.data);
      const id = await uploadBytes(
        m,
        sealed.data,
        "encrypted.bin",
        "application/octet-stream",
        (done) => progress(Math.min(done, file.data.length)),
      );
      uploaded += file.data.length;
      attachments.push(id);
      secretAttachments.push({
        attachment_id: id,
        name: file.name,
        type: file.type,
        nonce: sealed.nonce,
        sha256: await sha256Hex(file.data),
        stored_sha256: await sha256Hex(sealed.data),
      });
    }
    const sender = m.address.toLowerCase();
    const domain = sender.slice(sender.lastIndexOf("@") + 1);
    const messageId = `${await messageIdOf(sender, clientId)}@${domain}`;
    let inReplyTo: string | null = null;
    if (message.inReplyTo) {
      const parent = await m.call<{ global_id?: string }>("get", {
        id: message.inReplyTo,
      });
      inReplyTo = parent.global_id ?? null;
    }
    const headers = {
      to: message.to.map((a) => a.toLowerCase()),
      cc: message.cc.map((a) => a.toLowerCase()),
      date: new Date(),
      message_id: messageId,
      in_reply_to: inReplyTo,
    };
    const seal = (
      recipients: Target[],
      extra: { bcc?: string[]; message_id?: string } = {},
    ) =>
      encryptMessage({
        subject: message.subject,
        body: message.body,
        format: message.format ?? "text",
        attachments: secretAttachments,
      }, {
        sender,
        device,
        recipients,
        headers: { ...headers, ...extra },
        contentKey,
      });
    const envelope = await seal(plan.targets);
    // Each Bcc recipient's own message: its id is derived as the messages
    // module derives it (PROTOCOL.md §13.1), so its signed id matches.
    const bccBodies = [];
    const local = messageId.slice(0, messageId.indexOf("@"));
    for (const b of plan.bcc) {
      const bccId = `${local}-${
        (await sha256Hex(
          new TextEncoder().encode(`AMTP bcc\n${local}\n${b.address}`),
        )).slice(0, 16)
      }@${domain}`;
      bccBodies.push(
        await seal(b.targets, { bcc: [b.address], message_id: bccId }),
      );
    }
    const devices = plan.targets.reduce((n, t) => n + t.devices.length, 0);
    notes.push(
      `encrypted end to end for ${devices} device${devices === 1 ? "" : "s"}${
        plan.bcc.length
          ? ` and ${plan.bcc.length} Bcc envelope${
            plan.bcc.length === 1 ? "" : "s"
          }`
          : ""
      } (the subject and headers travel inside)`,
    );
    params = {
      subject: "",
      body: envelope,
      encrypted: true,
      format: "text",
      attachments,
      // The Bcc addresses as planned (deduplicated), in the order of their bodies.
      bcc: plan.bcc.map((b) => b.address),
      ...(bccBodies.length ? { bcc_bodies: bccBodies } : {}),
    };
  } else {
    const attachments = [];
    for (const file of message.attachments) {
      attachments.push(
        await uploadBytes(m, file.data, file.name, file.type, progress),
      );
      uploaded += file.data.length;
    }
    params = {
      subject: message.subject,
      body: message.body,
      format: message.format ?? "text",
      attachments,
    };
  }
  const result = await m.call<
    { message_id: string; id: string; recipients: RecipientResult[] }
  >("send", {
    to: message.to,
    cc: message.cc,
    bcc: message.bcc,
    ...params,
    in_reply_to: message.inReplyTo,
    client_id: clientId,
  });
  return { ...result, encrypted: plan.encrypt, notes };
}

/** How a received message's signature stands. */
export type SignatureState =
  /** Not encrypted: nothing is signed. */
  | "none"
  /** It could not be opened here (no key, not for this device, tampered). */
  | "unreadable"
  /** The signature does not verify. */
  | "invalid"
  /** It verifies, but the signing device is not in the sender's list. */
  | "unlisted"
  /** It verifies with a device of the sender's list; see `trust`. */
  | "verified";

/** A received message, opened as far as it can be. */
export interface OpenedMessage {
  /** Whether it was sent encrypted end to end. */
  encrypted: boolean;
  /** The decrypted envelope, when it opened. */
  opened?: Opened;
  /** Why it did not open. */
  error?: string;
  /** The signature's state. */
  signature: SignatureState;
  /** How the sender's master key compares with what was pinned (`verified` only). */
  trust?: KeyTrust;
  /** The label of the signing device in the sender's list. */
  deviceLabel?: string;
  /** Every difference between what the sender signed and the server's copy (and replays). */
  problems: string[];
}

/** A message as `get` answers it. */
export interface MessageCopy {
  id: string;
  global_id?: string;
  from: string;
  to: string[];
  cc: string[];
  date: Date;
  encrypted: boolean;
  body: string | Uint8Array;
  in_reply_to?: string | null;
  attachments: { id: string; name: string; size: number; sha256: string }[];
  [field: string]: unknown;
}

/**
 * Open a received copy with this device's keys: decrypt, verify the
 * signature, judge the signing device against the sender's device list and
 * pinned master key, and compare what the sender signed with the server's
 * copy (and with the message ids seen before: a replay).
 */
export async function openMessage(
  m: MailAccount,
  msg: MessageCopy,
  options: {
    device?: DeviceKeys;
    legacyKeyId?: string;
    trust: TrustStore;
  },
): Promise<OpenedMessage> {
  if (!msg.encrypted || !(msg.body instanceof Uint8Array)) {
    return { encrypted: false, signature: "none", problems: [] };
  }
  if (!options.device) {
    return {
      encrypted: true,
      signature: "unreadable",
      error: "this device has no key to open it",
      problems: [],
    };
  }
  let opened: Opened;
  try {
    opened = await decryptMessage(msg.body, {
      address: m.address,
      device: options.device,
      legacyKeyId: options.legacyKeyId,
    });
  } catch (error) {
    return {
      encrypted: true,
      signature: "unreadable",
      error: error instanceof E2eError ? error.message : String(error),
      problems: [],
    };
  }
  if (!opened.signatureValid) {
    return { encrypted: true, opened, signature: "invalid", problems: [] };
  }
  const keys = await keysOf(m.client, m.token, opened.sender).catch(() =>
    undefined
  );
  const list = keys?.list;
  const device = list?.devices.find((d) =>
    d.id === opened.senderDevice.id &&
    d.sign.length === opened.senderDevice.sign.length &&
    d.sign.every((b, i) => b === opened.senderDevice.sign[i])
  );
  const result: OpenedMessage = {
    encrypted: true,
    opened,
    signature: list && device ? "verified" : "unlisted",
    deviceLabel: device?.label,
    problems: [],
  };
  if (list && device) result.trust = await judgeContact(list, options.trust);
  // The server's copy against what the sender signed.
  const headers = opened.content.headers;
  let parent: string | null | undefined = undefined;
  if (headers) {
    parent = null;
    if (msg.in_reply_to) {
      // The copy's `in_reply_to` is the answered message's local id: a
      // received copy has that id, the sender's own copy `<id>-sent`.
      const local = String(msg.in_reply_to);
      const get = (id: string) =>
        m.call<{ global_id?: string }>("get", { id }).catch(() => undefined);
      const p = await get(local) ?? await get(`${local}-sent`);
      if (p?.global_id) parent = p.global_id;
      else {
        // No copy here: the signed parent stands when it names this id.
        const signed = headers.in_reply_to;
        parent = (await localIdsOf(signed)).includes(local) ? signed : local;
      }
    }
  }
  result.problems = headerMismatches(opened, {
    global_id: msg.global_id,
    from: msg.from,
    to: msg.to,
    cc: msg.cc,
    date: msg.date,
    attachments: msg.attachments,
  }, parent);
  if (headers) {
    const first = await options.trust.seen(
      opened.sender,
      headers.message_id,
      msg.id,
    );
    if (first !== msg.id) {
      result.problems.push(
        `the same signed message arrived before as ${first}: this copy is a replay`,
      );
    }
  }
  return result;
}

/** An attachment fetched: its real name, type and bytes (decrypted and checked). */
export interface FetchedAttachment {
  /** Name (as the sender signed it, when encrypted). */
  name: string;
  /** MIME type. */
  type: string;
  /** The bytes. */
  data: Uint8Array;
  /** Whether it was decrypted. */
  decrypted: boolean;
}

/** An attachment that is not what it claims (checksum, or not signed). */
export class AttachmentError extends Error {
  /** Stable error code. */
  readonly code = "attachment_invalid";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "AttachmentError";
  }
}

/**
 * Fetch an attachment of copy `id` chunk by chunk, check the stored bytes'
 * hash, and decrypt and check them when the message was encrypted (an
 * attachment the sender did not sign is refused).
 *
 * @throws {AttachmentError} a checksum differs, or the attachment is not signed
 */
export async function fetchAttachment(
  m: MailAccount,
  id: string,
  attachment: { id: string; name: string; size: number; sha256: string },
  opened?: Opened,
  onProgress?: Progress,
): Promise<FetchedAttachment> {
  const inner = opened?.content.attachments?.find((x) =>
    x.attachment_id === attachment.id
  );
  if (opened && !inner) {
    throw new AttachmentError(
      `${attachment.name} is NOT SIGNED by the sender: not fetched`,
    );
  }
  const parts: Uint8Array[] = [];
  let chunks = 1;
  let received = 0;
  for (let index = 0; index < chunks; index++) {
    const part = await m.transfer<{ data: Uint8Array; chunks: number }>(
      "attachment_get",
      { id, attachment_id: attachment.id, index },
    );
    chunks = part.chunks;
    parts.push(part.data);
    received += part.data.byteLength;
    onProgress?.(received, attachment.size);
  }
  let data = new Uint8Array(received);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.byteLength;
  }
  const name = inner?.name ?? attachment.name;
  if (await sha256Hex(data) !== attachment.sha256) {
    throw new AttachmentError(`attachment ${name}: checksum mismatch`);
  }
  if (inner && opened) {
    data = new Uint8Array(
      await decryptAttachment(opened.contentKey, inner.nonce, data),
    );
    if (await sha256Hex(data) !== inner.sha256) {
      throw new AttachmentError(`attachment ${name}: checksum mismatch`);
    }
  }
  return {
    name,
    type: inner?.type ?? String(
      (attachment as { type?: string }).type ?? "application/octet-stream",
    ),
    data,
    decrypted: inner !== undefined,
  };
}
