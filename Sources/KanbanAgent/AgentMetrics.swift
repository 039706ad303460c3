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
    }

    /// A failed or ended link, by its `LinkProblem` code.
    func linkFailure(_ code: String) {
        CoreMetrics.Counter(label: "kanban_link_failures_total", dimensions: [("class", code)], factory: factory).increment()
    }

    /// How long a link stayed up.
    func linkDuration(_ seconds: Double) {
        CoreMetrics.Timer(label: "kanban_link_duration_seconds", factory: factory).recordNanoseconds(Int64(seconds * 1e9))
    }

    /// Prometheus text exposition.
    func render() -> String { registry.emitToString() }
}
