/**
 * Reading the Prometheus text exposition format (version 0.0.4), as ztunnel's and the
 * waypoint's /metrics serve it: one sample per line, `name{label="value",…} value [timestamp]`.
 */

/** One sample of a scrape. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseValue(text: string): number {
  // as Go's ParseFloat reads them (Prometheus' own parser): any case, so prom-client's "Nan" too
  switch (text.toLowerCase()) {
    case '+inf':
    case 'inf':
      return Infinity;
    case '-inf':
      return -Infinity;
    case 'nan':
      return NaN;
    default: {
      const v = Number(text);
      if (text === '' || Number.isNaN(v)) throw new Error(`"${text}" is not a number`);
      return v;
    }
  }
}

/** Reads `{a="x",b="y"}` starting at `i` (at the brace); returns the labels and where the braces end. */
function parseLabels(line: string, i: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  i++;
  for (;;) {
    while (line[i] === ' ') i++;
    if (line[i] === '}') return { labels, end: i + 1 };
    const m = LABEL_NAME.exec(line.slice(i));
    if (!m) throw new Error(`bad label name at column ${i + 1}`);
    const name = m[0];
    i += name.length;
    while (line[i] === ' ') i++;
    if (line[i] !== '=') throw new Error(`label ${name}: expected ="…" at column ${i + 1}`);
    i++;
    while (line[i] === ' ') i++;
    if (line[i] !== '"') throw new Error(`label ${name}: expected ="…" at column ${i + 1}`);
    i++;
    let value = '';
    for (;;) {
      const c = line[i];
      if (c === undefined) throw new Error(`label ${name}: unterminated value`);
      if (c === '"') break;
      if (c === '\\') {
        const e = line[i + 1];
        value += e === 'n' ? '\n' : e === '\\' ? '\\' : e === '"' ? '"' : `\\${e ?? ''}`;
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    labels[name] = value;
    i++;
    while (line[i] === ' ') i++;
    if (line[i] === ',') i++;
    else if (line[i] !== '}') throw new Error(`label ${name}: expected , or } at column ${i + 1}`);
  }
}

/**
 * Every sample of an exposition (pure). Comments (# HELP, # TYPE) are skipped; a malformed
 * line throws an error naming its line number, so a broken target is reported, not half read.
 */
export function parsePrometheusText(text: string): Sample[] {
  const out: Sample[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      const m = NAME.exec(line);
      if (!m) throw new Error('no metric name');
      let i = m[0].length;
      let labels: Record<string, string> = {};
      if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i));
      const rest = line.slice(i).trim().split(/\s+/);
      if (rest.length < 1 || rest.length > 2) throw new Error('expected a value and an optional timestamp');
      out.push({ name: m[0], labels, value: parseValue(rest[0]!) });
    } catch (err) {
      throw new Error(`metrics line ${n + 1}: ${(err as Error).message}`);
    }
  }
  return out;
}
