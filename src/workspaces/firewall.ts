import { BlockList, isIPv4, isIPv6 } from "node:net";
import { ParhelionError } from "../lib/errors.js";

/** What a group gets when it is created without firewallRanges: this host only. */
export const LOOPBACK_RANGES: readonly string[] = ["127.0.0.1/32", "::1/128"];

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** Expands an IPv6 address to its 8 groups. */
function ipv6Groups(ip: string): number[] {
  let s = ip;
  let tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipv4ToInt(v4[1]!);
    tail = [n >>> 16, n & 0xffff];
    s = s.slice(0, -v4[1]!.length) + "0:0";
  }
  const [head, rest] = s.split("::") as [string, string | undefined];
  const parse = (p: string) => (p === "" ? [] : p.split(":").map((g) => parseInt(g, 16)));
  const h = parse(head);
  const r = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined ? h : [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
  if (tail.length) groups.splice(6, 2, ...tail);
  return groups;
}

function groupsToIpv6(g: number[]): string {
  // RFC 5952: the longest run of two or more zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

/**
 * Checks a CIDR (or a bare address, taken as a single host) and returns it in canonical form with the host
 * bits cleared: "10.1.2.3/8" -> "10.0.0.0/8", "2001:DB8::1" -> "2001:db8::1/128".
 */
export function normalizeCidr(input: string): string {
  const s = String(input).trim();
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(s);
  const addr = m?.[1] ?? "";
  if (m && isIPv4(addr)) {
    const bits = m[2] === undefined ? 32 : Number(m[2]);
    if (bits <= 32 && !/^0\d/.test(m[2] ?? "")) {
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      return `${intToIpv4((ipv4ToInt(addr) & mask) >>> 0)}/${bits}`;
    }
  }
  if (m && isIPv6(addr) && !addr.includes("%")) {
    const bits = m[2] === undefined ? 128 : Number(m[2]);
    if (bits <= 128 && !/^0\d/.test(m[2] ?? "")) {
      const g = ipv6Groups(addr.toLowerCase());
      const cleared = g.map((x, i) => {
        const keep = Math.max(0, Math.min(16, bits - i * 16));
        return keep === 0 ? 0 : x & ((0xffff << (16 - keep)) & 0xffff);
      });
      return `${groupsToIpv6(cleared)}/${bits}`;
    }
  }
  throw new ParhelionError("ERR_VALIDATION", `firewallRanges: "${s.slice(0, 64)}" is not an IPv4 or IPv6 CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)`);
}

/** Normalises and de-duplicates a list of ranges, keeping the caller's order. */
export function normalizeRanges(ranges: readonly string[]): string[] {
  return [...new Set(ranges.map(normalizeCidr))];
}

/** A client address as the firewall compares it: IPv4-mapped IPv6 addresses ("::ffff:1.2.3.4") are IPv4. */
export function canonicalPeer(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1] : address;
}

/** The allow list of one workspace group: deny unless an address falls in a range (or all traffic is allowed). */
export class Firewall {
  private readonly list = new BlockList();

  constructor(
    readonly ranges: readonly string[],
    readonly allowAll: boolean,
  ) {
    for (const r of ranges) {
      const [addr, bits] = normalizeCidr(r).split("/") as [string, string];
      this.list.addSubnet(addr, Number(bits), isIPv4(addr) ? "ipv4" : "ipv6");
    }
  }

  /** True when the peer may connect. An unknown or malformed address is denied. */
  allows(address: string | undefined): boolean {
    if (this.allowAll) return true;
    const a = canonicalPeer(address);
    if (a === undefined) return false;
    if (isIPv4(a)) return this.list.check(a, "ipv4");
    if (isIPv6(a)) return this.list.check(a, "ipv6");
    return false;
  }
}
