import AsyncHTTPClient
import Foundation
public import KanbanProtocol
import KanbanModel
import NIOCore
import NIOHTTP1

/// The agent's end of the HTTP long-polling fallback (used when something in the way blocks
/// the WebSocket upgrade): a session on the relay that carries the same protocol messages.
/// `send` POSTs one message and returns once the relay handled it; `poll` waits for the next
/// numbered batch of messages from the relay. Protocol/sync-protocol.md has the routes.
struct LongPollLink: Sendable {
    let client: HTTPClient
    /// `http(s)://host:port/sync/poll/SESSION`
    let sessionURL: String
    let token: String
    /// Longest the relay holds a poll, in seconds.
    let wait: Int

    /// The long-polling base for a relay URL: `ws://h:p/sync` → `http://h:p/sync/poll`.
    static func baseURL(relayURL: String) -> String? {
        guard var components = URLComponents(string: relayURL), let scheme = components.scheme?.lowercased() else { return nil }
        switch scheme {
        case "ws", "http": components.scheme = "http"
        case "wss", "https": components.scheme = "https"
        default: return nil
        }
        let path = components.path.hasSuffix("/") ? String(components.path.dropLast()) : components.path
        components.path = (path.isEmpty ? "/sync" : path) + "/poll"
        components.query = nil
        return components.string
    }

    /// Opens a session (POST /sync/poll).
    static func open(relayURL: String, token: String, timeout: Duration, client: HTTPClient = .shared) async throws -> LongPollLink {
        guard let base = baseURL(relayURL: relayURL) else { throw LinkProblem.badURL }
        var request = HTTPClientRequest(url: base)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await client.execute(request, timeout: .nanoseconds(timeout.nanoseconds))
        let body = try await response.body.collect(upTo: 64 * 1024)
        guard response.status == .created else { throw problem(response.status.code, body) }
        struct Opened: Decodable { let session: String; let wait: Int }
        guard let opened = try? JSONDecoder().decode(Opened.self, from: Data(body.readableBytesView)),
              opened.session.allSatisfy({ $0.isHexDigit }) else {
            throw LinkProblem(code: "poll_protocol", message: "The relay's answer to opening a long-polling session could not be read.",
                              fix: "Run the same kanban release on both sides, and point at the relay (not another server).")
        }
        return LongPollLink(client: client, sessionURL: base + "/" + opened.session, token: token, wait: opened.wait)
    }

    /// Sends one protocol message; returns after the relay handled it.
    func send(_ text: String) async throws {
        var request = request(sessionURL, method: .POST)
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: text))
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 64 * 1024)
        guard response.status == .noContent else { throw Self.problem(response.status.code, body) }
    }

    /// The next batch after batch `after`: its number and messages (none when the wait ran out).
    func poll(after: Int) async throws -> (batch: Int, messages: [String]) {
        let request = request(sessionURL + "?after=\(after)", method: .GET)
        let response = try await client.execute(request, timeout: .seconds(Int64(wait) + 15))
        let body = try await response.body.collect(upTo: ProtocolLimits.maxRelayMessageBytes + (8 << 20))
        guard response.status == .ok else { throw Self.problem(response.status.code, body) }
        guard let batch = response.headers.first(name: "Kanban-Poll-Batch").flatMap(Int.init) else {
            throw LinkProblem(code: "poll_protocol", message: "A long-polling answer came without its batch number.",
                              fix: "A proxy may strip response headers; let Kanban-Poll-Batch through.")
        }
        let messages = body.readableBytesView.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
        return (batch, messages)
    }

    /// Ends the session (DELETE); best effort.
    func close() async {
        _ = try? await client.execute(request(sessionURL, method: .DELETE), timeout: .seconds(2))
    }

    private func request(_ url: String, method: HTTPMethod) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        return request
    }

    /// What a refused long-polling request means, in the shared classification.
    static func problem(_ status: UInt, _ body: ByteBuffer) -> LinkProblem {
        struct Refusal: Decodable {
            struct Detail: Decodable { let code: String; let message: String; let hint: String? }
            let error: Detail
            let close: Int?
        }
        let refusal = try? JSONDecoder().decode(Refusal.self, from: Data(body.readableBytesView))
        if status == 410, let close = refusal?.close {
            // The relay closed the session as it would have closed a WebSocket.
            let base = LinkProblem.closeCode(UInt16(clamping: close))
            return LinkProblem(code: base.code, message: base.message + (refusal.map { " (\($0.error.message))" } ?? ""), fix: base.fix)
        }
        if status == 401 {
            return .unauthorized(body: refusal?.error.code ?? "")
        }
        if let refusal {
            let code = refusal.error.code
            return LinkProblem(code: code.hasPrefix("poll_") ? code : "poll_\(code)",
                               message: "The relay refused a long-polling request (HTTP \(status)): \(refusal.error.message)",
                               fix: refusal.error.hint ?? "Run `kanban doctor` for the details.")
        }
        let upgrade = LinkProblem.upgradeStatus(Int(status))
        return LinkProblem(code: "poll_http_\(status)", message: "A long-polling request was answered with HTTP \(status), not by a kanban relay.",
                           fix: upgrade.fix)
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}

/// For `kanban doctor`: whether the long-polling fallback reaches the relay.
public enum LongPollingProbe {
    /// Opens a session, uses it the way an agent does (a poll waiting while messages are
    /// posted, so over parallel connections: `hello`, then pings) and ends it; nil when all of
    /// that worked, else what went wrong. A session unknown right after it opened means the
    /// requests were spread over relay instances (`LinkProblem.pollAffinity`).
    public static func check(relayURL: String, token: String) async -> LinkProblem? {
        let link: LongPollLink
        do {
            link = try await LongPollLink.open(relayURL: relayURL, token: token, timeout: .seconds(5))
        } catch {
            return await LinkFailure.classify(error, url: relayURL, token: token)
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Waits on the relay until the welcome is queued: the posts below go meanwhile.
                    var after = 0
                    var pongs = 0
                    while pongs < 3 {
                        let (batch, messages) = try await link.poll(after: after)
                        after = batch
                        for text in messages {
                            if case .pong = try? SyncMessage.decode(Data(text.utf8), limit: ProtocolLimits.maxRelayMessageBytes) { pongs += 1 }
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(10))
                    throw LinkProblem.timeout
                }
                try await link.send(SyncMessage.hello(.init(replica: ReplicaID("doctor")!, cursors: [:], client: "kanban-doctor")).text)
                for k in 0..<3 { try await link.send(SyncMessage.ping(.init(t: Int64(k))).text) }
                try await group.next()
                group.cancelAll()
            }
            await link.close()
            return nil
        } catch let problem as LinkProblem where problem.code == "poll_session_unknown" {
            await link.close()
            return .pollAffinity
        } catch {
            await link.close()
            return await LinkFailure.classify(error, url: relayURL, token: token)
        }
    }
}
