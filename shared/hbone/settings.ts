import type { Settings } from 'node:http2';

/** HTTP/2 settings Istio's HBONE uses; both ends of ambit's tunnels apply them. */
export const HBONE_PORT = 15008;
export const STREAM_WINDOW = 4 * 1024 * 1024;
export const CONNECTION_WINDOW = 16 * 1024 * 1024;
export const MAX_FRAME = 1024 * 1024 - 1; // HTTP/2 caps SETTINGS_MAX_FRAME_SIZE at 2^24-1; Istio uses 1 MiB
export const CLIENT_MAX_STREAMS = 100;
export const SERVER_MAX_STREAMS = 200;
export const PING_INTERVAL_MS = 10_000;
export const PING_TIMEOUT_MS = 20_000;
export const POOL_IDLE_MS = 5 * 60_000;
/** Bytes of session memory node's http2 may buffer (MB); windows above make the default 10 too small. */
export const MAX_SESSION_MEMORY_MB = 64;

export const hboneSettings: Settings = {
  initialWindowSize: STREAM_WINDOW,
  maxFrameSize: MAX_FRAME,
  enablePush: false,
};

export const serverSettings: Settings = { ...hboneSettings, maxConcurrentStreams: SERVER_MAX_STREAMS };
