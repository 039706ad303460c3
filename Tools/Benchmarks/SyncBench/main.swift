import Foundation

let usage = """
    kanban-sync-bench: end-to-end benchmarks of the agent and the relay (build with -c release).

    USAGE: kanban-sync-bench <command> [options]

    Commands (each prints a markdown table on stdout; progress goes to stderr):
      http       agent HTTP API: create-task latency at --rate req/s open loop for --duration s,
                 then max throughput with --clients 8,32 closed-loop connections (--closed-duration s)
      events     HTTP create -> local WebSocket event delivery to --counts 1,10,100 clients
                 (--rate creates/s for --duration s)
      e2e        agent A HTTP -> relay -> agent B event stream at --rates 100,1000 ops/s (--duration s); --kanban PATH
                 runs the relay and both agents as `kanban` processes (else all in this process); with --kanban,
                 --client nio (default: SwiftNIO HTTP and WebSocket clients), lean (one thread, raw sockets) or nio,lean
      fanout     relay fan-out: --subs 50 subscribers, --writers 4, --windows 2,8 ops in flight per writer,
                 --duration s; --kanban PATH runs the relay as a `kanban relay` process (else in-process)
      converge   --queued 10000 operations authored offline, then reconnect: time to converge
      wire       bytes on the wire for --ops 2000 typical operations, with and without permessage-deflate
      idle       relay RSS per idle connection: --connections 2000, --kanban PATH (required), --modes on,off
      scaleout   fan-out and e2e against `kanban relay` on SQLite, on PostgreSQL, and two instances on one PostgreSQL:
                 --kanban PATH and --postgres URL (or $KANBAN_POSTGRES_URL; Tools/postgres/start.sh starts one) required;
                 [--subs 50 --writers 4 --windows 2,8 --rates 100 --duration 10]
      pgstore    PostgreSQL store limits: append commits/s on one board and on many, from 1 and 2 instances, and
                 NOTIFY throughput; --postgres URL (or $KANBAN_POSTGRES_URL) [--duration 5]
      compaction the relay's SQLite log folding a board of --ops 200000 operations into a snapshot while
                 another board is appended to at --rate 200/s: compaction time and append latency meanwhile
      digest     --agents 4 agents' digests of a board of --ops 200000 operations (below the relay's head and at it):
                 the relay's cost of rebuilding the state, and acknowledgments of pushes to another board meanwhile;
                 then --joiners 2 new agents sent that whole board, pushes still going; --compacted: the board folded
                 into a snapshot but for its newest quarter first
      codec      CPU per message of decoding and encoding push, ack and ops messages (--iterations 20000)
      zlibmem    memory per deflate compressor (window 2^12) at zlib memLevel 8/4/2/1, and the ratio each gets
      all        everything above with defaults except scaleout, pgstore, zlibmem, codec and compaction (--kanban PATH for the
                 process runs of e2e and fanout, and for idle)

    Every command first waits up to --wait-quiet 90 s for other processes to use < 15 % of a core.
    Servers run in this process unless noted, on 127.0.0.1 ephemeral ports, in temporary directories.
    """

func raiseFileLimit() {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = min(limit.rlim_max, 65536)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

struct Options {
    var values: [String: String] = [:]
    init(_ args: ArraySlice<String>) {
        var key: String?
        for a in args {
            if a.hasPrefix("--") {
                if let k = key { values[k] = "true" }
                key = String(a.dropFirst(2))
            } else if let k = key {
                values[k] = a
                key = nil
            }
        }
        if let k = key { values[k] = "true" }
    }
    func double(_ k: String, _ d: Double) -> Double { values[k].flatMap(Double.init) ?? d }
    func int(_ k: String, _ d: Int) -> Int { values[k].flatMap(Int.init) ?? d }
    func ints(_ k: String, _ d: [Int]) -> [Int] { values[k].map { $0.split(separator: ",").compactMap { Int($0) } } ?? d }
    func doubles(_ k: String, _ d: [Double]) -> [Double] { values[k].map { $0.split(separator: ",").compactMap { Double($0) } } ?? d }
    func string(_ k: String) -> String? { values[k] }
}

raiseFileLimit()
// A reader that goes away (`| head`) must not kill the bench before it stops its servers.
signal(SIGPIPE, SIG_IGN)
ChildGuard.install()
let staleDirectories = removeStaleTempDirs()
if staleDirectories > 0 { print("directories left by killed runs: \(staleDirectories) removed") }
let arguments = CommandLine.arguments
guard arguments.count >= 2, !["-h", "--help", "help"].contains(arguments[1]) else {
    print(usage)
    exit(0)
}
let command = arguments[1]
let o = Options(arguments.dropFirst(2))
let kanbanPath = o.string("kanban")
let quietWait = o.double("wait-quiet", 90)

print("<!-- kanban-sync-bench \(arguments.dropFirst().joined(separator: " ")) | \(ProcessInfo.processInfo.activeProcessorCount) cores | \(Date()) -->")
do {
    await waitQuiet(maxWait: quietWait)
    switch command {
    case "http":
        try await runHTTPBench(rate: o.double("rate", 500), duration: o.double("duration", 10),
                               closedDuration: o.double("closed-duration", 5), clientCounts: o.ints("clients", [8, 32]))
    case "events":
        try await runEventsBench(counts: o.ints("counts", [1, 10, 100]), rate: o.double("rate", 100), duration: o.double("duration", 5))
    case "e2e":
        if let kanbanPath {
            let clients = (o.values["client"] ?? "nio").split(separator: ",").map(String.init)
            guard !clients.isEmpty, clients.allSatisfy({ ["nio", "lean"].contains($0) }) else {
                throw BenchError("--client takes nio, lean or nio,lean (got \(o.values["client"] ?? ""))")
            }
            try await runE2EProcessBench(kanban: kanbanPath, rates: o.doubles("rates", [100, 1000]), duration: o.double("duration", 10),
                                         clients: clients)
        } else {
            try await runE2EBench(rates: o.doubles("rates", [100, 1000]), duration: o.double("duration", 10))
        }
    case "fanout":
        try await runFanoutBench(subs: o.int("subs", 50), writers: o.int("writers", 4), windows: o.ints("windows", [2, 8]),
                                 duration: o.double("duration", 10), kanban: kanbanPath)
    case "converge":
        try await runConvergeBench(queued: o.int("queued", 10_000))
    case "wire":
        try await runWireBench(ops: o.int("ops", 2000))
    case "scaleout":
        guard let kanbanPath else { throw BenchError("scaleout needs --kanban PATH (a release `kanban` binary)") }
        guard let postgres = o.string("postgres") ?? ProcessInfo.processInfo.environment["KANBAN_POSTGRES_URL"] else {
            throw BenchError("scaleout needs --postgres URL (eval \"$(Tools/postgres/start.sh)\" starts one and sets KANBAN_POSTGRES_URL)")
        }
        try await runScaleOutBench(kanban: kanbanPath, postgres: postgres, subs: o.int("subs", 50), writers: o.int("writers", 4),
                                   windows: o.ints("windows", [2, 8]), duration: o.double("duration", 10),
                                   rates: o.doubles("rates", [100]), quietWait: quietWait)
    case "pgstore":
        guard let postgres = o.string("postgres") ?? ProcessInfo.processInfo.environment["KANBAN_POSTGRES_URL"] else {
            throw BenchError("pgstore needs --postgres URL (eval \"$(Tools/postgres/start.sh)\" starts one and sets KANBAN_POSTGRES_URL)")
        }
        try await runPostgresStoreBench(postgres: postgres, duration: o.double("duration", 5))
    case "compaction":
        try await runCompactionBench(ops: o.int("ops", 200_000), rate: o.double("rate", 200))
    case "digest":
        try await runDigestBench(ops: o.int("ops", 200_000), agents: o.int("agents", 4), joiners: o.int("joiners", 2),
                                 compacted: o.string("compacted") != nil)
    case "codec":
        try runCodecBench(iterations: o.int("iterations", 20_000))
    case "zlibmem":
        try runZlibMemBench(count: o.int("count", 2000))
    case "idle":
        guard let kanbanPath else { throw BenchError("idle needs --kanban PATH (a release `kanban` binary)") }
        let modes = (o.string("modes") ?? "on,off").split(separator: ",").map { $0 == "on" }
        try await runIdleBench(kanban: kanbanPath, connections: o.int("connections", 2000), deflateModes: modes)
    case "all":
        try await runHTTPBench(rate: 500, duration: 10, closedDuration: 5, clientCounts: [8, 32])
        await waitQuiet(maxWait: quietWait)
        try await runEventsBench(counts: [1, 10, 100], rate: 100, duration: 5)
        await waitQuiet(maxWait: quietWait)
        try await runE2EBench(rates: [100, 1000], duration: 10)
        await waitQuiet(maxWait: quietWait)
        if let kanbanPath {
            try await runE2EProcessBench(kanban: kanbanPath, rates: [100, 1000], duration: 10)
            await waitQuiet(maxWait: quietWait)
        }
        try await runFanoutBench(subs: 50, writers: 4, windows: [2, 8], duration: 10, kanban: nil)
        await waitQuiet(maxWait: quietWait)
        if let kanbanPath { try await runFanoutBench(subs: 50, writers: 4, windows: [2, 8], duration: 10, kanban: kanbanPath) }
        await waitQuiet(maxWait: quietWait)
        try await runConvergeBench(queued: 10_000)
        try await runWireBench(ops: 2000)
        await waitQuiet(maxWait: quietWait)
        if let kanbanPath { try await runIdleBench(kanban: kanbanPath, connections: 2000, deflateModes: [true, false]) }
    default:
        print(usage)
        exit(2)
    }
} catch {
    note("kanban-sync-bench: \(error)")
    removeTempDirs()
    exit(1)
}
removeTempDirs()
exit(0)
