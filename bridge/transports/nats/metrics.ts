import { Counter } from 'prom-client';
import type { Metrics } from '../../observability/metrics.js';

/** A NATS-specific counter on the bridge's registry, created once even when several components share the registry. */
export function sharedCounter(metrics: Metrics, name: string, help: string): Counter {
  const existing = metrics.registry.getSingleMetric(name);
  if (existing) return existing as Counter;
  return new Counter({ name, help, registers: [metrics.registry] });
}
