/**
 * The dashboard page: one HTML document with its style and script inline (the page must work
 * on machines without internet, and under a strict content security policy allowing no
 * other source). The script polls /api/graph, draws the mesh as SVG in columns (clients,
 * waypoints, services, the workloads behind them), and shows a workload's detail on click.
 */

const STYLE = String.raw`
:root { --ink: #1d2733; --muted: #66788a; --line: #d5dde5; --bg: #f5f7fa; --card: #fff;
  --mtls: #1f9d55; --plain: #d97706; --mixed: #b7950b; --err: #dc2626; --idle: #b8c2cc;
  --workload: #2563eb; --service: #7c3aed; --waypoint: #ea580c; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); height: 100vh; display: flex; flex-direction: column; }
header { display: flex; align-items: center; gap: 16px; padding: 8px 16px; background: var(--card); border-bottom: 1px solid var(--line); flex-wrap: wrap; }
header h1 { font-size: 16px; margin: 0; }
#status { color: var(--muted); }
#status.error { color: var(--err); font-weight: 600; }
.legend { display: flex; gap: 12px; margin-left: auto; color: var(--muted); align-items: center; }
.legend i { display: inline-block; width: 22px; height: 0; border-top: 3px solid; vertical-align: middle; margin-right: 4px; }
select { font: inherit; }
main { flex: 1; display: flex; min-height: 0; }
#graph { flex: 1; overflow: auto; position: relative; }
#empty { position: absolute; top: 40%; width: 100%; text-align: center; color: var(--muted); }
#detail { width: 540px; flex: none; border-left: 1px solid var(--line); background: var(--card); overflow: auto; padding: 12px 16px; display: none; }
#detail.open { display: block; }
#detail h2 { margin: 0 0 2px; font-size: 16px; }
#detail h3 { margin: 16px 0 4px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
#detail .sub { color: var(--muted); margin-bottom: 8px; }
#detail .close { float: right; border: none; background: none; font-size: 20px; cursor: pointer; color: var(--muted); }
#detail table { border-collapse: collapse; width: 100%; font-size: 12px; }
#detail th, #detail td { text-align: left; padding: 3px 6px 3px 0; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
#detail th { color: var(--muted); font-weight: 500; }
#detail .nowrap { white-space: nowrap; overflow-wrap: normal; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
#detail dt { color: var(--muted); }
#detail dd { margin: 0; overflow-wrap: anywhere; }
#detail .none { color: var(--muted); font-style: italic; }
.tag { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; color: #fff; white-space: nowrap; overflow-wrap: normal; }
.tag.mutual_tls { background: var(--mtls); } .tag.plaintext { background: var(--plain); } .tag.mixed { background: var(--mixed); }
.tag.failed, .tag.deny { background: var(--err); } .tag.available { background: var(--mtls); } .tag.pending { background: var(--muted); }
svg { display: block; }
svg text { font-size: 12px; fill: var(--ink); }
.node { cursor: pointer; }
.node rect, .node polygon, .node circle { fill: var(--card); stroke-width: 2; }
.node.kind-workload rect { stroke: var(--workload); }
.node.kind-workload.outside-mesh rect { stroke: var(--idle); stroke-dasharray: 4 3; }
.node.kind-workload.gone rect { stroke: var(--idle); }
.node.kind-service rect { stroke: var(--service); fill: #f5f0ff; }
.node.kind-waypoint polygon { stroke: var(--waypoint); fill: #fff4ec; }
.node.kind-outside rect { stroke: var(--idle); stroke-dasharray: 2 3; }
.node.selected rect, .node.selected polygon { stroke-width: 4; }
.node .title { font-weight: 600; }
.node .meta { fill: var(--muted); font-size: 11px; }
.edge path.line { fill: none; stroke-linecap: round; }
.edge.mtls-mutual_tls path.line { stroke: var(--mtls); }
.edge.mtls-plaintext path.line { stroke: var(--plain); }
.edge.mtls-mixed path.line { stroke: var(--mixed); }
.edge.idle path.line { stroke: var(--idle); }
.edge.active path.line { stroke-dasharray: 8 5; animation: flow .8s linear infinite; }
.edge.failing path.line { stroke: var(--err); }
@keyframes flow { to { stroke-dashoffset: -13; } }
.edge .label rect { fill: var(--bg); opacity: .92; }
.edge .label text { font-size: 11px; }
.edge .label .err { fill: var(--err); font-weight: 600; }
.member { stroke: var(--line); stroke-dasharray: 2 4; fill: none; }
`;

const SCRIPT = String.raw`
'use strict';
var REFRESH_MS = 2000;
var COL_W = 340, ROW_H = 72, BOX_W = 190, BOX_H = 46, PAD = 40;
var SVGNS = 'http://www.w3.org/2000/svg';
var state = { graph: null, selected: null, detail: null, metric: 'cps' };

function h(tag, attrs, kids) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  (kids || []).forEach(function (c) { e.append(c instanceof Node ? c : document.createTextNode(String(c))); });
  return e;
}
function s(tag, attrs, kids) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  (kids || []).forEach(function (c) { e.append(c instanceof Node ? c : document.createTextNode(String(c))); });
  return e;
}
function num(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
function bytes(v) {
  var units = ['B/s', 'kB/s', 'MB/s', 'GB/s'], i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return num(v) + ' ' + units[i];
}
function age(ms) {
  var sec = ms / 1000;
  if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + ' s';
  if (sec < 3600) return Math.floor(sec / 60) + ' min';
  if (sec < 86400) return (sec / 3600).toFixed(1) + ' h';
  return (sec / 86400).toFixed(1) + ' d';
}
function pct(v) { return v === null ? '–' : (v * 100).toFixed(v < 0.1 ? 1 : 0) + '%'; }
function mtlsText(m) { return m === 'mutual_tls' ? 'mTLS' : m === 'plaintext' ? 'plaintext' : 'mTLS + plaintext'; }
function active(e) { return e.connectionsPerSecond > 0 || e.bytesPerSecond > 0 || (e.requestsPerSecond || 0) > 0 || (e.errorRate || 0) > 0; }
function rateText(e) {
  if (state.metric === 'bps') return bytes(e.bytesPerSecond);
  if (state.metric === 'rps') return e.requestsPerSecond === null ? 'no L7' : num(e.requestsPerSecond) + ' req/s';
  return num(e.connectionsPerSecond) + ' conn/s';
}
function rateValue(e) {
  return state.metric === 'bps' ? e.bytesPerSecond / 10000 : state.metric === 'rps' ? (e.requestsPerSecond || 0) : e.connectionsPerSecond;
}
function nodeLabel(n) {
  if (n.kind === 'service') return (n.vip || 'no VIP') + ' · ' + (n.endpoints ? n.endpoints.length : 0) + ' endpoint' + (n.endpoints && n.endpoints.length === 1 ? '' : 's');
  if (n.kind === 'waypoint') return 'waypoint · ' + n.namespace;
  if (n.kind === 'outside') return 'unknown sources';
  if (n.gone) return n.namespace + ' · no longer in the mesh';
  return n.namespace + ' · ' + (n.node || '?') + (n.inMesh ? '' : ' · not captured');
}

/** Columns: clients | waypoints | services | workloads behind services. */
function layout(graph) {
  var behind = {};
  graph.nodes.forEach(function (n) { (n.endpoints || []).forEach(function (id) { behind[id] = true; }); });
  var cols = [[], [], [], []];
  graph.nodes.forEach(function (n) {
    var c = n.kind === 'waypoint' ? 1 : n.kind === 'service' ? 2 : n.kind === 'outside' ? 0 : behind[n.id] ? 3 : 0;
    cols[c].push(n);
  });
  cols = cols.filter(function (c) { return c.length > 0; });
  cols.forEach(function (c) {
    c.sort(function (a, b) { return a.kind === 'outside' ? -1 : b.kind === 'outside' ? 1 : (a.namespace + '/' + a.name).localeCompare(b.namespace + '/' + b.name); });
  });
  var rows = Math.max.apply(null, cols.map(function (c) { return c.length; }).concat([1]));
  var pos = {};
  cols.forEach(function (c, ci) {
    var top = PAD + (rows - c.length) * ROW_H / 2;
    c.forEach(function (n, ri) { pos[n.id] = { x: PAD + ci * COL_W + BOX_W / 2, y: top + ri * ROW_H + BOX_H / 2 }; });
  });
  return { pos: pos, width: PAD * 2 + Math.max(cols.length - 1, 0) * COL_W + BOX_W + 40, height: PAD * 2 + rows * ROW_H };
}

function curve(a, b) {
  var x1 = a.x + BOX_W / 2, x2 = b.x - BOX_W / 2, y1 = a.y, y2 = b.y;
  if (x2 <= x1) { x1 = a.x; x2 = b.x; y1 = a.y + BOX_H / 2; y2 = b.y + BOX_H / 2; }
  var dx = Math.max(Math.abs(x2 - x1) / 2, 60);
  var c1 = x2 > x1 ? x1 + dx : x1, c2 = x2 > x1 ? x2 - dx : x2;
  var cy1 = x2 > x1 ? y1 : y1 + 60, cy2 = x2 > x1 ? y2 : y2 + 60;
  var at = function (t) {
    var u = 1 - t;
    return { x: u * u * u * x1 + 3 * u * u * t * c1 + 3 * u * t * t * c2 + t * t * t * x2, y: u * u * u * y1 + 3 * u * u * t * cy1 + 3 * u * t * t * cy2 + t * t * t * y2 };
  };
  // the label sits in the gap just before the target, so an edge across several columns does not hide it under a box
  var mid = at(0.5);
  if (x2 > x1) {
    var want = x2 - (COL_W - BOX_W) / 2, best = 1e9;
    for (var i = 0; i <= 60; i++) { var p = at(i / 60); if (Math.abs(p.x - want) < best) { best = Math.abs(p.x - want); mid = p; } }
  }
  return { d: 'M' + x1 + ',' + y1 + ' C' + c1 + ',' + cy1 + ' ' + c2 + ',' + cy2 + ' ' + x2 + ',' + y2, mid: mid };
}

function drawNode(n, p) {
  var cls = 'node kind-' + n.kind + (n.kind === 'workload' && !n.inMesh && !n.gone ? ' outside-mesh' : '') + (n.gone ? ' gone' : '') + (state.selected && state.selected.id === n.id ? ' selected' : '');
  var g = s('g', { 'class': cls, 'data-id': n.id, 'data-kind': n.kind, transform: 'translate(' + (p.x - BOX_W / 2) + ',' + (p.y - BOX_H / 2) + ')' });
  if (n.kind === 'waypoint') {
    g.append(s('polygon', { points: '14,0 ' + (BOX_W - 14) + ',0 ' + BOX_W + ',' + BOX_H / 2 + ' ' + (BOX_W - 14) + ',' + BOX_H + ' 14,' + BOX_H + ' 0,' + BOX_H / 2 }));
  } else {
    g.append(s('rect', { width: BOX_W, height: BOX_H, rx: n.kind === 'service' ? 22 : 8 }));
  }
  g.append(s('title', {}, [n.kind + ' ' + (n.namespace ? n.namespace + '/' : '') + n.name + (n.ip ? ' (' + n.ip + ')' : '')]));
  g.append(s('text', { 'class': 'title', x: 12, y: 19 }, [n.name]));
  g.append(s('text', { 'class': 'meta', x: 12, y: 35 }, [nodeLabel(n)]));
  g.addEventListener('click', function () { select(n); });
  return g;
}

/** Moves a label down until it overlaps none placed before it (edges into one node share a gap). */
function place(placed, x, y, w, hgt) {
  var free = function (yy) { return placed.every(function (r) { return x + w / 2 <= r.x - r.w / 2 || x - w / 2 >= r.x + r.w / 2 || yy + hgt / 2 <= r.y - r.h / 2 || yy - hgt / 2 >= r.y + r.h / 2; }); };
  for (var i = 0; i < 12 && !free(y); i++) y += hgt + 2;
  placed.push({ x: x, y: y, w: w, h: hgt });
  return y;
}

function drawEdge(e, pos, placed) {
  var a = pos[e.source], b = pos[e.target];
  if (!a || !b) return null;
  var c = curve(a, b);
  var on = active(e);
  var failing = e.errorRate !== null && e.errorRate > 0;
  var g = s('g', { 'class': 'edge mtls-' + e.mtls + (on ? ' active' : ' idle') + (failing ? ' failing' : ''),
    'data-source': e.source, 'data-target': e.target, 'data-cps': String(e.connectionsPerSecond), 'data-bps': String(e.bytesPerSecond),
    'data-rps': e.requestsPerSecond === null ? '' : String(e.requestsPerSecond), 'data-mtls': e.mtls, 'data-error-rate': e.errorRate === null ? '' : String(e.errorRate) });
  var width = on ? Math.min(2 + Math.sqrt(rateValue(e)) * 1.5, 9) : 1.5;
  g.append(s('path', { 'class': 'line', d: c.d, 'stroke-width': width.toFixed(1), 'marker-end': 'url(#arrow-' + (failing ? 'err' : on ? e.mtls : 'idle') + ')' }));
  var line1 = on ? rateText(e) : 'idle · ' + e.totalConnections + ' conn';
  var line2 = mtlsText(e.mtls) + (e.open > 0 ? ' · ' + e.open + ' open' : '');
  var w = Math.max(line1.length, line2.length + (failing ? 10 : 0)) * 6 + 10;
  var label = s('g', { 'class': 'label', transform: 'translate(' + c.mid.x + ',' + place(placed, c.mid.x, c.mid.y, w, 30) + ')' });
  label.append(s('rect', { x: -w / 2, y: -15, width: w, height: 30, rx: 4 }));
  label.append(s('text', { 'class': 'rate', 'text-anchor': 'middle', y: -2 }, [line1]));
  var t2 = s('text', { 'class': 'security', 'text-anchor': 'middle', y: 11 }, [line2]);
  if (failing) t2.append(s('tspan', { 'class': 'err' }, [' · ' + pct(e.errorRate) + ' err']));
  label.append(t2);
  g.append(label);
  return g;
}

function marker(id, color) {
  var m = s('marker', { id: 'arrow-' + id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 10, markerHeight: 10, orient: 'auto', markerUnits: 'userSpaceOnUse' });
  m.append(s('path', { d: 'M0,0 L10,5 L0,10 z', fill: color }));
  return m;
}

function render() {
  var graph = state.graph;
  var svg = document.getElementById('svg');
  svg.replaceChildren();
  document.getElementById('empty').textContent = graph && graph.nodes.length === 0 ? 'The mesh has no workloads yet.' : '';
  if (!graph) return;
  var L = layout(graph);
  svg.setAttribute('width', L.width);
  svg.setAttribute('height', L.height);
  svg.setAttribute('viewBox', '0 0 ' + L.width + ' ' + L.height);
  var defs = s('defs');
  [['mutual_tls', '#1f9d55'], ['plaintext', '#d97706'], ['mixed', '#b7950b'], ['idle', '#b8c2cc'], ['err', '#dc2626']].forEach(function (m) { defs.append(marker(m[0], m[1])); });
  svg.append(defs);
  var has = {};
  graph.edges.forEach(function (e) { has[e.source + '>' + e.target] = true; });
  var members = s('g', { 'class': 'members' });
  graph.nodes.forEach(function (n) {
    (n.endpoints || []).forEach(function (id) {
      if (has[n.id + '>' + id] || !L.pos[id]) return;
      members.append(s('path', { 'class': 'member', d: curve(L.pos[n.id], L.pos[id]).d }));
    });
  });
  svg.append(members);
  var edges = s('g', { 'class': 'edges' });
  var placed = [];
  // busy edges first: their labels keep the best places
  graph.edges.slice().sort(function (a, b) { return Number(active(b)) - Number(active(a)); })
    .forEach(function (e) { var g = drawEdge(e, L.pos, placed); if (g) edges.append(g); });
  svg.append(edges);
  var nodes = s('g', { 'class': 'nodes' });
  graph.nodes.forEach(function (n) { nodes.append(drawNode(n, L.pos[n.id])); });
  svg.append(nodes);
}

function statusLine(graph) {
  var failing = graph.targets.filter(function (t) { return !t.ok; });
  var count = function (kind) { var n = graph.targets.filter(function (t) { return t.kind === kind; }).length; return n + ' ' + kind + (n === 1 ? '' : 's'); };
  var text = 'config v' + graph.version + ' · ' + count('ztunnel') + ' and ' + count('waypoint') + ' scraped' +
    (graph.windowSeconds > 0 ? ' · rates over ' + graph.windowSeconds.toFixed(0) + ' s' : ' · rates after the next scrape') +
    ' · ' + new Date(graph.time).toLocaleTimeString();
  if (failing.length) text += ' · no metrics from ' + failing.map(function (t) { return (t.kind === 'waypoint' ? 'waypoint ' + t.node + (t.url ? ' at ' + t.url : '') : t.node) + ' (' + t.error + ')'; }).join(', ');
  return text;
}

function setStatus(text, isError) {
  var el = document.getElementById('status');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

/** A table; the columns listed in nowrap (short values: times, ages, tags) never wrap. */
function table(head, rows, nowrap) {
  if (!rows.length) return h('p', { 'class': 'none' }, ['none']);
  var cell = function (kind, x, i) { return h(kind, nowrap && nowrap.indexOf(i) >= 0 ? { 'class': 'nowrap' } : {}, [x]); };
  return h('table', {}, [h('thead', {}, [h('tr', {}, head.map(function (x, i) { return cell('th', x, i); }))]),
    h('tbody', {}, rows.map(function (r) { return h('tr', {}, r.map(function (x, i) { return cell('td', x, i); })); }))]);
}
function shortIdentity(id) { return id.replace(/^spiffe:\/\/[^/]+\//, ''); }
function tag(text, cls) { return h('span', { 'class': 'tag ' + cls }, [text]); }
function nameOf(id) {
  var n = state.graph && state.graph.nodes.find(function (x) { return x.id === id; });
  return n ? (n.namespace ? n.namespace + '/' : '') + n.name : id;
}
var EDGE_HEAD = ['peer', 'conn/s', 'bytes/s', 'errors', 'security', 'open'];
var EDGE_NOWRAP = [1, 2, 3, 4, 5];
function edgeRows(edges, peerKey) {
  return edges.map(function (e) {
    return [nameOf(e[peerKey]), num(e.connectionsPerSecond), bytes(e.bytesPerSecond), pct(e.errorRate), tag(mtlsText(e.mtls), e.mtls), String(e.open)];
  });
}

function renderDetail() {
  var box = document.getElementById('detail');
  var sel = state.selected;
  if (!sel) { box.className = ''; box.replaceChildren(); return; }
  box.className = 'open';
  var kids = [h('button', { 'class': 'close', title: 'close' }, ['×'])];
  kids[0].addEventListener('click', function () { state.selected = null; state.detail = null; render(); renderDetail(); });
  var n = state.graph && state.graph.nodes.find(function (x) { return x.id === sel.id; });
  if (sel.kind !== 'workload') {
    kids.push(h('h2', {}, [sel.name]), h('div', { 'class': 'sub' }, [sel.kind + (sel.namespace ? ' in ' + sel.namespace : '')]));
    if (n && n.kind === 'service') {
      kids.push(h('dl', {}, [h('dt', {}, ['hostname']), h('dd', {}, [n.hostname || '–']), h('dt', {}, ['VIP']), h('dd', {}, [n.vip || '–']),
        h('dt', {}, ['waypoint']), h('dd', {}, [n.waypoint ? nameOf(n.waypoint) : 'none'])]));
      kids.push(h('h3', {}, ['Endpoints']), table(['workload'], (n.endpoints || []).map(function (id) { return [nameOf(id)]; })));
    }
    var edges = state.graph ? state.graph.edges : [];
    kids.push(h('h3', {}, ['Traffic in']), table(['from'].concat(EDGE_HEAD.slice(1)), edgeRows(edges.filter(function (e) { return e.target === sel.id; }), 'source'), EDGE_NOWRAP));
    kids.push(h('h3', {}, ['Traffic out']), table(['to'].concat(EDGE_HEAD.slice(1)), edgeRows(edges.filter(function (e) { return e.source === sel.id; }), 'target'), EDGE_NOWRAP));
    box.replaceChildren.apply(box, kids);
    return;
  }
  var d = state.detail;
  kids.push(h('h2', {}, [sel.name]), h('div', { 'class': 'sub' }, ['workload in ' + sel.namespace + (d ? ' · ' + d.node + ' · ' + d.ip : '')]));
  if (!d) { kids.push(h('p', { 'class': 'none' }, ['loading…'])); box.replaceChildren.apply(box, kids); return; }
  if (d.error) { kids.push(h('p', { 'class': 'none' }, [d.error])); box.replaceChildren.apply(box, kids); return; }
  kids.push(h('dl', {}, [
    h('dt', {}, ['identity']), h('dd', {}, [d.identity]),
    h('dt', {}, ['service account']), h('dd', {}, [d.serviceAccount]),
    h('dt', {}, ['mesh']), h('dd', {}, [d.inMesh ? 'captured by ztunnel (HBONE)' : 'not captured (plain TCP)']),
    h('dt', {}, ['services']), h('dd', {}, [d.services.join(', ') || 'none']),
    h('dt', {}, ['labels']), h('dd', {}, [Object.keys(d.labels).map(function (k) { return k + '=' + d.labels[k]; }).join(', ') || 'none']),
    h('dt', {}, ['reports']), h('dd', {}, [d.reports.map(function (r) { return r.node + ' ' + age(r.ageMs) + ' ago'; }).join(', ') || 'no ztunnel has reported yet'])]));
  kids.push(h('h3', {}, ['Traffic in']), table(['from'].concat(EDGE_HEAD.slice(1)), edgeRows(d.inbound, 'source'), EDGE_NOWRAP));
  kids.push(h('h3', {}, ['Traffic out']), table(['to'].concat(EDGE_HEAD.slice(1)), edgeRows(d.outbound, 'target'), EDGE_NOWRAP));
  var conns = h('div', { id: 'connections' }, [table(['', 'source', 'destination', 'service', 'protocol', 'age'], d.connections.map(function (c) {
    return [c.direction === 'outbound' ? 'out' : 'in', c.src + (c.srcWorkload ? ' (' + c.srcWorkload + ')' : ''), c.dst + (c.dstWorkload ? ' (' + c.dstWorkload + ')' : ''), c.service || '–',
      tag(c.mtls ? 'HBONE mTLS' : 'TCP', c.mtls ? 'mutual_tls' : 'plaintext'), age(c.ageMs)];
  }), [0, 4, 5])]);
  kids.push(h('h3', {}, ['Open connections (' + d.connections.length + ')']), conns);
  var certs = h('div', { id: 'certificates' }, [table(['identity', 'serial', 'state', 'valid until'], d.certificates.map(function (c) {
    return [c.identity, c.serial || '–', tag(c.state, c.state), c.state === 'available' ? new Date(c.notAfter).toLocaleString() + ' (in ' + age(Date.parse(c.notAfter) - Date.now()) + ')' : (c.error || '–')];
  }), [2])]);
  kids.push(h('h3', {}, ['Certificates']), certs);
  // the same refusal repeated (a client retrying) is one row with a count
  var groups = [], byKey = {};
  d.denies.forEach(function (x) {
    var src = x.src.replace(/:\d+$/, '');
    var key = [src, x.srcIdentity, x.dst, x.policy, x.reason].join('|');
    if (byKey[key]) { byKey[key].count++; return; }
    byKey[key] = { x: x, src: src, count: 1 };
    groups.push(byKey[key]);
  });
  var shown = groups.slice(0, 20);
  var denies = h('div', { id: 'denies' }, [table(['last', 'source', 'destination', 'policy', 'reason'], shown.map(function (g) {
    var x = g.x;
    return [new Date(x.time).toLocaleTimeString([], { hour12: false }) + (g.count > 1 ? ' ×' + g.count : ''), g.src + (x.srcIdentity ? ' (' + shortIdentity(x.srcIdentity) + ')' : ''),
      x.dst + (x.dstWorkload ? ' (' + x.dstWorkload + ')' : ''), x.policy || '–', x.reason];
  }), [0])]);
  if (groups.length > shown.length) denies.append(h('p', { 'class': 'none' }, ['and ' + (groups.length - shown.length) + ' more']));
  kids.push(h('h3', {}, ['Recent denies (' + d.denies.length + ')']), denies);
  box.replaceChildren.apply(box, kids);
}

function select(n) {
  state.selected = { id: n.id, kind: n.kind, name: n.name, namespace: n.namespace };
  state.detail = null;
  render();
  renderDetail();
  if (n.kind === 'workload') loadDetail();
}

function loadDetail() {
  var sel = state.selected;
  if (!sel || sel.kind !== 'workload') return Promise.resolve();
  return fetch('api/workload/' + encodeURIComponent(sel.namespace) + '/' + encodeURIComponent(sel.name), { cache: 'no-store' })
    .then(function (r) { return r.json().then(function (body) { return r.ok ? body : { error: body.error || ('HTTP ' + r.status) }; }); })
    .then(function (d) { if (state.selected === sel) { state.detail = d; renderDetail(); } })
    .catch(function (err) { if (state.selected === sel) { state.detail = { error: String(err) }; renderDetail(); } });
}

function refresh() {
  return fetch('api/graph', { cache: 'no-store' })
    .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
    .then(function (g) {
      state.graph = g;
      setStatus(statusLine(g), false);
      document.body.setAttribute('data-version', String(g.version));
      render();
      if (state.selected && state.selected.kind !== 'workload') renderDetail();
      return loadDetail();
    })
    .catch(function (err) { setStatus('control plane unreachable: ' + err.message + ' (showing the last graph)', true); });
}

function loop() { refresh().then(function () { setTimeout(loop, REFRESH_MS); }); }

document.getElementById('metric').addEventListener('change', function (ev) { state.metric = ev.target.value; render(); });
loop();
`;

/** The whole page (HTML with inline style and script). */
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ambit mesh</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>ambit mesh</h1>
  <span id="status">loading…</span>
  <span class="legend">
    <label>edges show <select id="metric"><option value="cps">connections/s</option><option value="bps">bytes/s</option><option value="rps">requests/s</option></select></label>
    <span><i style="border-color: var(--mtls)"></i>mTLS</span>
    <span><i style="border-color: var(--plain)"></i>plaintext</span>
    <span><i style="border-color: var(--err)"></i>errors</span>
    <span><i style="border-color: var(--idle)"></i>idle</span>
  </span>
</header>
<main>
  <div id="graph"><svg id="svg" xmlns="http://www.w3.org/2000/svg"></svg><p id="empty"></p></div>
  <aside id="detail"></aside>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/** The page's script alone (tests compile it to catch a syntax error before a browser does). */
export const dashboardScript = SCRIPT;
