/**
 * The dashboard's HTTP server, in the control plane: one self-contained page and its JSON API.
 *   GET /                         the page
 *   GET /api/graph                the mesh graph with rates (scrapes every ztunnel's and waypoint's metrics)
 *   GET /api/workload/NS/NAME     a workload: traffic, open connections, certificate, recent denies
 * It listens on localhost by default: it shows who talks to whom, for operators only.
 */
import http from 'node:http';
import { isIP } from 'node:net';
import type { MeshSnapshot } from '../../shared/model/types.js';
import type { Logger } from '../../shared/telemetry/log.js';
import { parsePrometheusText } from '../../shared/telemetry/prometheus-text.js';
import type { NodeReports } from '../node-reports.js';
import { buildGraph, GRAPH_COUNTERS, type MeshGraph } from './graph.js';
import { workloadDetail } from './detail.js';
import { ScrapeHistory, type SeriesRate } from './rates.js';
import { dashboardPage } from './page.js';

/** What the dashboard reads from the control plane. */
export interface DashboardSources {
  current(): { version: number; snapshot: MeshSnapshot };
  /** nodes whose ztunnel is connected, and the address it connected from */
  connectedNodes(): { node: string; ip: string | null }[];
  /** waypoint pods that are connected (namespace/name of their waypoint), and the address each connected from */
  connectedWaypoints?(): { waypoint: string; ip: string | null }[];
  reports: NodeReports;
  trustDomain: string;
}

export interface DashboardOptions {
  /** port of the ztunnels' and waypoints' Prometheus listeners */
  metricsPort?: number;
  /** rates span this window */
  windowMs?: number;
  scrapeTimeoutMs?: number;
  /** fetches one target's metrics text (tests replace it) */
  fetchMetrics?: (url: string, timeoutMs: number) => Promise<string>;
  /** scrapes no more often than this, however many pages ask */
  minScrapeGapMs?: number;
  /** ms since the epoch (tests replace it) */
  clock?: () => number;
}

/**
 * How a scrape of one target went: a node's ztunnel (its TCP metrics), or a waypoint pod (its
 * request metrics: the requests per second on the edges its traffic takes).
 */
export interface ScrapeStatus {
  kind: 'ztunnel' | 'waypoint';
  /** the ztunnel's node; for a waypoint pod, namespace/name of its waypoint */
  node: string;
  url: string | null;
  ok: boolean;
  error?: string;
}

export type GraphResponse = MeshGraph & { time: string; targets: ScrapeStatus[] };

interface Scraped {
  /** the target's key in the scrape history */
  key: string;
  status: ScrapeStatus;
}

/** GET over plain HTTP with a deadline; rejects on a status other than 200. */
export function fetchText(url: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        // a node's metrics are a few hundred kB at most; more is not a metrics page
        if (size > 16 * 1024 * 1024) req.destroy(new Error('response too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
        else resolve(Buffer.concat(chunks).toString('utf8'));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A Host header the page may be asked under: an IP address or localhost (a DNS name pointing here is how rebinding attacks read local pages). */
export function allowedHost(host: string | undefined): boolean {
  if (!host) return false;
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  return name === 'localhost' || isIP(name) !== 0;
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

export class Dashboard {
  private readonly history: ScrapeHistory;
  private readonly metricsPort: number;
  private readonly scrapeTimeoutMs: number;
  private readonly fetchMetrics: (url: string, timeoutMs: number) => Promise<string>;
  private readonly minScrapeGapMs: number;
  private readonly clock: () => number;
  private lastScrape = 0;
  private scraping: Promise<Scraped[]> | null = null;
  /** the last scrape: each target's status, and its key in the history */
  private scraped: Scraped[] = [];
  private lastGraph: MeshGraph | null = null;
  private server: http.Server | null = null;

  constructor(private readonly sources: DashboardSources, private readonly log: Logger, opts: DashboardOptions = {}) {
    this.history = new ScrapeHistory(opts.windowMs ?? 10_000);
    this.metricsPort = opts.metricsPort ?? 15020;
    this.scrapeTimeoutMs = opts.scrapeTimeoutMs ?? 2000;
    this.fetchMetrics = opts.fetchMetrics ?? fetchText;
    this.minScrapeGapMs = opts.minScrapeGapMs ?? 1000;
    this.clock = opts.clock ?? Date.now;
  }

  private targetUrl(ip: string | null): string | null {
    if (!ip) return null;
    return `http://${ip.includes(':') ? `[${ip}]` : ip}:${this.metricsPort}/metrics`;
  }

  /** Scrapes one target into the history under `key`. */
  private async scrapeOne(kind: ScrapeStatus['kind'], key: string, node: string, ip: string | null): Promise<ScrapeStatus> {
    const url = this.targetUrl(ip);
    if (!url) return { kind, node, url, ok: false, error: `address of its ${kind} unknown` };
    try {
      const text = await this.fetchMetrics(url, this.scrapeTimeoutMs);
      this.history.add(key, { time: this.clock(), samples: parsePrometheusText(text).filter((s) => GRAPH_COUNTERS.has(s.name) || s.name === 'process_start_time_seconds') });
      return { kind, node, url, ok: true };
    } catch (err) {
      this.log.debug({ [kind]: node, url, err: (err as Error).message }, 'metrics scrape failed');
      return { kind, node, url, ok: false, error: (err as Error).message };
    }
  }

  /**
   * Scrapes every connected ztunnel and waypoint pod (at most once a second, shared by
   * concurrent callers). A waypoint may run several pods: each is a target of its own.
   */
  private scrape(): Promise<Scraped[]> {
    if (this.scraping) return this.scraping;
    if (this.clock() - this.lastScrape < this.minScrapeGapMs) return Promise.resolve(this.scraped);
    this.scraping = (async () => {
      const targets = [
        ...this.sources.connectedNodes().map(({ node, ip }) => ({ kind: 'ztunnel' as const, key: `ztunnel ${node}`, node, ip })),
        ...(this.sources.connectedWaypoints?.() ?? []).map(({ waypoint, ip }) => ({ kind: 'waypoint' as const, key: `waypoint ${waypoint} ${ip}`, node: waypoint, ip })),
      ];
      const scraped = await Promise.all(targets.map(async (t) => ({ key: t.key, status: await this.scrapeOne(t.kind, t.key, t.node, t.ip) })));
      this.history.retain(new Set(targets.map((t) => t.key)));
      this.lastScrape = this.clock();
      this.scraped = scraped;
      return scraped;
    })().finally(() => {
      this.scraping = null;
    });
    return this.scraping;
  }

  /** The graph now: a fresh scrape, rates over the window. */
  async graph(): Promise<GraphResponse> {
    const scraped = await this.scrape();
    const rates: SeriesRate[] = [];
    let seconds = 0;
    for (const { key, status } of scraped) {
      if (!status.ok) continue;
      const r = this.history.rates(key, GRAPH_COUNTERS);
      rates.push(...r.rates);
      seconds = Math.max(seconds, r.seconds);
    }
    const { version, snapshot } = this.sources.current();
    const graph = buildGraph(snapshot, version, rates, seconds, this.sources.trustDomain);
    this.lastGraph = graph;
    return { ...graph, time: new Date(this.clock()).toISOString(), targets: scraped.map((t) => t.status) };
  }

  /** Answers one request. */
  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: unknown, type = 'application/json; charset=utf-8'): void => {
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    if (!allowedHost(req.headers.host)) return send(403, { error: 'the dashboard answers only to an IP address or localhost in the Host header' });
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { error: 'the dashboard is read-only: use GET' });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const now = this.clock();
    if (url.pathname === '/' || url.pathname === '/index.html') return send(200, dashboardPage(), 'text/html; charset=utf-8');
    if (url.pathname === '/api/graph') {
      this.sources.reports.watched(now);
      return send(200, await this.graph());
    }
    const m = /^\/api\/workload\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (m) {
      this.sources.reports.watched(now);
      let ns: string;
      let name: string;
      try {
        ns = decodeURIComponent(m[1]!);
        name = decodeURIComponent(m[2]!);
      } catch {
        return send(400, { error: 'bad escape in the workload name' });
      }
      const { snapshot } = this.sources.current();
      const detail = workloadDetail(snapshot, this.lastGraph, this.sources.reports.all(), ns, name, this.sources.trustDomain, now);
      if (!detail) return send(404, { error: `no workload ${ns}/${name} in the mesh` });
      return send(200, detail);
    }
    return send(404, { error: `no such page ${url.pathname}` });
  }

  /** Starts listening; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.log.warn({ err: err.message, path: req.url }, 'dashboard request failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: err.message }));
      });
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`dashboard ${host}:${port}: ${err.message}`)));
      server.listen(port, host, () => {
        const a = server.address();
        resolve(typeof a === 'object' && a ? a.port : port);
      });
    });
  }

  close(): Promise<void> {
    const s = this.server;
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((resolve) => s.close(() => resolve()));
  }
}
