import { createServer, type Server } from "node:https";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createCA, issueServerCert } from "../../src/tls/pki.js";
import { verifyWebhookSignature } from "../../src/audit/sinks/webhook.js";

/**
 * ok: verify the signature and record the batch (401 when it does not verify); a number: answer that status;
 * hang: never answer; garbage: answer bytes that are not HTTP; huge: 200 and a body that never ends;
 * huge-500: the same with status 500; drip: 200, then one body byte every 100 ms forever; redirect: 307 elsewhere.
 */
export type WebhookMode = "ok" | "hang" | "garbage" | "huge" | "huge-500" | "drip" | "redirect" | number;

export interface ReceivedBatch {
  headers: IncomingHttpHeaders;
  body: Buffer;
  signatureValid: boolean;
}

export interface TestWebhookServer {
  /** https://localhost:<port>/hooks/audit */
  url: string;
  caPem: string;
  mode: WebhookMode;
  /** Every request, in arrival order (whatever the mode), with its body. */
  requests: ReceivedBatch[];
  /** Batches accepted in mode ok. */
  accepted: ReceivedBatch[];
  close(): Promise<void>;
}

/** An HTTPS webhook receiver on 127.0.0.1, port 0, its certificate for the DNS name localhost only (https://127.0.0.1 does not match it). */
export async function startWebhookServer(secret: string): Promise<TestWebhookServer> {
  const ca = await createCA({ commonName: "test webhook CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: [], validDays: 2 });
  const state = { mode: "ok" as WebhookMode };
  const requests: ReceivedBatch[] = [];
  const accepted: ReceivedBatch[] = [];
  const timers = new Set<NodeJS.Timeout>();

  function endless(res: ServerResponse, status: number): void {
    res.writeHead(status, { "content-type": "application/octet-stream" });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
    };
    res.on("drain", pump);
    pump();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const rec: ReceivedBatch = { headers: req.headers, body, signatureValid: verifyWebhookSignature(secret, req.headers["x-parhelion-signature"] as string | undefined, body, 300) };
    requests.push(rec);
    const mode = state.mode;
    if (typeof mode === "number") {
      res.writeHead(mode, { "content-type": "text/plain" }).end(`status ${mode}`);
      return;
    }
    switch (mode) {
      case "ok":
        if (!rec.signatureValid) {
          res.writeHead(401).end("bad signature");
          return;
        }
        accepted.push(rec);
        res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
        return;
      case "hang":
        return;
      case "garbage":
        req.socket.end("SMTP/9.9 this is not HTTP at all\r\n\u0000\u0001\u0002\r\n\r\n");
        return;
      case "huge":
        endless(res, 200);
        return;
      case "huge-500":
        endless(res, 500);
        return;
      case "drip": {
        res.writeHead(200, { "content-type": "text/plain" });
        const t = setInterval(() => {
          if (res.destroyed) {
            clearInterval(t);
            timers.delete(t);
          } else res.write("x");
        }, 100);
        timers.add(t);
        return;
      }
      case "redirect":
        res.writeHead(307, { location: "/hooks/elsewhere" }).end();
        return;
    }
  }

  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on("clientError", (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://localhost:${port}/hooks/audit`,
    caPem: ca.certPem,
    get mode() {
      return state.mode;
    },
    set mode(m: WebhookMode) {
      state.mode = m;
    },
    requests,
    accepted,
    async close() {
      for (const t of timers) clearInterval(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
