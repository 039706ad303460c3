import KanbanModel
import Testing

struct HybridLogicalClockTests {
    let a = ReplicaID("alpha")!
    let b = ReplicaID("beta")!

    @Test func ticksAreStrictlyIncreasingEvenWhenWallTimeGoesBack() {
        var clock = HybridLogicalClock(replica: a)
        var last = clock.tick(nowMillis: 1_000)
        for now in [999, 1_000, 500, 2_000, 1_999] as [Int64] {
            let next = clock.tick(nowMillis: now)
            #expect(next > last)
            last = next
        }
    }

    @Test func observingAFutureStampKeepsLocalStampsAboveIt() {
        var clock = HybridLogicalClock(replica: a)
        let remote = HLCStamp(wallMillis: 50_000, counter: 7, replica: b)
        clock.observe(remote, nowMillis: 1_000)
        let next = clock.tick(nowMillis: 1_001)
        #expect(next > remote)
        #expect(next.wallMillis == 50_000)
    }

    @Test func textFormRoundTripsAndSortsLikeStamps() {
        let stamps = [
            HLCStamp(wallMillis: 5, counter: 2, replica: a), HLCStamp(wallMillis: 5, counter: 10, replica: a),
            HLCStamp(wallMillis: 5, counter: 10, replica: b), HLCStamp(wallMillis: 1_700_000_000_000, counter: 0, replica: a),
        ]
        for s in stamps { #expect(HLCStamp(s.description) == s) }
        #expect(stamps.map(\.description).sorted() == stamps.sorted().map(\.description))
    }

    @Test func entityIDsAreVersion7AndUnique() {
        let ids = (0..<1000).map { _ in EntityID.make() }
        #expect(Set(ids).count == 1000)
        for id in ids.prefix(10) {
            let version = id.rawValue[id.rawValue.index(id.rawValue.startIndex, offsetBy: 14)]
            #expect(version == "7")
            #expect(EntityID(id.rawValue) == id)
        }
    }
}
