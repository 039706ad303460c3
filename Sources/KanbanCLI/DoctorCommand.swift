import ArgumentParser
import Foundation
import HTTPTypes
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanAgent
import KanbanModel
import KanbanProtocol
import Logging
import Synchronization
import WSClient

/// Walks the connectivity checklist from the seeds: URL, DNS, TCP, the HTTP upgrade, compression,
/// token, protocol version, round trip, clock skew, and the local agent.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the link to a relay step by step and say what is wrong and how to fix it.",
        discussion: "Exit code 0 only when every check passes.")

    @Option(help: ArgumentHelp("Relay URL (default $KANBAN_RELAY).", valueName: "URL")) var relay: String?
    @Option(help: ArgumentHelp("Relay token (default $KANBAN_TOKEN).", valueName: "TOKEN")) var token: String?
    @Option(name: .customLong("agent"), help: ArgumentHelp("Local agent to check (default $KANBAN_AGENT or http://127.0.0.1:7420).", valueName: "URL"))
    var agentURL: String?
    @Flag(help: "Print the findings as JSON.") var json = false

    struct Finding: Codable {
        let step: String
        let status: String  // pass, fail, skip
        let detail: String
        let problem: LinkProblem?
    }

    func run() async throws {
        var findings: [Finding] = []
        func add(_ step: String, _ status: String, _ detail: String, _ problem: LinkProblem? = nil) {
            findings.append(Finding(step: step, status: status, detail: detail, problem: problem))
        }
        let env = ProcessInfo.processInfo.environment
        let token = self.token ?? env["KANBAN_TOKEN"]
        let agentBase = agentURL ?? env["KANBAN_AGENT"] ?? "http://127.0.0.1:7420"
        // The agent first: without --relay, its relay is the one to check.
        let agent = await AgentReport.read(agentBase)
        if let relayURL = relay ?? env["KANBAN_RELAY"] {
            await checkRelay(relayURL, token: token, add: add)
        } else if case .status(let status) = agent, let relayURL = status.relayURL {
            await checkRelay(relayURL, token: token, agentBase: agentBase, add: add)
        } else {
            add("config", "skip", "no relay given (--relay or KANBAN_RELAY) and none configured in an agent at \(agentBase)")
        }
        agent.report(agentBase, clockChecked: findings.contains { $0.step == "clock" }, add: add)

        if json {
            try printJSON(findings)
        } else {
            for f in findings {
                let mark = f.status == "pass" ? "✔" : f.status == "skip" ? "–" : "✘"
                print("\(mark) \(f.step.padding(toLength: 10, withPad: " ", startingAt: 0)) \(f.detail)")
                if let p = f.problem, f.status == "fail" {
                    print("    cause: \(p.message)")
                    print("    fix:   \(p.fix)")
                }
            }
        }
        if findings.contains(where: { $0.status == "fail" }) { throw ExitCode(1) }
    }

    /// `agentBase`: the URL came from that agent's status (no --relay), which does not show its token.
    func checkRelay(_ url: String, token: String?, agentBase: String? = nil, add: (String, String, String, LinkProblem?) -> Void) async {
        let target: RelayProbe.Target
        let origin = agentBase.map { " (the relay of the agent at \($0))" } ?? ""
        switch RelayProbe.parse(url) {
        case .failure(let problem): add("config", "fail", url + origin, problem); return
        case .success(let t):
            target = t
            add("config", "pass", "\(t.scheme)://\(t.host):\(t.port)\(t.path)" + (t.path == "/sync" ? "" : " (the relay serves /sync)") + origin, nil)
        }
        switch RelayProbe.resolve(target.host) {
        case .failure(let problem): add("dns", "fail", target.host, problem); return
        case .success(let addresses): add("dns", "pass", "\(target.host) → \(addresses.joined(separator: ", "))", nil)
        }
        switch RelayProbe.connect(host: target.host, port: target.port) {
        case .failure(let problem): add("tcp", "fail", "\(target.host):\(target.port)", problem); return
        case .success(let fd): close(fd); add("tcp", "pass", "connected to \(target.host):\(target.port)", nil)
        }
        switch RelayProbe.upgrade(target, token: token) {
        case .failure(let problem) where problem.code == "tls_not_probed":
            add("upgrade", "skip", problem.message, nil)
        case .failure(let problem):
            add("upgrade", "fail", "no HTTP answer to the upgrade", problem); return
        case .success(let answer):
            if answer.status == 101 {
                add("upgrade", "pass", "101 Switching Protocols", nil)
                add("deflate", answer.deflate ? "pass" : "fail", answer.deflate ? "permessage-deflate negotiated" : "no permessage-deflate in the answer",
                    answer.deflate ? nil : LinkProblem(code: "no_deflate", message: "The server did not accept permessage-deflate.",
                                                      fix: "A proxy may strip Sec-WebSocket-Extensions; pass it through."))
                add("token", token == nil ? "skip" : "pass", token == nil ? "no token given" : "accepted", nil)
            } else {
                var answer = answer
                if answer.status == 400, case .success(let plain) = RelayProbe.upgrade(target, token: token, asUpgrade: false),
                   [401, 404].contains(plain.status) {
                    // The refused upgrade said nothing; the same request without Upgrade says why.
                    answer = plain
                }
                let problem = LinkProblem.upgradeStatus(answer.status, body: answer.body)
                if answer.status == 401, token == nil, let agentBase {
                    add("upgrade", "pass", "the relay answers (HTTP 401 without a token, as it should)", nil)
                    add("token", "skip", "not checked: the agent at \(agentBase) does not show its token; pass --token or set KANBAN_TOKEN to check it and the protocol (the agent's own link is below)", nil)
                } else if answer.status == 401 {
                    add("upgrade", "pass", "the relay refused the upgrade before switching protocols (HTTP 401 for the same request without Upgrade)", nil)
                    add("token", "fail", token == nil ? "no token sent" : "refused", problem)
                } else {
                    add("upgrade", "fail", "HTTP \(answer.status) instead of 101" + (answer.headers["server"].map { " (server: \($0))" } ?? ""), problem)
                    if let token, SyncClient.blockedUpgrade.contains(problem.code) {
                        // Agents fall back to long-polling through the same path: say whether that works.
                        if let fallback = await LongPollingProbe.check(relayURL: url, token: token) {
                            add("fallback", "fail", "HTTP long-polling does not work either", fallback)
                        } else {
                            add("fallback", "pass", "HTTP long-polling works: agents sync over it (slower, uncompressed) until the upgrade passes", nil)
                        }
                    }
                }
                return
            }
        }
        await checkProtocol(url, token: token, add: add)
        if let token {
            // The fallback agents use when a proxy blocks the upgrade later: checked while the
            // WebSocket works, so a balancer that breaks it is found before it is needed.
            if let problem = await LongPollingProbe.check(relayURL: url, token: token) {
                add("fallback", "fail", "HTTP long-polling (used when the upgrade is blocked) does not work", problem)
            } else {
                add("fallback", "pass", "HTTP long-polling works too: a session over parallel connections, hello and 3 pings", nil)
            }
        }
    }

    /// hello → welcome, then an application ping for round trip and clock skew.
    func checkProtocol(_ url: String, token: String?, add: (String, String, String, LinkProblem?) -> Void) async {
        final class Result: Sendable { let value = Mutex<(SyncMessage.Welcome?, Double?, Int64?, String?)>((nil, nil, nil, nil)) }
        let result = Result()
        var logger = Logger(label: "kanban.doctor")
        logger.logLevel = .critical
        var fields = HTTPFields()
        if let token { fields[.authorization] = "Bearer \(token)" }
        let headers = fields
        let quiet = logger
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: ProtocolLimits.maxRelayMessageBytes,
                                                                                   additionalHeaders: headers), logger: quiet) { inbound, outbound, _ in
                        let hello = SyncMessage.hello(.init(replica: ReplicaID("doctor")!, cursors: [:], client: "kanban-doctor"))
                        try await outbound.write(.text(hello.text))
                        var sent: Int64 = 0
                        for try await message in inbound.messages(maxSize: ProtocolLimits.maxRelayMessageBytes) {
                            guard case .text(let text) = message,
                                  let decoded = try? SyncMessage.decode(Data(text.utf8), limit: ProtocolLimits.maxRelayMessageBytes) else { continue }
                            switch decoded {
                            case .welcome(let welcome):
                                result.value.withLock { $0.0 = welcome }
                                sent = Int64(Date().timeIntervalSince1970 * 1000)
                                try await outbound.write(.text(SyncMessage.ping(.init(t: sent)).text))
                            case .pong(let pong):
                                let now = Int64(Date().timeIntervalSince1970 * 1000)
                                let rtt = Double(now - pong.t)
                                result.value.withLock { $0.1 = rtt; $0.2 = pong.serverTime - (pong.t + Int64(rtt / 2)) }
                                return
                            case .error(let error):
                                result.value.withLock { $0.3 = "\(error.code): \(error.message)" }
                                return
                            default: continue
                            }
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(5))
                    throw LinkProblem.timeout
                }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            add("protocol", "fail", "\(error)", error as? LinkProblem ?? .timeout)
            return
        }
        let (welcome, rtt, skew, refusal) = result.value.withLock { $0 }
        guard let welcome else {
            add("protocol", "fail", refusal ?? "no welcome from the relay", refusal?.contains("version") == true ? .versionMismatch : nil)
            return
        }
        add("protocol", welcome.protocol == SyncMessage.protocolVersion ? "pass" : "fail",
            "protocol \(welcome.protocol), team \(welcome.team), \(welcome.boards.count) boards, \(welcome.writable ? "read-write" : "read-only")",
            welcome.protocol == SyncMessage.protocolVersion ? nil : .versionMismatch)
        if let rtt { add("rtt", "pass", String(format: "%.1f ms round trip", rtt), nil) }
        if let skew { addClockFinding(skew, add: add) }
    }

}

/// The `clock` finding for a measured difference (the relay's clock minus this machine's, ms).
func addClockFinding(_ skew: Int64, by source: String? = nil, add: (String, String, String, LinkProblem?) -> Void) {
    let ok = abs(skew) < LinkProblem.clockSkewLimitMs
    add("clock", ok ? "pass" : "fail", "relay clock is \(skew) ms \(skew >= 0 ? "ahead" : "behind")" + (source.map { " (\($0))" } ?? ""),
        ok ? nil : .clockSkew)
}

/// What the local agent says about its link (`GET /health/websocket`).
enum AgentReport {
    case absent
    case unreadable(String)
    case status(SyncStatus)

    static func read(_ base: String) async -> AgentReport {
        guard let url = URL(string: base.hasSuffix("/") ? base + "health/websocket" : base + "/health/websocket"),
              url.scheme == "http" || url.scheme == "https" else {
            return .unreadable("\(base) is not an http:// URL (the agent's is like http://127.0.0.1:7420)")
        }
        var request = URLRequest(url: url)
        request.timeoutInterval = 5
        let data: Data, response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            return .absent
        }
        let code = (response as? HTTPURLResponse)?.statusCode ?? 0
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601  // the agent writes dates as ISO 8601
        guard code == 200 else {
            return .unreadable("HTTP \(code) for /health/websocket: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
        do {
            return .status(try decoder.decode(SyncStatus.self, from: data))
        } catch {
            return .unreadable("its /health/websocket is not a kanban agent's sync status (\(error)); is this a `kanban agent` of this version?")
        }
    }

    /// `clockChecked`: the relay checks measured the clock already (they had a token); if not,
    /// the agent's own measurement of its link is the clock check.
    func report(_ base: String, clockChecked: Bool, add: (String, String, String, LinkProblem?) -> Void) {
        let status: SyncStatus
        switch self {
        case .absent:
            add("agent", "skip", "no agent answered at \(base) (start one with `kanban agent`, or pass --agent URL)", nil)
            return
        case .unreadable(let why):
            add("agent", "fail", "\(base): \(why)", LinkProblem(code: "agent_unreadable", message: "Something answers at the agent's address, but not as a kanban agent.",
                                                                fix: "Check --agent / KANBAN_AGENT: the agent prints its URL when it starts (\"Board: http://127.0.0.1:PORT/\")."))
            return
        case .status(let s):
            status = s
        }
        let queued = "\(status.queuedOperations) change\(status.queuedOperations == 1 ? "" : "s") queued"
        switch status.state {
        case .disabled:
            add("agent", "pass", "\(base): no relay configured, the agent works alone (\(queued))", nil)
        case .connected:
            var detail = "\(base): connected to \(status.relayURL ?? "its relay")"
            if status.transport == "long-polling" {
                detail += " over HTTP long-polling" + (status.fallbackReason.map { " (the WebSocket upgrade failed: \($0))" } ?? "")
            }
            add("agent", "pass", detail + ", \(queued)", nil)
            if !clockChecked, let skew = status.clockSkewMs { addClockFinding(skew, by: "measured by the agent", add: add) }
        case .connecting, .reconnecting:
            var detail = "\(base): \(status.state.rawValue) to \(status.relayURL ?? "its relay"), \(queued)"
            if status.consecutiveFailures > 0 { detail += ", \(status.consecutiveFailures) failed attempt\(status.consecutiveFailures == 1 ? "" : "s") in a row" }
            if let next = status.nextAttemptAt {
                detail += ", next try in \(max(0, Int(next.timeIntervalSinceNow.rounded(.up)))) s"
            }
            let last = status.attempts.first
            add("agent", "fail", detail,
                last.map { LinkProblem(code: $0.errorClass, message: $0.message, fix: $0.fix ?? "See the relay checks above.") }
                    ?? LinkProblem(code: "agent_not_synced", message: "The agent is not connected to its relay yet.",
                                   fix: "See the relay checks above and the agent's troubleshooting panel."))
        }
        for refusal in status.refused {
            let board = refusal.boardTitle.map { "“\($0)” (\(refusal.board))" } ?? refusal.board
            add("refused", "fail", "the relay refuses this agent's changes to board \(board); they stay queued here",
                LinkProblem(code: refusal.code, message: refusal.message, fix: refusal.fix))
        }
    }
}
