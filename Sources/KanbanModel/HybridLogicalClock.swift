/// Source of wall-clock milliseconds, injected so tests can skew and freeze time.
public struct WallClock: Sendable {
    public let nowMillis: @Sendable () -> Int64

    public init(nowMillis: @escaping @Sendable () -> Int64) { self.nowMillis = nowMillis }

    public static let system = WallClock {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A hybrid logical clock (Kulkarni et al.): stamps follow wall time when clocks agree and stay
/// monotonic and causally ordered when they do not.
///
/// A replica whose wall clock runs behind still produces stamps above everything it has seen,
/// by advancing the counter instead of the wall part.
public struct HybridLogicalClock: Sendable {
    public private(set) var last: HLCStamp

    public init(replica: ReplicaID, last: HLCStamp? = nil) {
        self.last = last ?? HLCStamp(wallMillis: 0, counter: 0, replica: replica)
        self.last.replica = replica
    }

    public var replica: ReplicaID { last.replica }

    /// A new stamp for a local event, strictly above every stamp issued or observed before.
    public mutating func tick(nowMillis: Int64) -> HLCStamp {
        if nowMillis > last.wallMillis {
            last.wallMillis = nowMillis
            last.counter = 0
        } else {
            bumpCounter()
        }
        return last
    }

    /// Folds in a stamp received from another replica so later local stamps order after it.
    public mutating func observe(_ remote: HLCStamp, nowMillis: Int64) {
        let wall = max(last.wallMillis, remote.wallMillis, nowMillis)
        if wall == last.wallMillis && wall == remote.wallMillis {
            last.counter = max(last.counter, remote.counter)
            bumpCounter()
        } else if wall == last.wallMillis {
            bumpCounter()
        } else if wall == remote.wallMillis {
            last.wallMillis = wall
            last.counter = remote.counter
            bumpCounter()
        } else {
            last.wallMillis = wall
            last.counter = 0
        }
    }

    private mutating func bumpCounter() {
        if last.counter == UInt32.max {
            last.wallMillis += 1
            last.counter = 0
        } else {
            last.counter += 1
        }
    }
}
