import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Agents syncing through a real nginx (`Tools/nginx/kanban-relay.conf`), and `kanban doctor`
/// naming the cause behind a broken one. Tools/test.sh installs nginx and sets
/// KANBAN_REQUIRE_NGINX=1, so in CI a missing nginx fails instead of skipping.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx")
                                  || ProcessInfo.processInfo.environment["KANBAN_REQUIRE_NGINX"] == "1"))
struct NginxTests {
    static let nginxDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Tools/nginx").standardized

    /// Renders a config and runs nginx in the foreground on a free port; returns (process, port).
    /// `extra`: more placeholders to fill (e.g. a second relay's port).
    func startNginx(_ config: String, relayPort: Int, root: String, extra: [String: String] = [:]) async throws -> (Process, Int) {
        #expect(FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx"), "nginx is not installed (Tools/test.sh installs it)")
        for _ in 0..<10 {
            let port = Int.random(in: 30_000..<32_000)
            let prefix = root + "/nginx-\(port)"
            try FileManager.default.createDirectory(atPath: prefix + "/tmp", withIntermediateDirectories: true)
            let template = try String(contentsOf: Self.nginxDirectory.appendingPathComponent(config), encoding: .utf8)
            var rendered = template.replacingOccurrences(of: "@LISTEN_PORT@", with: String(port))
                .replacingOccurrences(of: "@RELAY_PORT@", with: String(relayPort)).replacingOccurrences(of: "@PREFIX@", with: prefix)
            for (placeholder, value) in extra { rendered = rendered.replacingOccurrences(of: placeholder, with: value) }
            try rendered.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
            process.arguments = ["-c", prefix + "/nginx.conf", "-p", prefix, "-g", "daemon off;"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = ContinuousClock.now + .seconds(5)
            while process.isRunning && ContinuousClock.now < deadline {
                if (try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/health")!)) != nil { return (process, port) }
                try await Task.sleep(for: .milliseconds(50))
            }
            if process.isRunning { process.terminate(); process.waitUntilExit() }
        }
        throw TestError("nginx did not start")
    }

    /// A `kanban relay` process with data in ROOT/relay, its port, and a token for team "t".
    func startRelay(root: String) async throws -> (ProcessSyncTests.Child, Int, String) {
        let (_, tokenOut) = try await CLITests().run(["relay", "token", "create", "--data", root + "/relay", "--team", "t"])
        let relay = try ProcessSyncTests.Child(["relay", "--port", "0", "--data", root + "/relay"])
        return (relay, try await relay.port(after: "listening on ws://"), tokenOut.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test func agentsSyncThroughNginxAndDoctorNamesABrokenProxy() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-nginx-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (relay, relayPort, token) = try await startRelay(root: root)
        defer { relay.kill() }

        let (nginx, proxyPort) = try await startNginx("kanban-relay.conf", relayPort: relayPort, root: root)
        defer { nginx.terminate(); nginx.waitUntilExit() }
        let url = "ws://127.0.0.1:\(proxyPort)/sync"
        let a = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/a", "--relay", url, "--token", token])
        let b = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/b", "--relay", url, "--token", token])
        defer { a.kill(); b.kill() }
        let (pa, pb) = (try await a.port(after: "Board:"), try await b.port(after: "Board:"))
        let sync = ProcessSyncTests()
        let board = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/boards", ["title": "Via nginx"])["id"] as! String
        let column = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        _ = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/columns/\(column)/tasks", ["title": "through the proxy"])
        try await eventually("B sees A's task through nginx") { try await sync.taskTitles(pb, board) == ["through the proxy"] }
        let health = try await sync.request("GET", "http://127.0.0.1:\(pb)/health/websocket")
        #expect(health["state"] as? String == "connected")

        // The doctor passes through the good proxy and names the broken one.
        let (okStatus, _) = try await CLITests().run(["doctor", "--relay", url, "--token", token, "--agent", "http://127.0.0.1:\(pa)"])
        #expect(okStatus == 0)
        let (broken, brokenPort) = try await startNginx("broken-no-upgrade.conf", relayPort: relayPort, root: root)
        defer { broken.terminate(); broken.waitUntilExit() }
        let (status, out) = try await CLITests().run(["doctor", "--json", "--relay", "ws://127.0.0.1:\(brokenPort)/sync", "--token", token,
                                                       "--agent", "http://127.0.0.1:9"])
        #expect(status != 0)
        #expect(out.contains("\"http_426\"") && out.contains("proxy_set_header Upgrade"), "\(out)")
    }

    /// Through a proxy that drops `Upgrade`, an agent syncs over HTTP long-polling, says so in
    /// its status, and goes back to the WebSocket once the proxy is fixed (nginx reloaded with
    /// the working config on the same port).
    @Test func agentsFallBackToLongPollingThroughABrokenProxyAndReturnToTheWebSocket() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-nginx-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (relay, relayPort, token) = try await startRelay(root: root)
        defer { relay.kill() }
        let (broken, proxyPort) = try await startNginx("broken-no-upgrade.conf", relayPort: relayPort, root: root)
        defer { broken.terminate(); broken.waitUntilExit() }

        let a = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/a", "--relay", "ws://127.0.0.1:\(proxyPort)/sync",
                                            "--token", token, "--websocket-retry", "2"])
        let b = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/b", "--relay", "ws://127.0.0.1:\(relayPort)/sync",
                                            "--token", token])
        defer { a.kill(); b.kill() }
        let (pa, pb) = (try await a.port(after: "Board:"), try await b.port(after: "Board:"))
        let sync = ProcessSyncTests()
        try await eventually("A long-polls through the broken proxy") {
            let health = try await sync.request("GET", "http://127.0.0.1:\(pa)/health/websocket")
            return health["state"] as? String == "connected" && health["transport"] as? String == "long-polling"
        }
        let health = try await sync.request("GET", "http://127.0.0.1:\(pa)/health/websocket")
        #expect((health["fallbackReason"] as? String)?.contains("Upgrade header") == true, "\(health)")
        #expect(((health["attempts"] as? [[String: Any]]) ?? []).contains { $0["errorClass"] as? String == "http_426" }, "\(health)")

        // Live both ways, in order, while A long-polls.
        let board = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/boards", ["title": "Behind a broken proxy"])["id"] as! String
        let column = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/boards/\(board)/columns", ["title": "Todo"])["id"] as! String
        for i in 0..<20 { _ = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/columns/\(column)/tasks", ["title": "a\(i)"]) }
        try await eventually("B sees A's tasks") { try await sync.taskTitles(pb, board).count == 20 }
        for i in 0..<20 { _ = try await sync.request("POST", "http://127.0.0.1:\(pb)/api/columns/\(column)/tasks", ["title": "b\(i)"]) }
        try await eventually("A sees B's tasks, in B's order") { try await sync.taskTitles(pa, board) == (try await sync.taskTitles(pb, board)) }
        #expect(try await sync.taskTitles(pa, board).count == 40)

        // Fix the proxy in place: A's next WebSocket retry (every 2 s) gets through.
        let prefix = root + "/nginx-\(proxyPort)"
        let good = try String(contentsOf: Self.nginxDirectory.appendingPathComponent("kanban-relay.conf"), encoding: .utf8)
            .replacingOccurrences(of: "@LISTEN_PORT@", with: String(proxyPort)).replacingOccurrences(of: "@RELAY_PORT@", with: String(relayPort))
            .replacingOccurrences(of: "@PREFIX@", with: prefix)
        try good.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
        let reload = Process()
        reload.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        reload.arguments = ["-c", prefix + "/nginx.conf", "-p", prefix, "-s", "reload"]
        reload.standardError = FileHandle.nullDevice
        try reload.run()
        reload.waitUntilExit()
        #expect(reload.terminationStatus == 0)
        try await eventually("A is back on the WebSocket") {
            let health = try await sync.request("GET", "http://127.0.0.1:\(pa)/health/websocket")
            return health["state"] as? String == "connected" && health["transport"] as? String == "websocket" && health["fallbackReason"] == nil
        }
        _ = try await sync.request("POST", "http://127.0.0.1:\(pa)/api/columns/\(column)/tasks", ["title": "over the WebSocket again"])
        try await eventually("B sees it") { try await sync.taskTitles(pb, board).contains("over the WebSocket again") }
    }
}
