/**
 * `ambit local rotate-ca`: replaces a local mesh's root CA while traffic flows, in three steps
 * with both roots trusted in between.
 *
 *   add     a new root is made and trusted beside the current one; every ztunnel is sent the
 *           bundle at once (no renewal needed)
 *   switch  the new root signs from now on; leaves renew under it at half life, and leaves of
 *           the old root still verify, since it stays trusted
 *   drop    once every leaf of the old root has expired (the leaf TTL after the switch), the
 *           old root is no longer trusted: a certificate it signed is refused
 *
 * The CA lives in the mesh's state folder (ca/): the signer in root-cert.pem/root-key.pem, the
 * other trusted roots in trusted-roots.pem, a staged new root in next-root-*.pem, where the
 * rotation stands in rotation.json. Each step writes them and sends the control plane SIGHUP.
 */
import { existsSync } from 'node:fs';
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { fingerprintOf, mergeRoots, summarizeRoot } from '../../shared/identity/trust.js';
import { httpInNetns } from '../../shared/netns/http.js';
import type { LocalState } from './cluster.js';
import { alive, sleep } from './system.js';

export const ROTATION_PHASES = ['add', 'switch', 'drop'] as const;
export type RotationPhase = (typeof ROTATION_PHASES)[number];

/** A key pair of a root: certificate and key, PEM. */
export interface RootPair {
  certPem: string;
  keyPem: string;
}

/** The CA files of a local mesh, as the rotation sees them. */
export interface CaFileSet {
  /** the root that signs now */
  signer: RootPair;
  /** other roots trusted beside the signer's */
  trusted: string[];
  /** a new root, trusted but not yet signing (after add) */
  next?: RootPair;
  /** the previous signing root, still trusted (after switch) */
  previous?: string;
  /** when the switch took effect, ISO time (after switch) */
  switchedAt?: string;
}

/** Leaves issued just before the switch are given this long beyond the TTL (reload and clock lag). */
export const DROP_MARGIN_MS = 5_000;

/** When the old root may be dropped: every leaf it signed has expired by then. */
export function dropAllowedAt(switchedAt: string, leafTtlSeconds: number): Date {
  return new Date(Date.parse(switchedAt) + leafTtlSeconds * 1000 + DROP_MARGIN_MS);
}

/** Which step comes next for these files. */
export function nextPhase(f: CaFileSet): RotationPhase {
  if (f.next) return 'switch';
  if (f.previous) return 'drop';
  return 'add';
}

/**
 * The CA files after one step (pure). Refuses steps out of order, and a drop before every leaf
 * of the old root has expired unless `force` (those workloads are then refused until they renew).
 */
export function planStep(
  f: CaFileSet,
  phase: RotationPhase,
  ctx: { now: Date; leafTtlSeconds: number; newRoot?: RootPair; force?: boolean },
): CaFileSet {
  const expected = nextPhase(f);
  if (phase !== expected) {
    const where = f.next ? 'a new root was added and waits for `--phase switch`' : f.previous ? 'the signer was switched and the old root waits for `--phase drop`' : 'no rotation is under way; start with `--phase add`';
    throw new Error(`cannot ${phase} now: ${where}`);
  }
  switch (phase) {
    case 'add': {
      if (!ctx.newRoot) throw new Error('add needs the new root');
      if (fingerprintOf(ctx.newRoot.certPem) === fingerprintOf(f.signer.certPem)) throw new Error('the new root is the current one');
      return { signer: f.signer, trusted: mergeRoots(f.trusted, [ctx.newRoot.certPem]), next: ctx.newRoot };
    }
    case 'switch': {
      const next = f.next!;
      const nextFp = fingerprintOf(next.certPem);
      return {
        signer: next,
        trusted: mergeRoots(f.trusted.filter((r) => fingerprintOf(r) !== nextFp), [f.signer.certPem]),
        previous: f.signer.certPem,
        switchedAt: ctx.now.toISOString(),
      };
    }
    case 'drop': {
      const allowed = dropAllowedAt(f.switchedAt ?? ctx.now.toISOString(), ctx.leafTtlSeconds);
      if (ctx.now < allowed && !ctx.force) {
        const s = Math.ceil((allowed.getTime() - ctx.now.getTime()) / 1000);
        throw new Error(
          `leaves signed by the old root may be valid until ${allowed.toISOString()} (${s} s from now; the leaf TTL is ${ctx.leafTtlSeconds} s after the switch at ${f.switchedAt}); drop then, or now with --force (workloads still holding one are refused until they renew)`,
        );
      }
      const prevFp = fingerprintOf(f.previous!);
      return { signer: f.signer, trusted: f.trusted.filter((r) => fingerprintOf(r) !== prevFp) };
    }
  }
}

/** Paths of the CA files in a mesh's state folder. */
export function caPaths(dir: string) {
  const ca = join(dir, 'ca');
  return {
    signerCert: join(ca, 'root-cert.pem'),
    signerKey: join(ca, 'root-key.pem'),
    trusted: join(ca, 'trusted-roots.pem'),
    nextCert: join(ca, 'next-root-cert.pem'),
    nextKey: join(ca, 'next-root-key.pem'),
    rotation: join(ca, 'rotation.json'),
  };
}

/** Reads the CA files of a mesh. */
export async function readCaFiles(dir: string): Promise<CaFileSet> {
  const p = caPaths(dir);
  const text = async (path: string): Promise<string | null> => (existsSync(path) ? readFile(path, 'utf8') : null);
  const trustedText = (await text(p.trusted)) ?? '';
  const nextCert = await text(p.nextCert);
  const nextKey = await text(p.nextKey);
  const rotation = JSON.parse((await text(p.rotation)) ?? '{}') as { previous?: string; switchedAt?: string };
  return {
    signer: { certPem: await readFile(p.signerCert, 'utf8'), keyPem: await readFile(p.signerKey, 'utf8') },
    trusted: trustedText.trim() === '' ? [] : mergeRoots([trustedText]),
    ...(nextCert && nextKey ? { next: { certPem: nextCert, keyPem: nextKey } } : {}),
    ...(rotation.previous ? { previous: rotation.previous, switchedAt: rotation.switchedAt } : {}),
  };
}

async function writeAtomic(path: string, text: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}

/** Writes the CA files of a mesh (each file replaced whole). */
export async function writeCaFiles(dir: string, f: CaFileSet): Promise<void> {
  const p = caPaths(dir);
  // the trusted roots first: a control plane reading the files between two writes then trusts
  // more, never less, than it should
  await writeAtomic(p.trusted, f.trusted.map((r) => r.trim() + '\n').join(''));
  await writeAtomic(p.signerKey, f.signer.keyPem, 0o600);
  await writeAtomic(p.signerCert, f.signer.certPem);
  if (f.next) {
    await writeAtomic(p.nextKey, f.next.keyPem, 0o600);
    await writeAtomic(p.nextCert, f.next.certPem);
  } else {
    await rm(p.nextKey, { force: true });
    await rm(p.nextCert, { force: true });
  }
  if (f.previous) await writeAtomic(p.rotation, JSON.stringify({ previous: f.previous, switchedAt: f.switchedAt }, null, 2));
  else await rm(p.rotation, { force: true });
}

/** A reload line of the control plane's log. */
interface ReloadLine {
  msg: string;
  signer?: string;
  roots?: string[];
  err?: string;
}

/** Waits for the control plane to log that it reloaded its CA (after `offset` in its log). */
async function awaitReload(log: string, offset: number, timeoutMs = 15_000): Promise<ReloadLine> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const fh = await open(log, 'r');
    try {
      const size = (await fh.stat()).size;
      const buf = Buffer.alloc(Math.max(0, size - offset));
      await fh.read(buf, 0, buf.length, offset);
      for (const line of buf.toString('utf8').split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const l = JSON.parse(line) as ReloadLine;
          if (l.msg === 'CA reloaded' || l.msg === 'CA reload failed') return l;
        } catch {
          /* a line being written */
        }
      }
    } finally {
      await fh.close();
    }
    await sleep(100);
  }
  throw new Error(`the control plane did not reload its CA within ${timeoutMs} ms (log: ${log})`);
}

/** The trust bundle and leaves each running ztunnel reports on its admin endpoint. */
async function ztunnelViews(state: LocalState): Promise<{ node: string; roots: string[]; leafRoots: (string | undefined)[] }[]> {
  const out = [];
  for (const n of state.plan.nodes) {
    const z = state.processes.find((p) => p.role === 'ztunnel' && p.name === n.name);
    if (!z || !alive(z.pid)) continue;
    const r = await httpInNetns(`/run/netns/${n.netns}`, { host: '127.0.0.1', port: 15000, path: '/config_dump' });
    const d = JSON.parse(r.body) as { trustRoots?: { serial: string }[]; certificates?: { state: string; root?: string }[] };
    out.push({ node: n.name, roots: (d.trustRoots ?? []).map((x) => x.serial), leafRoots: (d.certificates ?? []).filter((c) => c.state === 'available').map((c) => c.root) });
  }
  return out;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(250);
  }
  throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
}

/** The workload certificate TTL the mesh's control plane was started with. */
export function leafTtlOf(state: LocalState): number {
  const argv = state.processes.find((p) => p.role === 'control')?.argv ?? [];
  const i = argv.indexOf('--cert-ttl');
  return i >= 0 ? Number(argv[i + 1]) : 86400;
}

/** Runs one step against a running local mesh: writes the files, reloads the control plane, waits for the ztunnels. */
export async function rotateStep(state: LocalState, phase: RotationPhase, o: { force?: boolean; say: (l: string) => void; now?: () => Date }): Promise<CaFileSet> {
  const control = state.processes.find((p) => p.role === 'control');
  if (!control?.argv?.includes('--trusted-roots')) throw new Error('this mesh\'s control plane was started without --trusted-roots (an older ambit); recreate the mesh to rotate its root');
  const before = await readCaFiles(state.dir);
  const ttl = leafTtlOf(state);
  const now = (o.now ?? (() => new Date()))();
  let newRoot: RootPair | undefined;
  if (phase === 'add') {
    const current = await CertificateAuthority.load(before.signer.certPem, before.signer.keyPem);
    const fresh = await CertificateAuthority.generate({ trustDomain: current.trustDomain, commonName: `ambit local root (${state.name}) ${now.toISOString().slice(0, 19)}Z` });
    newRoot = { certPem: fresh.certPem, keyPem: fresh.keyPem() };
  }
  let after = planStep(before, phase, { now, leafTtlSeconds: ttl, ...(newRoot ? { newRoot } : {}), ...(o.force ? { force: true } : {}) });
  const serial = (pem: string): string => summarizeRoot(pem).serial;

  const running = alive(control.pid);
  const offset = running ? (await stat(control.log)).size : 0;
  await writeCaFiles(state.dir, after);
  if (running) {
    process.kill(control.pid, 'SIGHUP');
    const line = await awaitReload(control.log, offset);
    if (line.msg !== 'CA reloaded' || line.signer !== serial(after.signer.certPem)) {
      // put back what the control plane still runs with: nothing is lost
      await writeCaFiles(state.dir, before);
      throw new Error(`the control plane refused the new CA: ${line.err ?? JSON.stringify(line)}`);
    }
    if (phase === 'switch') {
      // leaves of the old root were issued until now: the drop waits a TTL from here
      after = { ...after, switchedAt: new Date().toISOString() };
      await writeCaFiles(state.dir, after);
    }
  } else {
    o.say('the control plane is stopped: it starts with the new CA files');
  }

  if (phase === 'add') {
    const s = serial(after.next!.certPem);
    o.say(`new root ${s} added; waiting for every ztunnel to trust it`);
    await until(`every ztunnel to trust root ${s}`, async () => (await ztunnelViews(state)).every((v) => v.roots.includes(s)), 30_000);
    o.say(`every ztunnel trusts roots ${[before.signer.certPem, ...after.trusted].map(serial).filter((x, i, a) => a.indexOf(x) === i).join(', ')}; next: \`ambit local rotate-ca --phase switch\``);
  } else if (phase === 'switch') {
    const at = dropAllowedAt(after.switchedAt!, ttl);
    o.say(`root ${serial(after.signer.certPem)} signs now; leaves renew under it at half life, and those of root ${serial(after.previous!)} still verify`);
    o.say(`next: \`ambit local rotate-ca --phase drop\` from ${at.toISOString()} (the leaf TTL, ${ttl} s, after the switch)`);
  } else {
    const s = serial(before.previous!);
    o.say(`root ${s} dropped; waiting for every ztunnel to stop trusting it`);
    await until(`every ztunnel to drop root ${s}`, async () => (await ztunnelViews(state)).every((v) => !v.roots.includes(s)), 30_000);
    o.say(`rotation done: root ${serial(after.signer.certPem)} signs and is the only root trusted${after.trusted.length ? ` with ${after.trusted.map(serial).join(', ')}` : ''}`);
  }
  return after;
}

/** Every remaining step, waiting between them: for the ztunnels after add, for the old leaves to expire before drop. */
export async function rotateAll(state: LocalState, o: { say: (l: string) => void }): Promise<void> {
  let phase = nextPhase(await readCaFiles(state.dir));
  const ttl = leafTtlOf(state);
  for (;;) {
    const after = await rotateStep(state, phase, o);
    if (phase === 'drop') return;
    if (phase === 'switch') {
      const at = dropAllowedAt(after.switchedAt!, ttl);
      o.say(`waiting until ${at.toISOString()} for the old root's leaves to expire (interrupting is safe: run \`--phase drop\` later)`);
      // meanwhile, say when every running ztunnel holds only leaves of the new root
      const s = summarizeRoot(after.signer.certPem).serial;
      let renewed = false;
      while (Date.now() < at.getTime()) {
        if (!renewed) {
          const views = await ztunnelViews(state).catch(() => []);
          if (views.length > 0 && views.every((v) => v.leafRoots.every((r) => r === s))) {
            renewed = true;
            o.say(`every ztunnel's certificates now chain to root ${s}`);
          }
        }
        await sleep(Math.min(1000, Math.max(0, at.getTime() - Date.now())));
      }
    }
    phase = nextPhase(await readCaFiles(state.dir));
  }
}
