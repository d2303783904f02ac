import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { createCA, issueServerCert } from "../../src/tls/pki.js";

/** One RFC 5424 message as the receiver parsed it. */
export interface SyslogMessage {
  /** Which accepted connection (1, 2, ...) it arrived on. */
  connection: number;
  pri: number;
  facility: number;
  severity: number;
  version: number;
  timestamp: string;
  hostname: string;
  appName: string;
  procId: string;
  msgId: string;
  /** SD-ELEMENTs in order, PARAM-VALUEs unescaped. */
  sd: Array<{ id: string; params: Array<[string, string]> }>;
  /** MSG started with the UTF-8 BOM (removed from `msg`). */
  bom: boolean;
  msg: string;
}

export type SyslogMode = "ok" | "stall";

export interface TestSyslogServer {
  host: string;
  port: number;
  /** The CA that issued the server certificate (for localhost and 127.0.0.1). */
  caPem: string;
  messages: SyslogMessage[];
  /** Framing or syntax errors the receiver saw (each also closed the connection). */
  errors: string[];
  /** TLS connections accepted so far. */
  readonly connections: number;
  /** ok: read and parse; stall: accept, then never read (the client's writes back up). */
  mode: SyslogMode;
  /** Destroys every open connection; resolves once they are closed. */
  dropAll(): Promise<void>;
  /** Resolves once `n` messages arrived (rejects after timeoutMs). */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const FRAME_LEN = /^[1-9]\d{0,9}$/;
const HEADER = /^<(\d{1,3})>([1-9]\d{0,1}) (\S+) (\S+) (\S+) (\S+) (\S+) /;

/** Parses STRUCTURED-DATA (RFC 5424 §6.3) at the start of s; answers the elements and the rest of s. */
function parseSd(s: string): { sd: SyslogMessage["sd"]; rest: string } {
  if (s.startsWith("-")) return { sd: [], rest: s.slice(1) };
  const sd: SyslogMessage["sd"] = [];
  let i = 0;
  while (s[i] === "[") {
    i++;
    const idEnd = s.slice(i).search(/[ \]]/);
    if (idEnd <= 0) throw new Error("bad SD-ID");
    const id = s.slice(i, i + idEnd);
    i += idEnd;
    const params: Array<[string, string]> = [];
    while (s[i] === " ") {
      i++;
      const eq = s.indexOf("=", i);
      if (eq < 0 || s[eq + 1] !== '"') throw new Error("bad SD-PARAM");
      const name = s.slice(i, eq);
      if (!/^[\x21-\x7e]{1,32}$/.test(name) || /[= \]"]/.test(name)) throw new Error("bad PARAM-NAME");
      i = eq + 2;
      let value = "";
      for (;;) {
        const c = s[i];
        if (c === undefined) throw new Error("unterminated PARAM-VALUE");
        if (c === "\\") {
          const n = s[i + 1];
          if (n === '"' || n === "\\" || n === "]") {
            value += n;
            i += 2;
            continue;
          }
          value += c;
          i++;
          continue;
        }
        if (c === "]") throw new Error("unescaped ] in PARAM-VALUE");
        if (c === '"') {
          i++;
          break;
        }
        value += c;
        i++;
      }
      params.push([name, value]);
    }
    if (s[i] !== "]") throw new Error("SD-ELEMENT not closed");
    i++;
    sd.push({ id, params });
  }
  if (sd.length === 0) throw new Error("no STRUCTURED-DATA");
  return { sd, rest: s.slice(i) };
}

/** Parses one SYSLOG-MSG (RFC 5424 §6) strictly; throws on anything malformed. */
export function parseSyslogMessage(raw: Buffer, connection: number): SyslogMessage {
  const text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  const h = HEADER.exec(text);
  if (!h) throw new Error(`bad HEADER: ${JSON.stringify(text.slice(0, 80))}`);
  const pri = Number(h[1]);
  if (pri > 191) throw new Error("PRI out of range");
  const { sd, rest } = parseSd(text.slice(h[0].length));
  let msg = "";
  if (rest.length > 0) {
    if (!rest.startsWith(" ")) throw new Error("no SP before MSG");
    msg = rest.slice(1);
  }
  const bom = msg.startsWith("\ufeff");
  return {
    connection, pri, facility: pri >> 3, severity: pri & 7, version: Number(h[2]), timestamp: h[3]!, hostname: h[4]!, appName: h[5]!, procId: h[6]!, msgId: h[7]!,
    sd, bom, msg: bom ? msg.slice(1) : msg,
  };
}

/** A TLS syslog receiver (RFC 5425 octet-counted frames of RFC 5424 messages) on 127.0.0.1, port 0. */
export async function startSyslogServer(): Promise<TestSyslogServer> {
  const ca = await createCA({ commonName: "test syslog CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], validDays: 2 });
  const messages: SyslogMessage[] = [];
  const errors: string[] = [];
  const open = new Set<TLSSocket>();
  const waiters: Array<() => void> = [];
  let connections = 0;
  const state = { mode: "ok" as SyslogMode };

  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem, minVersion: "TLSv1.2" }, (socket) => {
    const id = ++connections;
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.on("error", () => socket.destroy());
    if (state.mode === "stall") {
      socket.pause();
      return;
    }
    let buf = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) {
            if (buf.length > 10) throw new Error("MSG-LEN too long");
            break;
          }
          const len = buf.subarray(0, sp).toString("latin1");
          if (!FRAME_LEN.test(len)) throw new Error(`bad MSG-LEN ${JSON.stringify(len.slice(0, 20))}`);
          const n = Number(len);
          if (buf.length < sp + 1 + n) break;
          messages.push(parseSyslogMessage(buf.subarray(sp + 1, sp + 1 + n), id));
          buf = buf.subarray(sp + 1 + n);
        }
      } catch (err) {
        errors.push((err as Error).message);
        socket.destroy();
      }
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

  return {
    host: "127.0.0.1",
    port: (server.address() as AddressInfo).port,
    caPem: ca.certPem,
    messages,
    errors,
    get connections() {
      return connections;
    },
    get mode() {
      return state.mode;
    },
    set mode(m: SyslogMode) {
      state.mode = m;
    },
    async dropAll() {
      await Promise.all([...open].map((s) => new Promise<void>((resolve) => {
        s.once("close", () => resolve());
        s.destroy();
      })));
    },
    async waitFor(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`syslog receiver: ${messages.length} of ${n} messages after ${timeoutMs} ms (errors: ${errors.join("; ")})`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 50));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
    async close() {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A TCP listener that accepts connections and never says a word (a TLS handshake to it never finishes). */
export async function startBlackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((s) => {
    sockets.add(s);
    s.on("error", () => s.destroy());
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
