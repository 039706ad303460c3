import Logging
@testable import KanbanRelay
import Synchronization
import Testing

/// `RelayMemoryTrim` gives memory back when a burst of connections settles (and at the few
/// quiet periods after, for what the burst's work frees late), never in steady traffic.
@Suite(.timeLimit(.minutes(1)))
struct RelayMemoryTrimTests {
    final class Calls: Sendable { let count = Atomic<Int>(0) }

    @Test func aSettledBurstOfConnectionsIsTrimmedThenFollowedUp() async throws {
        let traffic = RelayTraffic()
        let calls = Calls()
        var service = RelayMemoryTrim(traffic: traffic, logger: Logger(label: "trim-test"))
        service.period = .milliseconds(20)
        service.burst = 100
        service.followUps = 2
        service.trim = { calls.count.add(1, ordering: .relaxed) }
        let running = Task { [service] in try await service.run() }
        defer { running.cancel() }
        let token = RelayToken(team: "t")

        // 60 connections: fewer changes than a burst.
        for _ in 0..<60 { #expect(traffic.connections.acquire(token, limit: 1_000)) }
        try await Task.sleep(for: .milliseconds(150))
        #expect(calls.count.load(ordering: .relaxed) == 0, "60 changes are not a burst")

        // They close: 120 changes since the start, then quiet: the trim and its two follow-ups.
        for _ in 0..<60 { traffic.connections.release(token) }
        try await eventually("the settled burst is trimmed, then twice more", timeout: .seconds(10)) {
            calls.count.load(ordering: .relaxed) == 3
        }

        // Quiet afterwards: nothing more.
        try await Task.sleep(for: .milliseconds(150))
        #expect(calls.count.load(ordering: .relaxed) == 3)
    }

    /// The rule at each tick, over a run of ticks: changes that keep coming are not trimmed,
    /// the first quiet tick after a burst is, and so are the next `followUps` quiet ones.
    @Test func theFirstQuietTicksAfterABurstTrim() {
        // Change counts seen at successive ticks (burst 100, 2 follow-ups).
        let ticks = [0, 40, 90, 150, 220, 300, 300, 310, 310, 310, 310, 320, 320, 450, 450, 450, 450, 450]
        var schedule = RelayMemoryTrim.Schedule(burst: 100, followUps: 2)
        let trimmedAtTicks = ticks.indices.filter { schedule.tick(ticks[$0]) }
        // Tick 6: 300 twice in a row. Tick 7: changes, no follow-up. Ticks 8 and 9: quiet, the
        // two follow-ups; 10: quiet, none owed. 12: quiet but only 20 changes since the burst.
        // 14: quiet after 150 more, then its follow-ups at 15 and 16.
        #expect(trimmedAtTicks == [6, 8, 9, 14, 15, 16])
        var idle = RelayMemoryTrim.Schedule(burst: 100, followUps: 2)
        #expect(![0, 0, 0, 0].contains { idle.tick($0) }, "an idle relay is never trimmed")
    }

    @Test func glibcProvidesMallocTrim() {
        #expect(HeapTrim.mallocTrim != nil)
    }
}
