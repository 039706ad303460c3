import Prometheus

/// Counters the relay bumps as traffic passes (the other relay metrics are read at scrape time).
/// Each is an atomic add; no lock on the message path.
public final class RelayTraffic: Sendable {
    /// Payload bytes of WebSocket messages as the relay writes and reads them: before
    /// permessage-deflate compresses them, after it inflates them, without frame headers.
    let bytesSent: Prometheus.Counter
    let bytesReceived: Prometheus.Counter
    let messagesSent: Prometheus.Counter
    let messagesReceived: Prometheus.Counter
    /// Connections closed because their outbound queue was full (close code 4008).
    let slowCloses: Prometheus.Counter
    /// Times a connection's reading paused because enough of its messages waited to be handled.
    let readPauses: Prometheus.Counter
    /// Open connections per token (for the per-token limit).
    let connections = ConnectionCounter()

    /// Counters in a registry of their own (not served anywhere).
    public convenience init() { self.init(registry: PrometheusCollectorRegistry()) }

    init(registry: PrometheusCollectorRegistry) {
        bytesSent = registry.makeCounter(descriptor: .kanban("kanban_relay_bytes_sent_total", "Payload bytes of WebSocket messages sent to agents, before compression."))
        bytesReceived = registry.makeCounter(descriptor: .kanban("kanban_relay_bytes_received_total", "Payload bytes of WebSocket messages received from agents, after decompression."))
        messagesSent = registry.makeCounter(descriptor: .kanban("kanban_relay_messages_sent_total", "WebSocket messages sent to agents."))
        messagesReceived = registry.makeCounter(descriptor: .kanban("kanban_relay_messages_received_total", "WebSocket messages received from agents."))
        slowCloses = registry.makeCounter(descriptor: .kanban("kanban_relay_slow_closes_total", "Connections closed for falling too far behind (their outbound queue was full)."))
        readPauses = registry.makeCounter(descriptor: .kanban("kanban_relay_read_pauses_total",
            "Times the relay stopped reading a connection because \(RelayConnection.pauseReadingAt) of its messages waited to be handled (a sender over its rate, or a slow store); TCP then slows the sender."))
    }

    func sent(bytes: Int) {
        messagesSent.increment()
        bytesSent.increment(by: Int64(bytes))
    }

    func readPaused() { readPauses.increment() }

    func received(bytes: Int) {
        messagesReceived.increment()
        bytesReceived.increment(by: Int64(bytes))
    }
}

extension MetricNameDescriptor {
    /// A metric named in full (unit included) with its HELP text.
    static func kanban(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
