import { Option, type Command } from "commander";
import QRCode from "qrcode";
import type { ApiClient } from "../client.js";
import { apiAction, resolveUserId } from "../context.js";
import { usageError } from "../errors.js";
import { promptHidden, readStdinLines } from "../input.js";
import { emit, note, printJson, printRecord, printTable } from "../output.js";

interface Factor { factorID: string; type: "totp" | "webauthn"; name: string; createdAt: string; lastUsedAt: string | null }
interface MfaStatus {
  userID: string; mfaEnrolled: boolean; mfaVerified: boolean; mfaVerifiedAt: string | null; mfaRequired: boolean; mfaEnrollmentRequired: boolean;
  stepUpWindowMinutes: number; stepUpFreshUntil: string | null; factors: Factor[]; recoveryCodesRemaining: number;
}
interface Verified { sessionID: string; method: string; mfaVerifiedAt: string; stepUpFreshUntil: string; recoveryCodesRemaining?: number }

/** A TOTP code (6 digits) or a recovery code (xxxx-xxxx-xxxx-xxxx): which one decides the endpoint. */
export function isRecoveryCode(code: string): boolean {
  return /[a-z]/i.test(code);
}

/** Verifies a TOTP or recovery code in the client's session (sign-in completion or step-up). */
export async function verifySecondFactor(client: ApiClient, code: string): Promise<Verified> {
  const c = code.trim();
  if (c === "") throw usageError("the code is empty");
  const path = isRecoveryCode(c) ? "/v1/auth/mfa/recovery/verify" : "/v1/auth/mfa/totp/verify";
  return (await client.call<Verified>("POST", path, { body: { code: c } })).body;
}

/** The code from --code, the first line of stdin (--code-stdin), or a prompt on a terminal. */
async function codeOf(opts: { code?: string; codeStdin?: boolean }, prompt: string): Promise<string> {
  if (opts.code !== undefined) return opts.code;
  if (opts.codeStdin) return (await readStdinLines(1))[0] ?? "";
  if (process.stdin.isTTY) return promptHidden(prompt);
  throw usageError("no code given", "pass --code CODE (or --code-stdin), or run on a terminal to be prompted");
}

function printRecoveryCodes(codes: string[]): void {
  process.stdout.write(codes.join("\n") + "\n");
  note("parhelion: these recovery codes will not be shown again; each works once in place of your second factor. Store them offline.");
}

/** `mfa status|enroll-totp|confirm-totp|verify|remove|recovery-codes|policy|reset`. */
export function registerMfa(program: Command): void {
  const mfa = program.command("mfa").description("Second factors of your console session (TOTP, security keys, recovery codes) and the organization's MFA policy");

  mfa.command("status").description("Your factors, whether this session has verified one, and the organization's policy")
    .action(apiAction(async ({ client, format }) => {
      const s = await client.get<MfaStatus>("/v1/auth/mfa");
      emit(format, s, () => {
        printRecord({ ...s, factors: s.factors.length } as unknown as Record<string, unknown>, ["userID", "mfaEnrolled", "mfaVerified", "mfaVerifiedAt", "stepUpFreshUntil", "stepUpWindowMinutes", "mfaRequired", "mfaEnrollmentRequired", "recoveryCodesRemaining"]);
        if (s.factors.length > 0) {
          process.stdout.write("\n");
          printTable(s.factors, [
            { header: "FACTOR ID", get: (f) => f.factorID }, { header: "TYPE", get: (f) => f.type }, { header: "NAME", get: (f) => f.name },
            { header: "CREATED", get: (f) => f.createdAt }, { header: "LAST USED", get: (f) => f.lastUsedAt },
          ]);
        }
      });
    }));

  mfa.command("enroll-totp").description("Enroll an authenticator app: prints the otpauth:// URI and a QR code, then asks for a code to confirm")
    .option("--name <name>", "a name for the authenticator", "Authenticator app")
    .option("--no-qr", "do not draw the QR code on the terminal")
    .addOption(new Option("--code <code>", "confirm right away with this code (normally you scan first, then type it)").hideHelp())
    .action(apiAction(async ({ client, format }, opts: { name: string; qr: boolean; code?: string }) => {
      const { body: e } = await client.call<{ factorID: string; secret: string; otpauthURI: string; expiresAt: string }>("POST", "/v1/auth/mfa/totp", { body: { name: opts.name } });
      if (format === "json" && opts.code === undefined && !process.stdin.isTTY) {
        printJson({ factorID: e.factorID, otpauthURI: e.otpauthURI, secret: e.secret, expiresAt: e.expiresAt });
      } else {
        if (opts.qr) process.stderr.write(await QRCode.toString(e.otpauthURI, { type: "terminal", small: true }));
        process.stdout.write(`${e.otpauthURI}\n`);
        note(`parhelion: scan the QR code or add the URI above (secret ${e.secret}) to your authenticator app; confirm before ${e.expiresAt}.`);
      }
      if (opts.code === undefined && !process.stdin.isTTY) {
        note("parhelion: then run `parhelion mfa confirm-totp --code CODE` with the code it shows.");
        return;
      }
      const code = opts.code ?? (await promptHidden("Code from the app: "));
      const { body } = await client.call<{ factorID: string; recoveryCodes: string[] | null }>("POST", "/v1/auth/mfa/totp/confirm", { body: { code: code.trim() } });
      note(`parhelion: authenticator ${body.factorID} enrolled; this session counts as verified.`);
      if (format === "json") printJson(body);
      else if (body.recoveryCodes) printRecoveryCodes(body.recoveryCodes);
    }));

  mfa.command("confirm-totp").description("Confirm a TOTP enrollment with a code from the app (prints the recovery codes of a first factor once)")
    .option("--code <code>", "the 6-digit code (it works once and expires within a minute)")
    .option("--code-stdin", "read the code from the first line of stdin")
    .action(apiAction(async ({ client, format }, opts: { code?: string; codeStdin?: boolean }) => {
      const code = await codeOf(opts, "Code from the app: ");
      const { body } = await client.call<{ factorID: string; recoveryCodes: string[] | null }>("POST", "/v1/auth/mfa/totp/confirm", { body: { code: code.trim() } });
      note(`parhelion: authenticator ${body.factorID} enrolled; this session counts as verified.`);
      if (format === "json") printJson(body);
      else if (body.recoveryCodes) printRecoveryCodes(body.recoveryCodes);
    }));

  mfa.command("verify").description("Verify a TOTP code or a recovery code: completes a sign-in waiting for its second factor, or refreshes step-up")
    .option("--code <code>", "a 6-digit TOTP code (single use, valid about a minute)")
    .option("--code-stdin", "read the code (TOTP or recovery code) from the first line of stdin")
    .action(apiAction(async ({ client, format }, opts: { code?: string; codeStdin?: boolean }) => {
      const v = await verifySecondFactor(client, await codeOf(opts, "TOTP or recovery code: "));
      emit(format, v, () => printRecord(v as unknown as Record<string, unknown>, ["method", "mfaVerifiedAt", "stepUpFreshUntil", ...(v.recoveryCodesRemaining === undefined ? [] : ["recoveryCodesRemaining"])]));
    }));

  mfa.command("remove").description("Remove one of your factors (needs a second factor verified within the step-up window)")
    .argument("<factorID>")
    .action(apiAction(async ({ client, format }, id: string) => {
      const { body } = await client.call<{ factorID: string; type: string; remainingFactors: number }>("DELETE", `/v1/auth/mfa/factors/${encodeURIComponent(id)}`);
      emit(format, body, () => process.stdout.write(`removed ${body.type} factor ${body.factorID}; ${body.remainingFactors} left\n`));
    }));

  mfa.command("recovery-codes").description("Replace your recovery codes with 10 new ones, printed once (needs step-up)")
    .action(apiAction(async ({ client, format }) => {
      const { body } = await client.call<{ recoveryCodes: string[] }>("POST", "/v1/auth/mfa/recoveryCodes");
      if (format === "json") printJson(body);
      else printRecoveryCodes(body.recoveryCodes);
    }));

  mfa.command("policy").description("Show or change the organization's MFA policy (changing it needs step-up)")
    .addOption(new Option("--required <bool>", "require a second factor from every user").choices(["true", "false"]))
    .option("--step-up-minutes <n>", "how long a verified factor counts for sensitive actions (1-1440)")
    .action(apiAction(async ({ client, format }, opts: { required?: string; stepUpMinutes?: string }) => {
      const change: Record<string, unknown> = {};
      if (opts.required !== undefined) change["mfaRequired"] = opts.required === "true";
      if (opts.stepUpMinutes !== undefined) {
        const n = Number(opts.stepUpMinutes);
        if (!Number.isInteger(n) || n < 1 || n > 1440) throw usageError(`--step-up-minutes: "${opts.stepUpMinutes}" is not a whole number of minutes between 1 and 1440`);
        change["mfaStepUpMinutes"] = n;
      }
      const org = Object.keys(change).length === 0
        ? await client.get<Record<string, unknown>>("/v1/organizations/current")
        : (await client.call<Record<string, unknown>>("PATCH", "/v1/organizations/current", { body: change })).body;
      emit(format, org, () => printRecord(org, ["orgID", "name", "mfaRequired", "mfaStepUpMinutes"]));
    }));

  mfa.command("reset").description("Administrators: remove all second factors of a user who lost them, and end their sessions")
    .argument("<user>", "user ID or email")
    .action(apiAction(async ({ client, format }, ref: string) => {
      const id = await resolveUserId(client, ref);
      const { body } = await client.call<{ userID: string; factorsRemoved: number; sessionsEnded: number }>("DELETE", `/v1/users/${encodeURIComponent(id)}/mfa`);
      emit(format, body, () => process.stdout.write(`reset ${body.userID}: ${body.factorsRemoved} factor(s) removed, ${body.sessionsEnded} session(s) ended\n`));
    }));
}
