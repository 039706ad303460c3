import KanbanProtocol
import NIOCore
import NIOWebSocket
import Synchronization

/// The close a connection should end with, set by whoever decides to close it first.
final class CloseRequest: Sendable {
    let value = Mutex<(UInt16, String)?>(nil)

    /// The connection's close callback (for the hub and the message handler): the first code
    /// and reason stick, and `queue` stops taking messages. A connection dropped for being slow
    /// gets its close now, not after its backlog.
    func closer(finishing queue: some FinishableQueue) -> @Sendable (UInt16, String) -> Void {
        { [self] code, reason in
            value.withLock { if $0 == nil { $0 = (code, reason) } }
            queue.finish(discardingQueued: code == SyncCloseCode.tooSlow)
        }
    }

    /// The connection's send callback for the hub: `enqueue`, except that once a close was
    /// asked for, a message the queue no longer takes is dropped quietly. The hub takes a
    /// refused message for a subscriber too slow to keep up (closed with 4008 and counted, and
    /// an alert watches that count); a connection that is closing anyway (a shutdown, a broken
    /// protocol) is not slow.
    func sender(_ enqueue: @escaping @Sendable (OutboundItem, Bool) -> Bool) -> @Sendable (OutboundItem, Bool) -> Bool {
        { [self] item, live in
            enqueue(item, live) || value.withLock { $0 != nil }
        }
    }
}

/// Bounds a connection's pushes in flight (submitted to the hub, not yet committed).
final class PushWindow: Sendable {
    private struct State {
        var inFlight = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var drainers: [CheckedContinuation<Void, Never>] = []
        var failure: (any Error)?
    }
    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// A commit that failed (the connection is being closed).
    var failure: (any Error)? { state.withLock { $0.failure } }

    func fail(_ error: any Error) { state.withLock { if $0.failure == nil { $0.failure = error } } }

    /// Takes a slot, waiting while `limit` pushes are in flight.
    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.inFlight < limit {
                    state.inFlight += 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let resume: [CheckedContinuation<Void, Never>] = state.withLock { state in
            if !state.waiters.isEmpty {
                // The slot passes to the next waiter.
                return [state.waiters.removeFirst()]
            }
            state.inFlight -= 1
            guard state.inFlight == 0 else { return [] }
            defer { state.drainers = [] }
            return state.drainers
        }
        for continuation in resume { continuation.resume() }
    }

    /// Waits until no push is in flight.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.inFlight == 0 { return true }
                state.drainers.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// A queue a close request can end.
protocol FinishableQueue: Sendable {
    func finish(discardingQueued: Bool)
}

extension OutboundQueue: FinishableQueue {}

/// One WebSocket connection's outbound messages, bounded by count and bytes, written in order on
/// the connection's event loop.
///
/// Nothing waits on an idle connection (thousands of them are the common case for a relay): a
/// message that arrives at an empty queue schedules one drain on the channel's event loop, which
/// writes every frame queued by then and flushes once, so a run of frames goes out in one
/// `writev`. The frames go straight to NIO's frame encoder, with no hop between tasks per
/// frame (such hops were most of a broadcast's cost when the writer was swift-websocket's); the
/// hub compressed them already. A message counts against the bounds until NIO reports it written to the
/// socket, so a client that stops reading fills them and is dropped as too slow.
final class OutboundPump: FinishableQueue {
    private struct State {
        var backlog: Backlog<OutboundItem>
        var finished = false
        /// A drain is scheduled on the event loop.
        var scheduled = false
        /// `end` has started: it runs once, after the last write completed.
        var ending = false
        var ended = false
        var endWaiters: [CheckedContinuation<Void, Never>] = []

        /// Whether `end` should start now (and marks it started).
        mutating func startsEnding() -> Bool {
            guard finished, backlog.isEmpty, backlog.inFlight == 0, !scheduled, !ending else { return false }
            ending = true
            return true
        }
    }
    private let state: Mutex<State>
    private let channel: any Channel
    private let sent: @Sendable (Int) -> Void
    private let end: @Sendable () async -> Void

    /// `sent` is told the size of each message handed to the network; `end` runs once, after the
    /// last write, when the pump is finished (or a write failed).
    init(channel: any Channel, maxMessages: Int, maxBytes: Int, sent: @escaping @Sendable (Int) -> Void,
         end: @escaping @Sendable () async -> Void) {
        state = Mutex(State(backlog: Backlog(maxMessages: maxMessages, maxBytes: maxBytes)))
        self.channel = channel
        self.sent = sent
        self.end = end
    }

    /// false when finished or over a bound (the connection is too slow; see `Backlog`).
    func enqueue(_ item: OutboundItem, boundedByBytes: Bool = true) -> Bool {
        let (accepted, schedule): (Bool, Bool) = state.withLock { state in
            guard !state.finished, state.backlog.admits(item, boundedByBytes: boundedByBytes) else { return (false, false) }
            state.backlog.append(item, boundedByBytes: boundedByBytes)
            defer { state.scheduled = true }
            return (true, !state.scheduled)
        }
        if schedule { channel.eventLoop.execute { self.drain() } }
        return accepted
    }

    /// No more messages: what is queued is written (or dropped), then `end` runs.
    func finish(discardingQueued discard: Bool = false) {
        let endNow = state.withLock { state in
            state.finished = true
            if discard { _ = state.backlog.takeAll() }
            return state.startsEnding()
        }
        if endNow { runEnd() }
    }

    /// Returns once `end` has run.
    func ended() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.ended { return true }
                state.endWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// On the event loop: writes what is queued, flushes once.
    private func drain() {
        let (batch, receipt, endNow) = state.withLock { state in
            state.scheduled = false
            let (batch, receipt) = state.backlog.takeInFlight()
            // Empty: everything queued was discarded by `finish`.
            return (batch, receipt, batch.isEmpty && state.startsEnding())
        }
        guard let last = batch.indices.last else {
            if endNow { runEnd() }
            return
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        for (index, item) in batch.enumerated() {
            let frame = WebSocketFrame(fin: true, rsv1: item.compressed, opcode: item.isPing ? .ping : .text, data: item.payload)
            // NIO completes a channel's writes in order: the last one's promise covers the batch.
            channel.write(frame, promise: index == last ? written : nil)
            sent(item.size)
        }
        channel.flush()
        written.futureResult.whenComplete { result in
            let endNow = self.state.withLock { state in
                state.backlog.landed(receipt)
                if case .failure = result {
                    // The connection is gone: nothing more can be written.
                    state.finished = true
                    _ = state.backlog.takeAll()
                }
                return state.startsEnding()
            }
            if endNow { self.runEnd() }
        }
    }

    private func runEnd() {
        Task {
            await end()
            let waiters = state.withLock { state in
                state.ended = true
                defer { state.endWaiters = [] }
                return state.endWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }
}
