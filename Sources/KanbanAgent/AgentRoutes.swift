import CoreMetrics
import Foundation
import HTTPTypes
import Hummingbird
import KanbanModel
import KanbanStore

/// The JSON API described in `Protocol/agent-api.openapi.json`.
struct AgentRoutes {
    let agent: Agent

    func register(on router: some RouterMethods<BasicRequestContext>) {
        let limit = agent.configuration.maxBodyBytes
        let api = router.group("api").add(middleware: CommittedOperationsMiddleware())

        api.get("boards") { _, _ in try json(try agent.store.boards()) }
        api.post("boards") { request, _ in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title"])
            return try json(try await agent.createBoard(title: try body.string("title")), status: .created)
        }
        api.get("boards/:id") { _, context in try json(try agent.document(try id(context, "id"))) }
        api.patch("boards/:id") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title"])
            return try json(try await agent.renameBoard(try id(context, "id"), title: try body.string("title")))
        }
        api.post("boards/:id/columns") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title", "after"])
            let column = try await agent.createColumn(board: try id(context, "id"), title: try body.string("title"),
                                                after: try body.optionalID("after") ?? nil)
            return try json(column, status: .created)
        }
        api.get("boards/:id/digest") { _, context in
            let board = try id(context, "id")
            _ = try agent.document(board)
            let (digest, version) = try agent.store.withState(board) { state, version in (state.digest, version) }
            return try json(BoardDigest(board: board, digest: digest, version: version,
                                        operations: try agent.store.operationIDs(board).count))
        }
        api.get("boards/:id/operations") { _, context in
            let board = try id(context, "id")
            _ = try agent.document(board)
            return try json(BoardOperations(board: board, operations: try agent.store.operationIDs(board)))
        }
        api.get("boards/:id/conflicts") { _, context in try json(try agent.conflicts(try id(context, "id"))) }
        api.post("boards/:id/conflicts/:op/restore") { _, context in
            let raw = context.parameters.get("op") ?? ""
            guard let op = OperationID(raw.removingPercentEncoding ?? raw) else {
                throw AgentError.badRequest("the path must end in an operation ID like replica:42")
            }
            return try json(try await agent.restoreConflict(board: try id(context, "id"), loser: op))
        }

        api.get("boards/:id/queued") { _, context in try json(try agent.queued(try id(context, "id"))) }
        api.post("boards/:id/queued/discard") { _, context in try json(try await agent.discardQueued(try id(context, "id"))) }

        api.patch("columns/:id") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title", "after"])
            return try json(try await agent.updateColumn(try id(context, "id"), title: try body.optionalString("title"),
                                                   after: try body.optionalID("after")))
        }
        api.delete("columns/:id") { _, context in try json(try await agent.deleteColumn(try id(context, "id"))) }
        api.post("columns/:id/restore") { _, context in try json(try await agent.restoreColumn(try id(context, "id"))) }
        api.post("columns/:id/tasks") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title", "description", "after"])
            let task = try await agent.createTask(column: try id(context, "id"), title: try body.string("title"),
                                            description: try body.optionalString("description"),
                                            after: try body.optionalID("after") ?? nil)
            return try json(task, status: .created)
        }

        api.patch("tasks/:id") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["title", "description"])
            return try json(try await agent.updateTask(try id(context, "id"), title: try body.optionalString("title"),
                                                 description: try body.optionalString("description")))
        }
        api.post("tasks/:id/move") { request, context in
            let body = try await JSONBody.read(request, limit: limit, allowed: ["columnId", "after"])
            return try json(try await agent.moveTask(try id(context, "id"), to: try body.id("columnId"),
                                               after: try body.optionalID("after") ?? nil))
        }
        api.delete("tasks/:id") { _, context in try json(try await agent.deleteTask(try id(context, "id"))) }
        api.post("tasks/:id/restore") { _, context in try json(try await agent.restoreTask(try id(context, "id"))) }

        router.get("health") { _, _ in
            try json(Health(status: "ok", replicaId: agent.store.replicaID.rawValue, version: agent.store.version))
        }
        router.get("health/websocket") { _, _ in try json(agent.syncStatus) }
        router.get("metrics") { _, _ in
            agent.metrics.queued.record((try? agent.store.outboxCount()) ?? 0)
            agent.metrics.localClients.record(agent.hub.subscriberCount)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: agent.metrics.render())))
        }
        api.post("sync/reconnect") { _, _ in
            agent.reconnectNow()
            return try json(agent.syncStatus, status: .accepted)
        }
    }

    struct BoardDigest: Encodable {
        let board: EntityID
        let digest: String
        let version: Int64
        let operations: Int
    }

    struct BoardOperations: Encodable {
        let board: EntityID
        let operations: [String]
    }

    struct Health: Encodable {
        let status: String
        let replicaId: String
        let version: Int64
    }
}

/// Reads an entity ID path parameter, refusing anything that is not a UUID.
func id(_ context: BasicRequestContext, _ name: String) throws -> EntityID {
    let text = context.parameters.get(name) ?? ""
    guard let id = EntityID(text) else {
        throw AgentError.badRequest("'\(text.prefix(60))' in the path is not an entity ID (UUID)",
                                    hint: "Use an ID from GET /api/boards or GET /api/boards/{id}.")
    }
    return id
}

let apiEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return encoder
}()

func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    json(bytes: try apiEncoder.encode(value), status: status)
}

/// What every edit answers with: the entity as it is now (the same bytes as `JSONEncoder`'s).
/// Marked `throws` only so that call sites read like the generic overload's.
func json(_ value: EntitySnapshot, status: HTTPResponse.Status = .ok) throws -> Response {
    json(bytes: value.jsonBytes(), status: status)
}

private func json(bytes: some Sequence<UInt8>, status: HTTPResponse.Status) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
             body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}
