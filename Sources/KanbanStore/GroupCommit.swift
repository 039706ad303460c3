public import GRDB
import Synchronization

/// Group commit on a database writer: jobs submitted while a transaction commits wait, without
/// holding a thread, and the next turn on the writer takes all of them (one transaction, one
/// fsync). Each turn is one block on the writer's queue, queued again behind whatever else waits
/// for the writer (a `WALCheckpointer` pass, without which the log would not start over while
/// jobs keep coming), not a loop that holds the writer.
///
/// Used by the replica store for local edits and by the relay's SQLite log for appends.
public final class GroupCommit<Job: Sendable>: Sendable {
    private struct Queue {
        var jobs: [Job] = []
        var draining = false
    }
    private let queue = Mutex(Queue())
    private let writer: any DatabaseWriter

    public init(writer: any DatabaseWriter) { self.writer = writer }

    /// Queues `job`; `commit` runs on the writer with every job waiting by then (it owns their
    /// transaction and their outcomes). Pass the same `commit` on every call.
    public func submit(_ job: Job, commit: @escaping @Sendable (Database, [Job]) -> Void) {
        let start = queue.withLock { queue in
            queue.jobs.append(job)
            defer { queue.draining = true }
            return !queue.draining
        }
        if start { writer.asyncWriteWithoutTransaction { db in self.turn(db, commit) } }
    }

    /// Jobs waiting for their turn on the writer.
    public var waiting: Int { queue.withLock { $0.jobs.count } }

    private func turn(_ db: Database, _ commit: @escaping @Sendable (Database, [Job]) -> Void) {
        let jobs: [Job] = queue.withLock { queue in
            defer { queue.jobs = [] }
            if queue.jobs.isEmpty { queue.draining = false }
            return queue.jobs
        }
        if jobs.isEmpty { return }
        commit(db, jobs)
        // Jobs that came meanwhile get the next turn, queued behind whatever else waits.
        let more = queue.withLock { queue in
            if queue.jobs.isEmpty { queue.draining = false }
            return queue.draining
        }
        if more { writer.asyncWriteWithoutTransaction { db in self.turn(db, commit) } }
    }
}
