/**
 * Traces through Deno's built-in OpenTelemetry (`OTEL_DENO=true`, exported
 * over OTLP): a span for each command, module call and delivery. Without
 * `OTEL_DENO` the API is a no-op and a span costs next to nothing.
 *
 * Across servers the trace continues: a delivery's request carries its span
 * as a W3C `traceparent` (PROTOCOL.md section 3), and the receiving server's
 * command span is its child.
 *
 * @module
 */

import {
  type Attributes,
  context,
  type Span,
  type SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";

export { SpanKind } from "@opentelemetry/api";

const tracer = trace.getTracer("amtp");

/** `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, not all zeros. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Options of {@link inSpan}. */
export interface SpanOptions {
  /** Attributes of the span. */
  attributes?: Attributes;
  /** Kind (internal by default; server for a request, client for a call out). */
  kind?: SpanKind;
  /** A W3C `traceparent` from another server: the span continues that trace. */
  traceparent?: unknown;
}

/**
 * Run `fn` in a span named `name` (the active span while it runs); a throw
 * marks the span as an error and is rethrown. `fn` may set attributes on it.
 */
export function inSpan<T>(
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const remote = parseTraceparent(options.traceparent);
  const parent = remote
    ? trace.setSpanContext(context.active(), remote)
    : context.active();
  return tracer.startActiveSpan(
    name,
    { attributes: options.attributes, kind: options.kind },
    parent,
    async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

/** The active span as a `traceparent`, or undefined when none records. */
export function currentTraceparent(): string | undefined {
  const span = trace.getActiveSpan();
  if (!span) return undefined;
  const { traceId, spanId, traceFlags } = span.spanContext();
  if (!trace.isSpanContextValid(span.spanContext())) return undefined;
  return `00-${traceId}-${spanId}-${
    (traceFlags & 0xff).toString(16).padStart(2, "0")
  }`;
}

/** A remote span context from a `traceparent`, or undefined when it is not one. */
export function parseTraceparent(value: unknown) {
  if (typeof value !== "string") return undefined;
  const match = value.match(TRACEPARENT);
  if (!match) return undefined;
  const spanContext = {
    traceId: match[1],
    spanId: match[2],
    traceFlags: parseInt(match[3], 16),
    isRemote: true,
  };
  return trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}
