import Dispatch
import KanbanModel
import KanbanProtocol
import Synchronization

/// The relay's CPU-heavy work on board states, for comparing agents' digests: applying a long
/// board's logged operations (200,000 take about 0.4 s here) and hashing a large board (50,000
/// tasks: 0.2 s). It runs on one Dispatch thread: off the hub's actor, which every push waits
/// for, and off Swift's cooperative pool (a thread per core), which serves the connections; and
/// one piece at a time, so that many agents' digests of a long board take one core, not all.
/// The hub keeps a second one, labelled apart, for encoding large messages (`sendLarge`).
final class BoardStateWork: Sendable {
    private let queue: DispatchQueue

    init(label: String = "kanban.relay.board-states") { queue = DispatchQueue(label: label) }

    func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in queue.async { continuation.resume(returning: work()) } }
    }

    func digest(of state: BoardState) async -> String { await run { state.digest } }

    /// A state being rebuilt across several pieces of work (one per batch read from the log).
    final class Rebuild: Sendable {
        /// Only touched by work on the queue, one piece at a time: never contended.
        private let state: Mutex<BoardState>
        init(_ state: BoardState) { self.state = Mutex(state) }
        func replace(with state: BoardState) { self.state.withLock { $0 = state } }
        func apply(_ entries: [SyncMessage.Ops.Sequenced]) { state.withLock { state in for entry in entries { state.apply(entry.op) } } }
        var result: BoardState { state.withLock { $0 } }
    }
}
