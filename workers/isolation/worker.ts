/**
 * Worker isolation: the module runs in a Web Worker of the server's own
 * process, created with exactly the permissions of its manifest. Cheap and
 * fast, and for trusted code only (modules shipped with the server, or ones
 * an admin placed here): Deno 2.9 cannot stop a Worker stuck in a JavaScript
 * loop (terminate() leaves the thread running), cannot cap its memory, and
 * lets it signal the server's process (`Deno.kill` needs no permission in a
 * Worker). A Worker that hangs is abandoned and the module moves to process
 * isolation.
 *
 * @module
 */

import { postDocument, receivedDocument } from "../bridge/post.ts";
import { expandPermissions, type Manifest } from "../manifest.ts";
import type { Channel } from "./channel.ts";

/**
 * The Worker permission set of a manifest: what it lists (its `${NAME}`
 * entries filled in from the server's environment `env`), and reading and
 * writing its own storage database `store`, nothing else.
 */
export function workerPermissions(
  manifest: Manifest,
  store?: string,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Deno.PermissionOptionsObject {
  const list = (items: string[]) => items.length > 0 ? items : false;
  const own = store === undefined ? [] : [store];
  const granted = expandPermissions(manifest, env);
  return {
    net: list(granted.net),
    read: list([...granted.read, ...own]),
    write: list([...granted.write, ...own]),
    env: list(granted.env),
    run: false,
    ffi: false,
    sys: false,
    import: list(granted.import),
  };
}

/** Start the module's entry in a permission-restricted Worker with its storage database `store`. */
export function startWorker(manifest: Manifest, store?: string): Channel {
  const worker = new Worker(manifest.entry, {
    type: "module",
    name: `${manifest.name}@${manifest.version}`,
    deno: { permissions: workerPermissions(manifest, store) },
  } as WorkerOptions);
  let exitHandler: ((reason: string) => void) | undefined;
  let stopped = false;
  const exit = (reason: string) => {
    if (stopped) return;
    stopped = true;
    exitHandler?.(reason);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    exit(`uncaught error: ${event.message}`);
  };
  worker.onmessageerror = () => exit("unreadable message");
  return {
    killable: false,
    send(doc) {
      if (stopped) return;
      postDocument(
        (bytes, transfer) => worker.postMessage(bytes, transfer),
        doc,
      );
    },
    onMessage(handler) {
      worker.onmessage = (event: MessageEvent) => {
        if (stopped) return; // what a stopped Worker had queued is not read
        try {
          handler(receivedDocument(event.data));
        } catch {
          exit("sent an unreadable document");
        }
      };
    },
    onExit(handler) {
      exitHandler = handler;
    },
    stop() {
      stopped = true;
      worker.terminate();
    },
  };
}
