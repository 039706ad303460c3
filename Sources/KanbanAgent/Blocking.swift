import Dispatch
import Synchronization

/// Blocking work (sockets read with a timeout) kept off Swift's cooperative pool, whose few
/// threads also serve the agent's API.
enum Blocking {
    /// Runs `work` on a Dispatch thread and returns its result; nil at once if the calling task
    /// is cancelled first (the work then finishes on its own and its result is dropped).
    static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T? {
        let reply = Reply<T>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
                reply.wait(continuation)
                DispatchQueue.global().async { reply.send(work()) }
            }
        } onCancel: {
            reply.send(nil)
        }
    }

    /// The first answer (the work's, or nil on cancellation) resumes the waiter; later ones are
    /// dropped. An answer that comes before the waiter is kept for it.
    private final class Reply<T: Sendable>: Sendable {
        private struct State {
            var waiter: CheckedContinuation<T?, Never>?
            var answer: T??
        }
        private let state = Mutex(State())

        func wait(_ continuation: CheckedContinuation<T?, Never>) {
            let early: T?? = state.withLock { state in
                if let answer = state.answer { return .some(answer) }
                state.waiter = continuation
                return .none
            }
            if let early { continuation.resume(returning: early) }
        }

        func send(_ answer: T?) {
            let waiter = state.withLock { state -> CheckedContinuation<T?, Never>? in
                guard state.answer == nil else { return nil }
                state.answer = .some(answer)
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: answer)
        }
    }
}
