/** Names waypoints are known by (Istio's, so manifests and habits carry over). No heavy imports: the CLI loads this at start. */
export const WAYPOINT_CLASS = 'istio-waypoint';
export const GATEWAY_API = 'gateway.networking.k8s.io/v1';
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
export const REVISION_LABEL = 'istio.io/rev';
export const MESH_LISTENER = { name: 'mesh', port: 15008, protocol: 'HBONE' } as const;
/** Marks what the waypoint controller made (Istio marks its own with the same key). */
export const MANAGED_LABEL = 'gateway.istio.io/managed';
export const MANAGED_VALUE = 'ambit-waypoint-controller';
