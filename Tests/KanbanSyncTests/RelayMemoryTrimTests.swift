import Logging
@testable import KanbanRelay
import Synchronization
import Testing

/// `RelayMemoryTrim` gives memory back once per settled burst of connections, never in steady
/// traffic.
@Suite(.timeLimit(.minutes(1)))
struct RelayMemoryTrimTests {
    final class Calls: Sendable { let count = Atomic<Int>(0) }

    @Test func aSettledBurstOfConnectionsIsTrimmedOnce() async throws {
        let traffic = RelayTraffic()
        let calls = Calls()
        var service = RelayMemoryTrim(traffic: traffic, logger: Logger(label: "trim-test"))
        service.period = .milliseconds(20)
        service.burst = 100
        service.trim = { calls.count.add(1, ordering: .relaxed) }
        let running = Task { [service] in try await service.run() }
        defer { running.cancel() }
        let token = RelayToken(team: "t")

        // 60 connections: fewer changes than a burst.
        for _ in 0..<60 { #expect(traffic.connections.acquire(token, limit: 1_000)) }
        try await Task.sleep(for: .milliseconds(150))
        #expect(calls.count.load(ordering: .relaxed) == 0, "60 changes are not a burst")

        // They close: 120 changes since the start, then quiet.
        for _ in 0..<60 { traffic.connections.release(token) }
        try await eventually("the settled burst is trimmed", timeout: .seconds(10)) { calls.count.load(ordering: .relaxed) == 1 }

        // Quiet afterwards: nothing more.
        try await Task.sleep(for: .milliseconds(150))
        #expect(calls.count.load(ordering: .relaxed) == 1)
    }

    /// The rule at each tick, over a run of ticks: changes that keep coming are not trimmed,
    /// the first quiet tick after a burst is, and quiet ticks after it are not.
    @Test func onlyTheFirstQuietTickAfterABurstTrims() {
        // Change counts seen at successive ticks (burst 100).
        let ticks = [0, 40, 90, 150, 220, 300, 300, 300, 310, 320, 320, 450, 450]
        var trimmedAt = 0, previous = 0
        var trimmedAtTicks: [Int] = []
        for (tick, now) in ticks.enumerated() {
            if RelayMemoryTrim.shouldTrim(now: now, previous: previous, trimmedAt: trimmedAt, burst: 100) {
                trimmedAtTicks.append(tick)
                trimmedAt = now
            }
            previous = now
        }
        // Tick 6: 300 twice in a row. Tick 10: quiet again but only 20 changes since. Tick 12:
        // quiet after 150 more.
        #expect(trimmedAtTicks == [6, 12])
        #expect(!RelayMemoryTrim.shouldTrim(now: 0, previous: 0, trimmedAt: 0, burst: 100), "an idle relay is never trimmed")
    }

    @Test func glibcProvidesMallocTrim() {
        #expect(RelayMemoryTrim.mallocTrim != nil)
    }
}
