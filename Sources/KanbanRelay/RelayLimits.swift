import Foundation
import Synchronization

/// Open connections per token, for `RelayConfiguration.maxConnectionsPerToken`.
final class ConnectionCounter: Sendable {
    private struct State {
        var open: [RelayToken: Int] = [:]
        /// Connections opened plus connections closed, ever.
        var changes = 0
    }
    private let state = Mutex(State())

    /// Connections opened plus connections closed, ever (`RelayMemoryTrim` watches it).
    var changeCount: Int { state.withLock { $0.changes } }

    /// Counts a new connection for `token`; false (and nothing counted) when it has `limit` already.
    func acquire(_ token: RelayToken, limit: Int) -> Bool {
        state.withLock { state in
            let count = state.open[token, default: 0]
            guard count < limit else { return false }
            state.open[token] = count + 1
            state.changes += 1
            return true
        }
    }

    func release(_ token: RelayToken) {
        state.withLock { state in
            let count = state.open[token, default: 1] - 1
            state.open[token] = count > 0 ? count : nil
            state.changes += 1
        }
    }
}

/// A token bucket: `rate` per second, holding at most `rate` (one second of burst).
struct TokenBucket {
    let rate: Double
    private var available: Double
    private var last: ContinuousClock.Instant

    init(perSecond rate: Int) {
        self.rate = Double(max(1, rate))
        available = self.rate
        last = .now
    }

    /// Takes `count` tokens, returning how long to wait before the caller may go on (zero when
    /// they were there). Larger requests than the bucket holds go into debt and wait it off.
    mutating func take(_ count: Int) -> Duration {
        let now = ContinuousClock.now
        let elapsed = now - last
        last = now
        available = min(rate, available + rate * (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
        available -= Double(count)
        guard available < 0 else { return .zero }
        return .nanoseconds(Int64(-available / rate * 1e9))
    }
}

/// Something a connection queues, with its size for the byte bound.
protocol QueuedMessage: Sendable {
    var queuedBytes: Int { get }
}

extension String: QueuedMessage {
    var queuedBytes: Int { utf8.count }
}

extension OutboundItem: QueuedMessage {
    var queuedBytes: Int { size }
}

/// What one connection has queued and not yet sent, bounded by count and by bytes: the rule
/// for falling behind, shared by the WebSocket pump and the long-polling queue. A writer that
/// hands messages to the network before they are sent (`takeInFlight`) keeps them counted until
/// it reports them written (`landed`).
struct Backlog<Message: QueuedMessage> {
    let maxMessages: Int
    let maxBytes: Int
    private(set) var messages: [Message] = []
    /// Bytes of the queued messages that count against `maxBytes`.
    private var bytes = 0
    /// Taken by `takeInFlight` and not yet `landed`.
    private(set) var inFlight = 0
    private var inFlightBytes = 0

    init(maxMessages: Int, maxBytes: Int) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }

    var isEmpty: Bool { messages.isEmpty }

    /// Whether `message` fits. The byte bound applies only when `boundedByBytes` (live
    /// broadcasts); a catch-up can be larger than it and must still go out.
    func admits(_ message: Message, boundedByBytes: Bool) -> Bool {
        messages.count + inFlight < maxMessages
            && (!boundedByBytes || bytes + inFlightBytes + message.queuedBytes <= maxBytes)
    }

    /// Queues an admitted message. Only live messages count against the byte bound, so a large
    /// catch-up ahead of them does not get a connection dropped as slow.
    mutating func append(_ message: Message, boundedByBytes: Bool) {
        messages.append(message)
        if boundedByBytes { bytes += message.queuedBytes }
    }

    /// Everything queued, leaving the backlog empty.
    mutating func takeAll() -> [Message] {
        defer { (messages, bytes) = ([], 0) }
        return messages
    }

    /// Everything queued, still counted against the bounds until `landed` is called with the
    /// returned receipt.
    mutating func takeInFlight() -> (messages: [Message], receipt: (count: Int, bytes: Int)) {
        let receipt = (count: messages.count, bytes: bytes)
        inFlight += receipt.count
        inFlightBytes += receipt.bytes
        return (takeAll(), receipt)
    }

    /// Messages taken by `takeInFlight` were written (or dropped with the connection).
    mutating func landed(_ receipt: (count: Int, bytes: Int)) {
        inFlight -= receipt.count
        inFlightBytes -= receipt.bytes
    }
}

/// One connection's outbound messages: bounded by count and bytes; the writer takes everything
/// queued at each wake-up.
final class OutboundQueue<Message: QueuedMessage>: Sendable {
    private struct State {
        var backlog: Backlog<Message>
        var finished = false
        /// `interrupt()` came while nobody waited: the next wait returns at once.
        var interrupted = false
        var waiter: CheckedContinuation<[Message]?, Never>?
    }
    private let state: Mutex<State>

    init(maxMessages: Int, maxBytes: Int) {
        state = Mutex(State(backlog: Backlog(maxMessages: maxMessages, maxBytes: maxBytes)))
    }

    /// false when the queue is finished or would exceed a bound (the connection is too slow).
    func enqueue(_ message: Message, boundedByBytes: Bool = true) -> Bool {
        let waiter: CheckedContinuation<[Message]?, Never>?? = state.withLock { state in
            guard !state.finished, state.backlog.admits(message, boundedByBytes: boundedByBytes) else { return .none }
            if let waiter = state.waiter {
                state.waiter = nil
                return .some(waiter)
            }
            state.backlog.append(message, boundedByBytes: boundedByBytes)
            return .some(nil)
        }
        switch waiter {
        case .none: return false
        case .some(.some(let waiter)): waiter.resume(returning: [message])
        case .some(.none): break
        }
        return true
    }

    /// Everything queued, waiting if there is nothing; nil once finished and drained; empty
    /// when interrupted.
    func next() async -> [Message]? {
        await withCheckedContinuation { continuation in
            let ready: [Message]?? = state.withLock { state in
                if !state.backlog.isEmpty { return .some(state.backlog.takeAll()) }
                if state.finished { return .some(nil) }
                if state.interrupted {
                    state.interrupted = false
                    return .some([])
                }
                state.waiter = continuation
                return .none
            }
            if case .some(let items) = ready { continuation.resume(returning: items) }
        }
    }

    /// Makes the current (or else the next) wait return an empty batch: a long poll that timed
    /// out or was superseded by a newer one.
    func interrupt() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            if state.waiter == nil { state.interrupted = true }
            return state.waiter
        }
        waiter?.resume(returning: [])
    }

    /// Forgets an `interrupt()` nobody was waiting for (it was meant for a wait that is over).
    func clearInterrupt() {
        state.withLock { $0.interrupted = false }
    }

    /// No more messages; the writer drains what is queued (or drops it) and ends.
    func finish(discardingQueued discard: Bool = false) {
        let waiter = state.withLock { state in
            state.finished = true
            if discard { _ = state.backlog.takeAll() }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }
}
