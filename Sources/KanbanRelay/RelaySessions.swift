import ServiceLifecycle
import Synchronization

/// Upgraded WebSocket connections that have not finished yet, so a shutdown can wait for their
/// close handshakes (nothing else keeps the server waiting for them: no task serves them).
final class OpenSessions: Sendable {
    private struct State {
        var open = 0
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    var count: Int { state.withLock { $0.open } }

    func opened() { state.withLock { $0.open += 1 } }

    func closed() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open -= 1
            guard state.open == 0 else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no session is open, or after `timeout`.
    func waitUntilNone(timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let key = state.withLock { state -> Int? in
                guard state.open > 0 else { return nil }
                state.nextWaiter += 1
                state.waiters[state.nextWaiter] = continuation
                return state.nextWaiter
            }
            guard let key else { return continuation.resume() }
            Task {
                try? await Task.sleep(for: timeout)
                self.state.withLock { $0.waiters.removeValue(forKey: key) }?.resume()
            }
        }
    }
}

/// On a graceful shutdown, after the server stopped accepting and asked every WebSocket to close
/// (1001), waits (at most `limit`) until their close handshakes and last acks are done, so the
/// relay's storage is closed only after them. Listed first among the services: shut down last.
struct RelaySessionsShutdown: Service {
    let sessions: OpenSessions
    var limit: Duration = .seconds(5)

    func run() async throws {
        try? await gracefulShutdown()
        await sessions.waitUntilNone(timeout: limit)
    }
}
