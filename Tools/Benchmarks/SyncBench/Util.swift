import Foundation
import Glibc
import Dispatch
import Hummingbird
import KanbanRelay
import Logging
import ServiceLifecycle
import Synchronization

// MARK: - Child processes outlive no crash

/// The `kanban` servers this bench started. They are stopped by the code that started them; if
/// the bench dies first (a trap, Ctrl-C, `kill`), a signal handler sends each a SIGTERM before
/// the bench goes, so no relay or agent is left running. The handler only reads a fixed array
/// of PIDs and calls `kill`, both safe inside a signal handler.
enum ChildGuard {
    private static let capacity = 64
    nonisolated(unsafe) private static let pids: UnsafeMutablePointer<Int32> = {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
        p.initialize(repeating: 0, count: capacity)
        return p
    }()
    private static let lock = Mutex(())

    /// Installs the handlers; call once at start.
    static func install() {
        _ = pids
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGSEGV, SIGFPE] {
            Glibc.signal(signal) { received in
                for i in 0..<ChildGuard.capacity where ChildGuard.pids[i] > 0 { kill(ChildGuard.pids[i], SIGTERM) }
                Glibc.signal(received, SIG_DFL)
                raise(received)
            }
        }
    }

    static func add(_ pid: Int32) {
        lock.withLock { _ in
            if let i = (0..<capacity).first(where: { pids[$0] == 0 }) { pids[i] = pid }
        }
    }

    static func remove(_ pid: Int32) {
        lock.withLock { _ in
            for i in 0..<capacity where pids[i] == pid { pids[i] = 0 }
        }
    }
}

// MARK: - Time and statistics

@inline(__always) func nowNs() -> UInt64 {
    DispatchTime.now().uptimeNanoseconds
}

/// Nanoseconds from `start` to `end`, 0 when `end` comes first (a request handed to its
/// connection a few microseconds before its scheduled time was not late). A wrapping
/// subtraction there once made a sample near 2^64 and trapped the summary's sum.
@inline(__always) func nanos(from start: UInt64, to end: UInt64) -> UInt64 {
    end > start ? end - start : 0
}

struct LatencySummary {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    /// Latencies in nanoseconds; the summary is in milliseconds.
    init(_ samples: [UInt64]) {
        let s = samples.sorted()
        count = s.count
        func q(_ f: Double) -> Double {
            guard !s.isEmpty else { return .nan }
            let i = Swift.min(s.count - 1, Swift.max(0, Int((f * Double(s.count - 1)).rounded())))
            return Double(s[i]) / 1e6
        }
        p50 = q(0.5); p90 = q(0.9); p99 = q(0.99); p999 = q(0.999)
        max = s.last.map { Double($0) / 1e6 } ?? .nan
        mean = s.isEmpty ? .nan : s.reduce(0.0) { $0 + Double($1) } / Double(s.count) / 1e6
    }
}

func ms(_ v: Double) -> String { v.isNaN ? "-" : String(format: v < 10 ? "%.3f" : "%.1f", v) }
func num(_ v: Double) -> String {
    if v.isNaN { return "-" }
    return v >= 100 ? String(format: "%.0f", v) : String(format: "%.1f", v)
}

/// Collects latency samples from many tasks.
final class SampleSink: Sendable {
    private let samples = Mutex<[UInt64]>([])
    func add(_ ns: UInt64) { samples.withLock { $0.append(ns) } }
    func add(contentsOf ns: [UInt64]) { samples.withLock { $0.append(contentsOf: ns) } }
    var all: [UInt64] { samples.withLock { $0 } }
    func reset() { samples.withLock { $0.removeAll(keepingCapacity: true) } }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int = 1) { value.wrappingAdd(n, ordering: .relaxed) }
    var load: Int { value.load(ordering: .relaxed) }
}

// MARK: - CPU and memory probes (from /proc)

let clockTicks = Double(sysconf(Int32(_SC_CLK_TCK)))

/// utime+stime of a process, in seconds.
func processCPUSeconds(_ pid: Int32 = getpid()) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / clockTicks
}

/// (busy, total) CPU seconds of the whole machine, summed over cores.
func machineCPUSeconds() -> (busy: Double, total: Double) {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
          let line = text.split(separator: "\n").first else { return (0, 0) }
    let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard v.count >= 5 else { return (0, 0) }
    let idle = v[3] + v[4]
    let total = v.prefix(8).reduce(0, +)
    return ((total - idle) / clockTicks, total / clockTicks)
}

/// This process's resident size once glibc has given back the free pages in its heaps
/// (`malloc_trim(0)`), so that what a phase freed does not count as held.
func trimmedRSSKiB() -> Int? {
    HeapTrim.mallocTrim?()
    return rssKiB()
}

func rssKiB(_ pid: Int32 = getpid()) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }
    return nil
}

/// CPU seconds of every PostgreSQL server process on the machine (postmaster and backends; a
/// backend that exits inside a window loses its share, so this is a lower bound).
func postgresCPUSeconds() -> Double {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
    var total = 0.0
    for entry in entries {
        guard let pid = Int32(entry), let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
              comm.hasPrefix("postgres") else { continue }
        total += processCPUSeconds(pid) ?? 0
    }
    return total
}

/// CPU use over a window, in % of ONE core (200 % = both cores of this machine).
struct CPUWindow {
    let t0 = nowNs()
    let self0 = processCPUSeconds() ?? 0
    let others: [Int32]
    let other0: Double
    let postgres0: Double?
    let machine0 = machineCPUSeconds()

    init(otherPID: Int32? = nil) { self.init(otherPIDs: otherPID.map { [$0] } ?? []) }

    /// `otherPIDs`: server processes (summed); `postgres`: also count PostgreSQL's processes.
    init(otherPIDs: [Int32], postgres: Bool = false) {
        others = otherPIDs
        other0 = otherPIDs.compactMap { processCPUSeconds($0) }.reduce(0, +)
        postgres0 = postgres ? postgresCPUSeconds() : nil
    }

    struct Result {
        var bench: Double
        var other: Double?
        var postgres: Double?
        var machine: Double
        var description: String {
            var s = "bench process \(num(bench))%"
            if let other { s += ", server process \(num(other))%" }
            if let postgres { s += ", postgres \(num(postgres))%" }
            return s + ", whole machine \(num(machine))% (of one core; 2 cores = 200%)"
        }
        /// CPU of processes that are not part of this benchmark (noise).
        var others: Double { Swift.max(0, machine - bench - (other ?? 0) - (postgres ?? 0)) }
        var short: String {
            (other.map { "srv \(num($0)) / " } ?? "") + (postgres.map { "pg \(num($0)) / " } ?? "") + "bench \(num(bench)) / others \(num(others))"
        }
    }

    func stop() -> Result {
        let dt = Double(nowNs() - t0) / 1e9
        let s = ((processCPUSeconds() ?? 0) - self0) / dt * 100
        let o = others.isEmpty ? nil : (others.compactMap { processCPUSeconds($0) }.reduce(0, +) - other0) / dt * 100
        let p = postgres0.map { (postgresCPUSeconds() - $0) / dt * 100 }
        let m1 = machineCPUSeconds()
        let m = (m1.busy - machine0.busy) / dt * 100
        return Result(bench: s, other: o, postgres: p, machine: m)
    }
}

// MARK: - Output

func printTable(_ title: String, _ headers: [String], _ rows: [[String]]) {
    print("\n### \(title)\n")
    print("| " + headers.joined(separator: " | ") + " |")
    print("|" + headers.map { _ in "---" }.joined(separator: "|") + "|")
    for row in rows { print("| " + row.joined(separator: " | ") + " |") }
    fflush(nil)
}

/// Progress on stderr, written with write(2): on a closed pipe (`... 2>&1 | head`) that fails
/// with EPIPE, which is ignored, where `FileHandle.write` would trap. The bench must live on to
/// stop the `kanban` processes it started (SIGPIPE is ignored too, see main.swift).
func note(_ text: String) {
    let line = Array("[bench] \(text)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

// MARK: - Servers in this process

/// Runs a Hummingbird application in a ServiceGroup until `stop()` (as the sync tests do).
final class RunningServer: Sendable {
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    static func start<App: ApplicationProtocol>(
        _ build: (@escaping @Sendable (Int) async -> Void) -> App
    ) async throws -> RunningServer {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = build { port in continuation.yield(port) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: quietLogger("bench")))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw BenchError("server did not start") }
        return RunningServer(port: port, group: group, task: task)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    return logger
}

let tempDirs = Mutex<[URL]>([])

/// Directories are named `kanban-bench-<pid>-<name>-<random>`: a run killed before it could
/// remove its own (`ChildGuard` stops the servers, but a signal handler cannot delete files)
/// leaves them to the next run, which removes those whose PID is gone (`removeStaleTempDirs`).
func makeTempDir(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("kanban-bench-\(getpid())-\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    tempDirs.withLock { $0.append(url) }
    return url
}

/// Removes the directories of earlier runs that died without removing them: those whose
/// run's process no longer exists. Returns how many it removed.
@discardableResult
func removeStaleTempDirs() -> Int {
    let temporary = FileManager.default.temporaryDirectory
    let names = (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
    var removed = 0
    for name in names where name.hasPrefix("kanban-bench-") {
        guard let pid = Int32(name.dropFirst("kanban-bench-".count).prefix(while: \.isNumber)), pid > 0, pid != getpid(),
              kill(pid, 0) != 0, errno == ESRCH else { continue }
        if (try? FileManager.default.removeItem(at: temporary.appendingPathComponent(name))) != nil { removed += 1 }
    }
    return removed
}

/// Removes every directory made by `makeTempDir` (databases of the in-process servers).
func removeTempDirs() {
    for url in tempDirs.withLock({ $0 }) { try? FileManager.default.removeItem(at: url) }
}

/// Polls until `condition` holds; throws after `timeout`.
func waitUntil(_ what: String, timeout: Duration = .seconds(60), every: Duration = .milliseconds(2),
               _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: every)
    }
    throw BenchError("timed out after \(timeout) waiting for \(what)")
}

// MARK: - Async semaphore

final class AsyncSemaphore: Sendable {
    private struct State {
        var permits: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var open = false
    }
    private let state: Mutex<State>

    init(_ permits: Int) { state = Mutex(State(permits: permits)) }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                if s.permits > 0 { s.permits -= 1; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func signal() {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst() }
            s.permits += 1
            return nil
        }
        w?.resume()
    }

    /// Lets every current and future waiter through (used to end a run).
    func openAll() {
        let ws = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in ws { w.resume() }
    }
}

// MARK: - Text helpers for cheap parsing of the JSON we receive

/// All integers that follow `prefix` in `text` (e.g. `"title":"t` → the task number).
func integers(after prefix: String, in text: String) -> [Int] {
    var out: [Int] = []
    let bytes = Array(text.utf8)
    let p = Array(prefix.utf8)
    guard bytes.count >= p.count else { return out }
    var i = 0
    let last = bytes.count - p.count
    while i <= last {
        if bytes[i] == p[0] {
            var k = 1
            while k < p.count && bytes[i + k] == p[k] { k += 1 }
            if k == p.count {
                var j = i + p.count, v = 0, digits = 0
                while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 { v = v * 10 + Int(bytes[j] - 48); j += 1; digits += 1 }
                if digits > 0 { out.append(v) }
                i = j
                continue
            }
        }
        i += 1
    }
    return out
}

/// Waits (up to `maxWait` s) until processes other than this one use less than `pct` % of a core.
func waitQuiet(maxWait: Double, pct: Double = 15) async {
    guard maxWait > 0 else { return }
    let t0 = nowNs()
    var others = 0.0
    while Double(nowNs() - t0) / 1e9 < maxWait {
        let w = CPUWindow()
        try? await Task.sleep(for: .seconds(1))
        others = w.stop().others
        if others < pct { return }
    }
    note("machine still busy: other processes use \(num(others))% of a core")
}
