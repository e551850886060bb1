/**
 * V8 flags the data-plane processes run with, wherever they run: local mode starts them this way,
 * and the Kubernetes manifests (manifests/ztunnel.yaml, the waypoint Deployment the Gateway
 * controller writes) put the same flags on the `node` command line.
 */

/**
 * ztunnel. Every chunk of proxied data allocates a buffer outside the JS heap; with V8's default
 * heap growth, the old generation's limit after a full GC sits so close to its (small) live size
 * that V8 starts the next full GC at once whenever the young generation could outgrow the room
 * left: a bulk transfer then ran ~30-40 full GCs per GiB in about half of the ztunnel processes
 * (~1 CPU s per GiB). A 4x growth step leaves room above the young generation (16 MB
 * semi-spaces), and those storms stop.
 */
export const ZTUNNEL_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16', '--heap-growing-percent=300'];

/**
 * The waypoint. A request's objects (parsed heads, the exchange, the upstream request, promises)
 * die within milliseconds, but when a burst keeps many of them alive across a young-generation
 * collection (a stall, pooled connections opened in a burst, each holding the request that
 * opened it), V8's allocation-site pretenuring decides those sites make long-lived objects and
 * from then on allocates them in the old generation. Once a process had taken that turn, it
 * stayed there: at 1000 requests/s about a quarter of every request's bytes went to the old
 * generation, each young collection took ~5 ms (old objects pointing into the young generation)
 * and a full collection ran every second. Without pretenuring, the same process keeps requests
 * in the young generation: scavenges ~1.2 ms, no full collections (bench/l7/README.md).
 */
export const WAYPOINT_NODE_FLAGS: readonly string[] = ['--no-allocation-site-pretenuring'];
