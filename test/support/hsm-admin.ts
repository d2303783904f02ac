import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as graphene from "graphene-pk11";
import { SOFTHSM_MODULE, type TestToken } from "./softhsm.js";

/**
 * What a customer does to their own HSM token with their own tools, in a process of its own (as pkcs11-tool
 * would): make a key, turn its use off and on again, destroy it. A separate process, so the platform's PKCS#11
 * login state (per process and token) is not shared with the test's, and changes reach the platform the way a
 * customer's would: through the token's object store.
 */
export type HsmKeyType = "aes256" | "aes128" | "generic";
export type HsmAdminOp =
  | { op: "genkey"; label: string; type: HsmKeyType }
  | { op: "set"; label: string; decrypt: boolean }
  | { op: "destroy"; label: string };

/** Runs one operation on the test token in a child process; answers what it printed (JSON). */
export function hsmAdmin(tok: TestToken, o: HsmAdminOp): unknown {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(o)], {
    env: { ...process.env, SOFTHSM2_CONF: tok.conf, HSM_ADMIN_TOKEN: tok.token, HSM_ADMIN_PIN: tok.pin }, stdio: ["ignore", "pipe", "pipe"], timeout: 30_000,
  });
  return JSON.parse(out.toString("utf8"));
}

function main(o: HsmAdminOp): unknown {
  const mod = graphene.Module.load(SOFTHSM_MODULE, "customer-hsm-admin");
  mod.initialize();
  try {
    const slots = mod.getSlots(true);
    let slot: graphene.Slot | undefined;
    for (let i = 0; i < slots.length; i++) if (slots.items(i).getToken().label.trim() === process.env["HSM_ADMIN_TOKEN"]) slot = slots.items(i);
    if (!slot) throw new Error(`no token ${process.env["HSM_ADMIN_TOKEN"]}`);
    const s = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
    s.login(process.env["HSM_ADMIN_PIN"]!, graphene.UserType.USER);
    try {
      if (o.op === "genkey") {
        const base = { class: graphene.ObjectClass.SECRET_KEY, label: o.label, token: true, private: true, sensitive: true, extractable: false, modifiable: true, encrypt: true, decrypt: true };
        if (o.type === "generic") s.generateKey(graphene.KeyGenMechanism.GENERIC_SECRET, { ...base, keyType: graphene.KeyType.GENERIC_SECRET, valueLen: 32 });
        else s.generateKey(graphene.KeyGenMechanism.AES, { ...base, keyType: graphene.KeyType.AES, valueLen: o.type === "aes256" ? 32 : 16 });
        return { ok: true };
      }
      const found = s.find({ class: graphene.ObjectClass.SECRET_KEY, label: o.label });
      if (found.length !== 1) throw new Error(`${found.length} keys labelled ${o.label}`);
      if (o.op === "destroy") {
        found.items(0).destroy();
        return { ok: true };
      }
      const k = found.items(0).toType<graphene.SecretKey>();
      k.setAttribute({ decrypt: o.decrypt });
      return { ok: true, decrypt: k.getAttribute({ decrypt: null }).decrypt };
    } finally {
      s.logout();
      s.close();
    }
  } finally {
    mod.finalize();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(JSON.stringify(main(JSON.parse(process.argv[2]!) as HsmAdminOp)) + "\n");
}
