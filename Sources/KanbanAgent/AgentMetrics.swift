import CoreMetrics
import Foundation
import Prometheus

/// The agent's Prometheus metrics, in a registry of its own (so several agents can live in one
/// process, as in the tests), served at `/metrics`.
public final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    let linkAttempts: CoreMetrics.Counter
    let relayBehind: CoreMetrics.Counter
    let linkConnects: CoreMetrics.Counter
    let opsAuthored: CoreMetrics.Counter
    let opsReceived: CoreMetrics.Counter
    let commitLatency: CoreMetrics.Timer
    let queued: CoreMetrics.Gauge
    let localClients: CoreMetrics.Gauge
    let linkUp: CoreMetrics.Gauge
    let clockSkew: CoreMetrics.Gauge
    /// WebSocket message payloads on the relay link, as the agent writes and reads them (before
    /// permessage-deflate compresses them and without frame headers). One atomic add per message.
    let linkBytesSent: Prometheus.Counter
    let linkBytesReceived: Prometheus.Counter
    let linkMessagesSent: Prometheus.Counter
    let linkMessagesReceived: Prometheus.Counter

    init() {
        let registry = self.registry
        let factory = PrometheusMetricsFactory(registry: registry)
        // Each metric is made in the registry with its HELP text (the swift-metrics factory
        // cannot pass one) and wrapped in the swift-metrics type the call sites use.
        func counter(_ name: String, _ help: String) -> CoreMetrics.Counter {
            .init(label: name, dimensions: [], handler: registry.makeCounter(descriptor: .kanban(name, help)), factory: factory)
        }
        func gauge(_ name: String, _ help: String) -> CoreMetrics.Gauge {
            .init(label: name, dimensions: [], aggregate: false, handler: registry.makeGauge(descriptor: .kanban(name, help)), factory: factory)
        }
        linkAttempts = counter("kanban_link_attempts_total", "Connection attempts to the relay.")
        relayBehind = counter("kanban_link_relay_behind_total",
                              "Boards the relay held fewer operations of than this agent had received (a relay restored from an older copy); their operations were pushed again.")
        linkConnects = counter("kanban_link_connects_total", "Connections to the relay that got as far as its welcome.")
        opsAuthored = counter("kanban_operations_authored_total", "Operations written by this agent (committed locally).")
        opsReceived = counter("kanban_operations_received_total", "Operations of other replicas applied here.")
        commitLatency = .init(
            label: "kanban_operation_commit_seconds", dimensions: [],
            handler: registry.makeDurationHistogram(descriptor: .kanban("kanban_operation_commit_seconds", "Time to commit one local write (from the API call to durable in SQLite)."), buckets: Self.commitBuckets),
            factory: factory)
        queued = gauge("kanban_queued_operations", "Operations written here and not yet acknowledged by the relay (the outbox).")
        localClients = gauge("kanban_local_clients", "Local event-stream WebSocket clients (open web boards and `kanban watch`).")
        linkUp = gauge("kanban_link_up", "1 while the relay link is up (welcomed), else 0.")
        clockSkew = gauge("kanban_link_clock_skew_seconds",
                          "The relay's clock minus this agent's, measured at the welcome and each ping (0 until measured).")
        linkBytesSent = registry.makeCounter(descriptor: .kanban("kanban_link_bytes_sent_total", "Payload bytes of WebSocket messages sent to the relay, before compression."))
        linkBytesReceived = registry.makeCounter(descriptor: .kanban("kanban_link_bytes_received_total", "Payload bytes of WebSocket messages received from the relay, after decompression."))
        linkMessagesSent = registry.makeCounter(descriptor: .kanban("kanban_link_messages_sent_total", "WebSocket messages sent to the relay."))
        linkMessagesReceived = registry.makeCounter(descriptor: .kanban("kanban_link_messages_received_total", "WebSocket messages received from the relay."))
    }

    static let commitBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
    ]
    static let linkDurationBuckets: [Duration] = [
        .seconds(1), .seconds(10), .seconds(60), .seconds(600), .seconds(3600), .seconds(6 * 3600), .seconds(86400),
    ]

    /// A failed or ended link, by its `LinkProblem` code.
    func linkFailure(_ code: String) {
        registry.makeCounter(descriptor: .kanban("kanban_link_failures_total", "Relay links that failed or ended, by LinkProblem code (see `kanban doctor`)."), labels: [("class", code)]).increment()
    }

    /// How long a link stayed up.
    func linkDuration(_ seconds: Double) {
        registry.makeDurationHistogram(descriptor: .kanban("kanban_link_duration_seconds", "How long relay links stayed up."), buckets: Self.linkDurationBuckets)
            .record(.nanoseconds(Int64(seconds * 1e9)))
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

extension MetricNameDescriptor {
    /// A metric named in full (unit included) with its HELP text.
    static func kanban(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
