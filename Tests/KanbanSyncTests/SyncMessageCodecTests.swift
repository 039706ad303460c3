import Foundation
import KanbanModel
import KanbanProtocol
import KanbanSimulation
import Testing

/// The codec against the golden frames in `Protocol/frames/`.
struct SyncMessageCodecTests {
    static let framesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Protocol/frames").standardized

    static func files(_ subdirectory: String = "") -> [String] {
        let dir = framesDirectory.appendingPathComponent(subdirectory)
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [])
            .filter { $0.hasSuffix(".json") }.sorted().map { dir.appendingPathComponent($0).path }
    }

    /// Every close code the protocol lists gets its own diagnosis on the agent (what the link
    /// status and `kanban doctor` show), not the catch-all.
    @Test func everyDocumentedCloseCodeHasItsOwnDiagnosis() throws {
        let spec = try String(contentsOf: Self.framesDirectory.deletingLastPathComponent().appendingPathComponent("sync-protocol.md"), encoding: .utf8)
        let section = try #require(spec.components(separatedBy: "## Close codes").dropFirst().first?.components(separatedBy: "\n## ").first)
        let codes = section.split(separator: "\n").compactMap { line -> UInt16? in
            guard line.hasPrefix("| ") else { return nil }
            return UInt16(line.dropFirst(2).prefix { $0.isNumber })
        }
        #expect(codes.count >= 14, "\(codes)")
        for code in codes {
            let problem = LinkProblem.closeCode(code)
            #expect(problem.message != "The link was closed with code \(code).", "close code \(code) has no diagnosis of its own")
        }
    }

    @Test func everyMessageTypeHasAGoldenFrame() {
        let names = Set(Self.files().map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent })
        #expect(names == ["hello", "welcome", "push", "ack", "ops", "snapshot", "presence", "digest", "digest_result", "ping", "pong", "error"])
    }

    @Test(arguments: files())
    func goldenFramesDecodeAndReencodeToTheSameJSON(path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let message = try SyncMessage.decode(data)
        #expect(message.type == URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent)
        let reencoded = message.encoded()
        #expect(try SyncMessage.decode(reencoded) == message)
        let original = try JSONSerialization.jsonObject(with: data) as? NSDictionary
        let again = try JSONSerialization.jsonObject(with: reencoded) as? NSDictionary
        #expect(original == again, "re-encoding \(path) changed its JSON")
    }

    /// Invalid frames are named `<expected code>[.detail].json`.
    @Test(arguments: files("invalid"))
    func invalidFramesAreRejectedWithTheRightCode(path: String) throws {
        let expected = String(URL(fileURLWithPath: path).lastPathComponent.split(separator: ".").first!)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect {
            _ = try SyncMessage.decode(data)
        } throws: { error in
            (error as? ProtocolViolation)?.code.rawValue == expected
        }
    }

    /// `push`, `ack` and `ops` are written by hand for speed (the first two spliced from the
    /// operations' own JSON); byte for byte they must be what the generic encoder writes
    /// (sorted keys, `type` last), and decode back.
    @Test(arguments: Array(UInt64(1)...10))
    func splicedPushAckAndOpsEqualTheGenericEncoding(seed: UInt64) throws {
        var sim = ReplicaSimulation(seed: seed, replicaCount: 3)
        sim.run(operationsPerReplica: 40)
        let ops = Array(sim.allOperations.prefix(120))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func tagged(_ data: Data, _ type: String) -> String {
            String(decoding: data.dropLast(), as: UTF8.self) + #","type":"\#(type)"}"#
        }
        let push = SyncMessage.Push(ops: ops)
        #expect(SyncMessage.push(push).text == tagged(try encoder.encode(push), "push"))
        let batch = SyncMessage.Ops(board: sim.board, ops: ops.enumerated().map { .init(seq: Int64($0.offset + 1), op: $0.element) },
                                    head: Int64(ops.count + 7))
        #expect(SyncMessage.ops(batch).text == tagged(try encoder.encode(batch), "ops"))
        #expect(try SyncMessage.decode(SyncMessage.ops(batch).encoded(), limit: 1 << 26) == .ops(batch))
        #expect(try SyncMessage.decode(SyncMessage.push(.init(ops: Array(ops.prefix(100)))).encoded()) == .push(.init(ops: Array(ops.prefix(100)))))
        let empty = SyncMessage.Ops(board: sim.board, ops: [], head: 0)
        #expect(SyncMessage.ops(empty).text == tagged(try encoder.encode(empty), "ops"))
        for count in [0, 1, 50] {
            let ack = SyncMessage.Ack(acks: ops.prefix(count).enumerated().map {
                .init(op: $0.element.id, board: $0.element.board, seq: Int64($0.offset) * 1_000_003)
            })
            #expect(SyncMessage.ack(ack).text == tagged(try encoder.encode(ack), "ack"))
            #expect(try SyncMessage.decode(SyncMessage.ack(ack).encoded()) == .ack(ack))
        }
    }

    @Test func oversizedMessagesAreRejectedBeforeParsing() {
        let big = Data(repeating: UInt8(ascii: " "), count: ProtocolLimits.maxMessageBytes + 1)
        #expect { _ = try SyncMessage.decode(big) } throws: { ($0 as? ProtocolViolation)?.code == .tooLarge }
    }

    @Test func randomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 7, 64, 1_000] {
            for _ in 0..<50 {
                let bytes = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
                #expect(throws: ProtocolViolation.self) { try SyncMessage.decode(bytes) }
            }
        }
    }
}
