import Foundation
import Logging
import ServiceLifecycle

/// Gives memory back to the system once a burst of connections has settled.
///
/// Thousands of agents reconnecting at once (after a relay restart, say) make every event loop
/// and pool thread allocate and free upgrade and catch-up buffers at the same time. glibc keeps
/// what they freed inside its heaps, so the relay's resident size stays several KB per
/// connection above what the connections hold, for good. `malloc_trim` returns those free
/// pages. It runs once per settled burst: when at least `burst` connections opened or closed
/// since the last trim and none in the last `period`, never in steady traffic.
///
/// Measured (README, "Idle memory"): 2,000 connections opened at once by the peers' S4 harness,
/// 38.7 KB per connection without it (see RESULTS.md for the trial figures).
struct RelayMemoryTrim: Service {
    let traffic: RelayTraffic
    let logger: Logger
    var period: Duration = .seconds(1)
    var burst = 100
    /// What gives the memory back (tests count the calls); nil: nothing to do.
    var trim: (@Sendable () -> Void)? = Self.mallocTrim

    /// glibc's `malloc_trim(0)`, which Swift's Glibc module does not declare; nil on another C library.
    static let mallocTrim: (@Sendable () -> Void)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        let function = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        return { _ = function(0) }
    }()

    /// At a tick: trim when no connection opened or closed since the previous tick (`previous`
    /// equals `now`) and at least `burst` did since the last trim.
    static func shouldTrim(now: Int, previous: Int, trimmedAt: Int, burst: Int) -> Bool {
        now == previous && now - trimmedAt >= burst
    }

    func run() async throws {
        guard let trim else { return }
        let (traffic, period, burst, logger) = (traffic, period, burst, logger)
        await cancelWhenGracefulShutdown {
            // Counted from the relay's start: the first burst is the agents connecting.
            var trimmedAt = 0
            var previous = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                let now = traffic.connections.changeCount
                defer { previous = now }
                guard Self.shouldTrim(now: now, previous: previous, trimmedAt: trimmedAt, burst: burst) else { continue }
                let start = ContinuousClock.now
                trim()
                trimmedAt = now
                logger.debug("returned free heap memory after a burst of connections",
                             metadata: ["took": "\(ContinuousClock.now - start)"])
            }
        }
    }
}
