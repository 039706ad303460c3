import Foundation
import KanbanStore

/// Whether the relay's log takes writes: the run of failed appends since the last one that
/// worked. The hub updates it after every append; `/health/ready` and `/metrics` read it, and it
/// decides which failures are logged (the first of a run, then a summary at most every
/// `logInterval`, then the recovery), so a full disk does not write an error line per push.
struct StoreWrites: Sendable {
    struct Failing: Sendable {
        let since: ContinuousClock.Instant
        var last: ContinuousClock.Instant
        var count: Int
        var reason: String
        var diskFull: Bool
        var loggedAt: ContinuousClock.Instant
        var unlogged = 0
    }

    enum Report: Equatable {
        case none
        /// The first failure of a run.
        case started
        /// Failures since the previous line (`logInterval` or more ago).
        case still(failures: Int)
        /// Appends work again after `failures` failed ones over `lasted`.
        case recovered(failures: Int, lasted: Duration)
    }

    static let logInterval: Duration = .seconds(10)

    private(set) var failing: Failing?
    /// Failed appends since the relay started.
    private(set) var failures = 0

    mutating func failed(_ error: any Error, at now: ContinuousClock.Instant = .now) -> Report {
        failures += 1
        let reason = RelayStoreError.reason(error)
        let diskFull = relayStoreIsFull(error)
        guard var run = failing else {
            failing = Failing(since: now, last: now, count: 1, reason: reason, diskFull: diskFull, loggedAt: now)
            return .started
        }
        run.last = now
        run.count += 1
        run.reason = reason
        run.diskFull = diskFull
        run.unlogged += 1
        var report = Report.none
        if now - run.loggedAt >= Self.logInterval {
            report = .still(failures: run.unlogged)
            run.loggedAt = now
            run.unlogged = 0
        }
        failing = run
        return report
    }

    mutating func succeeded(at now: ContinuousClock.Instant = .now) -> Report {
        guard let run = failing else { return .none }
        failing = nil
        return .recovered(failures: run.count, lasted: now - run.since)
    }

    /// What `/health/ready` says while appends fail: nil once one worked, or when the last
    /// failure is older than `window` (with no pushes since, the relay cannot tell; its read
    /// check decides then).
    func problem(at now: ContinuousClock.Instant = .now, window: Duration = .seconds(60)) -> String? {
        guard let run = failing, now - run.last < window else { return nil }
        let cause = run.diskFull ? "its disk is full" : run.reason
        return "the log does not take writes (\(cause)): \(run.count) failed appends since \(Self.seconds(now - run.since)) ago, "
            + "the last \(Self.seconds(now - run.last)) ago"
    }

    static func seconds(_ duration: Duration) -> String {
        let value = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return value < 10 ? String(format: "%.1f s", value) : "\(Int(value)) s"
    }
}

/// An append the log refused. The hub logged it (within its run of failures), so the
/// connections it fails do not log it again.
struct AppendFailed: Error, CustomStringConvertible {
    let underlying: any Error
    var description: String { "\(underlying)" }
    /// What the agent is told when its link is closed for it.
    var closeReason: String {
        relayStoreIsFull(underlying) ? "the relay could not store the operations: its disk is full" : "the relay could not store the operations"
    }
}

/// Whether a store error means the disk (SQLite's file, or PostgreSQL's) is full.
func relayStoreIsFull(_ error: any Error) -> Bool {
    if let failed = error as? AppendFailed { return relayStoreIsFull(failed.underlying) }
    return StoreError.isDiskFull(error) || RelayStoreError.isDiskFull(error)
}
