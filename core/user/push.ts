/**
 * Web Push subscriptions of a user (PROTOCOL.md §10.2):
 * `user_get_push_key`, `user_add_push_subscription`,
 * `user_get_push_subscriptions`, `user_del_push_subscription`.
 *
 * @module
 */

import type { PushPreview, PushSubscriptionRecord } from "../../kv/mod.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type { WebPush } from "../push/mod.ts";

/** What a subscription looks like in answers (never its keys). */
function view(s: PushSubscriptionRecord): Record<string, unknown> {
  return {
    id: s.id,
    endpoint: s.endpoint,
    label: s.label,
    preview: s.preview,
    created: s.created,
    failures: s.failures,
  };
}

/** The push subscription commands. */
export function pushUserCommands(push: WebPush): Command[] {
  return [
    defineCommand({
      name: "user_get_push_key",
      auth: "user",
      params: {},
      handler: () => ({ vapid_public_key: push.publicKey }),
    }),
    defineCommand({
      name: "user_add_push_subscription",
      auth: "user",
      params: {
        endpoint: { type: "string", min: 9, max: 1024 },
        p256dh: { type: "binary", min: 65, max: 65 },
        auth: { type: "binary", min: 16, max: 16 },
        label: { type: "string", optional: true, max: 64 },
        preview: { type: "string", optional: true, max: 16 },
      },
      handler: async (p, ctx) =>
        view(
          await push.subscribe(ctx.caller!.name, {
            endpoint: p.endpoint,
            p256dh: p.p256dh,
            auth: p.auth,
            label: p.label,
            preview: p.preview as PushPreview | undefined,
          }),
        ),
    }),
    defineCommand({
      name: "user_get_push_subscriptions",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => ({
        subscriptions: (await push.list(ctx.caller!.name)).map(view),
      }),
    }),
    defineCommand({
      name: "user_del_push_subscription",
      auth: "user",
      params: { id: { type: "string", min: 16, max: 16 } },
      handler: async (p, ctx) => {
        if (!(await push.unsubscribe(ctx.caller!.name, p.id))) {
          throw new ProtocolError(
            ErrorCode.NOT_FOUND,
            `no push subscription ${p.id}`,
          );
        }
        return { id: p.id };
      },
    }),
  ];
}
