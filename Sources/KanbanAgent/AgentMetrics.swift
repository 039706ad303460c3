import CoreMetrics
import Foundation
import Prometheus

/// The agent's Prometheus metrics, in a registry of its own (so several agents can live in one
/// process, as in the tests), served at `/metrics`.
public final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    var factory: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: registry) }

    let linkAttempts: CoreMetrics.Counter
    let linkConnects: CoreMetrics.Counter
    let opsAuthored: CoreMetrics.Counter
    let opsReceived: CoreMetrics.Counter
    let commitLatency: CoreMetrics.Timer
    let queued: CoreMetrics.Gauge
    let localClients: CoreMetrics.Gauge
    let linkUp: CoreMetrics.Gauge
    /// WebSocket message payloads on the relay link, as the agent writes and reads them (before
    /// permessage-deflate compresses them and without frame headers). One atomic add per message.
    let linkBytesSent: Prometheus.Counter
    let linkBytesReceived: Prometheus.Counter
    let linkMessagesSent: Prometheus.Counter
    let linkMessagesReceived: Prometheus.Counter

    init() {
        let factory = PrometheusMetricsFactory(registry: registry)
        linkAttempts = .init(label: "kanban_link_attempts_total", factory: factory)
        linkConnects = .init(label: "kanban_link_connects_total", factory: factory)
        opsAuthored = .init(label: "kanban_operations_authored_total", factory: factory)
        opsReceived = .init(label: "kanban_operations_received_total", factory: factory)
        commitLatency = .init(label: "kanban_operation_commit_seconds", factory: factory)
        queued = .init(label: "kanban_queued_operations", factory: factory)
        localClients = .init(label: "kanban_local_clients", factory: factory)
        linkUp = .init(label: "kanban_link_up", factory: factory)
        linkBytesSent = registry.makeCounter(
            name: "kanban_link_bytes_sent_total",
            help: "Payload bytes of WebSocket messages sent to the relay, before compression.")
        linkBytesReceived = registry.makeCounter(
            name: "kanban_link_bytes_received_total",
            help: "Payload bytes of WebSocket messages received from the relay, after decompression.")
        linkMessagesSent = registry.makeCounter(
            name: "kanban_link_messages_sent_total", help: "WebSocket messages sent to the relay.")
        linkMessagesReceived = registry.makeCounter(
            name: "kanban_link_messages_received_total", help: "WebSocket messages received from the relay.")
    }

    /// A failed or ended link, by its `LinkProblem` code.
    func linkFailure(_ code: String) {
        CoreMetrics.Counter(label: "kanban_link_failures_total", dimensions: [("class", code)], factory: factory).increment()
    }

    /// How long a link stayed up.
    func linkDuration(_ seconds: Double) {
        CoreMetrics.Timer(label: "kanban_link_duration_seconds", factory: factory).recordNanoseconds(Int64(seconds * 1e9))
    }

    func sent(bytes: Int) {
        linkMessagesSent.increment()
        linkBytesSent.increment(by: Int64(bytes))
    }

    func received(bytes: Int) {
        linkMessagesReceived.increment()
        linkBytesReceived.increment(by: Int64(bytes))
    }

    /// Prometheus text exposition.
    func render() -> String { registry.emitToString() }
}
