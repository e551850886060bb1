// Checks that an mTLS listener (the HAProxy on node-2) does what the bench says it does:
// connects with TLS to --host:--port, verifying the server against --ca and --servername,
// presenting --cert/--key if given, sends one --size-byte request and waits for the answer.
//   --expect answer   ok when the answer arrives (prints the TLS version and cipher)
//   --expect refused  ok when no answer arrives (the server must refuse a client without a certificate)
// With --http PATH (an HTTP listener, the L7 bench's middle HAProxy) the request is an HTTP/1.1
// POST of --size bytes and the answer is a response head (its status is printed).
// Prints one JSON line; exits by itself.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 0, ca: '', cert: '', key: '', servername: '', size: 1024, expect: 'answer', timeout: 5, http: '' });
  if (!o.host || !o.port || !o.ca || !o.servername) throw new Error('--host, --port, --ca and --servername are required');
  if (o.expect !== 'answer' && o.expect !== 'refused') throw new Error('--expect is answer or refused');
} catch (e) {
  usage('mtls-check', e.message);
}

const result = { expect: o.expect, withClientCert: Boolean(o.cert), handshake: false, answered: false };
const done = (error) => {
  const ok = o.expect === 'answer' ? result.answered : !result.answered;
  finish({ ok, ...result, ...(error ? { tlsError: error } : {}), ...(ok ? {} : { error: `expected ${o.expect === 'answer' ? 'an answer' : 'a refusal'}, got ${result.answered ? 'an answer' : `no answer (${error ?? 'closed'})`}` }) }, ok ? 0 : 1);
};
setTimeout(() => done(`no answer within ${o.timeout} s`), o.timeout * 1000).unref();

let sock;
try {
  sock = tls.connect({
    host: o.host,
    port: o.port,
    servername: o.servername,
    ca: readFileSync(o.ca),
    ...(o.cert ? { cert: readFileSync(o.cert), key: readFileSync(o.key) } : {}),
    minVersion: 'TLSv1.3',
  });
} catch (e) {
  fail('mtls-check', e.message);
}
let got = 0;
sock.on('secureConnect', () => {
  result.handshake = true;
  result.protocol = sock.getProtocol();
  result.cipher = sock.getCipher()?.standardName;
  result.serverCertSubjectAltName = sock.getPeerCertificate()?.subjectaltname;
  const body = Buffer.alloc(o.size, 0x6d);
  sock.write(o.http ? Buffer.concat([Buffer.from(`POST ${o.http} HTTP/1.1\r\nhost: ${o.servername}\r\ncontent-length: ${o.size}\r\n\r\n`), body]) : body);
});
let text = '';
sock.on('data', (c) => {
  got += c.length;
  if (o.http) text += c.toString('latin1');
  const head = o.http ? /^HTTP\/1\.[01] (\d{3})[^]*?\r\n\r\n/.exec(text) : null;
  if (head) result.httpStatus = Number(head[1]);
  if (o.http ? head !== null : got >= o.size) {
    result.answered = true;
    sock.destroy();
    done(null);
  }
});
sock.on('error', (e) => done(e.code ? `${e.code}: ${e.message}` : e.message));
sock.on('close', () => done(null));
