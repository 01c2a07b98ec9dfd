/**
 * The keys remote modules log in with (docs/PROTOCOL.md section 12.9): an
 * admin registers a module's Ed25519 public key for exactly one module name
 * and version, lists them, and removes one (the links that logged in with it
 * are closed at once).
 *
 * @module
 */

import {
  MAX_MODULE_KEYS,
  type ModuleKeyRecord,
  type ModuleKeyStore,
} from "../../kv/module_keys.ts";
import { makeKeyRecord } from "../auth/keys.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";

const NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
const VERSION_RE = /^\d{1,9}\.\d{1,9}\.\d{1,9}$/;

const TARGET = {
  name: { type: "string", min: 1, max: 64 },
  version: { type: "string", min: 5, max: 32 },
} as const;

function checkTarget(name: string, version: string): void {
  if (!NAME_RE.test(name)) {
    throw new ProtocolError(
      ErrorCode.INVALID_PARAMETER,
      'parameter "name" must match [a-z][a-z0-9_-]*',
      { parameter: "name" },
    );
  }
  if (!VERSION_RE.test(version)) {
    throw new ProtocolError(
      ErrorCode.INVALID_PARAMETER,
      'parameter "version" must be MAJOR.MINOR.PATCH',
      { parameter: "version" },
    );
  }
}

function view(key: ModuleKeyRecord): Record<string, unknown> {
  return {
    name: key.module,
    version: key.version,
    key_id: key.id,
    label: key.label,
    algorithm: key.algorithm,
    public_key: key.public_key,
    created: key.created,
  };
}

/** `admin_add_module_key`, `admin_get_module_keys`, `admin_del_module_key`. */
export function moduleKeyCommands(deps: {
  keys: ModuleKeyStore;
  /** Told when a version's key is removed (its links are closed). */
  removed?: (name: string, version: string, keyId: string) => void;
}): Command[] {
  return [
    defineCommand({
      name: "admin_add_module_key",
      auth: "admin",
      params: {
        ...TARGET,
        algorithm: { type: "string", optional: true, max: 32 },
        public_key: { type: "binary", min: 32, max: 2048 },
        key_label: { type: "string", optional: true, max: 64 },
      },
      handler: async (p, ctx) => {
        checkTarget(p.name, p.version);
        const algorithm = p.algorithm ?? "Ed25519";
        if (algorithm !== "Ed25519") {
          throw new ProtocolError(
            ErrorCode.UNSUPPORTED_ALGORITHM,
            "a module logs in with an Ed25519 key",
          );
        }
        const key = await makeKeyRecord(algorithm, p.public_key, p.key_label);
        const record: ModuleKeyRecord = {
          module: p.name,
          version: p.version,
          id: key.id,
          algorithm: "Ed25519",
          public_key: key.public_key,
          label: key.label,
          created: key.created,
        };
        const added = await deps.keys.add(record);
        if (added === "exists") {
          throw new ProtocolError(
            ErrorCode.ALREADY_EXISTS,
            `key ${key.id} is already registered for module ${p.name} ${p.version}`,
          );
        }
        if (added === "full") {
          throw new ProtocolError(
            ErrorCode.LIMIT_EXCEEDED,
            `a module version holds at most ${MAX_MODULE_KEYS} keys`,
          );
        }
        ctx.log.info("module_key_added", {
          module: p.name,
          version: p.version,
          signer: key.id,
          by: ctx.caller?.name,
        });
        return view(record);
      },
    }),
    defineCommand({
      name: "admin_get_module_keys",
      auth: "admin",
      params: { name: { type: "string", optional: true, min: 1, max: 64 } },
      handler: async (p) => ({
        keys: (await deps.keys.list(p.name)).map(view),
      }),
    }),
    defineCommand({
      name: "admin_del_module_key",
      auth: "admin",
      params: { ...TARGET, key_id: { type: "string", min: 1, max: 64 } },
      handler: async (p, ctx) => {
        if (!(await deps.keys.delete(p.name, p.version, p.key_id))) {
          throw new ProtocolError(
            ErrorCode.NOT_FOUND,
            `no key ${p.key_id} for module ${p.name} ${p.version}`,
          );
        }
        deps.removed?.(p.name, p.version, p.key_id);
        ctx.log.info("module_key_removed", {
          module: p.name,
          version: p.version,
          signer: p.key_id,
          by: ctx.caller?.name,
        });
        return { removed: true };
      },
    }),
  ];
}
