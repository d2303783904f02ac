import { Agent as HttpsAgent, type Server as HttpsServer } from "node:https";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";
import { createCA, issueServerCert } from "../../src/tls/pki.js";

/**
 * s3rver over HTTPS in a temp dir, certificate for the DNS name localhost from a CA made per run. s3rver checks
 * that the access key id exists (only S3RVER does) but not SigV4 signatures.
 */
export interface TestS3 {
  /** https://localhost:<port> (path-style: forcePathStyle true). */
  endpoint: string;
  caPem: string;
  region: string;
  /** A bucket that exists. */
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** An SDK client of its own, for reading objects back. */
  client: S3Client;
  close(): Promise<void>;
}

export async function startTestS3(): Promise<TestS3> {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-s3-"));
  const ca = await createCA({ commonName: "test s3 CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: [], validDays: 2 });
  const bucket = "audit-archive";
  const server = new S3rver({ address: "127.0.0.1", port: 0, key: cert.keyPem, cert: cert.certPem, silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
  let addr: { port: number };
  try {
    addr = await server.run();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `https://localhost:${addr.port}`;
  const region = "us-east-1";
  const client = new S3Client({
    region, endpoint, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: { httpsAgent: new HttpsAgent({ ca: ca.certPem }) },
  });
  return {
    endpoint, caPem: ca.certPem, region, bucket, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", client,
    async close() {
      client.destroy();
      (server.httpServer as HttpsServer | undefined)?.closeAllConnections();
      await server.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
