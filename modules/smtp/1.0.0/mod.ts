/**
 * The SMTP gateway: ordinary email at the edge of an AMTP server, in the
 * Postfix model (the part that faces the internet has the fewest rights).
 * It runs in its own process by default, allowed only to listen on its SMTP
 * port, connect to port 25 (or its relay) and to DNS, and to call three
 * core services: resolve local recipients, hand a received message to the
 * mailboxes, read the server's certificate. It holds no DKIM key (the core
 * signs) and no mailbox (the messages module keeps them).
 *
 * - inbound (receive.ts): MX for the hosted domains;
 * - outbound (send.ts): the queue's `smtp` route (`transport`).
 *
 * @module
 */

import { serveModule } from "../../../workers/sdk/mod.ts";
import { startReceiver } from "./receive.ts";
import { transport } from "./send.ts";
import { loadSettings } from "./settings.ts";

const settings = loadSettings();

serveModule({
  commands: {},
  start: async (ctx) => {
    await startReceiver(settings, ctx);
  },
  transport: (request) => transport(settings, request),
});
