import Foundation
import HTTPTypes
import KanbanAgent
import KanbanModel
import KanbanStore
import Testing

/// `GET /api/boards/{id}/queued` and `POST .../queued/discard` on an agent without a relay, whose
/// every operation stays queued.
struct QueuedRoutesTests {
    @Test func queuedChangesAreListedAndDiscardedOnlyWhenNothingCanBeInFlight() async throws {
        try await withAgent { server in
            let board = try await server.createBoard("Plan")
            let column = try await server.createColumn(board: board, "Todo")
            _ = try await server.createTask(column: column, "Write")
            let queued = try await server.expectJSON(.get, "/api/boards/\(board)/queued")
            #expect(queued["operations"]?.array?.compactMap { $0["kind"]?.string } == ["board.create", "column.create", "task.create"])
            #expect(queued["refused"]?.array?.isEmpty == true)

            // Without a relay the changes exist nowhere else: discarding would delete them.
            expectError(try await server.send(.post, "/api/boards/\(board)/queued/discard"), .conflict, code: "no_relay")
            // Connected to a relay that takes the board: its pushes may be on their way, so no.
            server.agent.updateSyncStatus { $0.state = .connected }
            expectError(try await server.send(.post, "/api/boards/\(board)/queued/discard"), .conflict, code: "syncing")
            #expect(try server.agent.store.queuedCount(try #require(EntityID(board))) == 3, "nothing was discarded")

            // Offline nothing is in flight: the board, made only here, is gone with its operations.
            server.agent.updateSyncStatus { $0.state = .reconnecting }
            let result = try await server.expectJSON(.post, "/api/boards/\(board)/queued/discard")
            #expect(result["discarded"]?.array?.count == 3 && result["document"] == nil, "\(result)")
            expectError(try await server.send(.get, "/api/boards/\(board)"), .notFound, code: "not_found")
            expectError(try await server.send(.get, "/api/boards/\(board)/queued"), .notFound, code: "not_found")
            expectError(try await server.send(.post, "/api/boards/\(board)/queued/discard"), .notFound, code: "not_found")
            #expect(try await server.expectJSON(.get, "/api/boards").array?.isEmpty == true)
        }
    }
}
