/**
 * The part of the npm `web-push` package this server uses, declared here:
 * `@types/web-push` would bring a second `@types/node` that changes the
 * types of Deno's own `node:` modules for the whole project.
 */

/** A VAPID key pair, base64url. */
export interface VapidKeys {
  publicKey: string;
  privateKey: string;
}

/** A browser's push subscription. */
export interface PushSubscription {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** Options of {@link generateRequestDetails}. */
export interface RequestOptions {
  vapidDetails?: { subject: string; publicKey: string; privateKey: string };
  TTL?: number;
  urgency?: "very-low" | "low" | "normal" | "high";
  contentEncoding?: "aes128gcm" | "aesgcm";
}

/** The request to send to the push service. */
export interface RequestDetails {
  method: string;
  headers: Record<string, string | number>;
  body: Uint8Array | null;
  endpoint: string;
}

declare const webpush: {
  generateVAPIDKeys(): VapidKeys;
  generateRequestDetails(
    subscription: PushSubscription,
    payload: string | Uint8Array | null,
    options?: RequestOptions,
  ): RequestDetails;
};
export default webpush;
