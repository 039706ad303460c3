import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KanbanAgent
import KanbanModel
import KanbanRelay
import KanbanStore
import Synchronization
import Testing

/// `kanban relay token revoke`: the relay refuses a revoked token's upgrades with 401
/// `token_revoked`, closes its open connections with 4003, keeps doing so after a restart, and
/// other tokens go on syncing.
struct TokenRevocationTests {
    @Test func aRevokedTokenIsDisconnectedAndRefusedWhileOthersSync() async throws {
        let cluster = try await SyncCluster(agents: 2)
        try await cluster.whileRunning {
            var relay = try #require(cluster.relayRef.withLock { $0 })
            // Two tokens with the same claims in the same second are still two tokens (revoking
            // one must not revoke the other); tokens from before the nonce still verify.
            #expect(relay.tokens.sign(RelayToken(team: "team", issuedAt: 1)) != relay.tokens.sign(RelayToken(team: "team", issuedAt: 1)))
            #expect(relay.tokens.verify(relay.tokens.sign(RelayToken(team: "team", nonce: nil))).map(\.team) == .success("team"))
            let leaving = relay.tokens.sign(RelayToken(team: "team"))
            let leavingID = TokenAuthority.id(of: leaving)
            try await relay.storage.recordIssued(IssuedToken(id: leavingID, token: RelayToken(team: "team")))
            let (staying, gone) = (cluster.agents[0], cluster.agents[1])
            try await cluster.connect(0)
            try await cluster.connect(1, token: leaving)
            let board = try await staying.boardWithTasks(1, title: "Team board")
            try await cluster.waitForConvergence(board: board)

            #expect(try await relay.storage.revoke(tokenID: leavingID) == .revoked)
            try await eventually("the revoked token's link is closed and its new attempts refused", timeout: .seconds(10)) {
                let classes = gone.syncStatus.attempts.map(\.errorClass)
                return classes.contains("close_4003") && classes.contains("token_revoked")
            }
            #expect(gone.syncStatus.state != .connected)

            // The other agent goes on syncing; the revoked one gets nothing more.
            let column = try #require(try staying.store.document(board)?.columns.first?.id)
            _ = try await staying.createTask(column: column, title: "after the revocation", description: nil, after: nil)
            try await eventually("the staying agent's change is stored") { try staying.store.outboxCount() == 0 }
            #expect(try gone.store.document(board)?.columns.first?.tasks.count == 1)

            // A plain upgrade with it: 401 naming the revocation, before any upgrade.
            var answer = try await upgradeAnswer(cluster.relayURL, token: leaving)
            #expect(answer.status == 401 && answer.body.contains("token_revoked"), "\(answer.status) \(answer.body)")

            // After a restart the relay still refuses it, from its first connection.
            await cluster.stopRelay()
            try await cluster.startRelay()
            relay = try #require(cluster.relayRef.withLock { $0 })
            answer = try await upgradeAnswer(cluster.relayURL, token: leaving)
            #expect(answer.status == 401 && answer.body.contains("token_revoked"), "\(answer.status) \(answer.body)")
            #expect(try await upgradeAnswer(cluster.relayURL, token: cluster.token).status == 101)
            #expect(try await relay.storage.issuedTokens().map(\.id) == [leavingID])
        }
    }
}
