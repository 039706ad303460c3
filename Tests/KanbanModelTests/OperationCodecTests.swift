import Foundation
import KanbanModel
import KanbanSimulation
import Testing

struct OperationCodecTests {
    static let board = "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6e"
    static let task = "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d6f"
    static let column = "0192f3c4-8b1e-7c2a-9d3e-1f2a3b4c5d70"
    static let hlc = "001700000000000.0000000003.r1"

    func json(_ fields: [String: Any]) -> Data {
        var all: [String: Any] = ["id": "r1:3", "hlc": Self.hlc, "board": Self.board]
        for (k, v) in fields { all[k] = v }
        return try! JSONSerialization.data(withJSONObject: all)
    }

    @Test func everyKindRoundTrips() throws {
        let r = ReplicaID("r1")!
        let stamp = HLCStamp(wallMillis: 1_700_000_000_000, counter: 3, replica: r)
        let b = EntityID(Self.board)!, t = EntityID(Self.task)!, c = EntityID(Self.column)!
        let actions: [BoardOperation.Action] = [
            .createBoard(title: "B"), .renameBoard(title: "B2"),
            .createColumn(column: c, title: "Todo", position: .initial), .renameColumn(column: c, title: "X"),
            .moveColumn(column: c, position: PositionKey("a")!), .deleteColumn(column: c), .restoreColumn(column: c),
            .createTask(task: t, column: c, position: .initial, title: "T", description: "d"),
            .updateTask(task: t, title: "T2", description: nil), .updateTask(task: t, title: nil, description: "x"),
            .moveTask(task: t, column: c, position: PositionKey("Vk")!), .deleteTask(task: t), .restoreTask(task: t),
        ]
        for action in actions {
            let op = BoardOperation(id: OperationID(replica: r, counter: 3), stamp: stamp, board: b, action: action,
                               base: action.fields.isEmpty ? [:] : [action.fields[0]: stamp])
            #expect(try BoardOperation.decode(json: op.jsonData()) == op)
        }
    }

    @Test(arguments: [
        (#"{"kind": "task.explode", "task": "T"}"#, "kind", "unknown_kind"),
        (#"{"kind": "task.delete"}"#, "task", "missing_field"),
        (#"{"kind": "task.delete", "task": 42}"#, "task", "invalid_field"),
        (#"{"kind": "task.delete", "task": "not-a-uuid"}"#, "task", "invalid_field"),
        (#"{"kind": "task.delete", "task": "T", "colour": "red"}"#, "colour", "unknown_field"),
        (#"{"kind": "task.delete", "task": "T", "title": "x"}"#, "title", "unknown_field"),
        (#"{"kind": "task.create", "task": "T", "column": "C", "position": "V0", "title": "t"}"#, "position", "invalid_field"),
        (#"{"kind": "task.create", "task": "T", "column": "C", "position": "V", "title": "   "}"#, "title", "invalid_field"),
        (#"{"kind": "task.update", "task": "T"}"#, "title", "missing_field"),
        (#"{"kind": "task.move", "task": "T", "column": "C", "position": "V", "base": {"title": "H"}}"#, "base.title", "invalid_field"),
        (#"{"kind": "task.delete", "task": "T", "hlc": 12}"#, "hlc", "invalid_field"),
    ])
    func malformedOperationsNameTheField(fields: String, field: String, code: String) throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(fields.utf8)) as? [String: Any])
        var text = String(decoding: json(object), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"T\"", with: "\"\(Self.task)\"")
            .replacingOccurrences(of: "\"C\"", with: "\"\(Self.column)\"")
            .replacingOccurrences(of: "\"H\"", with: "\"\(Self.hlc)\"")
        #expect {
            _ = try BoardOperation.decode(json: Data(text.utf8))
        } throws: { error in
            guard let error = error as? OperationError else { return false }
            return error.field == field && error.code.rawValue == code
        }
    }

    @Test func idAndStampMustAgreeOnTheReplica() {
        let data = json(["kind": "task.delete", "task": Self.task, "id": "other:3"])
        #expect(throws: OperationError.self) { try BoardOperation.decode(json: data) }
    }

    @Test(arguments: ["", "[]", "{", "null", "\"op\"", "{\"kind\": 7}"])
    func garbageIsRejectedWithoutTrapping(text: String) {
        #expect(throws: OperationError.self) { try BoardOperation.decode(json: Data(text.utf8)) }
    }
}

struct FastEncoderTests {
    /// The hand-written encoder produces exactly what JSONEncoder (sorted keys) produces, for
    /// every kind of operation and for awkward strings.
    @Test func jsonDataMatchesJSONEncoder() throws {
        var simulation = ReplicaSimulation(seed: 5, replicaCount: 3)
        simulation.run(operationsPerReplica: 100)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var ops = simulation.allOperations
        let r = ReplicaID("r1")!
        let awkward = ["quote \" back\\slash", "tab\tnew\nline\r", "ctl \u{01}\u{1F}", "slash / é 🧪", "\u{7F}"]
        for (i, title) in awkward.enumerated() {
            ops.append(BoardOperation(id: OperationID(replica: r, counter: UInt64(i + 1)),
                                      stamp: HLCStamp(wallMillis: 5, counter: UInt32(i), replica: r), board: simulation.board,
                                      action: .renameBoard(title: title), restores: OperationID(replica: r, counter: 1)))
        }
        for op in ops {
            let fast = op.jsonData()
            #expect(String(decoding: fast, as: UTF8.self) == String(decoding: try encoder.encode(op), as: UTF8.self))
            #expect(try BoardOperation.decode(json: fast) == op)
        }
    }
}
