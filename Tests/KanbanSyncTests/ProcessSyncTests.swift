import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRDB
import Testing

/// The real `kanban` binaries as separate processes on loopback.
@Suite(.serialized)
struct ProcessSyncTests {
    /// A child process whose stdout lines are collected.
    final class Child: @unchecked Sendable {
        let process = Process()
        private let lock = NSLock()
        private var lines: [String] = []

        init(_ arguments: [String]) throws {
            process.executableURL = try kanbanBinary()
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let text = String(decoding: handle.availableData, as: UTF8.self)
                guard let self, !text.isEmpty else { return }
                self.lock.lock()
                self.lines.append(contentsOf: text.split(separator: "\n").map(String.init))
                self.lock.unlock()
            }
            try process.run()
        }

        /// The port in the first output line containing `marker` followed by `127.0.0.1:PORT`.
        func port(after marker: String) async throws -> Int {
            let deadline = ContinuousClock.now + .seconds(20)
            while !lock.withLock({ lines.contains { $0.contains(marker) } }) {
                guard process.isRunning, ContinuousClock.now < deadline else {
                    throw TestError("no '\(marker)' line from kanban \(process.arguments?.joined(separator: " ") ?? "")")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let line = lock.withLock { lines.first { $0.contains(marker) }! }
            let afterHost = line.components(separatedBy: "127.0.0.1:")[1]
            return Int(afterHost.prefix { $0.isNumber })!
        }

        /// The first output line containing `marker`, once there is one (up to 20 s).
        func line(containing marker: String) async throws -> String {
            let deadline = ContinuousClock.now + .seconds(20)
            while true {
                if let line = lock.withLock({ lines.first { $0.contains(marker) } }) { return line }
                guard process.isRunning, ContinuousClock.now < deadline else {
                    throw TestError("no '\(marker)' line from kanban \(process.arguments?.joined(separator: " ") ?? "")")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        func kill(_ signal: Int32 = SIGTERM) {
            if process.isRunning { Foundation.kill(process.processIdentifier, signal) }
            process.waitUntilExit()
        }
    }

    static func kanbanBinary() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["KANBAN_BIN"] { return URL(fileURLWithPath: path) }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("kanban")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/kanban").standardized
    }

    func request(_ method: String, _ url: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        var request = URLRequest(url: URL(string: url)!, timeoutInterval: 10)
        request.httpMethod = method
        if let body { request.httpBody = try JSONSerialization.data(withJSONObject: body) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else { throw TestError("\(method) \(url) → \(status): \(String(decoding: data, as: UTF8.self))") }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// `request` for an answer that is a JSON array of objects.
    func requestArray(_ method: String, _ url: String) async throws -> [[String: Any]] {
        var request = URLRequest(url: URL(string: url)!, timeoutInterval: 10)
        request.httpMethod = method
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else { throw TestError("\(method) \(url) → \(status): \(String(decoding: data, as: UTF8.self))") }
        return (try JSONSerialization.jsonObject(with: data) as? [[String: Any]]) ?? []
    }

    func taskTitles(_ port: Int, _ board: String) async throws -> [String] {
        let doc = try await request("GET", "http://127.0.0.1:\(port)/api/boards/\(board)")
        return ((doc["columns"] as? [[String: Any]]) ?? []).flatMap { ($0["tasks"] as? [[String: Any]]) ?? [] }.compactMap { $0["title"] as? String }
    }

    /// A `kanban relay` on `root` with two agents: `writer` on a read-write token of team "t",
    /// `reader` on a read-only one. The caller stops them (`stop()`, or each by itself).
    struct WriterAndReader {
        let relay: Child, writer: Child, reader: Child
        let relayURL: String, writerURL: String, readerURL: String

        static func start(root: String) async throws -> WriterAndReader {
            let token = try ProcessSyncTests().makeToken(relayData: root)
            let (_, readOnlyOut) = try await CLITests().run(["relay", "token", "create", "--data", root, "--team", "t", "--read-only"])
            let readOnly = readOnlyOut.trimmingCharacters(in: .whitespacesAndNewlines)
            var started: [Child] = []
            do {
                let relay = try Child(["relay", "--port", "0", "--data", root])
                started.append(relay)
                let relayURL = "ws://127.0.0.1:\(try await relay.port(after: "listening on ws://"))/sync"
                let writer = try Child(["agent", "--port", "0", "--data", root + "/writer", "--relay", relayURL, "--token", token])
                started.append(writer)
                let reader = try Child(["agent", "--port", "0", "--data", root + "/reader", "--relay", relayURL, "--token", readOnly])
                started.append(reader)
                return WriterAndReader(relay: relay, writer: writer, reader: reader, relayURL: relayURL,
                                       writerURL: "http://127.0.0.1:\(try await writer.port(after: "Board:"))",
                                       readerURL: "http://127.0.0.1:\(try await reader.port(after: "Board:"))")
            } catch {
                for child in started.reversed() { child.kill() }
                throw error
            }
        }

        func stop() {
            reader.kill()
            writer.kill()
            relay.kill()
        }
    }

    /// A token for team "t" from `kanban relay token create`.
    func makeToken(relayData: String) throws -> String {
        let tokenProcess = Process()
        tokenProcess.executableURL = try Self.kanbanBinary()
        tokenProcess.arguments = ["relay", "token", "create", "--data", relayData, "--team", "t"]
        let tokenPipe = Pipe()
        tokenProcess.standardOutput = tokenPipe
        try tokenProcess.run()
        tokenProcess.waitUntilExit()
        return String(decoding: tokenPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func separateProcessesSyncLiveAndSurviveARelayKill() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-proc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let token = try makeToken(relayData: root + "/relay")
        #expect(token.hasPrefix("kb1."))

        // A fixed port below the ephemeral range, so nothing else takes it while the relay is
        // down; try another if it is busy.
        var relayPort = 0
        var started: Child?
        for _ in 0..<10 where started == nil {
            relayPort = Int.random(in: 20_000..<30_000)
            let candidate = try Child(["relay", "--port", String(relayPort), "--data", root + "/relay"])
            if (try? await candidate.port(after: "listening on ws://")) != nil { started = candidate } else { candidate.kill() }
        }
        guard var relay = started else { throw TestError("no free port for the relay") }
        let relayURL = "ws://127.0.0.1:\(relayPort)/sync"
        let a = try Child(["agent", "--port", "0", "--data", root + "/a", "--relay", relayURL, "--token", token])
        let b = try Child(["agent", "--port", "0", "--data", root + "/b", "--relay", relayURL, "--token", token])
        defer { a.kill(); b.kill(); relay.kill() }
        let (pa, pb) = (try await a.port(after: "Board:"), try await b.port(after: "Board:"))

        let board = try await request("POST", "http://127.0.0.1:\(pa)/api/boards", ["title": "Shared"])["id"] as! String
        let column = try await request("POST", "http://127.0.0.1:\(pa)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        _ = try await request("POST", "http://127.0.0.1:\(pa)/api/columns/\(column)/tasks", ["title": "live"])
        try await eventually("B sees A's task") { try await taskTitles(pb, board) == ["live"] }

        // Kill the relay hard; both agents keep working offline and queue.
        relay.kill(SIGKILL)
        _ = try await request("POST", "http://127.0.0.1:\(pa)/api/columns/\(column)/tasks", ["title": "from A offline"])
        _ = try await request("POST", "http://127.0.0.1:\(pb)/api/columns/\(column)/tasks", ["title": "from B offline"])
        try await eventually("A reports queued work") {
            let health = try await request("GET", "http://127.0.0.1:\(pa)/health/websocket")
            return (health["queuedOperations"] as? Int) == 1 && (health["state"] as? String) != "connected"
        }
        relay = try Child(["relay", "--port", String(relayPort), "--data", root + "/relay"])
        _ = try await relay.port(after: "listening on ws://")
        try await eventually("both agents converge after the relay restarts", timeout: .seconds(40)) {
            let (ta, tb) = (try await taskTitles(pa, board), try await taskTitles(pb, board))
            return ta == tb && Set(ta) == ["live", "from A offline", "from B offline"]
        }
    }

    /// The relay's data is put back to an older copy (a restore from backup) after agents got
    /// operations it no longer has. The agents notice (the relay's head below their cursor), push
    /// the board again, and every replica, one that joins later included, ends with everything;
    /// new operations after that reach everyone (a cursor left above the relay's new sequences
    /// skipped them before).
    @Test func aRelayRestoredFromAnOlderCopyGetsBackWhatItLost() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-proc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let relayData = root + "/relay", backup = root + "/relay-backup"
        let token = try makeToken(relayData: relayData)
        var relay = try Child(["relay", "--port", "0", "--data", relayData])
        let relayPort = try await relay.port(after: "listening on ws://")
        let relayURL = "ws://127.0.0.1:\(relayPort)/sync"
        let a = try Child(["agent", "--port", "0", "--data", root + "/a", "--relay", relayURL, "--token", token])
        let b = try Child(["agent", "--port", "0", "--data", root + "/b", "--relay", relayURL, "--token", token])
        defer { a.kill(); b.kill(); relay.kill() }
        let (pa, pb) = (try await a.port(after: "Board:"), try await b.port(after: "Board:"))
        func add(_ port: Int, _ column: String, _ title: String) async throws {
            _ = try await request("POST", "http://127.0.0.1:\(port)/api/columns/\(column)/tasks", ["title": title])
        }
        func restartRelay() async throws {
            relay = try Child(["relay", "--port", String(relayPort), "--data", relayData])
            _ = try await relay.port(after: "listening on ws://")
            for port in [pa, pb] { _ = try await request("POST", "http://127.0.0.1:\(port)/api/sync/reconnect") }
        }

        let board = try await request("POST", "http://127.0.0.1:\(pa)/api/boards", ["title": "Shared"])["id"] as! String
        let column = try await request("POST", "http://127.0.0.1:\(pa)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        for i in 1...3 { try await add(pa, column, "early \(i)") }
        try await eventually("B has the early tasks") { (try? await taskTitles(pb, board))?.count == 3 }
        relay.kill()  // SIGTERM: a clean copy of its data
        try FileManager.default.copyItem(atPath: relayData, toPath: backup)
        try await restartRelay()
        for i in 1...3 { try await add(pa, column, "late A\(i)") }
        try await add(pb, column, "late B")
        // A board the copy will not have at all.
        let later = try await request("POST", "http://127.0.0.1:\(pa)/api/boards", ["title": "Later"])["id"] as! String
        let laterColumn = try await request("POST", "http://127.0.0.1:\(pa)/api/boards/\(later)/columns", ["title": "Todo"])["id"] as! String
        for i in 1...2 { try await add(pa, laterColumn, "later \(i)") }
        try await eventually("A and B have the late tasks and the later board") {
            let (ta, tb) = (try await taskTitles(pa, board), try await taskTitles(pb, board))
            let tl = (try? await taskTitles(pb, later)) ?? []
            return ta.count == 7 && tb.count == 7 && tl.count == 2
        }

        // The relay's data goes back to the copy: it lost the four late tasks.
        relay.kill()
        try FileManager.default.removeItem(atPath: relayData)
        try FileManager.default.copyItem(atPath: backup, toPath: relayData)
        try await restartRelay()
        try await add(pb, column, "after the restore")
        // Nobody writes to the later board: the relay, which has never heard of it, tells the
        // agents that hold a cursor for it that its head is 0, and they push it.
        for port in [pa, pb] { _ = try await request("POST", "http://127.0.0.1:\(port)/api/sync/reconnect") }
        let c = try Child(["agent", "--port", "0", "--data", root + "/c", "--relay", relayURL, "--token", token])
        defer { c.kill() }
        let pc = try await c.port(after: "Board:")
        try await eventually("a new agent gets every task, the lost ones too", timeout: .seconds(30)) {
            let (tc, tl) = ((try? await taskTitles(pc, board)) ?? [], (try? await taskTitles(pc, later)) ?? [])
            return tc.count == 8 && tl.count == 2
        }
        for i in 1...4 { try await add(pc, column, "from C \(i)") }
        try await eventually("every replica has all 12 tasks and the same digest", timeout: .seconds(30)) {
            var digests: Set<String> = []
            for port in [pa, pb, pc] {
                guard (try? await taskTitles(port, board))?.count == 12 else { return false }
                digests.insert(try await request("GET", "http://127.0.0.1:\(port)/api/boards/\(board)/digest")["digest"] as? String ?? "")
            }
            return digests.count == 1
        }
    }

    /// An agent whose board rows were damaged while it was stopped (the log intact) reconnects,
    /// gets a digest mismatch after catch-up, and rebuilds the board from its log.
    @Test func aDamagedReplicaIsRepairedAfterReconnecting() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-proc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let token = try makeToken(relayData: root + "/relay")
        let relay = try Child(["relay", "--port", "0", "--data", root + "/relay"])
        defer { relay.kill() }
        let relayURL = "ws://127.0.0.1:\(try await relay.port(after: "listening on ws://"))/sync"
        let arguments = ["agent", "--port", "0", "--data", root + "/a", "--relay", relayURL, "--token", token]
        var agent = try Child(arguments)
        var port = try await agent.port(after: "Board:")
        let board = try await request("POST", "http://127.0.0.1:\(port)/api/boards", ["title": "Kept"])["id"] as! String
        let column = try await request("POST", "http://127.0.0.1:\(port)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        _ = try await request("POST", "http://127.0.0.1:\(port)/api/columns/\(column)/tasks", ["title": "original"])
        try await eventually("the relay has everything") {
            let health = try await request("GET", "http://127.0.0.1:\(port)/health/websocket")
            return (health["queuedOperations"] as? Int) == 0 && (health["state"] as? String) == "connected"
        }
        agent.kill()

        try damageTaskTitles(database: root + "/a/replica.sqlite")

        agent = try Child(arguments)
        defer { agent.kill() }
        port = try await agent.port(after: "Board:")
        try await eventually("the agent rebuilt the board from its log") {
            try await taskTitles(port, board) == ["original"]
        }
        let health = try await request("GET", "http://127.0.0.1:\(port)/health/websocket")
        #expect((health["repairs"] as? Int) == 1)
    }

    /// `kanban demo`: a relay and two agents in one process; a task made on one board URL shows
    /// on the other; Ctrl-C stops it cleanly and removes its temporary data.
    @Test func theDemoSyncsItsTwoBoardsAndCleansUpOnCtrlC() async throws {
        let demo = try Child(["demo"])
        defer { demo.kill() }
        let (alice, bob) = (try await demo.port(after: "alice: http://"), try await demo.port(after: "bob: http://"))
        let dataLine = try await demo.line(containing: "data: ")
        let data = String(dataLine[dataLine.range(of: "data: ")!.upperBound...]).trimmingCharacters(in: .whitespaces)
        #expect(FileManager.default.fileExists(atPath: data + "/relay"))

        let (listing, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(alice)/api/boards")!)
        let boards = try #require(try JSONSerialization.jsonObject(with: listing) as? [[String: Any]])
        let board = try #require(boards.first { $0["title"] as? String == "Demo board" }?["id"] as? String)
        let doc = try await request("GET", "http://127.0.0.1:\(alice)/api/boards/\(board)")
        let todo = try #require((doc["columns"] as? [[String: Any]])?.first?["id"] as? String)
        _ = try await request("POST", "http://127.0.0.1:\(alice)/api/columns/\(todo)/tasks", ["title": "from alice"])
        try await eventually("bob's board shows alice's task") {
            try await taskTitles(bob, board).contains("from alice")
        }
        for page in [alice, bob] {
            let (html, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(page)/")!)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            #expect(String(decoding: html, as: UTF8.self).contains("<html"))
        }

        demo.kill(SIGINT)
        #expect(demo.process.terminationReason == .exit)
        #expect(demo.process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: data))
        _ = try await demo.line(containing: "Removed the demo's data")
    }

    /// Rewrites every task title in an agent's tables (not its log), behind its back.
    func damageTaskTitles(database: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let raw = try DatabaseQueue(path: database, configuration: configuration)
        try raw.write { db in try db.execute(sql: "UPDATE tasks SET title = 'damaged'") }
        try raw.close()
    }
}
