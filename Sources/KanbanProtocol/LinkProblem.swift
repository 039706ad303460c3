/// Why a link to a relay is down, in one classification shared by `kanban doctor`, the agent's
/// logs, `/health/websocket` and the web board: a stable code, a plain message, and what to do.
public struct LinkProblem: Error, Sendable, Hashable, Codable {
    public let code: String
    public let message: String
    public let fix: String

    public init(code: String, message: String, fix: String) {
        self.code = code
        self.message = message
        self.fix = fix
    }

    public static let badURL = LinkProblem(code: "bad_url", message: "The relay URL cannot be parsed.",
        fix: "Use ws://HOST:PORT/sync (or wss:// behind TLS), e.g. ws://127.0.0.1:7421/sync.")
    public static let httpScheme = LinkProblem(code: "http_scheme", message: "The relay URL uses http(s):// instead of ws(s)://.",
        fix: "Replace http:// with ws:// (https:// with wss://).")
    public static let dns = LinkProblem(code: "dns", message: "The relay's host name does not resolve.",
        fix: "Check the spelling of the host, your DNS/VPN, or use an IP address.")
    public static let refused = LinkProblem(code: "connection_refused", message: "Nothing is listening at that host and port.",
        fix: "Start the relay (`kanban relay --port N`), or fix the port: the relay's default is 7421, the agent's is 7420.")
    public static let timeout = LinkProblem(code: "timeout", message: "The relay did not answer in time.",
        fix: "A firewall may drop the traffic, or the host is down; check that the port is open from this machine.")
    public static let handshakeTimeout = LinkProblem(code: "handshake_timeout",
        message: "The connection opened but the WebSocket handshake did not finish in time (the peer closed or never answered the upgrade).",
        fix: "Something between the agent and the relay accepts connections without passing them on (a restarting relay, a proxy or load balancer with no healthy upstream); check the relay and the proxy's upstream.")
    public static let tls = LinkProblem(code: "tls", message: "The TLS handshake failed.",
        fix: "Use ws:// for a plain relay, or check the certificate and the proxy's TLS setup for wss://.")
    public static let notWebSocket = LinkProblem(code: "no_upgrade",
        message: "The server answered a WebSocket request with a plain HTTP response: something in the way is not passing the upgrade through.",
        fix: "If a reverse proxy is in front of the relay, pass the Upgrade and Connection headers (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"). If this is a dev server or another app, point at the relay's own port.")
    /// Beyond this difference between an agent's clock and its relay's, the agent warns and the
    /// doctor fails its clock check (the web board uses the same figure in status.js).
    public static let clockSkewLimitMs: Int64 = 2_000
    public static let clockSkew = LinkProblem(code: "clock_skew", message: "This machine's clock differs from the relay's by more than 2 s.",
        fix: "Enable NTP (timedatectl set-ntp true). Sync stays correct, but edits made at the same time on two machines are resolved by their clocks (\"last writer wins\"), so this machine's edits win or lose too often.")

    /// "3 s", "5 min", "2 h", "4 days": a clock difference for people.
    public static func describeSkew(_ ms: Int64) -> String {
        let s = abs(ms) / 1000
        return s < 120 ? "\(s) s" : s < 7_200 ? "\(s / 60) min" : s < 172_800 ? "\(s / 3600) h" : "\(s / 86_400) days"
    }

    public static let versionMismatch = LinkProblem(code: "version_mismatch", message: "The agent and relay speak different protocol versions.",
        fix: "Upgrade the older of the two so both run the same kanban release.")
    public static let heartbeat = LinkProblem(code: "heartbeat_timeout", message: "The link stopped answering heartbeats.",
        fix: "The network dropped the connection silently; a proxy with an idle timeout shorter than the heartbeat (15 s) does this.")
    public static let tokenMissing = LinkProblem(code: "token_missing", message: "The relay needs a token and none was sent.",
        fix: "Pass --token (or set KANBAN_TOKEN) with a token from `kanban relay token create --team T`.")
    public static let tokenInvalid = LinkProblem(code: "token_invalid", message: "The relay did not accept the token.",
        fix: "The token is for another relay or the relay's secret changed: create a new one with `kanban relay token create`.")

    /// The agent's own disk is full: it cannot store what the relay sends (nor local edits).
    public static let localDiskFull = LinkProblem(
        code: "local_disk_full",
        message: "This agent's disk is full: it cannot store what the relay sends, and local edits are refused too.",
        fix: "Free some disk space where the agent keeps its data; sync resumes by itself (or with Reconnect now) and nothing is lost.")

    public static let tokenRevoked = LinkProblem(code: "token_revoked", message: "The relay revoked this token.",
        fix: "Ask the relay's admin for a new token (`kanban relay token create`) and restart the agent with it; your changes stay queued here.")

    /// The 401 answer's code: missing, revoked or otherwise invalid.
    public static func unauthorized(body: String) -> LinkProblem {
        if body.contains("token_missing") { return tokenMissing }
        if body.contains("token_revoked") { return tokenRevoked }
        return tokenInvalid
    }

    /// A long-polling session's requests spread over relay instances (found by `kanban doctor`).
    public static let pollAffinity = LinkProblem(
        code: "poll_affinity",
        message: "Requests of one long-polling session reached a relay instance that did not open it (poll_session_unknown right after it opened): "
            + "something in the way spreads the session's parallel connections over several instances.",
        fix: "Make the load balancer send all of a client's /sync/poll requests to one instance (hash on the client address, "
            + "as Tools/nginx/kanban-relays.conf does); WebSockets on /sync need no affinity.")

    /// The meaning of an HTTP status answered to the WebSocket upgrade.
    public static func upgradeStatus(_ status: Int, body: String = "") -> LinkProblem {
        switch status {
        case 101: return LinkProblem(code: "ok", message: "Upgraded.", fix: "")
        case 200, 204, 301, 302, 307, 308:
            return notWebSocket
        case 400:
            return LinkProblem(code: "http_400", message: "The server refused the upgrade request as malformed (HTTP 400).",
                fix: "A proxy may be rewriting the handshake headers, or this is not a kanban relay; point at the relay's port.")
        case 401:
            return unauthorized(body: body)
        case 403:
            return LinkProblem(code: "http_403", message: "The server forbids this request (HTTP 403).",
                fix: "A proxy or firewall may block WebSockets or this Origin; or the token may not allow this.")
        case 404:
            return LinkProblem(code: "http_404", message: "No WebSocket endpoint at that path (HTTP 404).",
                fix: "The relay serves /sync; check the path and that this port is the relay (7421), not the agent (7420) or a dev server.")
        case 426:
            return LinkProblem(code: "http_426",
                message: "The relay got the request without its Upgrade header (HTTP 426): a proxy between you dropped it.",
                fix: notWebSocket.fix)
        case 502:
            return LinkProblem(code: "http_502", message: "A proxy could not reach the relay behind it (HTTP 502).",
                fix: "Start the relay, or fix the proxy's upstream address and port.")
        case 503:
            return LinkProblem(code: "http_503", message: "The relay or its proxy is unavailable or overloaded (HTTP 503).",
                fix: "Retry later; check the relay's health and the proxy's upstream.")
        default:
            return LinkProblem(code: "http_\(status)", message: "The upgrade was answered with HTTP \(status).",
                fix: "Check what is listening at that address; it does not behave like a kanban relay.")
        }
    }

    /// The meaning of a WebSocket close code.
    public static func closeCode(_ code: UInt16) -> LinkProblem {
        switch code {
        case 1000: return LinkProblem(code: "close_1000", message: "The relay closed the link normally.", fix: "Nothing to do; the agent reconnects.")
        case 1001: return LinkProblem(code: "close_1001", message: "The relay is going away (restart or shutdown).", fix: "Nothing to do; the agent reconnects when it is back.")
        case 1002: return LinkProblem(code: "close_1002", message: "The relay saw a WebSocket protocol error in what the agent sent (a malformed frame).",
                                      fix: "The agent reconnects; if it repeats, a proxy in between may be rewriting WebSocket frames: report it with the agent's log.")
        case 1006: return LinkProblem(code: "close_1006", message: "The connection dropped without a close frame.",
                                      fix: "Network trouble or a proxy cut the link; check proxy idle timeouts (must exceed the 15 s heartbeat).")
        case 1007: return LinkProblem(code: "close_1007", message: "The relay could not read a message: text that is not UTF-8, or compressed data that does not inflate.",
                                      fix: "The agent reconnects; if it repeats, a proxy in between may be altering WebSocket frames: report it with the agent's log.")
        case 1008: return LinkProblem(code: "close_1008", message: "The relay closed the link for a policy violation.", fix: "Check the token and its board scope.")
        case 1009: return LinkProblem(code: "close_1009", message: "A message was too large (over 1 MiB after decompression).", fix: "Report it; a single operation is at most 64 KiB.")
        case 1011: return LinkProblem(code: "close_1011", message: "The relay hit an internal error.", fix: "Check the relay's log; the agent retries.")
        case 1012: return LinkProblem(code: "close_1012", message: "The relay is restarting.", fix: "Nothing to do; the agent reconnects.")
        case 1013: return LinkProblem(code: "close_1013", message: "The relay is overloaded; try again later.", fix: "Nothing to do; the agent backs off and retries.")
        case SyncCloseCode.versionMismatch: return versionMismatch
        case SyncCloseCode.badMessage: return LinkProblem(code: "close_4002", message: "The relay rejected a message as breaking the protocol.", fix: "Upgrade both sides to the same release; report it if it persists.")
        case SyncCloseCode.forbidden: return LinkProblem(code: "close_4003", message: "The token lost access (it was revoked, or no longer covers the board).",
                                                         fix: "Ask the relay's admin for a new token (`kanban relay token create`) and restart the agent with it.")
        case SyncCloseCode.tooSlow: return LinkProblem(code: "close_4008", message: "The link fell too far behind and was dropped.", fix: "Nothing to do; the agent reconnects and catches up.")
        case SyncCloseCode.heartbeatTimeout: return heartbeat
        case SyncCloseCode.tooManyConnections:
            return LinkProblem(code: "close_4029", message: "The relay refused the link: this token already has as many connections as the relay allows.",
                               fix: "Stop other agents using the same token, give each person their own token, or raise --max-connections-per-token on the relay.")
        default: return LinkProblem(code: "close_\(code)", message: "The link was closed with code \(code).", fix: "Check the relay's log.")
        }
    }
}
