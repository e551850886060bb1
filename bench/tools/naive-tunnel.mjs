// The naive Node HTTP/2 CONNECT tunnel: the L4 bench's fourth path, a first prototype of what the
// ztunnel pair does, written the way a first prototype would be. It stands for the "naive Node
// HTTP/2 CONNECT tunnel" figure of /work/shared/BENCH.md, so that ambit is compared with it side
// by side on the same path instead of with a number typed into a document.
//
// NAIVE ON PURPOSE. Do not tune it; that is what it is for:
//   - node:http2 with its default settings: no window tuning (64 KiB stream and session windows,
//     no setLocalWindowSize), default maxSessionMemory, default frame size, no custom settings;
//   - no custom bridging: `stream.pipe(socket)` and `socket.pipe(stream)`, nothing else (no
//     corking, batching or write coalescing, no setNoDelay on the plain TCP sockets);
//   - default V8 and Node flags (the runner starts it with plain `node`).
// The only things beyond the bare pipes are what it needs to work at all with the bench's tools:
// half-close (allowHalfOpen, so the sink's answer after the sender's FIN gets back), destroying the
// other side when one side fails (so a reset connection does not leak), and counters.
//
//   --mode client  (node-1): listens on --listen HOST and, for each PORT=TARGET of --forward, on
//                  HOST:PORT; per accepted TCP connection opens one CONNECT stream
//                  (:authority = TARGET, the server's address) on ONE shared TLS 1.3 + ALPN h2
//                  connection to --peer HOST:PORT, presenting --cert/--key and verifying the peer
//                  against --ca and --servername; pipes both ways.
//   --mode server  (node-2): TLS 1.3 + h2 on --listen HOST:--port with --cert/--key; requires a
//                  client certificate and verifies it against --ca; per CONNECT stream connects to
//                  its :authority and pipes both ways.
// --stats PATH: a Unix socket that answers one JSON line of counters to every connection (the
// runner reads it before and after its probe, as it reads HAProxy's stats socket).
// Runs until SIGTERM/SIGINT. Prints one line when listening; errors of single connections are
// counted, not printed.
import { readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { mode: '', listen: '', port: 0, forward: '', peer: '', ca: '', cert: '', key: '', servername: '', stats: '' });
  if (o.mode !== 'client' && o.mode !== 'server') throw new Error('--mode is client or server');
  if (!o.listen || !o.ca || !o.cert || !o.key || !o.stats) throw new Error('--listen, --ca, --cert, --key and --stats are required');
  if (o.mode === 'server' && !o.port) throw new Error('--mode server needs --port');
  if (o.mode === 'client' && (!o.forward || !o.peer || !o.servername)) throw new Error('--mode client needs --forward, --peer and --servername');
} catch (e) {
  usage('naive-tunnel', e.message);
}

const ca = readFileSync(o.ca);
const cert = readFileSync(o.cert);
const key = readFileSync(o.key);
const stats = { mode: o.mode, pid: process.pid, accepted: 0, streams: 0, upstreamConnected: 0, errors: 0, sessions: 0, sessionErrors: 0, tlsRejected: 0, open: 0 };

function die(message) {
  process.stderr.write(`naive-tunnel (${o.mode}): ${message}\n`);
  process.exit(1);
}

/** Ties a TCP socket and an HTTP/2 stream together: pipes both ways, and a failure on one side destroys the other. */
function tie(socket, stream) {
  stats.open++;
  let failed = false;
  const fail = () => {
    if (failed) return;
    failed = true;
    stats.errors++;
    socket.destroy();
    // RST_STREAM(CANCEL): the other side sees an aborted stream, not a clean end
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  socket.on('error', fail);
  stream.on('error', fail);
  // a stream reset by the other side ends without an error on this side
  stream.on('aborted', fail);
  let closed = 0;
  const onClose = () => {
    if (++closed === 2) stats.open--;
    else if (closed === 1) {
      // the other side is gone: nothing more can flow, let the survivor go too
      setImmediate(() => {
        if (!socket.destroyed && stream.destroyed && !stream.writableFinished) socket.destroy();
        if (!stream.destroyed && socket.destroyed && !socket.readableEnded) stream.destroy();
      });
    }
  };
  socket.on('close', onClose);
  stream.on('close', onClose);
  socket.pipe(stream);
  stream.pipe(socket);
}

// ---------------------------------------------------------------- client (node-1)

function client() {
  const forwards = o.forward.split(',').map((f) => {
    const m = /^(\d+)=(.+:\d+)$/.exec(f.trim());
    if (!m) usage('naive-tunnel', `--forward takes PORT=HOST:PORT[,…], got "${f}"`);
    return { port: Number(m[1]), authority: m[2] };
  });
  let session = null;
  const getSession = () => {
    if (session && !session.closed && !session.destroyed) return session;
    const s = http2.connect(`https://${o.peer}`, { ca, cert, key, servername: o.servername, minVersion: 'TLSv1.3' });
    stats.sessions++;
    s.on('error', () => stats.sessionErrors++);
    s.on('close', () => {
      if (session === s) session = null;
    });
    session = s;
    return s;
  };
  let listening = 0;
  for (const f of forwards) {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      stats.accepted++;
      let stream;
      try {
        stream = getSession().request({ ':method': 'CONNECT', ':authority': f.authority });
      } catch {
        stats.errors++;
        socket.destroy();
        return;
      }
      stats.streams++;
      stream.on('response', (h) => {
        if (h[':status'] === 200) stats.upstreamConnected++;
        else stream.destroy(new Error(`CONNECT ${f.authority}: status ${h[':status']}`));
      });
      tie(socket, stream);
    });
    server.on('error', (e) => die(`listening on ${o.listen}:${f.port}: ${e.message}`));
    server.listen(f.port, o.listen, () => {
      if (++listening === forwards.length) console.log(`naive-tunnel client: ${forwards.map((x) => `${o.listen}:${x.port} → ${x.authority}`).join(', ')} over HTTP/2 CONNECT to ${o.peer}`);
    });
  }
  // open the shared connection now (a prototype would too), so the first connection does not pay for it
  getSession();
}

// ---------------------------------------------------------------- server (node-2)

function server() {
  const server = http2.createSecureServer({ ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
  server.on('tlsClientError', () => stats.tlsRejected++);
  server.on('session', (s) => {
    stats.sessions++;
    s.on('error', () => stats.sessionErrors++);
  });
  server.on('stream', (stream, headers) => {
    stats.streams++;
    if (headers[':method'] !== 'CONNECT') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    const m = /^(.+):(\d+)$/.exec(headers[':authority'] ?? '');
    if (!m) {
      stream.respond({ ':status': 400 }, { endStream: true });
      return;
    }
    const socket = net.connect({ host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), allowHalfOpen: true });
    socket.on('connect', () => {
      stats.upstreamConnected++;
      stream.respond({ ':status': 200 });
    });
    tie(socket, stream);
  });
  server.on('error', (e) => die(`listening on ${o.listen}:${o.port}: ${e.message}`));
  server.listen(o.port, o.listen, () => console.log(`naive-tunnel server: HTTP/2 CONNECT over TLS 1.3 (client certificate required) on ${o.listen}:${o.port}`));
}

// ---------------------------------------------------------------- stats socket

rmSync(o.stats, { force: true });
const statsServer = net.createServer((c) => {
  c.on('error', () => c.destroy());
  c.end(JSON.stringify(stats) + '\n');
});
statsServer.on('error', (e) => die(`stats socket ${o.stats}: ${e.message}`));
statsServer.listen(o.stats);

const stop = () => {
  rmSync(o.stats, { force: true });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

if (o.mode === 'client') client();
else server();
