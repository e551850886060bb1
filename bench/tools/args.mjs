// Tiny flag parser shared by the bench tools: `--key value` pairs, numbers where they look like numbers.
import { readFileSync } from 'node:fs';

export function parseArgs(argv, defaults) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in defaults)) throw new Error(`unknown flag ${a}; known: ${Object.keys(defaults).map((k) => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())).join(' ')}`);
    const v = argv[++i];
    if (v === undefined) throw new Error(`${a} needs a value`);
    out[key] = typeof defaults[key] === 'number' ? Number(v) : v;
    if (typeof defaults[key] === 'number' && !Number.isFinite(out[key])) throw new Error(`${a} must be a number, got "${v}"`);
  }
  return out;
}

/**
 * Prints one JSON line (the tool's result, plus the CPU seconds this tool used, with those of the
 * programs it ran and waited for, e.g. h2load) and exits with `code`.
 */
let finished = false;
export function finish(result, code = 0) {
  if (finished) return;
  finished = true;
  const cpu = process.cpuUsage();
  process.stdout.write(JSON.stringify({ ...result, toolCpuSeconds: (cpu.user + cpu.system) / 1e6 + childrenCpuSeconds() }) + '\n', () => process.exit(code));
}

/** CPU seconds of this process's finished, waited-for children (cutime + cstime of /proc/self/stat; 0 where there is no /proc). */
function childrenCpuSeconds() {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3; cutime is field 16, cstime field 17; USER_HZ is 100 on Linux
    return (Number(rest[13]) + Number(rest[14])) / 100;
  } catch {
    return 0;
  }
}

/** Bad flags: says so and exits at once (nothing else has started). */
export function usage(tool, message) {
  process.stderr.write(`${tool}: ${message}\n`);
  process.exit(2);
}

/** Exits with a clear message (and a JSON error line, so the runner can show it). */
export function fail(tool, message, code = 1) {
  process.stderr.write(`${tool}: ${message}\n`);
  finish({ ok: false, error: message }, code);
}
