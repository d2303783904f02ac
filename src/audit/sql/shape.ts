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
