// Prometheus metrics (prom-client), one registry per provider so several providers can run in
// one process (tests, devnet). Served at GET /metrics to loopback clients, or to anyone holding
// INTERTALK_METRICS_TOKEN.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly messagesAccepted = new Counter({ name: 'intertalk_messages_accepted_total', help: 'Messages stored, by origin (local user or peer).', labelNames: ['origin'] as const, registers: [this.registry] });
  readonly federationInbound = new Counter({ name: 'intertalk_federation_inbound_requests_total', help: 'POST /messages and /messages/batch requests from peer providers, by HTTP status.', labelNames: ['status'] as const, registers: [this.registry] });
  readonly federationOutbound = new Counter({ name: 'intertalk_federation_outbound_attempts_total', help: 'Delivery attempts to peer providers, by outcome.', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly federationBatchesInFlight = new Gauge({ name: 'intertalk_federation_batches_in_flight', help: 'batch/1 requests to peer providers awaiting their answer (pipeline/1 allows several per destination).', registers: [this.registry] });
  readonly websockets: Gauge;

  constructor(opts: { defaultMetrics: boolean; connections: () => number }) {
    this.websockets = new Gauge({ name: 'intertalk_websocket_connections', help: 'Authenticated WebSocket connections.', registers: [this.registry], collect() {
      this.set(opts.connections());
    } });
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
