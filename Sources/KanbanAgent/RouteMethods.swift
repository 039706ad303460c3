import HTTPTypes
import Hummingbird
import Synchronization

/// The methods each registered path answers, so that a request for a path the agent serves with
/// a method it does not is answered 405 with `Allow` (RFC 9110 section 15.5.6) instead of 404.
/// Filled while routes are registered (through `MethodRecordingRouter`), read per request.
final class RouteMethods: Sendable {
    private let routes = Mutex<[(path: RouterPath, methods: Set<HTTPRequest.Method>)]>([])

    func record(_ path: RouterPath, _ method: HTTPRequest.Method) {
        routes.withLock { routes in
            if let index = routes.firstIndex(where: { $0.path == path }) {
                routes[index].methods.insert(method)
            } else {
                routes.append((path, [method]))
            }
        }
    }

    /// The methods of the route that `path` resolves to, sorted; empty when no route matches.
    /// Like the router's trie, a literal segment wins over a capture.
    func allowed(for path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let best = routes.withLock { routes in
            routes.filter { route in
                route.path.components.count == segments.count
                    && zip(route.path.components, segments).allSatisfy { $0 ~= $1 }
            }
            .max { literalCount($0.path, segments) < literalCount($1.path, segments) }
        }
        return (best?.methods ?? []).sorted { $0.rawValue < $1.rawValue }
    }

    private func literalCount(_ path: RouterPath, _ segments: [Substring]) -> Int {
        zip(path.components, segments).count { $0 == $1 }
    }
}

/// A `Router` that also tells `RouteMethods` about every route added through it (also through
/// its groups, which register on their parent).
struct MethodRecordingRouter<Context: RequestContext>: RouterMethods {
    let router: Router<Context>
    let methods: RouteMethods

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
    where Responder.Context == Context {
        methods.record(path, method)
        router.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }
}
