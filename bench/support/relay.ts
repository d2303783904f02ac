/**
 * A bare TLS-terminating relay in Node.js, the reference for what any Node proxy costs: it answers the
 * SSLRequest, does the TLS handshake with the same certificate type and cipher settings as the gateway, opens
 * a unix-socket connection to PostgreSQL per client and copies bytes both ways with the same
 * `on("data")` → `write()` loop and back-pressure as the gateway's relay. No parsing, no pooling, no audit:
 * PostgreSQL itself authenticates the client (SCRAM over the relayed bytes).
 *
 * Runs in its own process (`node dist/bench/support/relay.js CERT KEY SOCKET`): prints {"port":N} and serves
 * until SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { TLSSocket, createSecureContext } from "node:tls";
import { fileURLToPath } from "node:url";
import { childPort, onCleanup, stopChild } from "./run.js";

const SSL_REQUEST = 80877103;

function serve(certFile: string, keyFile: string, socketPath: string): void {
  // The gateway's TLS settings (src/gateway/routing.ts): ECDHE with AES-GCM or ChaCha20, server order.
  const context = createSecureContext({
    cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8"), minVersion: "TLSv1.2",
    ciphers: "ECDHE+AESGCM:ECDHE+CHACHA20", honorCipherOrder: true,
  });
  const sockets = new Set<Socket>();
  const server = createServer({ noDelay: true }, (raw) => {
    sockets.add(raw);
    raw.on("close", () => sockets.delete(raw));
    raw.on("error", () => undefined);
    raw.once("data", (first: Buffer) => {
      raw.pause();
      if (first.length !== 8 || first.readUInt32BE(4) !== SSL_REQUEST) {
        raw.destroy();
        return;
      }
      raw.write("S");
      const tls = new TLSSocket(raw, { isServer: true, secureContext: context });
      tls.on("error", () => raw.destroy());
      tls.once("secure", () => {
        const up = connect({ path: socketPath });
        up.setNoDelay(true);
        up.on("error", () => tls.destroy());
        tls.on("data", (chunk: Buffer) => {
          if (!up.write(chunk)) tls.pause();
        });
        up.on("drain", () => tls.resume());
        up.on("data", (chunk: Buffer) => {
          if (!tls.write(chunk)) up.pause();
        });
        tls.on("drain", () => up.resume());
        tls.on("close", () => up.destroy());
        up.on("close", () => tls.destroy());
      });
    });
  });
  server.listen({ host: "127.0.0.1", port: 0 }, () => {
    process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + "\n");
  });
  const stop = () => {
    server.close();
    for (const s of sockets) s.destroy();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("disconnect", stop);
}

/** Starts the relay as a child process; resolves with its pid and port. */
export function startRelay(certFile: string, keyFile: string, socketPath: string): Promise<{ child: ChildProcess; pid: number; port: number }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), certFile, keyFile, socketPath], { stdio: ["ignore", "pipe", "inherit"] });
  onCleanup("node relay", () => stopChild(child, 3000));
  return childPort(child, "the node relay").then((port) => ({ child, pid: child.pid!, port }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [certFile, keyFile, socketPath] = process.argv.slice(2);
  if (!certFile || !keyFile || !socketPath) {
    process.stderr.write("usage: node dist/bench/support/relay.js CERT KEY SOCKET\n");
    process.exit(2);
  }
  serve(certFile, keyFile, socketPath);
}
