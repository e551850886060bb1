/**
 * Request and response rewriting: header modifiers, redirects, URL rewrites. Pure: headers in,
 * headers out; a request's URL parts in, a Location or new path out.
 */

import { splitPath } from './match.js';
import type { HeaderModifier, PathMatch, PathModifier, RequestRedirect, UrlRewrite } from './types.js';

/** A mutable header map with lowercase names (node's IncomingHttpHeaders / OutgoingHttpHeaders shape). */
export type HeaderMap = Record<string, string | string[] | undefined>;

/**
 * Applies a modifier in Gateway API order: set (replaces), add (appends a value), remove.
 * Returns the same map, changed.
 */
export function applyHeaderModifier(headers: HeaderMap, m: HeaderModifier | null): HeaderMap {
  if (m === null) return headers;
  for (const { name, value } of m.set) headers[name] = value;
  for (const { name, value } of m.add) {
    const old = headers[name];
    if (old === undefined) headers[name] = value;
    else if (Array.isArray(old)) headers[name] = [...old, value];
    else headers[name] = name === 'set-cookie' ? [old, value] : `${old},${value}`;
  }
  for (const name of m.remove) delete headers[name];
  return headers;
}

/** What a redirect or rewrite needs to know about the request. */
export interface UrlParts {
  scheme: 'http' | 'https';
  /** Host header without port */
  host: string;
  /** the port the client addressed (Service port) */
  port: number;
  /** path and query */
  path: string;
}

function wellKnownPort(scheme: string): number {
  return scheme === 'https' ? 443 : 80;
}

/**
 * The path after ReplacePrefixMatch: the matched prefix is replaced, the rest kept, no "//"
 * created (`/foo/bar` with prefix `/foo` → `/` gives `/bar`). Without a prefix match the whole
 * path is replaced (Istio's rewrite of an exact or regex match).
 */
export function replacePrefix(path: string, matched: PathMatch | null, replacement: string): string {
  if (matched === null || (matched.type !== 'PathPrefix' && matched.type !== 'Prefix')) return replacement;
  let prefix = matched.value;
  if (matched.type === 'PathPrefix' && prefix.length > 1 && prefix.endsWith('/')) prefix = prefix.slice(0, -1);
  if (!path.startsWith(prefix)) return replacement;
  let rest = path.slice(prefix.length);
  if (matched.type === 'PathPrefix' && prefix === '/') rest = path.slice(1);
  if (rest === '') return replacement;
  if (matched.type === 'Prefix') return replacement + rest;
  // PathPrefix: rest starts with "/" (segment boundary) unless the prefix was "/"
  const base = replacement.endsWith('/') ? replacement.slice(0, -1) : replacement;
  return rest.startsWith('/') ? base + rest : `${base}/${rest}`;
}

/** A path (with query) changed by a path modifier; the query is kept. */
export function modifyPath(pathAndQuery: string, m: PathModifier | null, matched: PathMatch | null): string {
  if (m === null) return pathAndQuery;
  const { path, query } = splitPath(pathAndQuery);
  const p = m.type === 'ReplaceFullPath' ? m.value : replacePrefix(path, matched, m.value);
  return query === '' ? p : `${p}?${query}`;
}

/** The status and Location of a redirect (Gateway API rules for scheme, host, port and path). */
export function computeRedirect(r: RequestRedirect, req: UrlParts, matched: PathMatch | null): { status: number; location: string } {
  const scheme = r.scheme ?? req.scheme;
  const host = r.hostname ?? req.host;
  // An explicit port wins; a changed scheme takes its well-known port; else the request's port.
  const port = r.port ?? (r.scheme !== null ? wellKnownPort(scheme) : req.port);
  const authority = port === wellKnownPort(scheme) ? host : `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return { status: r.statusCode, location: `${scheme}://${authority}${modifyPath(req.path, r.path, matched)}` };
}

/** The path and Host after a URL rewrite; host null: unchanged. */
export function computeRewrite(r: UrlRewrite | null, path: string, matched: PathMatch | null): { path: string; host: string | null } {
  if (r === null) return { path, host: null };
  return { path: modifyPath(path, r.path, matched), host: r.hostname };
}
