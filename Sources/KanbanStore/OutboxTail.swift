import KanbanModel

/// The newest part of the outbox, kept in memory so that pushing a just-committed local edit
/// does not read it back from SQLite (a reader connection, whose page cache every commit
/// invalidates, and a join of the outbox with the log).
///
/// Invariant: every unacknowledged outbox row with a log sequence above `floor` is in `entries`,
/// in sequence order, with the operation's JSON exactly as logged. Rows at or below `floor` are
/// only on disk. A store opens with `floor` at the top of its log; each committed local
/// operation is appended; an acknowledged one leaves at once (its row goes later, with the next
/// transaction, and needs no push meanwhile: the relay has it). When the tail outgrows its budget (a long time offline), its
/// oldest entries are dropped and `floor` rises past them: those are read from disk again.
/// An entry can outlive its outbox row only if a row leaves the outbox without an
/// acknowledgment passing through the store, and then the worst case is a repeated push, which
/// the relay acknowledges like any known operation.
struct OutboxTail {
    struct Entry {
        let seq: Int64
        let id: OperationID
        let json: [UInt8]
    }

    static let maxEntries = 10_000
    static let maxBytes = 8 << 20

    private(set) var floor: Int64
    private(set) var entries: [Entry] = []
    private var bytes = 0

    init(floor: Int64) { self.floor = floor }

    /// Operations committed together, in sequence order, all above the current entries.
    mutating func append(_ committed: [Entry]) {
        entries += committed
        bytes += committed.reduce(0) { $0 + $1.json.count }
        guard entries.count > Self.maxEntries || bytes > Self.maxBytes else { return }
        var dropped = 0
        while dropped < entries.count && (entries.count - dropped > Self.maxEntries / 2 || bytes > Self.maxBytes / 2) {
            bytes -= entries[dropped].json.count
            dropped += 1
        }
        guard dropped > 0 else { return }
        floor = max(floor, entries[dropped - 1].seq)
        entries.removeFirst(dropped)
    }

    mutating func remove(_ acknowledged: [OperationID]) {
        guard !entries.isEmpty, !acknowledged.isEmpty else { return }
        let gone = Set(acknowledged)
        entries.removeAll { entry in
            guard gone.contains(entry.id) else { return false }
            bytes -= entry.json.count
            return true
        }
    }

    /// Entries at or below `seq` leave the tail and `floor` rises to it: from now on those rows
    /// are read from the table (used when older log rows join the outbox again).
    mutating func raiseFloor(to seq: Int64) {
        guard seq > floor else { return }
        floor = seq
        entries.removeAll { $0.seq <= seq }
        bytes = entries.reduce(0) { $0 + $1.json.count }
    }

    /// Up to `limit` outbox entries above `after`, or nil when the tail does not cover them all.
    func entries(after: Int64, limit: Int) -> [(seq: Int64, json: [UInt8])]? {
        guard after >= floor else { return nil }
        // Entries are in sequence order: find the first above `after` by bisection.
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].seq <= after { low = mid + 1 } else { high = mid }
        }
        return entries[low..<min(entries.count, low + max(0, limit))].map { ($0.seq, $0.json) }
    }
}
