/**
 * Route selection: which (route, rule, match) a request takes, with Gateway API precedence.
 * Pure: tables in, selection out. Regular expressions arrive as source strings and are
 * compiled once per config in a RegexCache the caller keeps.
 */

import type { NamedMatch, PathMatch, Route, RouteEntry, RouteMatch, RouteRule, RouteTable, ValueMatch } from './types.js';

/** What route matching looks at in a request. */
export interface RouteRequest {
  method: string;
  /** path and query as received (`/api/x?y=1`) */
  path: string;
  /** lowercase names; repeated headers joined with "," */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** the Service port the request was sent to */
  port: number;
  /** the caller's namespace (from its identity), for consumer routes and `sourceNamespace`; null: unknown */
  sourceNamespace: string | null;
}

/** The chosen route, rule and match. `match` is null when the rule has no matches. */
export interface RouteSelection {
  route: Route;
  rule: RouteRule;
  match: RouteMatch | null;
  entry: RouteEntry;
}

/** Compiled regular expressions by source, anchored to match whole values. Keep one per config. */
export class RegexCache {
  private readonly compiled = new Map<string, RegExp>();

  /** The whole-value RegExp for `source` (flags: `i` when `ignoreCase`). */
  get(source: string, ignoreCase = false): RegExp {
    const key = ignoreCase ? `i:${source}` : `s:${source}`;
    let re = this.compiled.get(key);
    if (re === undefined) {
      re = new RegExp(`^(?:${source})$`, ignoreCase ? 'i' : '');
      this.compiled.set(key, re);
    }
    return re;
  }
}

/** Why `source` is not a usable regular expression, or null when it is. */
export function checkRegex(source: string): string | null {
  try {
    new RegExp(`^(?:${source})$`);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Splits `/a/b?x=1` into path and query (without `?`). */
export function splitPath(pathAndQuery: string): { path: string; query: string } {
  const q = pathAndQuery.indexOf('?');
  return q < 0 ? { path: pathAndQuery, query: '' } : { path: pathAndQuery.slice(0, q), query: pathAndQuery.slice(q + 1) };
}

/**
 * RFC 3986 dot-segment removal (Envoy's `normalize_path`, Istio's default BASE): `/a/./b/../c`
 * becomes `/a/c`, so routes and policies see the path the backend will serve. The query is kept.
 */
export function normalizePath(pathAndQuery: string): string {
  const { path, query } = splitPath(pathAndQuery);
  if (path.indexOf('/.') < 0 && !path.startsWith('.')) return pathAndQuery;
  const out: string[] = [];
  const segments = path.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '.') {
      if (i === segments.length - 1) out.push('');
      continue;
    }
    if (s === '..') {
      if (out.length > 1) out.pop();
      if (i === segments.length - 1) out.push('');
      continue;
    }
    out.push(s);
  }
  let p = out.join('/');
  if (!p.startsWith('/')) p = `/${p}`;
  return query === '' && !pathAndQuery.endsWith('?') ? p : `${p}?${query}`;
}

function headerValue(headers: RouteRequest['headers'], name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(',') : v;
}

/** First value of a query parameter, as Gateway API asks; undefined when absent. */
function queryValue(query: string, name: string): string | undefined {
  if (query === '') return undefined;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    let key: string;
    try {
      key = decodeURIComponent(k.replace(/\+/g, ' '));
    } catch {
      key = k;
    }
    if (key !== name) continue;
    const raw = eq < 0 ? '' : part.slice(eq + 1);
    try {
      return decodeURIComponent(raw.replace(/\+/g, ' '));
    } catch {
      return raw;
    }
  }
  return undefined;
}

/** Whether `value` satisfies an Exact/Prefix/RegularExpression comparison. */
export function valueMatches(m: ValueMatch, value: string, regexes: RegexCache, ignoreCase = false): boolean {
  switch (m.type) {
    case 'Exact':
      return ignoreCase ? value.toLowerCase() === m.value.toLowerCase() : value === m.value;
    case 'Prefix':
      return ignoreCase ? value.toLowerCase().startsWith(m.value.toLowerCase()) : value.startsWith(m.value);
    case 'RegularExpression':
      return regexes.get(m.value, ignoreCase).test(value);
  }
}

/** Gateway API PathPrefix: whole segments (`/api` matches `/api`, `/api/`, `/api/x`, not `/apix`); a trailing `/` in the prefix is ignored. */
export function pathPrefixMatches(prefix: string, path: string): boolean {
  const p = prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (p === '/') return path.startsWith('/');
  if (!path.startsWith(p)) return false;
  return path.length === p.length || path.charCodeAt(p.length) === 47; // '/'
}

export function pathMatches(m: PathMatch, path: string, regexes: RegexCache, ignoreCase = false): boolean {
  switch (m.type) {
    case 'Exact':
      return ignoreCase ? path.toLowerCase() === m.value.toLowerCase() : path === m.value;
    case 'PathPrefix':
      return ignoreCase ? pathPrefixMatches(m.value.toLowerCase(), path.toLowerCase()) : pathPrefixMatches(m.value, path);
    case 'Prefix':
      return ignoreCase ? path.toLowerCase().startsWith(m.value.toLowerCase()) : path.startsWith(m.value);
    case 'RegularExpression':
      return regexes.get(m.value, ignoreCase).test(path);
  }
}

function namedMatches(m: NamedMatch, value: string | undefined, regexes: RegexCache): boolean {
  const hit = value !== undefined && valueMatches(m, value, regexes);
  return m.invert === true ? !hit : hit;
}

/** Whether one `matches[]` item matches the request (path already split from the query). */
export function matchApplies(m: RouteMatch, req: RouteRequest, path: string, query: string, regexes: RegexCache): boolean {
  if (m.port !== null && m.port !== req.port) return false;
  if (m.sourceNamespace !== null && m.sourceNamespace !== req.sourceNamespace) return false;
  if (m.method !== null && !valueMatches(m.method, req.method, regexes)) return false;
  if (m.path !== null && !pathMatches(m.path, path, regexes, m.ignoreCase)) return false;
  for (let i = 0; i < m.headers.length; i++) {
    const h = m.headers[i]!;
    if (!namedMatches(h, headerValue(req.headers, h.name), regexes)) return false;
  }
  for (let i = 0; i < m.queryParams.length; i++) {
    const q = m.queryParams[i]!;
    if (!namedMatches(q, queryValue(query, q.name), regexes)) return false;
  }
  return true;
}

function routeApplies(r: Route, req: RouteRequest): boolean {
  if (r.port !== null && r.port !== req.port) return false;
  return r.consumerNamespace === null || r.consumerNamespace === req.sourceNamespace;
}

/** The first entry of the table (precedence order) that matches; null: no route (404). */
export function selectRoute(table: RouteTable, req: RouteRequest, regexes: RegexCache = new RegexCache()): RouteSelection | null {
  const { path, query } = splitPath(req.path);
  const entries = table.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const route = table.routes[e.route]!;
    if (!routeApplies(route, req)) continue;
    const rule = route.rules[e.rule]!;
    if (e.match === null) return { route, rule, match: null, entry: e };
    const m = rule.matches[e.match]!;
    if (matchApplies(m, req, path, query, regexes)) return { route, rule, match: m, entry: e };
  }
  return null;
}

/** Whether any of `matches` applies (empty: always), for VirtualService overlays. */
export function anyMatchApplies(matches: readonly RouteMatch[], req: RouteRequest, regexes: RegexCache): boolean {
  if (matches.length === 0) return true;
  const { path, query } = splitPath(req.path);
  for (const m of matches) if (matchApplies(m, req, path, query, regexes)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Precedence

/** Istio's rank of a path match: Exact > prefix > regular expression; no path counts as prefix "/". */
function pathRank(m: RouteMatch | null): number {
  const p = m?.path;
  if (!p) return 2;
  switch (p.type) {
    case 'Exact':
      return 3;
    case 'PathPrefix':
    case 'Prefix':
      return 2;
    case 'RegularExpression':
      return 1;
  }
}

function pathLength(m: RouteMatch | null): number {
  const p = m?.path;
  if (!p) return 1;
  if (p.type === 'PathPrefix' && p.value.length > 1 && p.value.endsWith('/')) return p.value.length - 1;
  return p.value.length;
}

/**
 * Gateway API precedence between two entries of Gateway API routes: exact path, longer
 * prefix (then regex, as Istio ranks it), a method match, more header matches, more query
 * matches, older route, route key alphabetically, rule order, match order. Negative: `a` first.
 */
export function comparePrecedence(a: { route: Route; rule: number; match: RouteMatch | null; matchIndex: number | null }, b: typeof a): number {
  const ra = pathRank(a.match);
  const rb = pathRank(b.match);
  if (ra !== rb) return rb - ra;
  const la = pathLength(a.match);
  const lb = pathLength(b.match);
  if (la !== lb) return lb - la;
  const ma = a.match?.method ? 1 : 0;
  const mb = b.match?.method ? 1 : 0;
  if (ma !== mb) return mb - ma;
  const ha = a.match?.headers.length ?? 0;
  const hb = b.match?.headers.length ?? 0;
  if (ha !== hb) return hb - ha;
  const qa = a.match?.queryParams.length ?? 0;
  const qb = b.match?.queryParams.length ?? 0;
  if (qa !== qb) return qb - qa;
  const ca = a.route.created;
  const cb = b.route.created;
  if (ca !== cb) {
    if (ca === null) return 1;
    if (cb === null) return -1;
    return ca - cb;
  }
  if (a.route.key !== b.route.key) return a.route.key < b.route.key ? -1 : 1;
  if (a.rule !== b.rule) return a.rule - b.rule;
  return (a.matchIndex ?? 0) - (b.matchIndex ?? 0);
}

/**
 * The entries of a table in the order requests try them. Gateway API routes by precedence;
 * VirtualService routes in declared order (oldest VirtualService first), after them.
 */
export function orderEntries(routes: readonly Route[]): RouteEntry[] {
  type Item = { route: Route; routeIndex: number; rule: number; match: RouteMatch | null; matchIndex: number | null };
  const gateway: Item[] = [];
  const istio: Item[] = [];
  routes.forEach((route, routeIndex) => {
    route.rules.forEach((rule, r) => {
      const list = route.kind === 'VirtualService' ? istio : gateway;
      if (rule.matches.length === 0) list.push({ route, routeIndex, rule: r, match: null, matchIndex: null });
      else rule.matches.forEach((m, k) => list.push({ route, routeIndex, rule: r, match: m, matchIndex: k }));
    });
  });
  gateway.sort(comparePrecedence);
  istio.sort((a, b) => {
    const ca = a.route.created;
    const cb = b.route.created;
    if (ca !== cb) {
      if (ca === null) return 1;
      if (cb === null) return -1;
      return ca - cb;
    }
    if (a.route.key !== b.route.key) return a.route.key < b.route.key ? -1 : 1;
    if (a.rule !== b.rule) return a.rule - b.rule;
    return (a.matchIndex ?? 0) - (b.matchIndex ?? 0);
  });
  return [...gateway, ...istio].map((i) => ({ route: i.routeIndex, rule: i.rule, match: i.matchIndex }));
}
