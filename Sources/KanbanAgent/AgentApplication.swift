public import Hummingbird
import HummingbirdWebSocket
public import Logging
public import ServiceLifecycle
import NIOCore
import Synchronization

/// Builds the agent's HTTP + WebSocket server. The executable and the tests run this same object.
///
/// - Parameters:
///   - agent: the agent core (store, event hub, sync status).
///   - services: run alongside the server and shut down with it (the sync client).
///   - onListening: called with the bound port once the server accepts connections.
public func buildAgentApplication(
    agent: Agent, logger: Logger = Logger(label: "kanban.agent"), services: [any Service] = [],
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let configuration = agent.configuration
    let policy = LocalhostPolicy(configuration: configuration)

    let methods = RouteMethods()
    let router = MethodRecordingRouter(router: Router(context: BasicRequestContext.self), methods: methods)
    // The guard is outermost so CORS headers reach error responses too; its own refusals are
    // AgentErrors, which Hummingbird renders as JSON.
    router.add(middleware: LocalhostGuardMiddleware(policy: policy))
    router.add(middleware: JSONErrorMiddleware(methods: methods))
    AgentRoutes(agent: agent).register(on: router)
    WebAssets().register(on: router)
    router.get("api/events") { _, _ -> Response in
        throw AgentError(.upgradeRequired, code: "websocket_required",
                         "this endpoint is a WebSocket and needs ?board=ID of an existing board",
                         hint: "Connect with new WebSocket('ws://127.0.0.1:PORT/api/events?board=ID').")
    }

    let wsRouter = Router(context: BasicWebSocketRequestContext.self)
    EventStream(agent: agent, policy: policy).register(on: wsRouter)

    return Application(
        router: router.router,
        server: .http1WebSocketUpgrade(
            webSocketRouter: wsRouter,
            configuration: .init(
                http1: .init(idleTimeout: nil),
                // No permessage-deflate on the local stream: on loopback compression only costs CPU
                // (it was most of the cost of delivering one change to 100 local clients).
                ws: .init(maxFrameSize: 1 << 20, extensions: [], autoPing: .enabled(timePeriod: .seconds(20)))
            )
        ),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "kanban-agent"),
        services: services,
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            policy.port.store(port, ordering: .relaxed)
            await onListening(port)
        },
        logger: logger
    )
}
