/**
 * A plain SMTP client for tests, by hand on a TCP socket: it says exactly
 * what a test tells it to (pipelined commands, broken data, nothing at all),
 * which a well-behaved library would not.
 *
 * @module
 */

/** One SMTP reply: its code and its lines' text. */
export interface SmtpReply {
  /** The three-digit code. */
  code: number;
  /** The text of every line, joined by newlines. */
  text: string;
}

/** An open SMTP conversation. */
export class SmtpConversation {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new TextDecoder();
  #buffer = "";
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connect to `hostname:port` (from `localAddress` when given). */
  static async open(
    port: number,
    hostname = "127.0.0.1",
  ): Promise<SmtpConversation> {
    return new SmtpConversation(await Deno.connect({ hostname, port }));
  }

  /** Write bytes or text as they are. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string"
      ? new TextEncoder().encode(data)
      : data;
    let sent = 0;
    while (sent < bytes.length) {
      sent += await this.#conn.write(bytes.subarray(sent));
    }
  }

  /** Send one command line (CRLF added) and read its reply. */
  async command(line: string): Promise<SmtpReply> {
    await this.write(`${line}\r\n`);
    return await this.reply();
  }

  /** Read the next whole reply (every line of a multi-line one); code 0 when the server closed. */
  async reply(timeoutMs = 30_000): Promise<SmtpReply> {
    const lines: string[] = [];
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const end = this.#buffer.indexOf("\r\n");
      if (end >= 0) {
        const line = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        lines.push(line.slice(4));
        if (line[3] !== "-") {
          return { code: Number(line.slice(0, 3)), text: lines.join("\n") };
        }
        continue;
      }
      if (this.#closed || Date.now() > deadline) {
        return { code: 0, text: lines.join("\n") };
      }
      const chunk = new Uint8Array(65536);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#conn.read(chunk).catch(() => null),
        new Promise<null>((r) => {
          timer = setTimeout(() => r(null), deadline - Date.now());
        }),
      ]);
      clearTimeout(timer);
      if (n === null) {
        this.#closed = true;
        continue;
      }
      this.#buffer += this.#decoder.decode(chunk.subarray(0, n));
    }
  }

  /** Close the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** Dot-stuff a message and end it (RFC 5321 section 4.5.2). */
export function dataOf(raw: Uint8Array): Uint8Array {
  let text = new TextDecoder("latin1").decode(raw);
  text = text.replace(/\r?\n/g, "\r\n");
  if (!text.endsWith("\r\n")) text += "\r\n";
  text = text.replace(/^\./gm, "..") + ".\r\n";
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/**
 * Send one message in one plain conversation; resolves to the reply after
 * the data, or throws with the first refusal.
 */
export async function sendSmtp(options: {
  port: number;
  from: string;
  to: string[];
  raw: Uint8Array;
  hostname?: string;
}): Promise<string> {
  const smtp = await SmtpConversation.open(options.port, options.hostname);
  try {
    const expect = (reply: SmtpReply, code: number, what: string) => {
      if (reply.code !== code) {
        throw new Error(`${what}: ${reply.code} ${reply.text}`);
      }
    };
    expect(await smtp.reply(), 220, "greeting");
    expect(await smtp.command("EHLO client.test"), 250, "EHLO");
    expect(await smtp.command(`MAIL FROM:<${options.from}>`), 250, "MAIL");
    for (const to of options.to) {
      expect(await smtp.command(`RCPT TO:<${to}>`), 250, "RCPT");
    }
    expect(await smtp.command("DATA"), 354, "DATA");
    await smtp.write(dataOf(options.raw));
    const done = await smtp.reply();
    expect(done, 250, "end of data");
    await smtp.command("QUIT");
    return done.text;
  } finally {
    smtp.close();
  }
}
