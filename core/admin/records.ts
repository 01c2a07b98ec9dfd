/**
 * The four admin commands of a kind of account record, written once: list
 * (`admin_get_<plural>`, paged and searchable), add, change and delete
 * (`admin_add_<one>`, `admin_set_<one>`, `admin_del_<one>`). A kind says only
 * what differs: its key, its parameters, how a record is made, changed and
 * removed.
 *
 * @module
 */

import {
  InvalidCursorError,
  type ListOptions,
  type Page,
} from "../../kv/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  type HandlerContext,
  type Params,
  type ParamSchema,
  ProtocolError,
} from "../protocol/mod.ts";

/** Largest page a list returns. */
export const MAX_PAGE = 500;
/** Page size when none is asked. */
export const DEFAULT_PAGE = 100;

/** Paging and filtering parameters shared by every list command. */
export const LIST_PARAMS = {
  limit: { type: "int", optional: true, min: 1, max: MAX_PAGE },
  cursor: { type: "string", optional: true, max: 1024 },
  search: { type: "string", optional: true, max: 256 },
} as const;

/** A NOT_FOUND error for a kind of thing. */
export function notFound(kind: string, name: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.NOT_FOUND,
    `${kind} ${name} does not exist`,
  );
}

/** An ALREADY_EXISTS error for a kind of thing. */
export function exists(kind: string, name: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.ALREADY_EXISTS,
    `${kind} ${name} already exists`,
  );
}

/**
 * A page of a list; a `cursor` the database cannot read is the client's
 * mistake (INVALID_PARAMETER), not a fault of the server.
 */
export async function pageOf<T>(list: Promise<Page<T>>): Promise<Page<T>> {
  try {
    return await list;
  } catch (error) {
    if (error instanceof InvalidCursorError) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        'parameter "cursor" is not a cursor this list gave',
        { parameter: "cursor" },
      );
    }
    throw error;
  }
}

/** What differs between kinds of records. */
export interface RecordKind<
  R,
  L extends ParamSchema,
  A extends ParamSchema,
  S extends ParamSchema,
  D extends ParamSchema,
> {
  /** One record, in command names and messages (`user`: `admin_add_user`, "user x does not exist"). */
  one: string;
  /** Several, in the list command and its answer's field (`users`). */
  plural: string;
  /** The parameter naming a record, and its normal form (throws the protocol error). */
  key: { param: string; max: number; normalize: (input: string) => string };
  /** The word of "… already exists" (default: {@link one}). */
  taken?: string;
  /** Read one record. */
  get(key: string): Promise<R | null>;
  /** What admins see of a record. */
  view(record: R): unknown;
  /** The list: its own parameters besides paging, a page, and the text `search` looks in. */
  list: {
    params: L;
    page(p: Params<L>, options: ListOptions<R>): Promise<Page<R>>;
    text(record: R): string;
  };
  /** Adding: parameters, the new record, storing it (`exists`, `no_domain`: refused). */
  add: {
    params: A;
    create(key: string, p: Params<A>): Promise<R>;
    store(record: R): Promise<"ok" | "exists" | "no_domain">;
    /** After it was stored (a log line). */
    added?(record: R, ctx: HandlerContext): void;
  };
  /** Changing: parameters, applying them to the record read, storing it. */
  set: {
    params: S;
    change(record: R, p: Params<S>): Promise<void>;
    store(record: R): Promise<void>;
  };
  /** Deleting the record read; answers the command's data. */
  del: {
    params: D;
    remove(
      record: R,
      key: string,
      p: Params<D>,
      ctx: HandlerContext,
    ): Promise<unknown>;
  };
}

/** The list, add, set and delete commands of a kind of record. */
export function recordCommands<
  R,
  L extends ParamSchema,
  A extends ParamSchema,
  S extends ParamSchema,
  D extends ParamSchema,
>(kind: RecordKind<R, L, A, S, D>): Command[] {
  const keyParam = {
    [kind.key.param]: { type: "string", max: kind.key.max },
  } as ParamSchema;
  const keyOf = (p: Record<string, unknown>) =>
    kind.key.normalize(p[kind.key.param] as string);
  const mustGet = async (key: string): Promise<R> => {
    const record = await kind.get(key);
    if (!record) throw notFound(kind.one, key);
    return record;
  };
  return [
    defineCommand({
      name: `admin_get_${kind.plural}`,
      auth: "admin",
      params: { ...LIST_PARAMS, ...kind.list.params },
      handler: async (p) => {
        const needle = p.search?.toLowerCase();
        const page = await pageOf(kind.list.page(p as Params<L>, {
          limit: p.limit ?? DEFAULT_PAGE,
          cursor: p.cursor,
          filter: needle
            ? (record) => kind.list.text(record).toLowerCase().includes(needle)
            : undefined,
        }));
        return {
          [kind.plural]: page.items.map((r) => kind.view(r)),
          cursor: page.cursor,
        };
      },
    }),
    defineCommand({
      name: `admin_add_${kind.one}`,
      auth: "admin",
      params: { ...keyParam, ...kind.add.params },
      handler: async (p, ctx) => {
        const key = keyOf(p);
        const record = await kind.add.create(key, p as Params<A>);
        const result = await kind.add.store(record);
        if (result === "no_domain") {
          throw new ProtocolError(
            ErrorCode.UNKNOWN_DOMAIN,
            `domain ${splitAddress(key)[1]} is not hosted here: add it first`,
          );
        }
        if (result === "exists") throw exists(kind.taken ?? kind.one, key);
        kind.add.added?.(record, ctx);
        return kind.view(record);
      },
    }),
    defineCommand({
      name: `admin_set_${kind.one}`,
      auth: "admin",
      params: { ...keyParam, ...kind.set.params },
      handler: async (p) => {
        const record = await mustGet(keyOf(p));
        await kind.set.change(record, p as Params<S>);
        await kind.set.store(record);
        return kind.view(record);
      },
    }),
    defineCommand({
      name: `admin_del_${kind.one}`,
      auth: "admin",
      params: { ...keyParam, ...kind.del.params },
      handler: async (p, ctx) => {
        const key = keyOf(p);
        return await kind.del.remove(
          await mustGet(key),
          key,
          p as Params<D>,
          ctx,
        );
      },
    }),
  ];
}
