// Store benchmark: apply throughput into the SQLite replica, batched and one operation per
// transaction, and digest time for a 10,000-task board.
//
//   swift run -c release kanban-store-bench [--ops 100000] [--durability full|normal] [--batch N] [--no-digest]
import Foundation
import GRDB
import KanbanModel
import KanbanSimulation
import KanbanStore

@main
struct StoreBench {
    static func main() throws {
        var opsCount = 100_000
        var durabilities: [ReplicaStore.Configuration.Durability] = [.normal, .full]
        var batches = [1_000, 1]
        var digest = true
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--ops": opsCount = Int(args.popFirst() ?? "") ?? opsCount
            case "--durability": durabilities = [ReplicaStore.Configuration.Durability(rawValue: args.popFirst() ?? "") ?? .full]
            case "--batch": batches = [max(1, Int(args.popFirst() ?? "") ?? 1_000)]
            case "--no-digest": digest = false
            default:
                FileHandle.standardError.write(Data("usage: kanban-store-bench [--ops N] [--durability full|normal] [--batch N] [--no-digest]\n".utf8))
                exit(2)
            }
        }
        let ops = SyntheticWorkload.operations(count: opsCount, boards: 10, seed: 1)
        print("workload: \(ops.count) operations over 10 boards (create 40%, edit 30%, move 20%, delete 10%)")
        for durability in durabilities {
            for batch in batches {
                let dir = NSTemporaryDirectory() + "kanban-bench-\(UUID().uuidString)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let store = try ReplicaStore(path: dir + "/replica.sqlite", configuration: .init(durability: durability))
                let start = DispatchTime.now()
                var i = 0
                while i < ops.count {
                    try store.apply(Array(ops[i..<min(i + batch, ops.count)]))
                    i += batch
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                print(String(format: "apply %@ durability=%@: %d ops in %.2f s = %.0f ops/s",
                             batch == 1 ? "one per transaction" : "batched x\(batch)", durability.rawValue,
                             ops.count, seconds, Double(ops.count) / seconds))
            }
            if batches.contains(1) { try floorBenchmark(durability: durability) }
        }
        if digest { try digestBenchmark() }
    }

    /// One-row transactions through the store's own database setup (WAL, each commit synced when
    /// "full", the same checkpointer) and nothing else: the most transactions per second this
    /// disk and SQLite allow, which bounds the one-per-transaction figure above.
    static func floorBenchmark(durability: ReplicaStore.Configuration.Durability, transactions: Int = 20_000) throws {
        let dir = NSTemporaryDirectory() + "kanban-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/floor.sqlite"
        let pool = try WALCheckpointer.openPool(path: path, fullSync: durability == .full)
        let checkpointer = try WALCheckpointer(path: path, writer: pool)
        try pool.write { try $0.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)") }
        let row = Data(repeating: 7, count: 100)
        let start = DispatchTime.now()
        for _ in 0..<transactions {
            try pool.write { try $0.execute(sql: "INSERT INTO t (v) VALUES (?)", arguments: [row]) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        withExtendedLifetime(checkpointer) {}
        print(String(format: "floor: one 100-byte row per transaction, no index, durability=%@: %d in %.2f s = %.0f transactions/s",
                     durability.rawValue, transactions, seconds, Double(transactions) / seconds))
    }

    static func digestBenchmark() throws {
        let dir = NSTemporaryDirectory() + "kanban-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try ReplicaStore(path: dir + "/replica.sqlite", configuration: .init(durability: .normal))
        let ops = SyntheticWorkload.board(tasks: 10_000, seed: 2)
        try store.apply(ops)
        let board = ops[0].board
        var state = try store.stateFromDisk(board)
        var best = Double.infinity
        var digest = ""
        for _ in 0..<5 {
            let start = DispatchTime.now()
            digest = state.digest
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6)
        }
        let loadStart = DispatchTime.now()
        state = try store.stateFromDisk(board)
        let withLoad = Double(DispatchTime.now().uptimeNanoseconds - loadStart.uptimeNanoseconds) / 1e6
        let docStart = DispatchTime.now()
        let doc = state.document()
        let docMs = Double(DispatchTime.now().uptimeNanoseconds - docStart.uptimeNanoseconds) / 1e6
        print(String(format: "digest of a %d-task board: %.1f ms (best of 5); load from tables: %.1f ms; document: %.1f ms (%@…)",
                     doc.columns.reduce(0) { $0 + $1.tasks.count }, best, withLoad, docMs, String(digest.prefix(12))))
    }
}

/// Fast, seeded operations for benchmarks: boards with columns, then a create/edit/move/delete mix.
enum SyntheticWorkload {
    static func operations(count: Int, boards: Int, seed: UInt64) -> [BoardOperation] {
        var rng = SplitMix64(seed: seed)
        var author = Author(replica: ReplicaID("bench")!)
        var now: Int64 = 1_700_000_000_000
        var ops: [BoardOperation] = []
        ops.reserveCapacity(count)
        var boardIDs: [EntityID] = []
        var columns: [EntityID: [EntityID]] = [:]
        var tasks: [EntityID: [EntityID]] = [:]
        var last: [EntityID: PositionKey] = [:]
        for _ in 0..<boards {
            let b = EntityID.make(nowMillis: now, using: &rng)
            boardIDs.append(b)
            ops.append(author.make(.createBoard(title: "Board"), board: b, nowMillis: now))
            var key: PositionKey? = nil
            for c in 0..<5 {
                key = PositionKey.between(key, nil)
                let id = EntityID.make(nowMillis: now, using: &rng)
                columns[b, default: []].append(id)
                ops.append(author.make(.createColumn(column: id, title: "Column \(c)", position: key!), board: b, nowMillis: now))
            }
        }
        while ops.count < count {
            now += 1
            let b = boardIDs[Int(rng.next() % UInt64(boards))]
            let cols = columns[b]!
            let column = cols[Int(rng.next() % UInt64(cols.count))]
            let list = tasks[b] ?? []
            let roll = rng.next() % 10
            if roll < 4 || list.isEmpty {
                let id = EntityID.make(nowMillis: now, using: &rng)
                let key = PositionKey.between(last[column], nil)
                last[column] = key
                tasks[b, default: []].append(id)
                ops.append(author.make(.createTask(task: id, column: column, position: key, title: "Task \(ops.count)",
                                                   description: "Some words about this task."), board: b, nowMillis: now))
            } else {
                let task = list[Int(rng.next() % UInt64(list.count))]
                let action: BoardOperation.Action
                switch roll {
                case 4..<7: action = .updateTask(task: task, title: "Edited \(ops.count)", description: nil)
                case 7..<9:
                    let key = PositionKey.between(last[column], nil)
                    last[column] = key
                    action = .moveTask(task: task, column: column, position: key)
                default: action = .deleteTask(task: task)
                }
                ops.append(author.make(action, board: b, nowMillis: now))
            }
        }
        return ops
    }

    /// One board with `tasks` live tasks spread over 5 columns.
    static func board(tasks: Int, seed: UInt64) -> [BoardOperation] {
        var rng = SplitMix64(seed: seed)
        var author = Author(replica: ReplicaID("bench")!)
        let now: Int64 = 1_700_000_000_000
        let b = EntityID.make(nowMillis: now, using: &rng)
        var ops = [author.make(.createBoard(title: "Big"), board: b, nowMillis: now)]
        var columns: [EntityID] = []
        var key: PositionKey? = nil
        for c in 0..<5 {
            key = PositionKey.between(key, nil)
            let id = EntityID.make(nowMillis: now, using: &rng)
            columns.append(id)
            ops.append(author.make(.createColumn(column: id, title: "Column \(c)", position: key!), board: b, nowMillis: now))
        }
        var last: [EntityID: PositionKey] = [:]
        for i in 0..<tasks {
            let column = columns[i % 5]
            let k = PositionKey.between(last[column], nil)
            last[column] = k
            ops.append(author.make(.createTask(task: EntityID.make(nowMillis: now, using: &rng), column: column, position: k,
                                               title: "Task \(i)", description: ""), board: b, nowMillis: now))
        }
        return ops
    }
}
