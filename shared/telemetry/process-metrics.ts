/**
 * The Node process metrics of the data-plane processes (ztunnel, waypoint): prom-client's
 * defaults (`process_*`, `nodejs_*`), with the event loop's delay sampled once a second.
 *
 * prom-client samples it every 10 ms by default, with a libuv timer that wakes an idle process
 * 100 times a second. On the bench machine that alone cost each idle ztunnel and waypoint about
 * 1 % of a core (0.18–0.28 CPU s in 20 s, against at most 0.02 with one sample a second), and a
 * proxy that does nothing should cost nothing. One sample a second still shows a blocked loop:
 * `nodejs_eventloop_lag_*` report how late those samples came, and `nodejs_eventloop_lag_seconds`
 * is measured at every scrape.
 */
import { collectDefaultMetrics, type Registry } from 'prom-client';

export const EVENT_LOOP_SAMPLE_MS = 1000;

export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
}
