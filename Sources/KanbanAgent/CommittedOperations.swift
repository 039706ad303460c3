import HTTPTypes
import Hummingbird
import KanbanModel
import Synchronization

/// The operations one request committed, collected while its handler runs.
final class CommittedOperations: Sendable {
    private let ids = Mutex<[OperationID]>([])

    @TaskLocal static var current: CommittedOperations?

    func append(_ id: OperationID) { ids.withLock { $0.append(id) } }
    var all: [OperationID] { ids.withLock { $0 } }
}

extension HTTPField.Name {
    /// `Kanban-Operations: replica:7[,replica:8]`: the operations a 2xx response committed.
    static let kanbanOperations = Self("Kanban-Operations")!
}

/// Names, on every successful state-changing response, the operations it committed, so a client
/// can later check that each one reached every replica (`GET /api/boards/{id}/operations`).
struct CommittedOperationsMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard ![.get, .head, .options].contains(request.method) else { return try await next(request, context) }
        let collector = CommittedOperations()
        var response = try await CommittedOperations.$current.withValue(collector) { try await next(request, context) }
        let ids = collector.all
        if !ids.isEmpty {
            response.headers[.kanbanOperations] = ids.map(\.description).joined(separator: ",")
        }
        return response
    }
}
