import Foundation
import KanbanModel
import KanbanProtocol
import KanbanSimulation
import Testing

/// The fast readers (`BoardOperation.decodeCanonical`, `SyncMessage.decodeCanonical`) against
/// Foundation's `JSONDecoder`: whatever they accept, they read exactly as it does, and they
/// accept everything this project writes.
struct CanonicalDecodingTests {
    static func operations(seed: UInt64) -> [BoardOperation] {
        var sim = ReplicaSimulation(seed: seed, replicaCount: 3)
        sim.run(operationsPerReplica: 60)
        return sim.allOperations
    }

    @Test(arguments: Array(UInt64(1)...10))
    func everyWrittenOperationIsReadAsJSONDecoderReadsIt(seed: UInt64) throws {
        for op in Self.operations(seed: seed) {
            let bytes = op.jsonBytes()
            let fast = try #require(BoardOperation.decodeCanonical(bytes), "seed \(seed): \(op.jsonString())")
            #expect(fast == op)
            #expect(fast == (try JSONDecoder().decode(BoardOperation.self, from: Data(bytes))))
        }
    }

    @Test(arguments: Array(UInt64(1)...5))
    func everyWrittenPushAckAndOpsIsReadAsJSONDecoderReadsIt(seed: UInt64) throws {
        let ops = Array(Self.operations(seed: seed).prefix(200))
        let board = ops[0].board
        let push = SyncMessage.Push(ops: ops)
        let sequenced = SyncMessage.Ops(board: board, ops: ops.enumerated().map { .init(seq: Int64($0.offset + 1), op: $0.element) },
                                        head: Int64(ops.count + 7))
        let ack = SyncMessage.Ack(acks: ops.prefix(50).enumerated().map { .init(op: $0.element.id, board: board, seq: Int64($0.offset)) })
        let decoder = JSONDecoder()
        for (message, reference) in [
            (SyncMessage.push(push), SyncMessage.push(try decoder.decode(SyncMessage.Push.self, from: SyncMessage.push(push).encoded()))),
            (.ops(sequenced), .ops(try decoder.decode(SyncMessage.Ops.self, from: SyncMessage.ops(sequenced).encoded()))),
            (.ack(ack), .ack(try decoder.decode(SyncMessage.Ack.self, from: SyncMessage.ack(ack).encoded()))),
            (.push(.init(ops: [])), .push(.init(ops: []))),
        ] {
            let fast = try #require(SyncMessage.decodeCanonical(Data(message.text.utf8)), "\(message.type) not read")
            #expect(fast == message && fast == reference)
        }
    }

    /// Random edits of written operations and messages: the fast reader may give up on an input
    /// `JSONDecoder` accepts, but never accepts one it rejects, nor reads one differently.
    @Test(arguments: Array(UInt64(1)...4))
    func mutatedInputIsNeverReadDifferently(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let ops = Self.operations(seed: seed)
        let alphabet = Array(#"{}[]:,"\ 0123456789aAfFzZé-.:_"#.utf8) + [0x00, 0x1F, 0xC3, 0xFF]
        var accepted = 0, rejectedByBoth = 0
        for round in 0..<4_000 {
            let op = ops[Int(rng.next() % UInt64(ops.count))]
            let wrapped = round % 4 == 0
            var bytes = wrapped ? Array(SyncMessage.push(.init(ops: [op])).text.utf8) : op.jsonBytes()
            for _ in 0..<(round % 2 == 0 ? 1 : 1 + Int(rng.next() % 3)) {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 4 {
                case 0: bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                default: bytes.removeSubrange(at...)
                }
                if bytes.isEmpty { bytes = [UInt8(ascii: "{")] }
            }
            let data = Data(bytes)
            if wrapped {
                let fast = SyncMessage.decodeCanonical(data)
                let slow = (try? JSONDecoder().decode(SyncMessage.Push.self, from: data)).map(SyncMessage.push)
                if let fast {
                    #expect(fast == slow, "seed \(seed) round \(round): \(String(decoding: bytes, as: UTF8.self))")
                    accepted += 1
                } else if slow == nil {
                    rejectedByBoth += 1
                }
            } else {
                let fast = BoardOperation.decodeCanonical(bytes)
                let slow = try? JSONDecoder().decode(BoardOperation.self, from: data)
                if let fast {
                    #expect(fast == slow, "seed \(seed) round \(round): \(String(decoding: bytes, as: UTF8.self))")
                    accepted += 1
                } else if slow == nil {
                    rejectedByBoth += 1
                }
            }
        }
        // Neither side of the comparison is empty: some edits keep a valid operation (a changed
        // letter in a title), most break it.
        #expect(accepted > 100 && rejectedByBoth > 1_000, "accepted \(accepted), rejected by both \(rejectedByBoth)")
    }

    @Test func inputOutsideTheWrittenFormIsLeftToJSONDecoder() throws {
        let op = Self.operations(seed: 3).first { if case .createTask = $0.action { true } else { false } }!
        let text = op.jsonString()
        // Each is valid for JSONDecoder and decodes (through the slow path) to the same operation.
        let variants = [
            text.replacingOccurrences(of: ",", with: ", "),                        // whitespace
            text.replacingOccurrences(of: op.board.rawValue, with: op.board.rawValue.uppercased()),
            text.replacingOccurrences(of: #""board":"#, with: #""bo\u0061rd":"#), // an escaped key
        ]
        for variant in variants {
            #expect(BoardOperation.decodeCanonical(Array(variant.utf8)) == nil, "\(variant)")
            #expect(try BoardOperation.decode(json: Data(variant.utf8)) == op, "\(variant)")
        }
        // A field its kind does not use (in sorted place, otherwise well formed): JSONDecoder
        // rejects it, so the fast reader must not take it.
        guard case .createTask(let task, _, _, _, _) = op.action else { return }
        let delete = BoardOperation(id: op.id, stamp: op.stamp, board: op.board, action: .deleteTask(task: task))
        let extra = String(delete.jsonString().dropLast()) + #","title":"x"}"#
        #expect(BoardOperation.decodeCanonical(Array(extra.utf8)) == nil)
        #expect { try BoardOperation.decode(json: Data(extra.utf8)) } throws: { ($0 as? OperationError)?.field == "title" }
        // Non-ASCII text is read by the fast path; invalid UTF-8 is not.
        var renamed = op
        renamed.action = .renameBoard(title: "Café ☕ 看板")
        #expect(BoardOperation.decodeCanonical(renamed.jsonBytes()) == renamed)
        var broken = renamed.jsonBytes()
        broken[broken.firstIndex(of: 0xC3)!] = 0xFF
        #expect(BoardOperation.decodeCanonical(broken) == nil)
        #expect(throws: OperationError.self) { try BoardOperation.decode(json: Data(broken)) }
        // A title with a quote is escaped when written, so it goes through JSONDecoder.
        renamed.action = .renameBoard(title: #"say "hi""#)
        #expect(BoardOperation.decodeCanonical(renamed.jsonBytes()) == nil)
        #expect(try BoardOperation.decode(json: renamed.jsonData()) == renamed)
    }
}
