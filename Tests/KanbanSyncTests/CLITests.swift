import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanRelay
import Synchronization
import Testing

/// The terminal commands against a real `kanban agent` process.
@Suite(.serialized)
struct CLITests {
    /// Runs `kanban args...` to completion and returns (exit code, stdout + stderr).
    func run(_ args: [String], timeout: Duration = .seconds(20)) async throws -> (Int32, String) {
        let process = Process()
        process.executableURL = try ProcessSyncTests.kanbanBinary()
        process.arguments = args
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { process.terminate(); throw TestError("kanban \(args) timed out") }
            try await Task.sleep(for: .milliseconds(10))
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, output)
    }

    @Test func terminalCommandsDriveTheAgent() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-cli-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let agent = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root])
        defer { agent.kill() }
        let url = "http://127.0.0.1:\(try await agent.port(after: "Board:"))"

        var (status, out) = try await run(["board", "--agent", url, "--create", "Plan"])
        #expect(status == 0 && out.contains("created"), "\(out)")
        (status, out) = try await run(["board", "Plan", "--rename", "The plan", "--agent", url])
        #expect(status == 0 && out.contains("renamed board Plan → The plan"), "\(out)")
        (status, out) = try await run(["board", "The plan", "--rename", "Plan", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["board", "--rename", "Plan", "--agent", url])
        #expect(status != 0 && out.contains("--rename needs the board"), "\(out)")
        (status, out) = try await run(["add", "Too early", "--agent", url])
        #expect(status != 0 && out.contains("kanban column add"), "a board without columns says how to add one: \(out)")
        for title in ["Todo", "Done"] {
            (status, out) = try await run(["column", "add", title, "--agent", url])
            #expect(status == 0 && out.contains("added column"), "\(out)")
        }
        (status, out) = try await run(["add", "Write tests", "--agent", url, "--column", "Todo"])
        #expect(status == 0 && out.contains("Write tests"), "\(out)")
        (status, out) = try await run(["add", "Ship", "--agent", url, "--column", "Todo", "--after", "Write tests"])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        #expect(status == 0 && out.contains("Todo (2)") && out.contains("• Write tests"), "\(out)")
        let lines = out.split(separator: "\n")
        let writeRow = lines.firstIndex { $0.contains("Write tests") }, shipRow = lines.firstIndex { $0.contains("Ship") }
        #expect(writeRow != nil && shipRow != nil && writeRow! < shipRow!, "--after puts Ship below Write tests:\n\(out)")

        // watch: start it, make a change, and see it redraw with the change.
        let watch = Process()
        watch.executableURL = try ProcessSyncTests.kanbanBinary()
        watch.arguments = ["watch", "Plan", "--agent", url, "--changes", "1"]
        let watchOut = Pipe()
        watch.standardOutput = watchOut
        try watch.run()
        defer { if watch.isRunning { watch.terminate() } }
        try await eventually("watch shows the board") { watchOut.fileHandleForReading.availableData.count > 0 }

        (status, out) = try await run(["mv", "Ship", "Done", "--agent", url])
        #expect(status == 0 && out.contains("Done"), "\(out)")
        try await eventually("watch exits after one change") { !watch.isRunning }
        let watched = String(decoding: watchOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(watched.contains("Done (1)"), "watch redrew with the move:\n\(watched)")

        (status, out) = try await run(["edit", "Ship", "--title", "Ship it", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["rm", "Ship it", "--agent", url])
        #expect(status == 0 && out.contains("deleted"), "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        #expect(out.contains("Trash: Ship it") && out.contains("Done (0)"), "\(out)")
        (status, out) = try await run(["restore", "Ship it", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        #expect(out.contains("Done (1)"), "\(out)")

        // Columns: add in the middle, first, rename, move, delete (its task waits), restore.
        (status, out) = try await run(["column", "add", "Doing", "--after", "todo", "--agent", url])
        #expect(status == 0 && out.contains("right of Todo"), "\(out)")
        (status, out) = try await run(["column", "add", "Ideas", "--first", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["column", "rename", "Doing", "In progress", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["column", "mv", "Ideas", "--after", "Done", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        let header = out.split(separator: "\n").first { $0.contains("Todo (") }.map(String.init) ?? ""
        let order = ["Todo", "In progress", "Done", "Ideas"].map { header.range(of: $0 + " (")?.lowerBound }
        #expect(!order.contains(nil) && order.map { $0! } == order.map { $0! }.sorted(), "columns in order: \(header)")
        (status, out) = try await run(["column", "mv", "Ideas", "--agent", url])
        #expect(status != 0 && out.contains("--after COLUMN or --first"), "\(out)")
        (status, out) = try await run(["column", "rm", "Done", "--agent", url])
        #expect(status == 0 && out.contains("its 1 task wait"), "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        #expect(out.contains("Tasks whose column was deleted: Ship it") && out.contains("Deleted columns: Done ("), "\(out)")
        (status, out) = try await run(["column", "restore", "done", "--agent", url])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["board", "Plan", "--agent", url])
        #expect(out.contains("Done (1)") && !out.contains("Deleted columns"), "\(out)")

        // --json prints the board document as the API gives it.
        (status, out) = try await run(["board", "Plan", "--json", "--agent", url])
        let printed = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        let served = try await ProcessSyncTests().request("GET", "\(url)/api/boards/\(printed?["id"] as? String ?? "-")")
        #expect(status == 0 && printed.map { NSDictionary(dictionary: $0).isEqual(to: served) } == true, "\(out)")

        // Short IDs: every task made above within a second has its own, and commands take it.
        (status, out) = try await run(["board", "Plan", "--ids", "--agent", url])
        let shortIDs = out.split(whereSeparator: \.isWhitespace).map(String.init).filter { $0.count == 8 && $0.allSatisfy(\.isHexDigit) }
        #expect(shortIDs.count == 2 && Set(shortIDs).count == 2, "\(out)")
        if let first = shortIDs.first {
            (status, out) = try await run(["rm", first, "--agent", url])
            #expect(status == 0 && out.contains("kanban restore \(first)"), "\(out)")
        }
    }

    @Test func commandsSayClearlyWhenNoAgentIsRunning() async throws {
        let (status, out) = try await run(["board", "--agent", "http://127.0.0.1:9"])
        #expect(status != 0)
        #expect(out.contains("no agent answered at http://127.0.0.1:9") && out.contains("kanban agent"), "\(out)")
    }

    @Test(arguments: [["agent", "--port", "70000"], ["agent", "--allow-origin", "localhost:5173"],
                      ["agent", "--relay", "http://x"], ["edit", "T"], ["relay", "token", "create", "--board", "nope", "--team", "t"],
                      ["relay", "--http-idle-seconds", "0"]])
    func badArgumentsGetAClearMessage(args: [String]) async throws {
        let (status, out) = try await run(args)
        #expect(status != 0)
        #expect(out.lowercased().contains("error"), "\(args): \(out)")
    }

    @Test func aReconnectDelayOutOfRangeIsNamed() async throws {
        let (status, out) = try await run(["agent", "--max-reconnect-delay", "0"])
        #expect(status != 0 && out.contains("--max-reconnect-delay must be 1-3600 seconds (got 0)"), "\(out)")
    }

    @Test(arguments: [(["relay", "--compaction-threshold", "-1"], "--compaction-threshold must be 0 (never) or more (got -1)"),
                      (["relay", "--compaction-threshold", "100", "--compaction-keep", "100"],
                       "--compaction-keep must be 0 or more and below --compaction-threshold (100); got 100")])
    func aCompactionSettingOutOfRangeIsNamed(args: [String], message: String) async throws {
        let (status, out) = try await run(args)
        #expect(status != 0 && out.contains(message), "\(args): \(out)")
    }

    /// A negative port reaches the range check (it used to read as a flag, "missing value").
    @Test(arguments: [["agent", "--port", "-1"], ["relay", "--port", "-1"], ["relay", "--port", "70000"]])
    func aPortOutOfRangeIsNamed(args: [String]) async throws {
        let (status, out) = try await run(args)
        #expect(status != 0)
        #expect(out.contains("--port must be 0-65535"), "\(args): \(out)")
    }

    /// A second agent (or relay) on a directory a running one holds is refused, naming the
    /// holder; once the holder is SIGKILLed the directory is free again (the lock dies with it).
    @Test(arguments: ["agent", "relay"])
    func aSecondServerOnOneDataDirectoryIsRefused(kind: String) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let args = [kind, "--port", "0", "--data", root]
        let marker = kind == "agent" ? "Board:" : "listening on ws://"
        let first = try ProcessSyncTests.Child(args)
        defer { first.kill() }
        _ = try await first.port(after: marker)

        let (status, out) = try await run(args)
        #expect(status == 1, "\(out)")
        #expect(out.contains("pid \(first.process.processIdentifier)") && out.contains("already using \(root)"), "\(out)")
        #expect(first.process.isRunning)

        first.kill(SIGKILL)
        let next = try ProcessSyncTests.Child(args)
        defer { next.kill() }
        _ = try await next.port(after: marker)
    }

    /// `relay token create` records each token (its ID, not the token), `list` shows them,
    /// `revoke` takes an ID or the whole token, and says what it did or what is wrong.
    /// A burst of 300 creates is drawn by `kanban watch` at most once per 100 ms frame (plus the
    /// first draw), not once per event, and the last drawing has all of them.
    @Test func watchDrawsABurstInFrames() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-watch-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let agent = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root])
        defer { agent.kill() }
        let url = "http://127.0.0.1:\(try await agent.port(after: "Board:"))"
        _ = try await run(["board", "--create", "Burst", "--agent", url])
        _ = try await run(["column", "add", "Todo", "--agent", url])
        let (list, _) = try await URLSession.shared.data(from: URL(string: url + "/api/boards")!)
        let boardID = try #require(((try JSONSerialization.jsonObject(with: list) as? [[String: Any]])?.first?["id"]) as? String)
        let doc = try await ProcessSyncTests().request("GET", url + "/api/boards/\(boardID)")
        let board = try #require(((doc["columns"] as? [[String: Any]])?.first?["id"]) as? String)

        let watch = Process()
        watch.executableURL = try ProcessSyncTests.kanbanBinary()
        watch.arguments = ["watch", "Burst", "--agent", url, "--changes", "300"]
        let output = Pipe()
        watch.standardOutput = output
        try watch.run()
        defer { if watch.isRunning { watch.terminate() } }
        // Read as it comes, so a full pipe never holds the watcher up.
        final class Collected: Sendable { let data = Mutex(Data()) }
        let collected = Collected()
        output.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            collected.data.withLock { $0.append(chunk) }
        }
        try await eventually("watch draws the board") { collected.data.withLock { !$0.isEmpty } }

        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<8 {
                group.addTask {
                    for i in stride(from: client, to: 300, by: 8) {
                        _ = try await ProcessSyncTests().request("POST", "\(url)/api/columns/\(board)/tasks", ["title": "B\(i)"])
                    }
                }
            }
            try await group.waitForAll()
        }
        try await eventually("watch exits after 300 changes") { !watch.isRunning }
        let elapsed = ContinuousClock.now - started
        output.fileHandleForReading.readabilityHandler = nil
        let text = String(decoding: collected.data.withLock { $0 } + output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let draws = text.components(separatedBy: "\u{1B}[H").count - 1  // every frame starts at the top left
        let frames = Int(elapsed / .milliseconds(100)) + 2  // WatchCommand.frame, and the first draw
        #expect(draws >= 2 && draws <= frames && draws < 300, "\(draws) draws in \(elapsed)")
        let last = text.components(separatedBy: "\u{1B}[2J").last ?? ""
        #expect(last.contains("Todo (300)"), "the last drawing has every task: \(last.prefix(300))")
    }

    /// Two agents rename one task while their relay is down: `kanban conflicts` lists the lost
    /// title in words and `--restore` brings it back.
    @Test func conflictsAreListedAndRestored() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-conflicts-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let token = try ProcessSyncTests().makeToken(relayData: root + "/relay")
        let first = try ProcessSyncTests.Child(["relay", "--port", "0", "--data", root + "/relay"])
        defer { first.kill() }
        let port = try await first.port(after: "listening on ws://")
        let relayURL = "ws://127.0.0.1:\(port)/sync"
        let a = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/a", "--relay", relayURL, "--token", token])
        defer { a.kill() }
        let b = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/b", "--relay", relayURL, "--token", token])
        defer { b.kill() }
        let (urlA, urlB) = ("http://127.0.0.1:\(try await a.port(after: "Board:"))", "http://127.0.0.1:\(try await b.port(after: "Board:"))")
        _ = try await run(["board", "--create", "Shared", "--agent", urlA])
        _ = try await run(["column", "add", "Todo", "--agent", urlA])
        _ = try await run(["add", "Original", "--agent", urlA])
        try await eventually("B has the task") { try await run(["board", "Shared", "--agent", urlB]).1.contains("• Original") }

        first.kill(SIGKILL)
        var (status, out) = try await run(["edit", "Original", "--title", "From A", "--agent", urlA])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["edit", "Original", "--title", "From B", "--agent", urlB])
        #expect(status == 0, "\(out)")
        (status, out) = try await run(["conflicts", "Shared", "--agent", urlA])
        #expect(status == 0 && out.contains("No conflicts on Shared."), "\(out)")
        let relay = try ProcessSyncTests.Child(["relay", "--port", "\(port)", "--data", root + "/relay"])
        defer { relay.kill() }
        let http = ProcessSyncTests()
        for url in [urlA, urlB] { _ = try await http.request("POST", url + "/api/sync/reconnect") }
        try await eventually("A records the conflict") { try await run(["conflicts", "--agent", urlA]).1.contains("lost edit") }

        (status, out) = try await run(["conflicts", "--agent", urlA])
        let line = out.split(separator: "\n").first { $0.contains("lost edit") }.map(String.init) ?? ""
        #expect(line.contains("title: kept “From B”, lost “From A”") || line.contains("title: kept “From A”, lost “From B”"), "\(out)")
        let lostTitle = line.contains("lost “From A”") ? "From A" : "From B"
        let op = try #require(line.range(of: "(lost edit ").map { String(line[$0.upperBound...].dropLast()) })
        (status, out) = try await run(["conflicts", "--restore", op, "--agent", urlA])
        #expect(status == 0 && out.contains("restored “\(lostTitle)” as the title of task"), "\(out)")
        (status, out) = try await run(["conflicts", "--agent", urlA])
        #expect(out.contains("No conflicts"), "\(out)")
        try await eventually("B has the restored title") { try await run(["board", "Shared", "--agent", urlB]).1.contains("• \(lostTitle)") }
        (status, out) = try await run(["conflicts", "--restore", "nobody:1", "--agent", urlA])
        #expect(status != 0 && out.contains("no conflicts on Shared"), "\(out)")
    }

    @Test func relayTokensAreListedAndRevoked() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-tokens-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let board = "01a232f5-a8a1-763d-880d-4487b9fc3e25"
        var (status, out) = try await run(["relay", "token", "create", "--data", root, "--team", "acme"])
        #expect(status == 0)
        let first = out.trimmingCharacters(in: .whitespacesAndNewlines)
        (status, out) = try await run(["relay", "token", "create", "--data", root, "--team", "acme", "--board", board, "--read-only"])
        #expect(status == 0)
        let second = out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(first.hasPrefix("kb1.") && second.hasPrefix("kb1.") && !second.contains("\n"), "stdout is the token alone: \(second)")
        let (firstID, secondID) = (TokenAuthority.id(of: first), TokenAuthority.id(of: second))

        (status, out) = try await run(["relay", "token", "list", "--data", root])
        let lines = out.split(separator: "\n").map(String.init)
        #expect(status == 0 && lines.count == 3, "\(out)")
        #expect(lines.first?.hasPrefix("ID") == true)
        #expect(lines.contains { $0.hasPrefix(firstID) && $0.contains("acme  all") && $0.contains("read-write") && $0.hasSuffix("valid") }, "\(out)")
        #expect(lines.contains { $0.hasPrefix(secondID) && $0.contains(board) && $0.contains("read-only") && $0.hasSuffix("valid") }, "\(out)")

        (status, out) = try await run(["relay", "token", "revoke", "--data", root, firstID])
        #expect(status == 0 && out.contains("revoked token \(firstID)"), "\(out)")
        (status, out) = try await run(["relay", "token", "revoke", "--data", root, firstID])
        #expect(status == 0 && out.contains("already revoked"), "\(out)")
        (status, out) = try await run(["relay", "token", "revoke", "--data", root, second])  // the whole token
        #expect(status == 0 && out.contains("revoked token \(secondID)"), "\(out)")
        (status, out) = try await run(["relay", "token", "revoke", "--data", root, "0123456789abcdef"])
        #expect(status == 1 && out.contains("no token with ID 0123456789abcdef") && out.contains("token list"), "\(out)")
        (status, out) = try await run(["relay", "token", "revoke", "--data", root, "not-a-token"])
        #expect(status == 64 && out.contains("neither a token ID"), "\(out)")

        (status, out) = try await run(["relay", "token", "list", "--data", root, "--json"])
        let listed = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]] ?? []
        #expect(status == 0 && listed.count == 2 && listed.allSatisfy { $0["revokedAt"] is Int }, "\(out)")
    }

    /// A replica or relay log that is not a database (or is damaged) is named, with what to do,
    /// as a plain failure (exit 1, no usage text: the arguments were fine); the file is left as it was.
    @Test(arguments: [("agent", "replica.sqlite"), ("relay", "relay.sqlite")])
    func aDamagedDatabaseFileIsNamedWithWhatToDo(kind: String, file: String) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-damaged-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let junk = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        try junk.write(to: URL(fileURLWithPath: root + "/" + file))
        let (status, out) = try await run([kind, "--port", "0", "--data", root])
        #expect(status == 1, "\(out)")
        #expect(out.contains("cannot open \(root)/\(file): it is not an SQLite database, or it is damaged"), "\(out)")
        #expect(out.contains("Restore it from a backup") && !out.contains("Usage:"), "\(out)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/" + file)) == junk)
    }
}
