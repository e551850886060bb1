// Checks that an mTLS listener (the HAProxy on node-2) does what the bench says it does:
// connects with TLS to --host:--port, verifying the server against --ca and --servername,
// presenting --cert/--key if given, sends one --size-byte request and waits for the answer.
//   --expect answer   ok when the answer arrives (prints the TLS version and cipher)
//   --expect refused  ok when no answer arrives (the server must refuse a client without a certificate)
// Prints one JSON line; exits by itself.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 0, ca: '', cert: '', key: '', servername: '', size: 1024, expect: 'answer', timeout: 5 });
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
  sock.write(Buffer.alloc(o.size, 0x6d));
});
sock.on('data', (c) => {
  got += c.length;
  if (got >= o.size) {
    result.answered = true;
    sock.destroy();
    done(null);
  }
});
sock.on('error', (e) => done(e.code ? `${e.code}: ${e.message}` : e.message));
sock.on('close', () => done(null));
