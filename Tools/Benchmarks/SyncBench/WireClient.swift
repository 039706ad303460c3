import Foundation
import HTTPTypes
import KanbanModel
import KanbanProtocol
import Logging
import NIOWebSocket
import Synchronization
import WSClient
import WSCompression

/// A bare sync-protocol connection (hello → welcome/ops, push → ack) used as a load generator:
/// it parses only what it must, so the relay, not the client, is what gets measured.
final class WireClient: Sendable {
    private let outgoing: AsyncStream<String>.Continuation
    private let task: Task<Void, Never>
    let closed = Atomic<Bool>(false)

    /// `compressFrom`: the shortest message the client compresses (swift-websocket's default 256).
    init(url: String, token: String, deflate: Bool, compressFrom: Int = 256, onText: @escaping @Sendable (String) -> Void) {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        outgoing = continuation
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(token)"
        // What the relay may send (a board's snapshot can be large), as the agent accepts.
        let configuration = WebSocketClientConfiguration(
            maxFrameSize: ProtocolLimits.maxRelayMessageBytes, additionalHeaders: headers,
            extensions: deflate ? [.perMessageDeflate(maxWindow: 12, maxDecompressedFrameSize: ProtocolLimits.maxRelayMessageBytes,
                                                      minFrameSizeToCompress: compressFrom)] : [],
            autoPing: .disabled)
        task = Task {
            do {
                try await WebSocketClient.connect(url: url, configuration: configuration, logger: quietLogger("wire")) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await text in stream { try await outbound.write(.text(text)) }
                            try await outbound.close(.normalClosure, reason: nil)
                        }
                        group.addTask {
                            for try await message in inbound.messages(maxSize: ProtocolLimits.maxRelayMessageBytes) {
                                if case .text(let text) = message { onText(text) }
                            }
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                }
            } catch {
                if !Task.isCancelled { note("wire client ended: \(String("\(error)".prefix(200)))") }
            }
        }
        Task { [task, self] in
            await task.value
            self.closed.store(true, ordering: .relaxed)
        }
    }

    func send(_ text: String) { outgoing.yield(text) }
    func close() { outgoing.finish() }
    func cancel() { task.cancel() }
}

/// Builds valid operations for one replica, in a typical mix.
struct OpFactory {
    let replica: ReplicaID
    let board: EntityID
    var counter: UInt64 = 0
    var rng: SplitMix
    var columns: [EntityID] = []
    var tasks: [EntityID] = []
    var key = PositionKey.initial

    init(replica: String, board: EntityID, seed: UInt64) {
        self.replica = ReplicaID(replica)!
        self.board = board
        rng = SplitMix(seed: seed)
    }

    mutating func make(_ action: BoardOperation.Action) -> BoardOperation {
        counter += 1
        let ms = Int64(Date().timeIntervalSince1970 * 1000)
        return BoardOperation(id: OperationID(replica: replica, counter: counter),
                              stamp: HLCStamp(wallMillis: ms, counter: UInt32(counter % 1000), replica: replica),
                              board: board, action: action)
    }

    mutating func words(_ lo: Int, _ hi: Int) -> String {
        let n = lo + Int(rng.next() % UInt64(hi - lo + 1))
        return (0..<n).map { _ in benchWords[Int(rng.next() % UInt64(benchWords.count))] }.joined(separator: " ")
    }

    mutating func nextKey() -> PositionKey {
        key = PositionKey.between(key, nil)
        if key.rawValue.count > 40 { key = PositionKey.initial }
        return key
    }

    mutating func pick(_ ids: [EntityID]) -> EntityID { ids[Int(rng.next() % UInt64(ids.count))] }

    /// The loadgen's mix: task created 25, updated 45, moved 20, deleted 5, column created 3, deleted 2.
    mutating func typical() -> BoardOperation {
        if columns.isEmpty {
            let c = EntityID.make()
            columns.append(c)
            return make(.createColumn(column: c, title: words(1, 2), position: nextKey()))
        }
        let r = Int(rng.next() % 100)
        if r < 25 || tasks.isEmpty {
            let t = EntityID.make()
            tasks.append(t)
            if tasks.count > 500 { tasks.removeFirst() }
            return make(.createTask(task: t, column: pick(columns), position: nextKey(), title: words(3, 7), description: words(1, 8)))
        } else if r < 70 {
            let t = pick(tasks)
            return rng.next() % 2 == 0 ? make(.updateTask(task: t, title: words(3, 7), description: nil))
                                       : make(.updateTask(task: t, title: nil, description: words(1, 8)))
        } else if r < 90 {
            return make(.moveTask(task: pick(tasks), column: pick(columns), position: nextKey()))
        } else if r < 95 {
            return make(.deleteTask(task: pick(tasks)))
        } else if r < 98 {
            let c = EntityID.make()
            columns.append(c)
            return make(.createColumn(column: c, title: words(1, 2), position: nextKey()))
        } else {
            return make(.deleteColumn(column: pick(columns)))
        }
    }

    /// A task update of loadgen-like size (title + short description).
    mutating func update() -> BoardOperation {
        if tasks.isEmpty { tasks = (0..<200).map { _ in EntityID.make() } }
        return make(.updateTask(task: pick(tasks), title: words(3, 7), description: words(1, 8)))
    }
}

/// (writer, counter) pairs of operation IDs `"id":"<prefix><w>:<n>"` in a message.
func opIDs(in text: String, prefix: String) -> [(Int, Int)] {
    var out: [(Int, Int)] = []
    let bytes = Array(text.utf8)
    let p = Array(("\"id\":\"" + prefix).utf8)
    var i = 0
    while i + p.count < bytes.count {
        if bytes[i] == p[0] {
            var k = 1
            while k < p.count && bytes[i + k] == p[k] { k += 1 }
            if k == p.count {
                var j = i + p.count, w = 0, n = 0
                while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 { w = w * 10 + Int(bytes[j] - 48); j += 1 }
                if j < bytes.count, bytes[j] == 58 {
                    j += 1
                    while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 { n = n * 10 + Int(bytes[j] - 48); j += 1 }
                    out.append((w, n))
                }
                i = j
                continue
            }
        }
        i += 1
    }
    return out
}
