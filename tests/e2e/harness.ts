import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/tests/e2e). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const FIXTURES = join(ROOT, 'tests', 'e2e', 'fixtures');
export const isRoot = process.getuid?.() === 0;
/** Why root-only tests are skipped elsewhere (CI runs as root, so they run there). */
export const needsRoot = isRoot ? false : 'needs root (network namespaces); CI runs it as root';

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously (never blocks the test's event loop). */
export function sh(file: string, args: string[], timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolveRun) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolveRun({ code, stdout, stderr });
    });
  });
}

/** The ambit CLI as a user runs it. */
export function ambit(args: string[], timeoutMs?: number): Promise<Result> {
  return sh(process.execPath, [CLI, ...args], timeoutMs);
}

/** A local mesh for one test file: a unique name and state folder, always torn down. */
export class TestMesh {
  readonly stateDir: string;
  constructor(readonly name: string) {
    this.stateDir = join('/run/ambit-test', name);
  }

  flags(): string[] {
    return ['--name', this.name, '--state-dir', this.stateDir];
  }

  async up(file: string, extra: string[] = []): Promise<void> {
    const r = await ambit(['local', 'up', '-f', file, ...this.flags(), ...extra], 180_000);
    if (r.code !== 0) throw new Error(`local up failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  }

  /** Tears the mesh down, then removes the test's state folder when nothing else is left in it. */
  async down(): Promise<Result> {
    const r = await ambit(['local', 'down', ...this.flags()]);
    await rmdir(this.stateDir).catch(() => undefined);
    return r;
  }

  async status(): Promise<{ nodes: { name: string; netns: string; ip: string }[]; pods: { namespace: string; name: string; ip: string; netns: string; node: string; captured: boolean }[]; services: { name: string; vip: string }[] }> {
    const r = await ambit(['local', 'status', '-o', 'json', ...this.flags()]);
    if (r.code !== 0) throw new Error(`local status failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** Runs the test client inside a pod; returns its JSON line. */
  async client(pod: string, args: string[], timeoutMs = 120_000): Promise<Record<string, unknown>> {
    const r = await ambit(['local', 'exec', pod, ...this.flags(), '--', 'node', join(FIXTURES, 'apps', 'client.mjs'), ...args], timeoutMs);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`client in ${pod} printed no JSON (exit ${r.code}): ${r.stdout} ${r.stderr}`);
    }
  }

  async exec(pod: string, argv: string[], timeoutMs?: number): Promise<Result> {
    return ambit(['local', 'exec', pod, ...this.flags(), '--', ...argv], timeoutMs);
  }

  /** A long-running process inside a pod (e.g. tcpdump), killed by the caller. */
  spawnIn(netns: string, argv: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  exists(): boolean {
    return existsSync(join(this.stateDir, this.name, 'state.json'));
  }
}
