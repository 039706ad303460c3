public import KanbanModel

/// Several replicas editing one board concurrently, each from its own (partial) view, syncing
/// with each other only now and then. Produces the operation sets the convergence tests replay.
///
/// The workload deliberately includes the hard cases: inserts at the same spot from stale views,
/// concurrent moves of one task, edit against delete, writes into deleted columns, and (once
/// delivery is shuffled) updates that arrive before their create.
public struct ReplicaSimulation {
    public struct Replica {
        public var author: Author
        public var state: BoardState
        public var known: [OperationID: BoardOperation] = [:]
    }

    public private(set) var replicas: [Replica]
    public let board: EntityID
    private var rng: SplitMix64
    private var now: Int64

    public init(seed: UInt64, replicaCount: Int) {
        var rng = SplitMix64(seed: seed)
        let board = EntityID.make(nowMillis: 1_700_000_000_000, using: &rng)
        self.board = board
        self.replicas = (0..<replicaCount).map { _ in
            Replica(author: Author(replica: ReplicaID.random(using: &rng)), state: BoardState(id: board))
        }
        self.rng = rng
        self.now = 1_700_000_000_000
    }

    /// All operations any replica has made.
    public var allOperations: [BoardOperation] {
        var all: [OperationID: BoardOperation] = [:]
        for r in replicas { for (id, op) in r.known { all[id] = op } }
        return all.values.sorted { $0.id < $1.id }
    }

    /// Runs `steps` rounds; each round one random replica acts or two replicas sync.
    public mutating func run(operationsPerReplica: Int) {
        // Replica 0 creates the board and three columns; everyone sees them first.
        _ = perform(0, .createBoard(title: "Board"))
        for title in ["Todo", "Doing", "Done"] {
            let position = replicas[0].state.columnPosition(after: replicas[0].state.orderedColumns().last?.id)!
            _ = perform(0, .createColumn(column: newID(), title: title, position: position))
        }
        for i in 1..<replicas.count { sync(from: 0, to: i) }
        var made = Array(repeating: 0, count: replicas.count)
        while made.contains(where: { $0 < operationsPerReplica }) {
            let i = Int(rng.next() % UInt64(replicas.count))
            if made[i] >= operationsPerReplica { continue }
            if rng.next() % 10 == 0 {
                let j = Int(rng.next() % UInt64(replicas.count))
                if j != i { sync(from: j, to: i) }
                continue
            }
            if randomAction(i) { made[i] += 1 }
        }
    }

    /// Gives replica `to` every operation replica `from` knows, in a shuffled order.
    public mutating func sync(from: Int, to: Int) {
        var ops = replicas[from].known.values.filter { replicas[to].known[$0.id] == nil }
            .sorted { $0.id < $1.id }
        ops.shuffle(using: &rng)
        for op in ops { receive(op, at: to) }
    }

    mutating func receive(_ op: BoardOperation, at i: Int) {
        replicas[i].known[op.id] = op
        replicas[i].author.observe(op.stamp, nowMillis: now)
        replicas[i].state.apply(op)
    }

    mutating func perform(_ i: Int, _ action: BoardOperation.Action, restores: OperationID? = nil) -> BoardOperation {
        // Wall clocks of replicas are skewed by up to ±2 s and advance unevenly.
        now += Int64(rng.next() % 3)
        let skew = Int64(i * 700) - 1_000
        let base = replicas[i].state.base(for: action)
        let op = replicas[i].author.make(action, board: board, base: base, restores: restores, nowMillis: now + skew)
        receive(op, at: i)
        return op
    }

    mutating func newID() -> EntityID { EntityID.make(nowMillis: now, using: &rng) }

    private mutating func pick<T>(_ items: [T]) -> T? {
        items.isEmpty ? nil : items[Int(rng.next() % UInt64(items.count))]
    }

    /// One random edit from replica `i`'s point of view; false if nothing applicable was found.
    mutating func randomAction(_ i: Int) -> Bool {
        let state = replicas[i].state
        let columns = state.orderedColumns()
        let allColumns = state.columns.keys.sorted().map { state.columns[$0]! }
        let tasks = state.tasks.keys.sorted().map { state.tasks[$0]! }.filter(\.created)
        let roll = rng.next() % 100
        switch roll {
        case 0..<30:
            // Create a task: at the top, or below a random task (often the same spot as others).
            guard let column = pick(columns) else { return false }
            let siblings = state.orderedTaskSlots(in: column.id)
            let after = rng.next() % 3 == 0 ? nil : pick(siblings)?.id
            let position = state.taskPosition(in: column.id, after: after) ?? .initial
            _ = perform(i, .createTask(task: newID(), column: column.id, position: position,
                                       title: "task \(rng.next() % 1000)", description: ""))
        case 30..<45:
            guard let task = pick(tasks) else { return false }
            let title: String? = rng.next() % 3 == 0 ? nil : "edit \(rng.next() % 1000)"
            let description: String? = title == nil || rng.next() % 2 == 0 ? "notes \(rng.next() % 100)" : nil
            _ = perform(i, .updateTask(task: task.id, title: title, description: description))
        case 45..<65:
            guard let task = pick(tasks), let column = pick(columns) else { return false }
            let after = pick(state.orderedTaskSlots(in: column.id).filter { $0.id != task.id })?.id
            let position = state.taskPosition(in: column.id, after: rng.next() % 4 == 0 ? nil : after, moving: task.id) ?? .initial
            _ = perform(i, .moveTask(task: task.id, column: column.id, position: position))
        case 65..<73:
            guard let task = pick(tasks) else { return false }
            _ = perform(i, .deleteTask(task: task.id))
        case 73..<78:
            guard let task = pick(tasks.filter(\.isDeleted)) else { return false }
            _ = perform(i, .restoreTask(task: task.id))
        case 78..<82:
            guard columns.count > 1, let column = pick(columns) else { return false }
            _ = perform(i, .deleteColumn(column: column.id))
        case 82..<85:
            guard let column = pick(allColumns.filter { $0.deleted?.value == true }) else { return false }
            _ = perform(i, .restoreColumn(column: column.id))
        case 85..<89:
            let position = state.columnPosition(after: pick(columns)?.id) ?? .initial
            _ = perform(i, .createColumn(column: newID(), title: "col \(rng.next() % 100)", position: position))
        case 89..<92:
            guard let column = pick(columns) else { return false }
            _ = perform(i, .renameColumn(column: column.id, title: "renamed \(rng.next() % 100)"))
        case 92..<94:
            guard let column = pick(columns) else { return false }
            let position = state.columnPosition(after: pick(columns)?.id, moving: column.id) ?? .initial
            _ = perform(i, .moveColumn(column: column.id, position: position))
        case 94..<97:
            // Write into a column that this replica knows is deleted.
            guard let column = pick(allColumns.filter { $0.deleted?.value == true }) else { return false }
            _ = perform(i, .createTask(task: newID(), column: column.id, position: .initial,
                                       title: "late \(rng.next() % 100)", description: ""))
        default:
            _ = perform(i, .renameBoard(title: "Board \(rng.next() % 100)"))
        }
        return true
    }

    /// Applies `ops` to a fresh state in a random order, with about 20% of them delivered twice.
    public static func replay(_ ops: [BoardOperation], board: EntityID, using rng: inout SplitMix64) -> BoardState {
        var delivery = ops
        for op in ops where rng.next() % 5 == 0 { delivery.append(op) }
        delivery.shuffle(using: &rng)
        var state = BoardState(id: board)
        for op in delivery { state.apply(op) }
        return state
    }
}
