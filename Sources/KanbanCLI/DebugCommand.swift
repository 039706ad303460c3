import ArgumentParser
import Foundation
import KanbanModel
import KanbanSimulation
import KanbanStore

struct DebugCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Tools for testing the store.",
        shouldDisplay: false,
        subcommands: [CrashWriter.self, Verify.self]
    )

    /// Writes operations forever (or until `--count`), printing `committed <op-id>` after each
    /// commit. The crash test kills it with SIGKILL at a random moment.
    struct CrashWriter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "crash-writer")
        @OptionGroup var data: DataDirectory
        @Option(help: "Workload seed.") var seed: UInt64 = 1
        @Option(help: "Stop after this many operations.") var count: Int = 1_000_000

        func run() async throws {
            let path = try data.replicaPath()
            let lock = try DirectoryLock.acquire(data.resolved, for: "writer")
            let store = try ReplicaStore(path: path)
            defer { try? store.close(); withExtendedLifetime(lock) {} }
            var sim = ReplicaSimulation(seed: seed, replicaCount: 3)
            sim.run(operationsPerReplica: 400)
            var ops = sim.allOperations[...]
            var rng = SplitMix64(seed: seed)
            var written = 0
            while written < count, !ops.isEmpty {
                let n = min(ops.count, 1 + Int(rng.next() % 8))
                let batch = Array(ops.prefix(n))
                ops = ops.dropFirst(n)
                try await store.apply(batch)
                // An authored operation too, so the outbox and counter are exercised.
                let title = "renamed \(written)"
                let mine = try await store.author(board: sim.board) { _ in .renameBoard(title: title) }
                var lines = batch.map { "committed \($0.id)" }
                lines.append("committed \(mine.operation.id)")
                print(lines.joined(separator: "\n"))
                fflush(nil)
                written += n + 1
            }
            print("board \(sim.board)")
        }
    }

    /// Checks a replica: integrity, and that the tables equal a replay of the log.
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "verify")
        @OptionGroup var data: DataDirectory

        func run() async throws {
            let store = try ReplicaStore(path: try data.replicaPath())
            defer { try? store.close() }
            print("integrity \(try store.integrityCheck())")
            for board in try store.boards() {
                let tables = try store.stateFromDisk(board.id).digest
                let log = try store.stateFromLog(board.id).digest
                print("board \(board.id) tables \(tables) log \(log) \(tables == log ? "match" : "MISMATCH")")
                if tables != log { throw ExitCode(1) }
            }
        }
    }
}
