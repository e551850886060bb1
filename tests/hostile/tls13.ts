/**
 * A minimal TLS 1.3 client (TLS_AES_128_GCM_SHA256, x25519, ECDSA P-256 client certificate)
 * for one hostile case node's TLS refuses to produce: presenting one identity's certificate
 * while signing the handshake with another identity's key. OpenSSL checks key and certificate
 * match before sending anything, so an attacker with only B's (public) certificate would use
 * a TLS stack of its own; this is one. It does not check the server's certificate.
 */
import net from 'node:net';
import { createCipheriv, createDecipheriv, createHash, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { pemBlocks } from '../../shared/identity/csr.js';

const SHA256 = 'sha256';
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
const vec24 = (b: Buffer): Buffer => Buffer.concat([u24(b.length), b]);

function hkdfExtract(salt: Buffer, ikm: Buffer): Buffer {
  return createHmac(SHA256, salt).update(ikm).digest();
}

function hkdfExpand(prk: Buffer, info: Buffer, length: number): Buffer {
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).length < length; i++) {
    t = createHmac(SHA256, prk).update(Buffer.concat([t, info, u8(i)])).digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, length);
}

function expandLabel(secret: Buffer, label: string, context: Buffer, length: number): Buffer {
  return hkdfExpand(secret, Buffer.concat([u16(length), vec8(Buffer.from(`tls13 ${label}`)), vec8(context)]), length);
}

const hash = (b: Buffer): Buffer => createHash(SHA256).update(b).digest();

interface Keys {
  key: Buffer;
  iv: Buffer;
  seq: number;
}

function trafficKeys(secret: Buffer): Keys {
  return { key: expandLabel(secret, 'key', Buffer.alloc(0), 16), iv: expandLabel(secret, 'iv', Buffer.alloc(0), 12), seq: 0 };
}

function nonce(k: Keys): Buffer {
  const n = Buffer.from(k.iv);
  const seq = Buffer.alloc(12);
  seq.writeBigUInt64BE(BigInt(k.seq++), 4);
  for (let i = 0; i < 12; i++) n[i]! ^= seq[i]!;
  return n;
}

function seal(k: Keys, type: number, content: Buffer): Buffer {
  const inner = Buffer.concat([content, u8(type)]);
  const header = Buffer.concat([u8(23), u16(0x0303), u16(inner.length + 16)]);
  const c = createCipheriv('aes-128-gcm', k.key, nonce(k));
  c.setAAD(header);
  const body = Buffer.concat([c.update(inner), c.final(), c.getAuthTag()]);
  return Buffer.concat([header, body]);
}

function open(k: Keys, header: Buffer, body: Buffer): { type: number; content: Buffer } {
  const d = createDecipheriv('aes-128-gcm', k.key, nonce(k));
  d.setAAD(header);
  d.setAuthTag(body.subarray(body.length - 16));
  const inner = Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]);
  let end = inner.length - 1;
  while (end > 0 && inner[end] === 0) end--;
  return { type: inner[end]!, content: inner.subarray(0, end) };
}

const handshake = (type: number, body: Buffer): Buffer => Buffer.concat([u8(type), vec24(body)]);

/** What the server did after the client's flight. */
export type Tls13Outcome =
  | { kind: 'accepted' } // it sent application data or a session ticket: the handshake passed
  | { kind: 'alert'; description: number }
  | { kind: 'closed' }
  | { kind: 'timeout' };

/**
 * Connects, completes the server's half of a TLS 1.3 handshake with ALPN h2, and answers a
 * CertificateRequest with `certChainPem`, signing the CertificateVerify with `signingKeyPem`.
 */
export function tls13Handshake(port: number, certChainPem: string, signingKeyPem: string, timeoutMs = 5000): Promise<Tls13Outcome> {
  const certs = pemBlocks(certChainPem).filter((b) => b.label === 'CERTIFICATE').map((b) => b.der);
  const signingKey: KeyObject | string = signingKeyPem;
  const eph = generateKeyPairSync('x25519');
  const ephPub = (eph.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).subarray(X25519_SPKI_PREFIX.length);

  const ext = (type: number, body: Buffer): Buffer => Buffer.concat([u16(type), vec16(body)]);
  const clientHello = handshake(
    1,
    Buffer.concat([
      u16(0x0303),
      randomBytes(32),
      vec8(randomBytes(32)),
      vec16(u16(0x1301)),
      vec8(u8(0)),
      vec16(
        Buffer.concat([
          ext(43, vec8(u16(0x0304))),
          ext(10, vec16(u16(0x001d))),
          ext(51, vec16(Buffer.concat([u16(0x001d), vec16(ephPub)]))),
          ext(13, vec16(Buffer.concat([u16(0x0403), u16(0x0804), u16(0x0807)]))),
          ext(16, vec16(vec8(Buffer.from('h2')))),
        ]),
      ),
    ]),
  );

  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let done = false;
    const finish = (o: Tls13Outcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
    sock.on('error', () => finish({ kind: 'closed' }));
    sock.on('close', () => finish({ kind: 'closed' }));
    sock.write(Buffer.concat([u8(22), u16(0x0301), vec16(clientHello)]));

    let transcript: Buffer[] = [clientHello];
    let inbuf = Buffer.alloc(0);
    let hsbuf = Buffer.alloc(0);
    let serverKeys: Keys | null = null;
    let clientHs: Buffer | null = null;
    let handshakeSecret: Buffer | null = null;
    let requestContext: Buffer | null = null;
    let appKeys: Keys | null = null;

    const onHandshakeMessage = (type: number, msg: Buffer, body: Buffer): void => {
      if (type === 2) {
        // ServerHello: find the key share, derive the handshake secrets
        let p = 2 + 32;
        p += 1 + body[p]!;
        p += 2 + 1;
        const extEnd = p + 2 + body.readUInt16BE(p);
        p += 2;
        let serverPub: Buffer | null = null;
        while (p < extEnd) {
          const t = body.readUInt16BE(p);
          const len = body.readUInt16BE(p + 2);
          if (t === 51) serverPub = body.subarray(p + 4 + 4, p + 4 + 4 + body.readUInt16BE(p + 6));
          p += 4 + len;
        }
        if (!serverPub) return finish({ kind: 'closed' });
        transcript.push(msg);
        const shared = diffieHellman({
          privateKey: eph.privateKey,
          publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, serverPub]), format: 'der', type: 'spki' }),
        });
        const early = hkdfExtract(Buffer.alloc(32), Buffer.alloc(32));
        const derived = expandLabel(early, 'derived', hash(Buffer.alloc(0)), 32);
        handshakeSecret = hkdfExtract(derived, shared);
        const th = hash(Buffer.concat(transcript));
        clientHs = expandLabel(handshakeSecret, 'c hs traffic', th, 32);
        serverKeys = trafficKeys(expandLabel(handshakeSecret, 's hs traffic', th, 32));
        return;
      }
      transcript.push(msg);
      if (type === 13) requestContext = body.subarray(1, 1 + body[0]!);
      if (type !== 20) return;
      // server Finished: switch to application keys for reading, send our flight
      const thServerFinished = hash(Buffer.concat(transcript));
      const master = hkdfExtract(expandLabel(handshakeSecret!, 'derived', hash(Buffer.alloc(0)), 32), Buffer.alloc(32));
      appKeys = trafficKeys(expandLabel(master, 's ap traffic', thServerFinished, 32));
      const out: Buffer[] = [];
      const clientKeys = trafficKeys(clientHs!);
      if (requestContext !== null) {
        const certificate = handshake(11, Buffer.concat([vec8(requestContext), vec24(Buffer.concat(certs.map((c) => Buffer.concat([vec24(c), u16(0)]))))]));
        transcript.push(certificate);
        const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify'), u8(0), hash(Buffer.concat(transcript))]);
        const verify = handshake(15, Buffer.concat([u16(0x0403), vec16(sign(SHA256, content, signingKey))]));
        transcript.push(verify);
        out.push(seal(clientKeys, 22, certificate), seal(clientKeys, 22, verify));
      }
      const finishedKey = expandLabel(clientHs!, 'finished', Buffer.alloc(0), 32);
      const fin = handshake(20, createHmac(SHA256, finishedKey).update(hash(Buffer.concat(transcript))).digest());
      out.push(seal(clientKeys, 22, fin));
      sock.write(Buffer.concat([u8(20), u16(0x0303), vec16(u8(1)), ...out]));
      transcript = [];
    };

    const onPlain = (type: number, content: Buffer): void => {
      if (type === 21) return finish({ kind: 'alert', description: content[1] ?? -1 });
      if (type === 23 && appKeys) return finish({ kind: 'accepted' });
      if (type !== 22) return;
      if (appKeys) return finish({ kind: 'accepted' }); // NewSessionTicket: the server took our flight
      hsbuf = Buffer.concat([hsbuf, content]);
      while (hsbuf.length >= 4) {
        const len = hsbuf.readUIntBE(1, 3);
        if (hsbuf.length < 4 + len) break;
        const msg = hsbuf.subarray(0, 4 + len);
        hsbuf = hsbuf.subarray(4 + len);
        onHandshakeMessage(msg[0]!, msg, msg.subarray(4));
        if (done) return;
      }
    };

    sock.on('data', (chunk: Buffer) => {
      inbuf = Buffer.concat([inbuf, chunk]);
      while (inbuf.length >= 5) {
        const len = inbuf.readUInt16BE(3);
        if (inbuf.length < 5 + len) break;
        const header = inbuf.subarray(0, 5);
        const body = inbuf.subarray(5, 5 + len);
        inbuf = inbuf.subarray(5 + len);
        const type = header[0]!;
        if (type === 20) continue; // change_cipher_spec (compatibility)
        if (type === 21 || type === 22) {
          onPlain(type, body);
        } else if (type === 23) {
          const keys = appKeys ?? serverKeys;
          if (!keys) return finish({ kind: 'closed' });
          let rec: { type: number; content: Buffer };
          try {
            rec = open(keys, header, body);
          } catch {
            // an alert sent with the handshake keys after we switched (or the reverse)
            return finish({ kind: 'alert', description: -1 });
          }
          onPlain(rec.type, rec.content);
        }
        if (done) return;
      }
    });
  });
}
