import Foundation
import Logging
import ServiceLifecycle

/// Gives memory back to the system once a burst of connections has settled.
///
/// Thousands of agents reconnecting at once (after a relay restart, say) make every event loop
/// and pool thread allocate and free upgrade and catch-up buffers at the same time. glibc keeps
/// what they freed inside its heaps, so the relay's resident size stays several KB per
/// connection above what the connections hold, for good. `malloc_trim` returns those free
/// pages. It runs when a burst settles: at the first `period` with no connection opened or
/// closed after at least `burst` did, never in steady traffic. The connection count settles
/// before the work it brought does (hellos and catch-ups are still being answered when the
/// last upgrade is done), and what that work frees after the trim would stay; so the trim is
/// repeated at the next `followUps` quiet periods.
///
/// Measured (README, "Idle memory"): 2,000 connections opened at once by the peers' S4 harness,
/// 38.7 KB per connection without it (see RESULTS.md for the trial figures); with one trim per
/// burst, 4 of 11 S4 runs on 2026-12-02 still read 24-39 KB (and 14 of 18 runs of its client
/// alone 20-37 KB), the trim having come while hellos were being answered (a `malloc_trim` from
/// gdb afterwards took one such relay from 119.6 to 76.3 MB).
struct RelayMemoryTrim: Service {
    let traffic: RelayTraffic
    let logger: Logger
    var period: Duration = .seconds(1)
    var burst = 100
    var followUps = 3
    /// What gives the memory back (tests count the calls); nil: nothing to do.
    var trim: (@Sendable () -> Void)? = HeapTrim.mallocTrim

    /// When to trim, decided once per `period` from the connection change count.
    struct Schedule {
        let burst: Int
        let followUps: Int
        /// The change count at the last trim after a burst (from the relay's start: the first
        /// burst is the agents connecting).
        private(set) var trimmedAt = 0
        /// The change count at the previous tick.
        private(set) var previous = 0
        /// Trims still owed to the last burst, one per quiet tick.
        private(set) var owed = 0

        init(burst: Int, followUps: Int) {
            self.burst = burst
            self.followUps = followUps
        }

        /// The tick that saw `now` changes in all: true to trim now. A tick with changes since
        /// the previous one never trims; the first quiet one after at least `burst` changes
        /// does, and so do the next `followUps` quiet ones.
        mutating func tick(_ now: Int) -> Bool {
            defer { previous = now }
            guard now == previous else { return false }
            if now - trimmedAt >= burst {
                trimmedAt = now
                owed = followUps
                return true
            }
            guard owed > 0 else { return false }
            owed -= 1
            return true
        }
    }

    func run() async throws {
        guard let trim else { return }
        let (traffic, period, logger) = (traffic, period, logger)
        let (burst, followUps) = (burst, followUps)
        await cancelWhenGracefulShutdown {
            var schedule = Schedule(burst: burst, followUps: followUps)
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                guard schedule.tick(traffic.connections.changeCount) else { continue }
                let start = ContinuousClock.now
                trim()
                logger.debug("returned free heap memory after a burst of connections",
                             metadata: ["took": "\(ContinuousClock.now - start)"])
            }
        }
    }
}

public enum HeapTrim {
    /// glibc's `malloc_trim(0)`, which Swift's Glibc module does not declare: gives the free
    /// pages inside the heaps back to the system. Nil on another C library. Public for the
    /// benchmarks, which read a process's memory after it.
    public static let mallocTrim: (@Sendable () -> Void)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        let function = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        return { _ = function(0) }
    }()
}
