import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A read-only token's edits stay queued for good: the relay refuses them. `kanban queued`
/// lists them in words and `--discard` throws them away, which brings the agent back to the
/// team's board (real processes: a relay, a read-write agent, a read-only agent).
@Suite(.serialized) struct DiscardQueuedTests {
    @Test func discardingRefusedChangesBringsBackTheTeamsBoard() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-discard-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cli = CLITests()
        let http = ProcessSyncTests()
        let processes = try await ProcessSyncTests.WriterAndReader.start(root: root)
        defer { processes.stop() }
        let (w, r) = (processes.writerURL, processes.readerURL)

        // The writer's board, with two tasks, reaches the reader.
        let board = try #require(try await http.request("POST", w + "/api/boards", ["title": "Shared"])["id"] as? String)
        let column = try #require(try await http.request("POST", w + "/api/boards/\(board)/columns", ["title": "Todo"])["id"] as? String)
        let first = try #require(try await http.request("POST", w + "/api/columns/\(column)/tasks", ["title": "Write the spec"])["id"] as? String)
        _ = try await http.request("POST", w + "/api/columns/\(column)/tasks", ["title": "Review it"])
        try await eventually("the reader gets the shared board") { try await http.taskTitles(r.port, board).count == 2 }

        // The reader edits it (3 operations) and makes a board of its own (1): all refused.
        _ = try await http.request("POST", r + "/api/columns/\(column)/tasks", ["title": "Reader's task"])
        _ = try await http.request("PATCH", r + "/api/tasks/\(first)", ["title": "Spec, renamed by the reader"])
        _ = try await http.request("DELETE", r + "/api/tasks/\(first)")
        let mine = try #require(try await http.request("POST", r + "/api/boards", ["title": "Mine"])["id"] as? String)
        try await eventually("both boards are refused") {
            let refused = (try await http.request("GET", r + "/health/websocket")["refused"] as? [[String: Any]]) ?? []
            return Set(refused.compactMap { $0["board"] as? String }) == [board, mine]
        }
        // Meanwhile the team goes on: the reader receives it on top of its own edits.
        _ = try await http.request("POST", w + "/api/columns/\(column)/tasks", ["title": "From the team"])
        try await eventually("the reader gets the team's new task") { try await http.taskTitles(r.port, board).contains("From the team") }
        #expect(try await http.request("GET", r + "/api/boards/\(board)/digest")["digest"] as? String
                != http.request("GET", w + "/api/boards/\(board)/digest")["digest"] as? String)

        // `kanban queued` says what is waiting, where, and why.
        var (status, out) = try await cli.run(["queued", "--agent", r])
        #expect(status == 0, "\(out)")
        for line in ["Shared (", "3 changes not on the relay yet", "add task “Reader's task” to “Todo”",
                     "rename a task to “Spec, renamed by the reader”", "delete task “Spec, renamed by the reader”",
                     "refused by the relay", "(read_only)", "Mine (", "1 change not on the relay yet", "create the board “Mine”",
                     "kanban queued"] {
            #expect(out.contains(line), "missing \(line) in:\n\(out)")
        }
        // --json prints the agent's answer, its dates as the API writes them.
        (status, out) = try await cli.run(["queued", "Shared", "--json", "--agent", r])
        let printed = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        let printedRefusal = (printed?.first?["refused"] as? [[String: Any]])?.first
        #expect(status == 0 && (printed?.first?["operations"] as? [Any])?.count == 3 && printedRefusal?["code"] as? String == "read_only"
                && (printedRefusal?["at"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) } != nil, "\(out)")
        let queued = try await http.request("GET", r + "/api/boards/\(board)/queued")
        #expect((queued["operations"] as? [Any])?.count == 3)
        #expect(((queued["refused"] as? [[String: Any]])?.first?["code"] as? String) == "read_only")
        // `kanban board` says so under the board.
        (status, out) = try await cli.run(["board", board, "--agent", r])
        #expect(status == 0 && out.contains("3 changes made here are not on the relay yet (the relay refuses them: read_only): kanban queued"),
                "\(out)")
        let versionBefore = try #require(try await http.request("GET", r + "/health")["version"] as? Int)

        (status, out) = try await cli.run(["queued", "--discard", "--agent", r])
        #expect(status != 0 && out.contains("--discard needs the board"), "\(out)")
        (status, out) = try await cli.run(["queued", "Shared", "--yes", "--agent", r])
        #expect(status != 0 && out.contains("--yes confirms --discard"), "\(out)")

        // Discarded: the reader's board is the writer's again, and only "Mine" is still refused.
        // Not without a confirmation: no terminal here, so --yes.
        (status, out) = try await cli.run(["queued", "Shared", "--discard", "--agent", r])
        #expect(status != 0 && out.contains("add --yes to confirm"), "\(out)")
        #expect((try await http.request("GET", r + "/api/boards/\(board)/queued")["operations"] as? [Any])?.count == 3)
        (status, out) = try await cli.run(["queued", "Shared", "--discard", "--yes", "--agent", r])
        #expect(status == 0 && out.contains("Discarded 3 changes to “Shared”"), "\(out)")
        let writerDigest = try await http.request("GET", w + "/api/boards/\(board)/digest")["digest"] as? String
        #expect(try await http.request("GET", r + "/api/boards/\(board)/digest")["digest"] as? String == writerDigest)
        #expect(try await http.taskTitles(r.port, board) == http.taskTitles(w.port, board))
        var sync = try await http.request("GET", r + "/health/websocket")
        #expect((sync["refused"] as? [[String: Any]])?.compactMap { $0["board"] as? String } == [mine], "\(sync)")
        #expect(sync["queuedOperations"] as? Int == 1)
        (status, out) = try await cli.run(["queued", "Shared", "--discard", "--agent", r])
        #expect(status == 0 && out.contains("Nothing queued on Shared"), "\(out)")

        (status, out) = try await cli.run(["board", board, "--agent", r])
        #expect(status == 0 && !out.contains("not on the relay"), "\(out)")

        // Sync goes on: the team's next task arrives and the boards stay equal.
        _ = try await http.request("POST", w + "/api/columns/\(column)/tasks", ["title": "After the discard"])
        try await eventually("the reader gets the next task") { try await http.taskTitles(r.port, board).contains("After the discard") }
        #expect(try await http.request("GET", r + "/api/boards/\(board)/digest")["digest"] as? String
                == http.request("GET", w + "/api/boards/\(board)/digest")["digest"] as? String)

        // A board that existed only through what is discarded is gone; versions never go back.
        (status, out) = try await cli.run(["queued", "Mine", "--discard", "--yes", "--agent", r])
        #expect(status == 0 && out.contains("existed only through them and is gone"), "\(out)")
        let boards = try await http.requestArray("GET", r + "/api/boards")
        #expect(boards.compactMap { $0["id"] as? String } == [board])
        sync = try await http.request("GET", r + "/health/websocket")
        #expect((sync["refused"] as? [Any])?.isEmpty == true && sync["queuedOperations"] as? Int == 0, "\(sync)")
        let later = try #require(try await http.request("POST", r + "/api/boards", ["title": "Later"])["version"] as? Int)
        #expect(later > versionBefore, "a new operation's version \(later) is above every earlier one (\(versionBefore))")
        (status, out) = try await cli.run(["queued", "--agent", r])
        #expect(status == 0 && out.contains("Later (") && out.contains("create the board “Later”"), "\(out)")
    }
}

private extension String {
    /// The port of "http://127.0.0.1:PORT".
    var port: Int { Int(split(separator: ":").last ?? "") ?? 0 }
}
