// ztunnel's token for the control plane is read for every call, not once: in a cluster the
// kubelet rotates the projected ServiceAccount token under the running ztunnel. Against a
// control plane stand-in (the real gRPC service over TLS) that checks the bearer token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { CONTROL_SERVER_NAME, controlService, type SignRequest, type SignResponse, type WatchRequest } from '../../../shared/control/protocol.js';
import type { MeshUpdate } from '../../../shared/model/types.js';
import { ControlLink, TokenFile, type TokenSource } from '../../../ztunnel/control-client.js';

/** The control plane stand-in: accepts the tokens in `accepted`, records every token it is shown. */
class TokenCheckingServer {
  readonly accepted = new Set<string>();
  readonly seen: Array<{ method: 'watch' | 'sign'; token: string }> = [];
  private readonly streams = new Set<grpc.ServerWritableStream<WatchRequest, MeshUpdate>>();
  private server: grpc.Server | null = null;
  port = 0;
  rootsPem = '';

  private token(md: grpc.Metadata): string {
    const h = md.get('authorization')[0];
    return typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7) : '';
  }

  async start(): Promise<void> {
    const ca = await CertificateAuthority.generate();
    const serving = await ca.issueServing({ dnsNames: [CONTROL_SERVER_NAME] });
    this.rootsPem = ca.rootsPem().join('\n');
    const server = new grpc.Server();
    server.addService(controlService, {
      watch: (call: grpc.ServerWritableStream<WatchRequest, MeshUpdate>) => {
        const token = this.token(call.metadata);
        this.seen.push({ method: 'watch', token });
        if (!this.accepted.has(token)) {
          call.emit('error', Object.assign(new Error('unknown or missing node token'), { code: grpc.status.UNAUTHENTICATED }));
          return;
        }
        this.streams.add(call);
        call.on('cancelled', () => this.streams.delete(call));
        call.write({ type: 'snapshot', version: 1, workloads: [], services: [], removedWorkloads: [], removedServices: [] });
      },
      sign: (call: grpc.ServerUnaryCall<SignRequest, SignResponse>, cb: grpc.sendUnaryData<SignResponse>) => {
        const token = this.token(call.metadata);
        this.seen.push({ method: 'sign', token });
        if (!this.accepted.has(token)) cb({ code: grpc.status.UNAUTHENTICATED, details: 'unknown or missing node token' });
        else cb(null, { certPem: `issued with ${token}`, chainPem: [], rootsPem: [] });
      },
    });
    const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], false);
    this.port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? rej(err) : res(p))));
    this.server = server;
  }

  /** Ends every open config stream, as a restarting control plane does. */
  endStreams(): void {
    for (const s of this.streams) s.end();
    this.streams.clear();
  }

  tokens(method: 'watch' | 'sign'): string[] {
    return this.seen.filter((s) => s.method === method).map((s) => s.token);
  }

  stop(): void {
    this.server?.forceShutdown();
  }
}

function logLines(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('ztunnel control link: the token file is read for every call', () => {
  const server = new TokenCheckingServer();
  let dir: string;
  let n = 0;
  const links: ControlLink[] = [];
  const link = (token: string | TokenSource, log = logLines().log): ControlLink => {
    const l = new ControlLink(`127.0.0.1:${server.port}`, server.rootsPem, 'node-1', token, log);
    links.push(l);
    return l;
  };
  const tokenPath = (): string => join(dir, `token-${++n}`);

  before(async () => {
    await server.start();
    dir = await mkdtemp(join(tmpdir(), 'ambit-token-'));
  });
  after(async () => {
    for (const l of links) l.stop();
    server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a token file changed between calls: the next call sends the new token', async () => {
    const path = tokenPath();
    server.accepted.add('token-one-aaaaaaaaaaaa').add('token-two-bbbbbbbbbbbb');
    await writeFile(path, 'token-one-aaaaaaaaaaaa\n');
    const l = link(new TokenFile(path));
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with token-one-aaaaaaaaaaaa');
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with token-one-aaaaaaaaaaaa');
    await writeFile(path, 'token-two-bbbbbbbbbbbb\n');
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with token-two-bbbbbbbbbbbb');
  });

  test('a token rotated the kubelet way (a new directory behind a swapped symlink) is picked up', async () => {
    // the projected volume: token -> ..data/token, ..data -> ..<timestamp>/
    const vol = join(dir, `projected-${++n}`);
    await mkdir(join(vol, '..2026_01_01_first'), { recursive: true });
    await writeFile(join(vol, '..2026_01_01_first', 'token'), 'rotated-first-cccccccc');
    await symlink('..2026_01_01_first', join(vol, '..data'));
    await symlink(join('..data', 'token'), join(vol, 'token'));
    server.accepted.add('rotated-first-cccccccc').add('rotated-second-dddddddd');
    const l = link(new TokenFile(join(vol, 'token')));
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with rotated-first-cccccccc');
    await mkdir(join(vol, '..2026_01_01_second'));
    await writeFile(join(vol, '..2026_01_01_second', 'token'), 'rotated-second-dddddddd');
    await symlink('..2026_01_01_second', join(vol, '..data_tmp'));
    await rename(join(vol, '..data_tmp'), join(vol, '..data'));
    await rm(join(vol, '..2026_01_01_first'), { recursive: true });
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with rotated-second-dddddddd');
  });

  test('the config stream reconnects with the rotated token', async () => {
    const path = tokenPath();
    server.accepted.add('stream-old-eeeeeeeeeeee');
    await writeFile(path, 'stream-old-eeeeeeeeeeee');
    const l = link(new TokenFile(path));
    let connects = 0;
    l.on('connected', () => connects++);
    l.start();
    await eventually(() => connects === 1, 'the first connection');
    // the kubelet rotates the token; the control plane restarts and no longer takes the old one
    await writeFile(path, 'stream-new-ffffffffffff');
    server.accepted.delete('stream-old-eeeeeeeeeeee');
    server.accepted.add('stream-new-ffffffffffff');
    server.endStreams();
    await eventually(() => connects === 2, 'the reconnection');
    assert.equal(server.tokens('watch').filter((t) => t.startsWith('stream-')).at(-1), 'stream-new-ffffffffffff');
  });

  test('a refused token is read again even when the file looks unchanged', async () => {
    // a token source whose cache is stale: only a fresh read has the token the control plane takes
    const reads: boolean[] = [];
    const source: TokenSource = {
      read: (fresh = false) => {
        reads.push(fresh);
        return Promise.resolve(fresh ? 'fresh-token-gggggggggg' : 'stale-token-hhhhhhhhhh');
      },
    };
    server.accepted.add('fresh-token-gggggggggg');
    const l = link(source);
    let connected = false;
    l.on('connected', () => (connected = true));
    l.start();
    await eventually(() => connected, 'the connection with the fresh token');
    assert.deepEqual(reads, [false, true]);
    assert.deepEqual(server.tokens('watch').filter((t) => t.endsWith('gggg') || t.endsWith('hhhh')), ['stale-token-hhhhhhhhhh', 'fresh-token-gggggggggg']);
    // and signing: refused with the cached token, accepted with the fresh one, in one call
    assert.equal((await l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr')).certPem, 'issued with fresh-token-gggggggggg');
  });

  test('a missing or empty token file: a clear error, the last config kept, retries until the token is there', async () => {
    const path = tokenPath();
    server.accepted.add('late-token-iiiiiiiiiiii');
    await writeFile(path, 'late-token-iiiiiiiiiiii');
    const { log, lines } = logLines();
    const l = link(new TokenFile(path), log);
    const events: string[] = [];
    l.on('connected', () => events.push('connected'));
    l.on('disconnected', () => events.push('disconnected'));
    l.on('update', () => events.push('update'));
    l.start();
    await eventually(() => events.includes('update'), 'the first config');

    await unlink(path);
    server.endStreams();
    await eventually(() => lines.some((x) => x.msg === 'no token for the control plane' && x.err === `token file ${path} does not exist`), 'the missing-file error');
    await assert.rejects(l.sign('spiffe://cluster.local/ns/a/sa/b', 'csr'), { message: `certificate for spiffe://cluster.local/ns/a/sa/b: token file ${path} does not exist` });

    await writeFile(path, ' \n');
    await eventually(() => lines.some((x) => x.err === `token file ${path} is empty`), 'the empty-file error');
    assert.ok(lines.some((x) => x.msg === 'control plane stream lost; serving the last known config' && typeof x.retryInMs === 'number'));
    // nothing was taken back from what the ztunnel serves: only a disconnect, no empty update
    assert.deepEqual(events, ['connected', 'update', 'disconnected']);

    await writeFile(path, 'late-token-iiiiiiiiiiii\n');
    await eventually(() => events.filter((e) => e === 'connected').length === 2, 'the reconnection once the token is back', 20_000);
  });
});
