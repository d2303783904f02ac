import { readFileSync } from "node:fs";
import { CliError, EXIT, usageError } from "./errors.js";

const MAX_INPUT = 64 * 1024;

/**
 * Reads the first `n` lines of stdin (stops at the n-th newline or at end of input; a trailing "\r" is
 * dropped). Secrets come this way or from a file, never from argv where `ps` shows them.
 */
export function readStdinLines(n: number, stdin: NodeJS.ReadStream = process.stdin): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const done = (err?: Error) => {
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      stdin.off("error", onError);
      stdin.pause();
      stdin.destroy();
      if (err) return reject(err);
      resolve(buf.split("\n").slice(0, n).map((l) => l.replace(/\r$/, "")));
    };
    const onData = (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_INPUT) return done(usageError("stdin input is too long"));
      if (buf.split("\n").length > n) done();
    };
    const onEnd = () => done();
    const onError = (err: Error) => done(err);
    stdin.setEncoding("utf8");
    stdin.on("data", onData);
    stdin.on("end", onEnd);
    stdin.on("error", onError);
    stdin.resume();
  });
}

/** Prompts on stderr and reads one line from the terminal without echoing it. Ctrl-C aborts. */
export function promptHidden(prompt: string, stdin: NodeJS.ReadStream = process.stdin): Promise<string> {
  if (!stdin.isTTY) return Promise.reject(usageError("stdin is not a terminal: cannot prompt", "pipe the secret in with the --*-stdin option"));
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let buf = "";
    const finish = (err?: CliError) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n" || (ch === "\u0004" && buf.length > 0)) return finish();
        if (ch === "\u0003" || ch === "\u0004") return finish(new CliError(EXIT.USAGE, "ERR_CLI_ABORTED", "aborted"));
        if (ch === "\u007f" || ch === "\b") buf = buf.slice(0, -1);
        else if (ch >= " ") buf += ch;
        if (buf.length > MAX_INPUT) return finish(usageError("input is too long"));
      }
    };
    stdin.setRawMode(true);
    stdin.setEncoding("utf8");
    stdin.on("data", onData);
    stdin.resume();
  });
}

/** The first line of a secret file, trimmed; an empty or unreadable file is a usage error. */
export function readSecretFile(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw usageError(`cannot read the ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const line = text.split("\n")[0]?.trim() ?? "";
  if (line === "") throw usageError(`the ${what} file ${path} is empty`);
  return line;
}
