// End to end: `ambit dashboard` on a local mesh, looked at in headless Chromium the way a user
// would: the graph shows the mesh, an edge comes alive with a rate over mTLS once traffic
// starts, and clicking a workload shows its open connections, its certificate and the denies.
// Screenshots go to test-artifacts/. Needs root (skipped otherwise) and Chromium (CI installs
// Debian's; a missing browser fails the test rather than skipping it).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { pino } from 'pino';
import { CLI, FIXTURES, ROOT, TestMesh, needsRoot } from './harness.js';
import { Dashboard } from '../../control/dashboard/server.js';
import { NodeReports } from '../../control/node-reports.js';
import { ZtunnelMetrics } from '../../ztunnel/metrics.js';
import { tcpLabels } from '../../ztunnel/connections.js';
import type { MeshSnapshot, Workload } from '../../shared/model/types.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves with the first stdout line matching `re`, or rejects when the process ends first. */
function waitForLine(p: ChildProcess, re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms; stdout: ${out} stderr: ${err}`)), timeoutMs);
    p.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    p.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const m = re.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    p.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before printing ${re}; stdout: ${out} stderr: ${err}`));
    });
  });
}

/** The text of the rows of a detail table (by its box id), one string per row. */
async function rows(page: Page, box: string): Promise<string[]> {
  return page.locator(`#${box} tbody tr`).allInnerTexts();
}

describe('ambit dashboard', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`dash${process.pid % 100000}`);
  const held: ChildProcess[] = [];
  let browser: Browser | null = null;
  let page: Page;
  let url = '';
  let pods: Awaited<ReturnType<TestMesh['status']>>['pods'] = [];

  const netnsOf = (key: string): string => pods.find((p) => `${p.namespace}/${p.name}` === key)!.netns;
  const inPod = (key: string, argv: string[]): ChildProcess => {
    const p = mesh.spawnIn(netnsOf(key), argv);
    held.push(p);
    return p;
  };
  const app = (name: string): string => join(FIXTURES, 'apps', name);

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM} (apt-get install chromium; CI installs it, or set CHROMIUM_PATH)`);
    await mkdir(ARTIFACTS, { recursive: true });
    await mesh.down();
    await mesh.up(join(FIXTURES, 'dashboard'));
    pods = (await mesh.status()).pods;
    const port = await freePort();
    const cli = spawn(process.execPath, [CLI, 'dashboard', '--port', String(port), ...mesh.flags()], { stdio: ['ignore', 'pipe', 'pipe'] });
    held.push(cli);
    url = (await waitForLine(cli, /dashboard of mesh "[^"]+": (http:\/\/\S+)/, 30_000))[1]!;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
    page.on('pageerror', (err) => console.log(`# page error: ${err.message}`));
  });

  after(async () => {
    for (const p of held) p.kill('SIGKILL');
    await browser?.close().catch(() => undefined);
    await mesh.down();
    await rm(mesh.stateDir, { recursive: true, force: true });
  });

  test('the page shows every workload and the service, and no traffic before there is any', async () => {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/, "the page is on this machine's localhost");
    await page.goto(url);
    for (const id of ['workload:shop/client', 'workload:shop/intruder', 'workload:shop/server-a', 'workload:shop/server-b', 'service:shop/server']) {
      await page.locator(`g.node[data-id="${id}"]`).waitFor({ timeout: 15_000 });
    }
    assert.equal(await page.locator('g.node[data-id="workload:shop/client"] text.meta').textContent(), 'shop · node-1');
    assert.match((await page.locator('#status').textContent()) ?? '', /2 ztunnels and 0 waypoints scraped/);
    assert.equal(await page.locator('g.edge.active').count(), 0);
  });

  test('when traffic starts, the client → service edge comes alive with a rate, over mTLS, and the service\'s edges to its endpoints too', async () => {
    inPod('shop/client', ['node', app('churn.mjs'), 'server.shop', '80', '100']);
    const edge = page.locator('g.edge[data-source="workload:shop/client"][data-target="service:shop/server"]');
    await page.waitForFunction(
      () => {
        const e = document.querySelector('g.edge[data-source="workload:shop/client"][data-target="service:shop/server"]');
        return e !== null && Number(e.getAttribute('data-cps')) > 0;
      },
      undefined,
      { timeout: 30_000, polling: 250 },
    );
    assert.equal(await edge.getAttribute('data-mtls'), 'mutual_tls');
    assert.match((await edge.getAttribute('class')) ?? '', /\bactive\b/);
    const cps = Number(await edge.getAttribute('data-cps'));
    assert.ok(cps > 0 && cps < 50, `about 10 connections a second, got ${cps}`);
    assert.match((await edge.locator('text.rate').textContent()) ?? '', /^[\d.]+ conn\/s$/);
    assert.match((await edge.locator('text.security').textContent()) ?? '', /^mTLS/);
    for (const server of ['server-a', 'server-b']) {
      await page.waitForFunction(
        (id) => Number(document.querySelector(`g.edge[data-source="service:shop/server"][data-target="${id}"]`)?.getAttribute('data-cps') ?? 0) > 0,
        `workload:shop/${server}`,
        { timeout: 30_000, polling: 250 },
      );
    }
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-graph.png') });
  });

  test('clicking the client shows its open connections and its certificate', async () => {
    // one long-lived connection, so the list has something that stays open
    const hold = inPod('shop/client', ['node', app('client.mjs'), 'hold', 'server.shop', '9003', '120']);
    assert.ok(hold.pid);
    await page.locator('g.node[data-id="workload:shop/client"]').click();
    await page.locator('#detail.open h2', { hasText: 'client' }).waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => [...document.querySelectorAll('#connections tbody tr')].some((r) => /:9003 \(shop\/server-[ab]\)/.test(r.textContent ?? '')), undefined, {
      timeout: 30_000,
      polling: 250,
    });
    const conns = await rows(page, 'connections');
    const held9003 = conns.find((r) => /:9003 \(shop\/server-[ab]\)/.test(r))!;
    assert.match(held9003, /^out\t10\.249\.1\.\d+:\d+ \(shop\/client\)/);
    assert.match(held9003, /server\.shop\.svc\.cluster\.local/);
    assert.match(held9003, /HBONE mTLS/);
    const certs = await rows(page, 'certificates');
    assert.equal(certs.length, 1, certs.join('\n'));
    assert.match(certs[0]!, /^spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client\t[0-9a-f]+\tavailable\t/);
    assert.match((await page.locator('#detail').innerText()) ?? '', /TRAFFIC OUT[\s\S]*shop\/server\t/i);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-workload.png') });
  });

  test('refused connections: an error rate on the intruder\'s edge, and the denies on the server it tried', async () => {
    const serverA = pods.find((p) => p.name === 'server-a')!;
    inPod('shop/intruder', ['node', app('churn.mjs'), serverA.ip, '9000', '300']);
    await page.locator('g.node[data-id="workload:shop/server-a"]').click();
    await page.waitForFunction(() => [...document.querySelectorAll('#denies tbody tr')].some((r) => (r.textContent ?? '').includes('deny-intruder')), undefined, { timeout: 30_000, polling: 250 });
    const denies = await rows(page, 'denies');
    assert.match(denies.find((r) => r.includes('deny-intruder'))!, /^\d\d:\d\d:\d\d( ×\d+)?\t10\.249\.1\.\d+ \(ns\/shop\/sa\/intruder\)\t10\.249\.2\.\d+:9000 \(shop\/server-a\)\tshop\/deny-intruder\t/);
    await page.waitForFunction(
      () => Number(document.querySelector('g.edge[data-source="workload:shop/intruder"][data-target="workload:shop/server-a"]')?.getAttribute('data-error-rate') || 0) > 0,
      undefined,
      { timeout: 30_000, polling: 250 },
    );
    const edge = page.locator('g.edge[data-source="workload:shop/intruder"][data-target="workload:shop/server-a"]');
    assert.match((await edge.getAttribute('class')) ?? '', /\bactive\b/, 'refused attempts count as traffic');
    assert.match((await edge.getAttribute('class')) ?? '', /\bfailing\b/);
    assert.match((await edge.locator('text.security').textContent()) ?? '', /% err$/);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-denies.png') });
  });

  test('a waypoint is drawn where traffic passes it (the page on a fixed mesh with a waypoint)', async () => {
    // the control plane's view is given (a fixed mesh, so the drawing is known), the page is the real one
    const pod = (name: string, ip: string, labels: Record<string, string> = { app: name }): Workload => ({ uid: `shop/${name}`, name, namespace: 'shop', serviceAccount: name, node: 'node-1', ip, labels, protocol: 'HBONE', ready: true });
    const snapshot = {
      workloads: [pod('client', '10.0.0.1'), pod('server', '10.0.0.2', { app: 'server' }), pod('wp-5d8f', '10.0.0.3', { 'gateway.networking.k8s.io/gateway-name': 'wp' })],
      services: [{ key: 'shop/server', name: 'server', namespace: 'shop', hostname: 'server.shop.svc.cluster.local', vip: '10.96.0.5', ports: [{ port: 80, targetPort: 80 }], endpoints: ['shop/server'], waypoint: 'shop/wp' }],
      waypoints: [{ key: 'shop/wp' }],
    } as unknown as MeshSnapshot; // `waypoint`, `waypoints`: newer than the model this was written against
    const metrics = new ZtunnelMetrics();
    const labels = tcpLabels(
      { id: 1, direction: 'outbound', src: { address: '10.0.0.1:1', workload: snapshot.workloads[0]! }, dst: { address: '10.0.0.2:80', workload: snapshot.workloads[1]! }, service: { hostname: 'server.shop.svc.cluster.local', namespace: 'shop', name: 'server' }, protocol: 'HBONE', mtls: true, started: 0 },
      '-',
    );
    const fake = new Dashboard(
      { current: () => ({ version: 1, snapshot }), connectedNodes: () => [{ node: 'node-1', ip: '127.0.0.1' }], reports: new NodeReports(), trustDomain: 'cluster.local' },
      pino({ level: 'silent' }),
      {
        minScrapeGapMs: 0,
        fetchMetrics: async () => {
          metrics.opened.inc(labels, 5);
          metrics.closed.inc(labels, 5);
          return metrics.registry.metrics();
        },
      },
    );
    const port = await fake.listen('127.0.0.1', 0);
    const p = await browser!.newPage({ viewport: { width: 1400, height: 500 } });
    try {
      await p.goto(`http://127.0.0.1:${port}/`);
      await p.waitForFunction(
        () => ['workload:shop/client>waypoint:shop/wp', 'waypoint:shop/wp>service:shop/server', 'service:shop/server>workload:shop/server'].every((k) => {
          const [a, b] = k.split('>');
          return Number(document.querySelector(`g.edge[data-source="${a}"][data-target="${b}"]`)?.getAttribute('data-cps') ?? 0) > 0;
        }),
        undefined,
        { timeout: 15_000, polling: 250 },
      );
      assert.equal(await p.locator('g.node[data-id="workload:shop/wp-5d8f"]').count(), 0, 'the waypoint pod is drawn as its waypoint');
      assert.equal(await p.locator('g.edge[data-source="workload:shop/client"][data-target="service:shop/server"]').count(), 0, 'no edge bypasses the waypoint');
      const x = async (id: string): Promise<number> => (await p.locator(`g.node[data-id="${id}"]`).boundingBox())!.x;
      const [client, waypoint, service] = [await x('workload:shop/client'), await x('waypoint:shop/wp'), await x('service:shop/server')];
      assert.ok(client < waypoint && waypoint < service, `the waypoint stands between client and service: ${client} < ${waypoint} < ${service}`);
      await p.screenshot({ path: join(ARTIFACTS, 'dashboard-waypoint.png') });
    } finally {
      await p.close();
      await fake.close();
    }
  });
});
