import Synchronization

/// Keeps `writers` concurrent loops of `step` going without a pause until `condition` holds
/// (checked every 5 ms) or `timeout` passes, then stops them and waits for them.
///
/// For tests of what must still happen while a database's writer never goes idle, such as
/// a write-ahead log starting over. `step` gets its writer's index and how many steps that
/// writer has done. Returns the steps done in all and whether `condition` held in time; the
/// first error a step throws is rethrown once every writer has stopped.
public func whileSteadyWriters(
    _ writers: Int,
    timeout: Duration,
    step: @escaping @Sendable (_ writer: Int, _ count: Int) async throws -> Void,
    until condition: @escaping @Sendable () -> Bool
) async throws -> (steps: Int, held: Bool) {
    let stop = StopFlag()
    return try await withThrowingTaskGroup(of: Int.self) { group in
        for writer in 0..<writers {
            group.addTask {
                var count = 0
                while !stop.isSet && !Task.isCancelled {
                    try await step(writer, count)
                    count += 1
                }
                return count
            }
        }
        // The writers stop however the wait ends.
        defer { stop.set() }
        let deadline = ContinuousClock.now + timeout
        var held = condition()
        while !held && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
            held = condition()
        }
        stop.set()
        return (try await group.reduce(0, +), held)
    }
}

private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
