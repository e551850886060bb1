/**
 * Hostile clients against the real HBONE server (shared/hbone/server.ts), run in a child
 * process (tests/hostile/hbone-target.ts) so its memory is its own and a crash shows.
 *
 * Each test runs one attack and, while it runs, a well-behaved mesh client doing echo round
 * trips through the same server. It asserts three things: the attacker is refused or limited
 * (handshake failure, connection closed, GOAWAY or RST_STREAM), the good client's bytes come
 * back intact, and the refusal is visible as ztunnel shows it (a warn line "inbound HBONE
 * refused" and ambit_ztunnel_rejected_total{reason=FLAG}).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import http2, { constants as h2c } from 'node:http2';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';
import type { TlsMaterial } from '../../shared/hbone/tls.js';
import { ConnectionPool } from '../../shared/hbone/pool.js';
import { HBONE_SERVER_LIMITS, type HboneServerOptions } from '../../shared/hbone/server.js';
import type { ErrorFlag } from '../../shared/errors.js';
import { FLAG, FRAME, RawH2, connectBlock, frame, headerBlock } from './h2raw.js';
import { tls13Handshake } from './tls13.js';
import type { TargetStats } from './hbone-target.js';

const TD = 'cluster.local';
const SERVER_ID = new Identity(TD, 'shop', 'echo');
/** the identity attackers with a mesh certificate use */
const CLIENT_ID = new Identity(TD, 'shop', 'client');
/** the well-behaved client running alongside each attack */
const GOOD_ID = new Identity(TD, 'shop', 'good');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Short limits so slow attacks end within a test; the production defaults are checked on their own. */
const OPTIONS: HboneServerOptions = { handshakeTimeoutMs: 1500, pingIntervalMs: 300, pingTimeoutMs: 1000 };

async function issue(ca: CertificateAuthority, id: Identity, opts: { ttlSeconds?: number; roots?: string[] } = {}): Promise<TlsMaterial & { notAfter: Date }> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const cert = await ca.signCsr(csrPem, id, opts.ttlSeconds ? { ttlSeconds: opts.ttlSeconds } : {});
  return { keyPem, certChainPem: [cert.certPem, ...cert.chainPem].join('\n'), rootsPem: opts.roots ?? cert.rootsPem, notAfter: cert.notAfter };
}

interface Target {
  child: ChildProcess;
  port: number;
  appPort: number;
  logs: string[];
  stats(): Promise<TargetStats>;
}

let m: {
  server: TlsMaterial;
  client: TlsMaterial;
  good: TlsMaterial;
  stranger: TlsMaterial;
  foreign: TlsMaterial;
  expired: TlsMaterial;
  a: TlsMaterial;
  b: TlsMaterial;
};
let target: Target;

async function startTarget(material: TlsMaterial): Promise<Target> {
  const child = fork(fileURLToPath(new URL('./hbone-target.js', import.meta.url)), [], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const logs: string[] = [];
  let partial = '';
  child.stdout!.on('data', (c: Buffer) => {
    const lines = (partial + c.toString()).split('\n');
    partial = lines.pop() ?? '';
    logs.push(...lines.filter(Boolean));
  });
  child.send({ type: 'start', material, trustDomain: TD, options: OPTIONS });
  const ready = await new Promise<{ port: number; appPort: number }>((resolve, reject) => {
    child.once('message', (msg) => resolve(msg as { port: number; appPort: number }));
    child.once('exit', (code) => reject(new Error(`HBONE target exited (${code}) before it was ready`)));
  });
  let nextId = 0;
  const stats = (): Promise<TargetStats> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(`the HBONE server process died (${child.exitCode ?? child.signalCode})`));
      const id = ++nextId;
      const onMsg = (msg: unknown): void => {
        const s = msg as TargetStats;
        if (s.type !== 'stats' || s.id !== id) return;
        child.off('message', onMsg);
        resolve(s);
      };
      child.on('message', onMsg);
      child.send({ type: 'stats', id });
    });
  return { child, port: ready.port, appPort: ready.appPort, logs, stats };
}

before(async () => {
  const ca = await CertificateAuthority.generate();
  const stranger = await CertificateAuthority.generate({ commonName: 'another mesh' });
  const other = await CertificateAuthority.generate({ trustDomain: 'other.local' });
  // the server trusts the other trust domain's root, so only the trust-domain check can refuse its clients
  const server = await issue(ca, SERVER_ID, { roots: [...ca.rootsPem(), ...other.rootsPem()] });
  const expired = await issue(ca, CLIENT_ID, { ttlSeconds: 1 });
  m = {
    server,
    client: await issue(ca, CLIENT_ID),
    good: await issue(ca, GOOD_ID),
    stranger: await issue(stranger, CLIENT_ID, { roots: ca.rootsPem() }),
    foreign: await issue(other, new Identity('other.local', 'shop', 'client'), { roots: ca.rootsPem() }),
    expired,
    a: await issue(ca, new Identity(TD, 'shop', 'alice')),
    b: await issue(ca, new Identity(TD, 'shop', 'bob')),
  };
  target = await startTarget(server);
  // the 1-second certificate is past its notAfter by the time it is used
  await sleep(Math.max(0, expired.notAfter.getTime() - Date.now() + 1100));
});

after(() => {
  target?.child.kill('SIGKILL');
});

/** One echo round trip through the server with the real client (ConnectionPool), as ztunnel's outbound makes it. */
async function roundTrip(size = 64 * 1024): Promise<void> {
  const pool = new ConnectionPool();
  try {
    const stream = await pool.open({
      source: GOOD_ID.toString(),
      expected: [SERVER_ID.toString()],
      target: { ip: '127.0.0.1', port: target.port },
      authority: `127.0.0.1:${target.appPort}`,
      dial: (t) =>
        new Promise((resolve, reject) => {
          const s = net.connect({ host: t.ip, port: t.port, allowHalfOpen: true });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
      material: async () => m.good,
    });
    const payload = randomBytes(size);
    const chunks: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('end', () => resolve());
      stream.once('error', reject);
    });
    stream.end(payload);
    await done;
    assert.ok(Buffer.concat(chunks).equals(payload), 'echoed bytes differ');
  } finally {
    pool.close();
  }
}

/**
 * Runs `attack` and, alongside it, good round trips (one at the start, then one every 100 ms
 * until the attack is over, at least three). Each round trip must finish within 5 s.
 */
async function duringAttack<T>(attack: () => Promise<T>): Promise<{ result: T; roundTrips: number }> {
  let over = false;
  const attacking = attack().finally(() => {
    over = true;
  });
  let roundTrips = 0;
  const good = (async () => {
    await sleep(20);
    while (!over || roundTrips < 3) {
      const started = Date.now();
      await roundTrip();
      assert.ok(Date.now() - started < 5000, `a good round trip took ${Date.now() - started} ms during the attack`);
      roundTrips++;
      await sleep(100);
    }
  })();
  const [result] = await Promise.all([attacking, good]);
  return { result, roundTrips };
}

/** Counter delta of ambit_ztunnel_rejected_total{reason=flag} and the warn lines logged meanwhile. */
async function expectRejected(before: TargetStats, logFrom: number, flag: ErrorFlag, reason: RegExp, settleMs = 3000): Promise<void> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const now = await target.stats();
    const lines = target.logs.slice(logFrom).map((l) => JSON.parse(l) as Record<string, unknown>);
    const line = lines.find((l) => l.msg === 'inbound HBONE refused' && l.flags === flag && reason.test(String(l.error)));
    const counted = (now.rejected[flag] ?? 0) > (before.rejected[flag] ?? 0);
    if (line && counted) {
      assert.equal(line.level, 40, 'refusals are logged at warn');
      assert.match(String(line['src.addr']), /^127\.0\.0\.1:\d+$/, 'the log line names the client');
      return;
    }
    if (Date.now() > deadline) {
      assert.fail(`expected a "${flag}" refusal matching ${reason} (counted: ${counted}); logged: ${lines.map((l) => `${l.flags} ${l.error}`).join(' | ') || 'nothing'}`);
    }
    await sleep(50);
  }
}

/** What the attacking identity got through: CONNECTs handled, app connections made and held. */
function attacker(s: TargetStats): { connects: number; appOpened: number; appOpen: number } {
  return s.byPeer[CLIENT_ID.toString()] ?? { connects: 0, appOpened: 0, appOpen: 0 };
}

/** A TLS client that tries to stay connected; says how the server ended it, or 'open'. */
function tlsAttempt(options: tls.ConnectionOptions, holdMs = 1500): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: target.port, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined, ...options });
    let timer: NodeJS.Timeout | undefined;
    const end = (what: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(what);
    };
    s.once('secureConnect', () => {
      // TLS 1.3: the server judges the client certificate after the client's Finished, so hold on
      s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
      timer = setTimeout(() => end('open'), holdMs);
    });
    s.on('data', () => undefined);
    s.once('error', (err) => end(`refused: ${err.message}`));
    s.once('close', () => end('refused: closed'));
  });
}

describe('HBONE server under hostile input', () => {
  test('production limits: handshake and PING deadlines are set, tighter than node\'s 120 s handshake default', () => {
    assert.ok(HBONE_SERVER_LIMITS.handshakeTimeoutMs > 0 && HBONE_SERVER_LIMITS.handshakeTimeoutMs <= 10_000);
    assert.equal(HBONE_SERVER_LIMITS.pingIntervalMs, 10_000);
    assert.equal(HBONE_SERVER_LIMITS.pingTimeoutMs, 20_000);
    assert.ok(HBONE_SERVER_LIMITS.earlyResetBurst >= 100 && HBONE_SERVER_LIMITS.earlyResetBurst < 1000, 'below nghttp2\'s own 1000');
  });

  test('a good client completes an echo round trip (baseline)', async () => {
    await roundTrip();
    await roundTrip(1024 * 1024);
  });

  test('plaintext bytes are refused as a TLS failure', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          new Promise<string>((resolve) => {
            const sock = net.connect(target.port, '127.0.0.1');
            sock.on('error', () => undefined);
            sock.on('data', () => undefined);
            sock.once('close', () => resolve('closed'));
            sock.write(i % 2 ? 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' : randomBytes(2048));
            setTimeout(() => resolve('open'), 3000);
          }),
        ),
      );
      return outcomes;
    });
    assert.deepEqual(new Set(result), new Set(['closed']));
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /./);
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects, 'nothing reached the app handler');
  });

  test('a TLS 1.2-only client fails the handshake', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() =>
      tlsAttempt({ key: m.client.keyPem, cert: m.client.certChainPem, ca: m.client.rootsPem, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }),
    );
    assert.match(result, /^refused: /);
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /unsupported protocol|version/i);
  });

  test('a certificate from another CA is refused', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() => tlsAttempt({ key: m.stranger.keyPem, cert: m.stranger.certChainPem, ca: m.stranger.rootsPem }));
    assert.match(result, /^refused: /);
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /client certificate refused: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/);
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects);
  });

  test('a client without a certificate is refused', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() => tlsAttempt({ ca: m.client.rootsPem }));
    assert.match(result, /^refused: /);
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /certificate/i);
  });

  test('a client of another trust domain (chain valid) is refused after the handshake', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() => tlsAttempt({ key: m.foreign.keyPem, cert: m.foreign.certChainPem, ca: m.foreign.rootsPem }));
    assert.match(result, /^refused: /);
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /outside trust domain cluster\.local/);
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects);
  });

  test('an expired certificate is refused', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() => tlsAttempt({ key: m.expired.keyPem, cert: m.expired.certChainPem, ca: m.expired.rootsPem }));
    assert.match(result, /^refused: /);
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /client certificate refused: CERT_HAS_EXPIRED/);
  });

  test("identity B's certificate signed with A's key (mismatch) fails CertificateVerify", async () => {
    // the hand-made TLS 1.3 client is sound: with B's own key the server takes the handshake
    assert.deepEqual(await tls13Handshake(target.port, m.b.certChainPem, m.b.keyPem), { kind: 'accepted' });
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(() => tls13Handshake(target.port, m.b.certChainPem, m.a.keyPem));
    assert.deepEqual(result, { kind: 'alert', description: 51 }, 'decrypt_error alert');
    await expectRejected(s0, logFrom, 'TLS_FAILURE', /bad signature/);
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects);
  });

  test('rapid reset with raw frames: the connection is dropped (GOAWAY) and the app sees no connection', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      let id = 1;
      for (let i = 0; i < 5000 && !c.closed; i++) {
        c.write(Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, id, connectBlock(`127.0.0.1:${target.appPort}`)), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, h2c.NGHTTP2_CANCEL]))]));
        id += 2;
        if (i % 100 === 0) await new Promise((r) => setImmediate(r));
      }
      const closed = await c.closedWithin(3000);
      c.destroy();
      return { closed, goaway: c.goaway };
    });
    assert.equal(result.closed, true, 'the server closed the connection');
    assert.equal(result.goaway, h2c.NGHTTP2_ENHANCE_YOUR_CALM);
    await expectRejected(s0, logFrom, 'BAD_REQUEST', /rapid reset/);
    const opened = attacker(await target.stats()).appOpened - attacker(s0).appOpened;
    assert.ok(opened < 50, `reset streams reached the app ${opened} times`);
  });

  test('rapid reset with node\'s http2 client (request + close in a tight loop) is limited', async () => {
    const s0 = await target.stats();
    const { result } = await duringAttack(async () => {
      const session = http2.connect(`https://127.0.0.1:${target.port}`, {
        createConnection: () => tls.connect({ host: '127.0.0.1', port: target.port, key: m.client.keyPem, cert: m.client.certChainPem, ca: m.client.rootsPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }),
      });
      session.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      let opened = 0;
      for (let i = 0; i < 5000 && !session.destroyed && !session.closed; i++) {
        try {
          const r = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${target.appPort}` });
          r.on('error', () => undefined);
          r.close(h2c.NGHTTP2_CANCEL);
          opened++;
        } catch {
          break; // the session went away under us: refused
        }
      }
      await sleep(1500);
      const mid = await target.stats();
      session.destroy();
      return { opened, mid };
    });
    // at most one window of streams is ever live, whatever the client queued
    const connects = attacker(result.mid).connects - attacker(s0).connects;
    assert.ok(connects <= 200, `${connects} CONNECTs reached the handler`);
    assert.ok(attacker(result.mid).appOpen <= 200, `${attacker(result.mid).appOpen} app connections held`);
    // once the client is gone, nothing it opened is left behind
    await waitFor(async () => attacker(await target.stats()).appOpen === 0, 'app connections released after the client left');
  });

  test('header flood: one huge header is refused (GOAWAY), nothing reaches the app', async () => {
    const s0 = await target.stats();
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      const block = connectBlock(`127.0.0.1:${target.appPort}`, [['x-big', 'a'.repeat(200_000)]]);
      const parts: Buffer[] = [];
      for (let i = 0; i < block.length; i += 16_000) parts.push(block.subarray(i, i + 16_000));
      c.write(Buffer.concat(parts.map((p, i) => frame(i === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, i === parts.length - 1 ? FLAG.END_HEADERS : 0, 1, p))));
      const closed = await c.closedWithin(4000);
      c.destroy();
      return { closed, goaway: c.goaway, reset: c.resets.get(1) ?? null, answered: c.answered.has(1) };
    });
    assert.equal(result.answered, false);
    assert.ok(result.goaway !== null || result.reset !== null, 'refused with GOAWAY or RST_STREAM');
    // a session nghttp2 gave up on is closed by the PING deadline, not held as long as the client likes
    assert.equal(result.closed, true, 'the connection was closed');
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects);
  });

  test('header flood: more header fields than allowed resets the stream; a CONTINUATION flood drops the connection', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      const many = Array.from({ length: 200 }, (_, i): [string, string] => [`x-h${i}`, 'v']);
      c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, connectBlock(`127.0.0.1:${target.appPort}`, many)));
      await waitFor(async () => c.resets.has(1) || c.closed, 'the stream with 200 header fields was reset');
      const manyReset = c.resets.get(1) ?? null;
      c.write(frame(FRAME.HEADERS, 0, 3, connectBlock(`127.0.0.1:${target.appPort}`)));
      for (let i = 0; i < 2000 && !c.closed; i++) c.write(frame(FRAME.CONTINUATION, 0, 3, headerBlock([[`x-c${i}`, 'v']])));
      const closed = await c.closedWithin(4000);
      c.destroy();
      return { manyReset, closed, goaway: c.goaway };
    });
    assert.equal(result.manyReset, h2c.NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(result.closed, true);
    assert.notEqual(result.goaway, null);
    await expectRejected(s0, logFrom, 'BAD_REQUEST', /CONTINUATION/);
    assert.equal(attacker(await target.stats()).connects, attacker(s0).connects);
  });

  test('streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused, and a client that keeps trying is dropped', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      for (let i = 0; i < 400; i++) c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, connectBlock(`127.0.0.1:${target.appPort}`)));
      const closed = await c.closedWithin(3000);
      const refused = [...c.resets.values()].filter((code) => code === h2c.NGHTTP2_REFUSED_STREAM).length;
      c.destroy();
      return { closed, refused };
    });
    assert.ok(result.refused > 0, 'streams over the limit got REFUSED_STREAM');
    assert.equal(result.closed, true);
    await expectRejected(s0, logFrom, 'BAD_REQUEST', /session error/);
    assert.ok(attacker(await target.stats()).connects - attacker(s0).connects <= 200);
  });

  test('bad requests (not CONNECT) get 400, and a client sending many is dropped', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      for (let i = 0; i < 500 && !c.closed; i++) {
        c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1 + 2 * i, headerBlock([[':method', 'GET'], [':scheme', 'https'], [':path', '/'], [':authority', 'x']])));
      }
      const closed = await c.closedWithin(3000);
      c.destroy();
      return { closed, answered: c.answered.size };
    });
    assert.equal(result.closed, true);
    assert.ok(result.answered > 0 && result.answered <= 25, `${result.answered} bad requests answered before the drop`);
    await expectRejected(s0, logFrom, 'BAD_REQUEST', /malformed requests/);
    const lines = target.logs.slice(logFrom).filter((l) => l.includes('is not CONNECT')).length;
    assert.ok(lines <= 25, `${lines} log lines for one bad client`);
  });

  test('zero-window stall: a client that never takes data cannot make the server buffer without bound', async () => {
    (await target.stats()); // warm
    const s0 = await target.stats();
    const offered = 100 * 4 * 1024 * 1024;
    const { result } = await duringAttack(async () => {
      // window 0: the server may never send; each stream is fed a whole stream window (4 MiB) of data to echo
      const c = await RawH2.connect(target.port, m.client, { settings: { INITIAL_WINDOW_SIZE: 0 } });
      const streams = 100;
      for (let i = 0; i < streams; i++) c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, connectBlock(`127.0.0.1:${target.appPort}`)));
      await sleep(300);
      const payload = Buffer.alloc(16_000, 7);
      let peak = 0;
      for (let i = 0; i < streams && !c.closed; i++) {
        for (let sent = 0; sent + payload.length <= 4 * 1024 * 1024; sent += payload.length) {
          if (!c.write(frame(FRAME.DATA, 0, 1 + 2 * i, payload))) await new Promise((r) => c.sock.once('drain', r));
          if (c.closed) break;
        }
        if (i % 10 === 9) peak = Math.max(peak, (await target.stats()).rss);
      }
      for (let k = 0; k < 5; k++) {
        await sleep(200);
        peak = Math.max(peak, (await target.stats()).rss);
      }
      c.destroy();
      return { peak };
    });
    const growth = result.peak - s0.rss;
    assert.ok(growth < 192 * 1024 * 1024, `server RSS grew by ${(growth / 1048576).toFixed(0)} MiB while offered ${offered / 1048576} MiB`);
    await waitFor(async () => attacker(await target.stats()).appOpen === 0, 'tunnels released after the client left');
  });

  test('a client that stops reading entirely is dropped at the PING deadline', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const c = await RawH2.connect(target.port, m.client);
      c.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, connectBlock(`127.0.0.1:${target.appPort}`)));
      c.stopReading();
      const big = Buffer.alloc(16_000, 1);
      for (let i = 0; i < 200; i++) c.write(frame(FRAME.DATA, 0, 1, big));
      await expectRejected(s0, logFrom, 'TIMEOUT', /PING/, 5000);
      // a paused socket does not see the close until it reads again
      c.sock.resume();
      const closed = await c.closedWithin(3000);
      c.destroy();
      return closed;
    });
    assert.equal(result, true, 'the server closed the connection');
    await waitFor(async () => attacker(await target.stats()).appOpen === 0, 'its tunnel released');
  });

  test('slowloris: TLS handshakes never finished are closed at the handshake deadline', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const socks = Array.from({ length: 200 }, () => {
        const s = net.connect(target.port, '127.0.0.1');
        s.on('error', () => undefined);
        // the first bytes of a ClientHello record, then nothing
        s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
        return s;
      });
      const started = Date.now();
      await Promise.all(socks.map((s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())))).map((p) => Promise.race([p, sleep(6000)])));
      const closed = socks.filter((s) => s.closed).length;
      for (const s of socks) s.destroy();
      return { closed, ms: Date.now() - started };
    });
    assert.equal(result.closed, 200, 'every half-open handshake was closed');
    assert.ok(result.ms < 1500 + 3000, `closed after ${result.ms} ms`);
    await expectRejected(s0, logFrom, 'TIMEOUT', /TLS handshake not finished/);
  });

  test('slowloris after the handshake: no preface, or a partial frame, is closed at the PING deadline', async () => {
    const s0 = await target.stats();
    const logFrom = target.logs.length;
    const { result } = await duringAttack(async () => {
      const silent = await RawH2.connect(target.port, m.client, { preface: false });
      const partial = await RawH2.connect(target.port, m.client);
      // a HEADERS frame header announcing 100 bytes, and 5 of them
      partial.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, connectBlock(`127.0.0.1:${target.appPort}`, [['x-pad', 'p'.repeat(60)]])).subarray(0, 14));
      const closed = await Promise.all([silent.closedWithin(5000), partial.closedWithin(5000)]);
      silent.destroy();
      partial.destroy();
      return closed;
    });
    assert.deepEqual(result, [true, true]);
    await expectRejected(s0, logFrom, 'TIMEOUT', /PING/);
  });

  test('after every attack the server process is up, its sessions are gone and its memory is back in bounds', async () => {
    await waitFor(async () => (await target.stats()).sessions === 0, 'no session left open');
    const s = await target.stats();
    assert.equal(target.child.exitCode, null);
    assert.ok(s.rss < 400 * 1024 * 1024, `RSS ${(s.rss / 1048576).toFixed(0)} MiB`);
    await roundTrip();
  });
});

async function waitFor(check: () => Promise<boolean> | boolean, what: string, ms = 6000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting: ${what}`);
    await sleep(50);
  }
}
