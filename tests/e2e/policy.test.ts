// End to end: L4 authorization and PeerAuthentication enforced by ztunnel, and `ambit explain`.
// Needs root; cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';

describe('L4 policy in ztunnel', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`pol${process.pid % 100000}`);
  const dir = join(FIXTURES, 'policy');
  let st: Awaited<ReturnType<TestMesh['status']>>;
  const ip = (key: string) => st.pods.find((p) => `${p.namespace}/${p.name}` === key)!.ip;
  const ctl = async (...args: string[]) => {
    const r = await ambit(['local', ...args, ...mesh.flags()], 60_000);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  };
  const explain = async (from: string, to: string) => {
    const r = await ambit(['explain', '--from', from, '--to', to, '-o', 'json', ...mesh.flags()]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { allowed: boolean; summary: string; endpoints: { steps: { layer: string; policy?: string | null; detail: string }[] }[] };
  };
  const whoami = (from: string) => mesh.client(from, ['whoami', 'server.shop', '80']);
  // policies reach ztunnels asynchronously: poll until the expected outcome shows
  const eventually = async (from: string, ok: boolean) => {
    let r: Record<string, unknown> = {};
    for (let i = 0; i < 30; i++) {
      r = await whoami(from);
      if (Boolean(r.ok) === ok) return r;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.fail(`${from} → server.shop: expected ${ok ? 'allowed' : 'refused'}, got ${JSON.stringify(r)}`);
  };
  const denies = async () => {
    const n = st.nodes.find((x) => x.name === 'node-2')!;
    return JSON.parse((await httpInNetns(`/run/netns/${n.netns}`, { host: '127.0.0.1', port: 15000, path: '/denies' })).body) as { policy: string | null; reason: string; srcIdentity: string | null }[];
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(dir, 'mesh'));
    st = await mesh.status();
  });
  after(async () => {
    await mesh.down();
  });

  test('without policies everything in the mesh and from outside is allowed', async () => {
    for (const from of ['shop/client', 'shop/other']) assert.equal((await whoami(from)).ok, true);
    const r = await mesh.client('legacy/outsider', ['whoami', ip('shop/server'), '9000']);
    assert.equal(r.ok, true);
    const e = await explain('shop/other', 'shop/server:80');
    assert.equal(e.allowed, true);
    assert.match(e.endpoints[0]!.steps.at(-1)!.detail, /allowed: no ALLOW policy applies/);
  });

  test('a new DENY policy closes open connections it now denies, and refuses new ones naming the policy', async () => {
    const hold = mesh.client('shop/other', ['hold', 'server.shop', '9003', '20'], 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    await ctl('apply', '-f', join(dir, 'deny-other'));
    const held = await hold;
    assert.notEqual(held.ok, true, `the open connection was closed: ${JSON.stringify(held)}`);
    await eventually('shop/other', false);
    assert.equal((await whoami('shop/client')).ok, true, 'other identities still get in');
    const d = await denies();
    const mine = d.filter((x) => x.srcIdentity === 'spiffe://cluster.local/ns/shop/sa/other');
    assert.ok(mine.length >= 2, JSON.stringify(d));
    assert.ok(mine.every((x) => x.policy === 'shop/deny-other'));
    assert.match(mine.at(-1)!.reason, /denied by DENY policy shop\/deny-other rule 0/);
    const e = await explain('shop/other', 'shop/server:80');
    assert.equal(e.allowed, false);
    assert.match(e.summary, /denied at the destination ztunnel on node-2 by shop\/deny-other rule 0/);
    await ctl('delete', '-f', join(dir, 'deny-other'));
    await eventually('shop/other', true);
  });

  test('an ALLOW policy admits only what it matches (identity and port); plaintext from outside is denied', async () => {
    await ctl('apply', '-f', join(dir, 'allow-client'));
    await eventually('shop/other', false);
    assert.equal((await whoami('shop/client')).ok, true);
    const echo = await mesh.client('shop/client', ['send', 'server.shop', '9003', 'x']);
    assert.notEqual(echo.reply, 'x', 'port 9003 is not allowed');
    const outside = await mesh.client('legacy/outsider', ['whoami', ip('shop/server'), '9000']);
    assert.notEqual(outside.ok, true);
    const e = await explain('legacy/outsider', `shop/server:9000`);
    assert.equal(e.allowed, false);
    assert.match(e.endpoints[0]!.steps.at(-1)!.detail, /ALLOW policies apply \(shop\/allow-client\) but none matched/);
    await ctl('delete', '-f', join(dir, 'allow-client'));
    await eventually('shop/other', true);
  });

  test('PeerAuthentication STRICT refuses plaintext from outside the mesh, mTLS still works', async () => {
    await ctl('apply', '-f', join(dir, 'strict'));
    let outside: Record<string, unknown> = {};
    for (let i = 0; i < 30; i++) {
      outside = await mesh.client('legacy/outsider', ['whoami', ip('shop/server'), '9000']);
      if (!outside.ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.notEqual(outside.ok, true, 'plaintext refused');
    assert.equal((await whoami('shop/client')).ok, true);
    const e = await explain('legacy/outsider', 'shop/server:9000');
    assert.match(e.endpoints[0]!.steps.at(-1)!.detail, /STRICT/);
    assert.ok((await denies()).some((d) => /STRICT/.test(d.reason)));
  });
});
