/**
 * The messages module: mail in real time. See docs/PROTOCOL.md, section 13.
 * This file is its table: each command is one function (commands.ts,
 * attachment_commands.ts), deliveries from other servers are inbound.ts,
 * email in and out email.ts (through the one MIME mapping, mime.ts); every
 * delivery passes the recipients' rules (rules.ts, the rules module), which
 * call back through exported.ts.
 *
 * @module
 */

import { serveModule } from "../../../workers/sdk/mod.ts";
import {
  attachmentGet,
  attachmentUpload,
  attachmentUploadChunk,
  attachmentUploadFinish,
  attachmentUploadStatus,
} from "./attachment_commands.ts";
import {
  changes,
  deleteMessages,
  folderCreate,
  folderDelete,
  folders,
  getMessage,
  listMessages,
  mark,
  move,
  quota,
  recipients,
  search,
  sendCommand,
  thread,
} from "./commands.ts";
import { composeOutbound } from "./email.ts";
import { autoReply, messageFacts } from "./exported.ts";
import { inbound } from "./inbound.ts";
import { blobExpiry, quotaDefault, sweepInterval } from "./settings.ts";
import { startSweeper } from "./sweep.ts";

serveModule({
  start: (ctx) => {
    const expiryMs = blobExpiry();
    startSweeper(ctx, { expiryMs, intervalMs: sweepInterval(expiryMs) });
    return Promise.resolve();
  },
  inbound: (delivery, ctx) => inbound(delivery, ctx, quotaDefault()),
  compose: composeOutbound,
  commands: {
    send: sendCommand,
    folders,
    folder_create: folderCreate,
    folder_delete: folderDelete,
    list: listMessages,
    get: getMessage,
    mark,
    move,
    delete: deleteMessages,
    thread,
    search,
    changes,
    quota,
    recipients,
    attachment_upload: attachmentUpload,
    attachment_upload_chunk: attachmentUploadChunk,
    attachment_upload_status: attachmentUploadStatus,
    attachment_upload_finish: attachmentUploadFinish,
    attachment_get: attachmentGet,
    // Exported to other modules (the rules module), not client commands.
    message_facts: messageFacts,
    auto_reply: autoReply,
  },
});
