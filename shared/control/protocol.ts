import * as grpc from '@grpc/grpc-js';
import { Packr } from 'msgpackr';
import type { MeshUpdate } from '../model/types.js';

/** Messages of the control protocol, carried as MessagePack over gRPC. */
export interface WatchRequest {
  node: string;
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

/** Largest control message accepted (a full snapshot of a big mesh fits well within it). */
export const MAX_CONTROL_MESSAGE = 64 * 1024 * 1024;

const packr = new Packr({ useRecords: false, moreTypes: false });

function serialize(value: unknown): Buffer {
  return packr.pack(value);
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
export const isSignRequest = (v: unknown): v is SignRequest => isObj(v) && typeof v.csrPem === 'string' && typeof v.identity === 'string';
export const isSignResponse = (v: unknown): v is SignResponse =>
  isObj(v) && typeof v.certPem === 'string' && Array.isArray(v.chainPem) && Array.isArray(v.rootsPem);
export const isMeshUpdate = (v: unknown): v is MeshUpdate =>
  isObj(v) &&
  (v.type === 'snapshot' || v.type === 'delta') &&
  typeof v.version === 'number' &&
  Array.isArray(v.workloads) &&
  Array.isArray(v.services) &&
  Array.isArray(v.removedWorkloads) &&
  Array.isArray(v.removedServices) &&
  (v.roots === undefined || (Array.isArray(v.roots) && v.roots.every((r) => typeof r === 'string')));

/** The control plane's gRPC service: a config stream per node and the CA. */
export const controlService = {
  watch: {
    path: '/ambit.control.v1.Control/Watch',
    requestStream: false,
    responseStream: true,
    requestSerialize: serialize,
    requestDeserialize: deserializer(isWatchRequest, 'watch request'),
    responseSerialize: serialize,
    responseDeserialize: deserializer(isMeshUpdate, 'mesh update'),
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
