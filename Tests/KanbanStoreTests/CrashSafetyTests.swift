import Foundation
import KanbanModel
import KanbanStore
import Testing

/// The built `kanban` executable next to the test bundle (or `$KANBAN_BIN`).
func kanbanExecutable() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["KANBAN_BIN"] { return URL(fileURLWithPath: path) }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("kanban")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir.deleteLastPathComponent()
    }
    let fallback = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../.build/debug/kanban").standardized
    guard FileManager.default.isExecutableFile(atPath: fallback.path) else {
        throw TestFailure("cannot find the kanban executable; run `swift build` first or set KANBAN_BIN")
    }
    return fallback
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite(.serialized)
struct CrashSafetyTests {
    /// Kills a writer process with SIGKILL after a different number of commits each time, then
    /// checks that everything it reported as committed is in the log, the file is sound, and
    /// the tables equal a replay of the log.
    @Test(arguments: [3, 17, 60, 150, 400] as [Int])
    func everyReportedCommitSurvivesSIGKILL(killAfterLines: Int) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let process = Process()
        process.executableURL = try kanbanExecutable()
        process.arguments = ["debug", "crash-writer", "--data", dir.path, "--seed", String(killAfterLines)]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()

        var reported: [OperationID] = []
        var buffer = Data()
        let handle = pipe.fileHandleForReading
        while reported.count < killAfterLines {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            while let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                if line.hasPrefix("committed "), let id = OperationID(line.dropFirst(10)) { reported.append(id) }
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the writer finished before it could be killed")
        #expect(reported.count >= killAfterLines)

        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path)
        defer { try? store.close() }
        #expect(try store.integrityCheck() == "ok")
        for id in reported {
            #expect(try store.contains(id), "committed operation \(id) was lost")
        }
        let boards = Set(try reported.compactMap { try store.operation($0)?.board })
        #expect(!boards.isEmpty)
        for board in boards {
            #expect(try store.stateFromDisk(board) == store.stateFromLog(board))
            #expect(try store.digest(board) == store.stateFromLog(board).digest)
        }
        // The clock and counter resume from their saved ceilings: the next local operation is
        // above every logged stamp and reuses no logged operation ID.
        for board in boards {
            let logged = try store.operations(board)
            let next = try store.author(board: board) { _ in .renameBoard(title: "after the crash") }.operation
            #expect(logged.allSatisfy { $0.stamp < next.stamp && $0.id != next.id })
            #expect(logged.filter { $0.id.replica == store.replicaID }.allSatisfy { $0.id.counter < next.id.counter })
        }
    }
}
