/**
 * One error family for the data path: each flag reads the same in a log line, in the
 * `response_flags` metric label and, for inbound HBONE, as the CONNECT status.
 */
export type ErrorFlag =
  | 'BAD_REQUEST' // not CONNECT, malformed authority
  | 'DENY' // authorization refused the connection
  | 'NO_WORKLOAD' // no such local workload behind the authority
  | 'CONNECT' // the app or the next hop refused or was unreachable
  | 'TLS_FAILURE' // handshake or peer identity check failed
  | 'NO_ROUTE' // nothing known at the destination address
  | 'NO_WAYPOINT' // the destination's waypoint is missing, wrongly labelled or not ready (fail closed)
  | 'LOOP' // a connection back into ztunnel's own ports
  | 'UPSTREAM_RESET' // the far side reset the stream
  | 'TIMEOUT';

const STATUS: Record<ErrorFlag, number> = {
  BAD_REQUEST: 400,
  DENY: 401,
  NO_WORKLOAD: 503,
  CONNECT: 503,
  TLS_FAILURE: 503,
  NO_ROUTE: 503,
  NO_WAYPOINT: 503,
  LOOP: 400,
  UPSTREAM_RESET: 503,
  TIMEOUT: 504,
};

/** An error that knows how it is reported: metric flag and HBONE status. */
export class MeshError extends Error {
  constructor(readonly flag: ErrorFlag, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MeshError';
  }

  /** HTTP status sent on the CONNECT stream for this failure. */
  get status(): number {
    return STATUS[this.flag];
  }
}

/** Wraps anything thrown into a MeshError, keeping the flag when it already has one. */
export function asMeshError(err: unknown, fallback: ErrorFlag): MeshError {
  if (err instanceof MeshError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MeshError(fallback, message, { cause: err });
}
