import Foundation
import KanbanModel
import KanbanProtocol

// MARK: - Protocol codec

/// CPU per message of `SyncMessage.decode` (what every agent and relay runs on every frame it
/// receives) and of `text` (encoding), for the three messages each operation crosses: a push of
/// one operation, the relay's ack, and the `ops` broadcast of one operation. Single thread.
func runCodecBench(iterations: Int) throws {
    guard iterations > 0 else { throw BenchError("codec needs --iterations > 0") }
    let board = EntityID.make()
    var factory = OpFactory(replica: "codec", board: board, seed: 7)
    let ops = (0..<64).map { _ in factory.typical() }
    let messages: [(String, [SyncMessage])] = [
        ("push, 1 operation", ops.map { SyncMessage.push(.init(ops: [$0])) }),
        ("ack, 1 operation", ops.map { SyncMessage.ack(.init(acks: [.init(op: $0.id, board: board, seq: 42)])) }),
        ("ops, 1 operation", ops.enumerated().map { SyncMessage.ops(.init(board: board, ops: [.init(seq: Int64($0.offset + 1), op: $0.element)], head: 64)) }),
        ("ops, 64 operations", [SyncMessage.ops(.init(board: board, ops: ops.enumerated().map { .init(seq: Int64($0.offset + 1), op: $0.element) }, head: 64))]),
    ]
    var rows: [[String]] = []
    for (name, list) in messages {
        let frames = list.map { Data($0.text.utf8) }
        var check = 0
        for frame in frames { check += (try? SyncMessage.decode(frame)) == nil ? 0 : 1 }  // warm up, and all must decode
        guard check == frames.count else { throw BenchError("\(name): a frame does not decode") }
        let decodeStart = nowNs()
        for i in 0..<iterations { _ = try SyncMessage.decode(frames[i % frames.count]) }
        let decodeNs = Double(nowNs() - decodeStart) / Double(iterations)
        let encodeStart = nowNs()
        var bytes = 0
        for i in 0..<iterations { bytes &+= list[i % list.count].text.utf8.count }
        let encodeNs = Double(nowNs() - encodeStart) / Double(iterations)
        rows.append([name, "\(frames.map(\.count).reduce(0, +) / frames.count)", num(decodeNs / 1000), num(encodeNs / 1000)])
        _ = bytes
    }
    printTable("Protocol codec, one thread (\(iterations) messages each)", ["message", "bytes", "decode µs", "encode µs"], rows)
}
