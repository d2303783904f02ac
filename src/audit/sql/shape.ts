/**
 * The shape of a SQL text: the text with every constant (string, number, bit string, dollar-quoted body)
 * replaced by a numbered placeholder `$n`, numbered after the highest `$n` the text already has — what
 * pg_stat_statements and libpg-query's normalize show. Two texts that differ only in their constants have
 * the same shape, so a statement's classification is cached by shape, and a shape never carries a value.
 *
 * A hand-written lexer of PostgreSQL's lexical rules (sql-syntax-lexical), much cheaper than a parse: it
 * runs on every statement the gateway audits. Anything it does not recognise is copied as it is; it never
 * throws. Identifiers ("quoted" too), keywords, operators and parameters are kept; comments (which can hold
 * anything) become a space.
 */

export interface Shape {
  /** The text with constants replaced by $n. */
  text: string;
  /** How many constants were replaced. */
  constants: number;
}

const isIdentStart = (c: number) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
const isIdentChar = (c: number) => isIdentStart(c) || (c >= 48 && c <= 57) || c === 36;
const isDigit = (c: number) => c >= 48 && c <= 57;

/** End (exclusive) of a quoted run starting at `i` (at the opening quote), `q` doubled to escape it; backslash escapes too when `backslash`. */
function endOfQuoted(s: string, i: number, q: number, backslash: boolean): number {
  let j = i + 1;
  while (j < s.length) {
    const c = s.charCodeAt(j);
    if (backslash && c === 92) {
      j += 2;
      continue;
    }
    if (c === q) {
      if (s.charCodeAt(j + 1) === q) {
        j += 2;
        continue;
      }
      return j + 1;
    }
    j++;
  }
  return s.length;
}

/** A dollar-quote tag at i (`$tag$` or `$$`), or null. */
function dollarTag(s: string, i: number): string | null {
  let j = i + 1;
  if (j < s.length && s.charCodeAt(j) === 36) return "$$";
  if (j >= s.length || !isIdentStart(s.charCodeAt(j))) return null;
  while (j < s.length && isIdentChar(s.charCodeAt(j)) && s.charCodeAt(j) !== 36) j++;
  return j < s.length && s.charCodeAt(j) === 36 ? s.slice(i, j + 1) : null;
}

/** End (exclusive) of a numeric constant starting at i. */
function endOfNumber(s: string, i: number): number {
  let j = i;
  if (s.charCodeAt(j) === 48 && /[xXoObB]/.test(s[j + 1] ?? "") && /[0-9a-fA-F_]/.test(s[j + 2] ?? "")) {
    j += 2;
    while (j < s.length && /[0-9a-fA-F_]/.test(s[j]!)) j++;
    return j;
  }
  while (j < s.length && (isDigit(s.charCodeAt(j)) || s.charCodeAt(j) === 95)) j++;
  if (s.charCodeAt(j) === 46 && s.charCodeAt(j + 1) !== 46) {
    j++;
    while (j < s.length && (isDigit(s.charCodeAt(j)) || s.charCodeAt(j) === 95)) j++;
  }
  if ((s.charCodeAt(j) === 101 || s.charCodeAt(j) === 69) && (isDigit(s.charCodeAt(j + 1)) || ((s[j + 1] === "+" || s[j + 1] === "-") && isDigit(s.charCodeAt(j + 2))))) {
    j += 2;
    while (j < s.length && isDigit(s.charCodeAt(j))) j++;
  }
  return j;
}

/** The highest `$n` parameter in the text (outside strings and comments). */
function highestParam(s: string): number {
  let max = 0;
  walk(s, (kind, a, b) => {
    if (kind === "param") max = Math.max(max, Number(s.slice(a + 1, b)) || 0);
  });
  return max;
}

type Kind = "const" | "param" | "comment" | "other";

/** Calls `out` for every run of the text: constants, parameters, and everything else. */
function walk(s: string, out: (kind: Kind, start: number, end: number) => void): void {
  let i = 0;
  let plain = 0;
  const flush = (to: number) => {
    if (to > plain) out("other", plain, to);
  };
  while (i < s.length) {
    const c = s.charCodeAt(i);
    const next = s.charCodeAt(i + 1);
    // Comments.
    if (c === 45 && next === 45) {
      flush(i);
      const nl = s.indexOf("\n", i);
      const end = nl < 0 ? s.length : nl;
      out("comment", i, end);
      i = plain = end;
      continue;
    }
    if (c === 47 && next === 42) {
      flush(i);
      let depth = 1;
      let j = i + 2;
      while (j < s.length && depth > 0) {
        if (s.charCodeAt(j) === 47 && s.charCodeAt(j + 1) === 42) {
          depth++;
          j += 2;
        } else if (s.charCodeAt(j) === 42 && s.charCodeAt(j + 1) === 47) {
          depth--;
          j += 2;
        } else j++;
      }
      out("comment", i, j);
      i = plain = j;
      continue;
    }
    // Quoted identifiers (U&"..." too): kept.
    if (c === 34) {
      i = endOfQuoted(s, i, 34, false);
      continue;
    }
    // Identifiers and keywords, and the prefixed strings E'..' B'..' X'..' N'..' U&'..'.
    if (isIdentStart(c)) {
      const lower = c | 32;
      if (next === 39 && (lower === 101 || lower === 98 || lower === 120 || lower === 110)) {
        flush(i);
        const end = endOfQuoted(s, i + 1, 39, lower === 101);
        out("const", i, end);
        i = plain = end;
        continue;
      }
      if (lower === 117 && next === 38 && s.charCodeAt(i + 2) === 39) {
        flush(i);
        const end = endOfQuoted(s, i + 2, 39, false);
        out("const", i, end);
        i = plain = end;
        continue;
      }
      let j = i + 1;
      while (j < s.length && isIdentChar(s.charCodeAt(j))) j++;
      i = j;
      continue;
    }
    // Strings.
    if (c === 39) {
      flush(i);
      const end = endOfQuoted(s, i, 39, false);
      out("const", i, end);
      i = plain = end;
      continue;
    }
    // $n parameters and $tag$ dollar-quoted constants.
    if (c === 36) {
      if (isDigit(next)) {
        flush(i);
        let j = i + 1;
        while (j < s.length && isDigit(s.charCodeAt(j))) j++;
        out("param", i, j);
        i = plain = j;
        continue;
      }
      const tag = dollarTag(s, i);
      if (tag !== null) {
        flush(i);
        const close = s.indexOf(tag, i + tag.length);
        const end = close < 0 ? s.length : close + tag.length;
        out("const", i, end);
        i = plain = end;
        continue;
      }
      i++;
      continue;
    }
    // Numbers (not part of an identifier: identifiers were consumed whole above).
    if (isDigit(c) || (c === 46 && isDigit(next))) {
      flush(i);
      const end = endOfNumber(s, i);
      out("const", i, end);
      i = plain = end;
      continue;
    }
    i++;
  }
  flush(s.length);
}

/** The text's shape: constants replaced by $n, numbered after the text's own parameters. */
export function shapeOf(s: string): Shape {
  // A text without "$" has no parameters: most texts, spared a second pass.
  let n = s.includes("$") ? highestParam(s) : 0;
  const first = n;
  let text = "";
  walk(s, (kind, a, b) => {
    if (kind === "const") text += `$${++n}`;
    else if (kind === "comment") text += " ";
    else text += s.slice(a, b);
  });
  return { text, constants: n - first };
}

/** Longer texts take the general path (their shapes are not cached either, so there is nothing to look up). */
const MAX_ASCII_SHAPE = 16 * 1024;
const scratch = Buffer.allocUnsafe(4 * MAX_ASCII_SHAPE + 16);

/** The byte at j of a text ending at `end`, or -1 past it. */
const byteAt = (b: Buffer, j: number, end: number): number => (j < end ? b[j]! : -1);
const isHexOrUnderscore = (c: number) => (c >= 48 && c <= 57) || ((c | 32) >= 97 && (c | 32) <= 102) || c === 95;

/** `endOfQuoted` on bytes. */
function endOfQuotedBytes(b: Buffer, i: number, end: number, q: number, backslash: boolean): number {
  let j = i + 1;
  while (j < end) {
    const c = b[j]!;
    if (backslash && c === 92) {
      j += 2;
      continue;
    }
    if (c === q) {
      if (byteAt(b, j + 1, end) === q) {
        j += 2;
        continue;
      }
      return j + 1;
    }
    j++;
  }
  return end;
}

/** `endOfNumber` on bytes. */
function endOfNumberBytes(b: Buffer, i: number, end: number): number {
  let j = i;
  const x = byteAt(b, i + 1, end) | 32;
  if (b[i] === 48 && (x === 120 || x === 111 || x === 98) && isHexOrUnderscore(byteAt(b, i + 2, end))) {
    j += 2;
    while (j < end && isHexOrUnderscore(b[j]!)) j++;
    return j;
  }
  while (j < end && (isDigit(b[j]!) || b[j] === 95)) j++;
  if (byteAt(b, j, end) === 46 && byteAt(b, j + 1, end) !== 46) {
    j++;
    while (j < end && (isDigit(b[j]!) || b[j] === 95)) j++;
  }
  const e = byteAt(b, j, end);
  const sign = byteAt(b, j + 1, end);
  if ((e === 101 || e === 69) && (isDigit(sign) || ((sign === 43 || sign === 45) && isDigit(byteAt(b, j + 2, end))))) {
    j += 2;
    while (j < end && isDigit(b[j]!)) j++;
  }
  return j;
}

/** Writes `$n` at o; answers the end. */
function placeholder(out: Buffer, o: number, n: number): number {
  let len = 1;
  for (let t = n; t >= 10; t = (t / 10) | 0) len++;
  out[o] = 36;
  for (let k = o + len, v = n; k > o; k--, v = (v / 10) | 0) out[k] = 48 + (v % 10);
  return o + len + 1;
}

/**
 * `shapeOf(text).text` for a text held as UTF-8 bytes (`bytes[start, end)`, a wire message's body), made from the
 * bytes without decoding them, for the texts most statements are: ASCII with no `$`. Any other text answers null
 * (the caller decodes it and calls shapeOf). The same lexical rules as `walk`, on bytes: for ASCII they are the
 * same characters, and with no `$` there are no parameters or dollar quotes, so constants number from $1.
 */
export function shapeOfAscii(bytes: Buffer, start: number, end: number): string | null {
  if (end - start > MAX_ASCII_SHAPE) return null;
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    if (c >= 128 || c === 36) return null;
  }
  // A constant grows at most to "$" and its number's digits (five for 16 KB of one-byte constants and commas).
  const out = scratch;
  let o = 0;
  let n = 0;
  let i = start;
  while (i < end) {
    const c = bytes[i]!;
    const next = byteAt(bytes, i + 1, end);
    if (c === 45 && next === 45) {
      while (i < end && bytes[i] !== 10) i++;
      out[o++] = 32;
      continue;
    }
    if (c === 47 && next === 42) {
      let depth = 1;
      i += 2;
      while (i < end && depth > 0) {
        if (bytes[i] === 47 && byteAt(bytes, i + 1, end) === 42) {
          depth++;
          i += 2;
        } else if (bytes[i] === 42 && byteAt(bytes, i + 1, end) === 47) {
          depth--;
          i += 2;
        } else i++;
      }
      out[o++] = 32;
      continue;
    }
    if (c === 34) {
      const j = endOfQuotedBytes(bytes, i, end, 34, false);
      while (i < j) out[o++] = bytes[i++]!;
      continue;
    }
    if (isIdentStart(c)) {
      const lower = c | 32;
      if (next === 39 && (lower === 101 || lower === 98 || lower === 120 || lower === 110)) {
        i = endOfQuotedBytes(bytes, i + 1, end, 39, lower === 101);
        o = placeholder(out, o, ++n);
        continue;
      }
      if (lower === 117 && next === 38 && byteAt(bytes, i + 2, end) === 39) {
        i = endOfQuotedBytes(bytes, i + 2, end, 39, false);
        o = placeholder(out, o, ++n);
        continue;
      }
      out[o++] = c;
      i++;
      while (i < end && isIdentChar(bytes[i]!)) out[o++] = bytes[i++]!;
      continue;
    }
    if (c === 39) {
      i = endOfQuotedBytes(bytes, i, end, 39, false);
      o = placeholder(out, o, ++n);
      continue;
    }
    if (isDigit(c) || (c === 46 && isDigit(next))) {
      i = endOfNumberBytes(bytes, i, end);
      o = placeholder(out, o, ++n);
      continue;
    }
    out[o++] = c;
    i++;
  }
  return out.toString("latin1", 0, o);
}
