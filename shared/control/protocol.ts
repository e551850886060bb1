import * as grpc from '@grpc/grpc-js';
import { Packr } from 'msgpackr';
import type { MeshUpdate } from '../model/types.js';
import type { WaypointConfig } from '../../waypoint/config.js';

/** Messages of the control protocol, carried as MessagePack over gRPC. */
export interface WatchRequest {
  node: string;
}
/** A waypoint asks for its config by its Gateway's name. */
export interface WaypointWatchRequest {
  namespace: string;
  name: string;
}
/** A waypoint's whole config, sent first and again whenever it changes. */
export interface WaypointUpdate {
  version: number;
  config: WaypointConfig;
  /** every root the mesh trusts now (PEM), as ztunnels get them on Watch (root rotation) */
  roots?: string[];
}
export interface SignRequest {
  csrPem: string;
  identity: string;
}
export interface SignResponse {
  certPem: string;
  chainPem: string[];
  rootsPem: string[];
}

/** An open connection as a ztunnel reports it (what `ztunnel-config connections` shows). */
export interface ReportedConnection {
  direction: 'inbound' | 'outbound';
  /** ip:port */
  src: string;
  dst: string;
  /** namespace/name, when the address is a known workload */
  srcWorkload: string | null;
  dstWorkload: string | null;
  srcIdentity: string | null;
  dstIdentity: string | null;
  /** hostname of the service addressed */
  service: string | null;
  protocol: 'HBONE' | 'TCP';
  mtls: boolean;
  ageMs: number;
}

/** A workload certificate a ztunnel holds: public facts only (the key never leaves ztunnel). */
export interface ReportedCertificate {
  identity: string;
  serial: string;
  /** ISO times */
  notBefore: string;
  notAfter: string;
  state: 'available' | 'pending' | 'failed';
  error?: string;
}

/** A refused connection, as in ztunnel's recent denies. */
export interface ReportedDeny {
  time: string;
  direction: 'inbound' | 'outbound';
  src: string;
  srcIdentity: string | null;
  dst: string;
  dstWorkload: string | null;
  policy: string | null;
  rule: number | null;
  reason: string;
}

/**
 * What a ztunnel tells the control plane about itself for the dashboard, over the same
 * authenticated channel as its config: open connections (newest first, at most
 * MAX_REPORTED_CONNECTIONS), certificates and recent denies.
 */
export interface NodeReport {
  node: string;
  /** how many connections are open in all (the list may hold fewer) */
  openConnections: number;
  connections: ReportedConnection[];
  certificates: ReportedCertificate[];
  denies: ReportedDeny[];
}
export interface ReportResponse {
  /** when the control plane wants the next report: soon while someone looks at the dashboard */
  nextReportMs: number;
}

export const MAX_REPORTED_CONNECTIONS = 500;
export const MAX_REPORTED_CERTIFICATES = 1000;
export const MAX_REPORTED_DENIES = 100;

/** Largest control message accepted (a full snapshot of a big mesh fits well within it). */
export const MAX_CONTROL_MESSAGE = 64 * 1024 * 1024;

const packr = new Packr({ useRecords: false, moreTypes: false });

function serialize(value: unknown): Buffer {
  return packr.pack(value);
}

/**
 * Mesh updates, serialized once each: the control plane writes the same delta to every ztunnel
 * and the same snapshot to every ztunnel that connects at that version. (grpc-js copies the
 * bytes into each stream's frame, so sharing them is safe.)
 */
const packedUpdates = new WeakMap<object, Buffer>();

function serializeUpdate(value: MeshUpdate): Buffer {
  let b = packedUpdates.get(value);
  if (!b) packedUpdates.set(value, (b = packr.pack(value)));
  return b;
}

function deserializer<T>(check: (v: unknown) => v is T, what: string): (b: Buffer) => T {
  return (b: Buffer) => {
    let v: unknown;
    try {
      v = packr.unpack(b);
    } catch (err) {
      // msgpackr throws Error, RangeError or TypeError on broken input: one refusal for all
      throw new Error(`malformed ${what} message: ${(err as Error).message}`);
    }
    if (!check(v)) throw new Error(`malformed ${what} message`);
    return v;
  };
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export const isWatchRequest = (v: unknown): v is WatchRequest => isObj(v) && typeof v.node === 'string';
export const isWaypointWatchRequest = (v: unknown): v is WaypointWatchRequest => isObj(v) && typeof v.namespace === 'string' && typeof v.name === 'string';
export const isWaypointUpdate = (v: unknown): v is WaypointUpdate =>
  isObj(v) &&
  typeof v.version === 'number' &&
  isObj(v.config) &&
  isObj(v.config.waypoint) &&
  Array.isArray(v.config.services) &&
  Array.isArray(v.config.workloads) &&
  isObj(v.config.routing) &&
  Array.isArray(v.config.policies);
export const isSignRequest = (v: unknown): v is SignRequest => isObj(v) && typeof v.csrPem === 'string' && typeof v.identity === 'string';
export const isSignResponse = (v: unknown): v is SignResponse =>
  isObj(v) && typeof v.certPem === 'string' && Array.isArray(v.chainPem) && Array.isArray(v.rootsPem);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const isDirection = (v: unknown): boolean => v === 'inbound' || v === 'outbound';

const isReportedConnection = (v: unknown): v is ReportedConnection =>
  isObj(v) &&
  isDirection(v.direction) &&
  isStr(v.src) &&
  isStr(v.dst) &&
  isStrOrNull(v.srcWorkload) &&
  isStrOrNull(v.dstWorkload) &&
  isStrOrNull(v.srcIdentity) &&
  isStrOrNull(v.dstIdentity) &&
  isStrOrNull(v.service) &&
  (v.protocol === 'HBONE' || v.protocol === 'TCP') &&
  typeof v.mtls === 'boolean' &&
  isCount(v.ageMs);

const isReportedCertificate = (v: unknown): v is ReportedCertificate =>
  isObj(v) &&
  isStr(v.identity) &&
  isStr(v.serial) &&
  isStr(v.notBefore) &&
  isStr(v.notAfter) &&
  (v.state === 'available' || v.state === 'pending' || v.state === 'failed') &&
  (v.error === undefined || isStr(v.error));

const isReportedDeny = (v: unknown): v is ReportedDeny =>
  isObj(v) &&
  isStr(v.time) &&
  isDirection(v.direction) &&
  isStr(v.src) &&
  isStrOrNull(v.srcIdentity) &&
  isStr(v.dst) &&
  isStrOrNull(v.dstWorkload) &&
  isStrOrNull(v.policy) &&
  (v.rule === null || isCount(v.rule)) &&
  isStr(v.reason);

/** A node report of the right shape and within the limits (a ztunnel is trusted with its own node's facts, not with the control plane's memory). */
export const isNodeReport = (v: unknown): v is NodeReport =>
  isObj(v) &&
  isStr(v.node) &&
  isCount(v.openConnections) &&
  Array.isArray(v.connections) &&
  v.connections.length <= MAX_REPORTED_CONNECTIONS &&
  v.connections.every(isReportedConnection) &&
  Array.isArray(v.certificates) &&
  v.certificates.length <= MAX_REPORTED_CERTIFICATES &&
  v.certificates.every(isReportedCertificate) &&
  Array.isArray(v.denies) &&
  v.denies.length <= MAX_REPORTED_DENIES &&
  v.denies.every(isReportedDeny);
export const isReportResponse = (v: unknown): v is ReportResponse => isObj(v) && isCount(v.nextReportMs);

export const isMeshUpdate = (v: unknown): v is MeshUpdate =>
  isObj(v) &&
  (v.type === 'snapshot' || v.type === 'delta') &&
  typeof v.version === 'number' &&
  Array.isArray(v.workloads) &&
  Array.isArray(v.services) &&
  Array.isArray(v.removedWorkloads) &&
  Array.isArray(v.removedServices) &&
  (v.roots === undefined || (Array.isArray(v.roots) && v.roots.every((r) => typeof r === 'string')));

/** The control plane's gRPC service: a config stream per node, one per waypoint, the CA, and node reports for the dashboard. */
export const controlService = {
  watch: {
    path: '/ambit.control.v1.Control/Watch',
    requestStream: false,
    responseStream: true,
    requestSerialize: serialize,
    requestDeserialize: deserializer(isWatchRequest, 'watch request'),
    responseSerialize: serializeUpdate,
    responseDeserialize: deserializer(isMeshUpdate, 'mesh update'),
  },
  watchWaypoint: {
    path: '/ambit.control.v1.Control/WatchWaypoint',
    requestStream: false,
    responseStream: true,
    requestSerialize: serialize,
    requestDeserialize: deserializer(isWaypointWatchRequest, 'waypoint watch request'),
    responseSerialize: serialize,
    responseDeserialize: deserializer(isWaypointUpdate, 'waypoint update'),
  },
  sign: {
    path: '/ambit.control.v1.Control/Sign',
    requestStream: false,
    responseStream: false,
    requestSerialize: serialize,
    requestDeserialize: deserializer(isSignRequest, 'sign request'),
    responseSerialize: serialize,
    responseDeserialize: deserializer(isSignResponse, 'sign response'),
  },
  report: {
    path: '/ambit.control.v1.Control/Report',
    requestStream: false,
    responseStream: false,
    requestSerialize: serialize,
    requestDeserialize: deserializer(isNodeReport, 'node report'),
    responseSerialize: serialize,
    responseDeserialize: deserializer(isReportResponse, 'report response'),
  },
} satisfies grpc.ServiceDefinition;

export const ControlClient = grpc.makeGenericClientConstructor(controlService, 'Control');

/** Host name in the control plane's serving certificate; clients verify it whatever address they dial. */
export const CONTROL_SERVER_NAME = 'ambit-control.ambit-system.svc';

export const channelOptions: grpc.ChannelOptions = {
  'grpc.ssl_target_name_override': CONTROL_SERVER_NAME,
  'grpc.default_authority': CONTROL_SERVER_NAME,
  'grpc.max_receive_message_length': MAX_CONTROL_MESSAGE,
  'grpc.max_send_message_length': MAX_CONTROL_MESSAGE,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
};
