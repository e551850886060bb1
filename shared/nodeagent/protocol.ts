import net from 'node:net';
import { Packr } from 'msgpackr';

/** Node agent → ztunnel messages over a unix socket: length-prefixed MessagePack, every one acknowledged. */

/** A pod to capture: who it is and its network namespace. */
export interface PodAdd {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ip: string;
  /** path of the pod's netns (/run/netns/NAME or /proc/PID/ns/net) */
  netns: string;
}

export type AgentMessage =
  | ({ type: 'add'; id: number } & PodAdd)
  | { type: 'del'; id: number; uid: string }
  /** every pod the agent knows was sent since it connected: ztunnel drops the others */
  | { type: 'snapshot-sent'; id: number };

/** A message before the client numbers it. */
export type AgentRequest = AgentMessage extends infer M ? (M extends unknown ? Omit<M, 'id'> : never) : never;

export interface AgentAck {
  type: 'ack';
  id: number;
  ok: boolean;
  error?: string;
}

/** Largest frame either side accepts. */
export const MAX_FRAME = 64 * 1024;

const packr = new Packr({ useRecords: false, moreTypes: false });

/** Encodes one frame: 4-byte big-endian length, then the MessagePack body. */
export function encodeFrame(msg: unknown): Buffer {
  const body = packr.pack(msg);
  if (body.length > MAX_FRAME) throw new Error(`message of ${body.length} bytes exceeds ${MAX_FRAME}`);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into decoded frames; throws on an oversized or undecodable frame. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  /** Bytes of a frame not yet complete (a connection that ends with some was cut mid-frame). */
  get pending(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): unknown[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: unknown[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes exceeds ${MAX_FRAME}`);
      if (this.buf.length < 4 + len) break;
      const body = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      try {
        out.push(packr.unpack(body));
      } catch (err) {
        // msgpackr throws Error, RangeError or TypeError on broken input: one refusal for all
        throw new Error(`malformed node-agent frame: ${(err as Error).message}`);
      }
    }
    return out;
  }
}

/** A short, always printable description of a decoded value (it may be a BigInt, or 64 KiB long). */
function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return `(${typeof v === 'object' ? (Array.isArray(v) ? 'array' : 'map') : typeof v})`;
}

const str = (v: unknown, max = 512): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/** Validates a decoded message from the agent; returns why it is refused, or the message. */
export function checkAgentMessage(v: unknown): AgentMessage | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'message is not a map';
  const m = v as Record<string, unknown>;
  if (typeof m.id !== 'number' || !Number.isInteger(m.id)) return 'message has no integer id';
  switch (m.type) {
    case 'add':
      for (const f of ['uid', 'name', 'namespace', 'serviceAccount', 'ip', 'netns'] as const) if (!str(m[f])) return `add: ${f} must be a non-empty string`;
      if (net.isIP(m.ip as string) === 0) return `add: ip ${describe(m.ip)} is not an IP address`;
      if (!(m.netns as string).startsWith('/')) return 'add: netns must be an absolute path';
      return m as unknown as AgentMessage;
    case 'del':
      return str(m.uid) ? (m as unknown as AgentMessage) : 'del: uid must be a non-empty string';
    case 'snapshot-sent':
      return m as unknown as AgentMessage;
    default:
      return `unknown message type ${describe(m.type)}`;
  }
}

/** The agent's side: sends messages to a ztunnel and waits for each ack. */
export class AgentClient {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (a: AgentAck) => void; reject: (e: Error) => void }>();
  private readonly decoder = new FrameDecoder();

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (chunk) => {
      let frames: unknown[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.failAll(err as Error);
        sock.destroy();
        return;
      }
      for (const f of frames) {
        const ack = f as AgentAck;
        const w = this.waiting.get(ack.id);
        if (!w) continue;
        this.waiting.delete(ack.id);
        w.resolve(ack);
      }
    });
    sock.on('error', (err) => this.failAll(err));
    sock.on('close', () => this.failAll(new Error('ztunnel closed the node-agent socket')));
  }

  /** Connects to ztunnel's node-agent socket. */
  static connect(path: string, timeoutMs = 5000): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`ztunnel's node-agent socket ${path} did not answer`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new AgentClient(sock));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot reach ztunnel at ${path}: ${err.message}`));
      });
    });
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  /** Sends a message and resolves with ztunnel's ack (rejects if it refused). */
  async send(msg: AgentRequest, timeoutMs = 15_000): Promise<void> {
    // a closed socket never answers: fail now rather than after the timeout
    if (this.sock.destroyed || !this.sock.writable) throw new Error('ztunnel closed the node-agent socket');
    const id = this.nextId++;
    const ack = await new Promise<AgentAck>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`ztunnel did not acknowledge ${msg.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (a) => {
          clearTimeout(timer);
          resolve(a);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.sock.write(encodeFrame({ ...msg, id }));
    });
    if (!ack.ok) throw new Error(`ztunnel refused ${msg.type}: ${ack.error ?? 'no reason given'}`);
  }

  /** Called once when the connection to ztunnel is gone. */
  onClose(fn: () => void): void {
    if (this.sock.destroyed) fn();
    else this.sock.once('close', fn);
  }

  close(): void {
    this.sock.end();
  }
}
