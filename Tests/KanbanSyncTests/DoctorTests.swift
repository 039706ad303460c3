import Foundation
import Testing

/// `kanban doctor` against real broken setups, read through `--json`.
@Suite(.serialized)
struct DoctorTests {
    struct Finding: Decodable {
        let step: String
        let status: String
        let detail: String
        let problem: Problem?
        struct Problem: Decodable { let code: String; let message: String; let fix: String }
    }

    func doctor(_ args: [String], agent: String = "http://127.0.0.1:9") async throws -> (Int32, [Finding]) {
        let (status, out) = try await CLITests().run(["doctor", "--json", "--agent", agent] + args)
        let json = out.drop { $0 != "[" }
        let findings = try JSONDecoder().decode([Finding].self, from: Data(json.utf8))
        return (status, findings)
    }

    func failure(_ findings: [Finding]) -> (step: String, code: String)? {
        findings.first { $0.status == "fail" }.map { ($0.step, $0.problem?.code ?? "") }
    }

    @Test func eachBrokenSetupIsNamed() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-doctor-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (_, tokenOut) = try await CLITests().run(["relay", "token", "create", "--data", root, "--team", "t"])
        let token = tokenOut.trimmingCharacters(in: .whitespacesAndNewlines)
        let relay = try ProcessSyncTests.Child(["relay", "--port", "0", "--data", root])
        defer { relay.kill() }
        let port = try await relay.port(after: "listening on ws://")
        let agent = try ProcessSyncTests.Child(["agent", "--port", "0", "--data", root + "/agent"])
        defer { agent.kill() }
        let agentPort = try await agent.port(after: "Board:")

        // All good.
        var (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:\(port)/sync", "--token", token])
        #expect(status == 0, "\(findings.map { "\($0.step)=\($0.status)" })")
        #expect(Set(findings.filter { $0.status == "pass" }.map(\.step)).isSuperset(of: ["dns", "tcp", "upgrade", "deflate", "token", "protocol", "rtt", "clock"]))

        // Nothing listening.
        (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:9/sync", "--token", token])
        #expect(status != 0)
        #expect(failure(findings)?.step == "tcp" && failure(findings)?.code == "connection_refused")

        // A plain HTTP server that is not the relay (the agent's port).
        (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:\(agentPort)/sync", "--token", token])
        #expect(status != 0)
        #expect(failure(findings)?.step == "upgrade" && failure(findings)?.code == "http_404")

        // A bad token, and no token.
        (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:\(port)/sync", "--token", "kb1.bad.token"])
        #expect(failure(findings)?.step == "token" && failure(findings)?.code == "token_invalid")
        (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:\(port)/sync"])
        #expect(failure(findings)?.step == "token" && failure(findings)?.code == "token_missing")

        // A proxy that drops Upgrade/Connection.
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Tools/diagnostics/strip_upgrade_proxy.py").standardized.path
        proxy.arguments = ["python3", script, "0", String(port)]
        let pipe = Pipe()
        proxy.standardOutput = pipe
        try proxy.run()
        defer { proxy.terminate() }
        var line = ""
        while !line.contains("\n") {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += String(decoding: chunk, as: UTF8.self)
        }
        let proxyPort = try #require(Int(line.split(whereSeparator: \.isWhitespace).last ?? ""), "proxy said: \(line)")
        (status, findings) = try await doctor(["--relay", "ws://127.0.0.1:\(proxyPort)/sync", "--token", token])
        #expect(status != 0)
        #expect(failure(findings)?.step == "upgrade" && failure(findings)?.code == "http_426",
                "\(findings.map { "\($0.step)=\($0.status) \($0.problem?.code ?? "")" })")
        #expect(findings.first { $0.status == "fail" }?.problem?.fix.contains("proxy_set_header Upgrade") == true)
        // ... and that agents still sync through it over HTTP long-polling.
        #expect(findings.contains { $0.step == "fallback" && $0.status == "pass" }, "\(findings.map { "\($0.step)=\($0.status)" })")
    }

    /// Without --relay the doctor checks the agent's own relay, and reports the agent's link as
    /// the agent sees it: connected, refused boards, and the failure of a link that is down (it
    /// said "no agent answered" for every connected agent before: their status has dates).
    @Test func theAgentsOwnLinkIsChecked() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-doctor-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let processes = try await ProcessSyncTests.WriterAndReader.start(root: root)
        defer { processes.stop() }
        let (relay, relayURL, writerURL, readerURL) = (processes.relay, processes.relayURL, processes.writerURL, processes.readerURL)
        let http = ProcessSyncTests()
        for url in [writerURL, readerURL] {
            try await eventually("\(url) connected") { try await http.request("GET", url + "/health/websocket")["state"] as? String == "connected" }
        }

        var (status, findings) = try await doctor([], agent: writerURL)
        #expect(status == 0, "\(findings.map { "\($0.step)=\($0.status) \($0.detail)" })")
        #expect(findings.first { $0.step == "config" }?.detail.contains(relayURL) == true)
        #expect(findings.first { $0.step == "upgrade" }?.status == "pass")
        #expect(findings.first { $0.step == "token" }?.status == "skip")
        let connected = try #require(findings.first { $0.step == "agent" })
        #expect(connected.status == "pass" && connected.detail.contains("connected to \(relayURL)"), "\(connected.detail)")
        // Without a token the clock is the agent's own measurement (same machine: in range).
        let clock = try #require(findings.first { $0.step == "clock" })
        #expect(clock.status == "pass" && clock.detail.contains("measured by the agent"), "\(clock.detail)")

        // The read-only agent's own board is refused by the relay: named, with the relay's code.
        _ = try await http.request("POST", readerURL + "/api/boards", ["title": "Mine"])
        try await eventually("the relay to refuse the reader's board") {
            !((try await http.request("GET", readerURL + "/health/websocket")["refused"] as? [Any]) ?? []).isEmpty
        }
        (status, findings) = try await doctor([], agent: readerURL)
        #expect(status != 0)
        let refused = try #require(findings.first { $0.step == "refused" })
        #expect(refused.status == "fail" && refused.detail.contains("“Mine”") && refused.problem?.code == "read_only",
                "\(refused.detail) \(refused.problem?.code ?? "-")")

        // The relay goes away: the tcp check and the agent's own last failure say so.
        relay.kill(SIGKILL)
        try await eventually("the writer to reconnect") {
            try await http.request("GET", writerURL + "/health/websocket")["state"] as? String == "reconnecting"
        }
        (status, findings) = try await doctor([], agent: writerURL)
        #expect(status != 0)
        #expect(failure(findings)?.step == "tcp" && failure(findings)?.code == "connection_refused")
        let down = try #require(findings.first { $0.step == "agent" })
        #expect(down.status == "fail" && down.detail.contains("reconnecting") && down.problem != nil, "\(down.detail)")
    }
}
