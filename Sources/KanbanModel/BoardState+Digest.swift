import Crypto

extension BoardState {
    /// SHA-256 (hex) of the canonical encoding: two replicas with equal digests hold byte-identical
    /// registers for this board, including stamps, tombstones and not-yet-created entities.
    public var digest: String {
        SHA256.hash(data: Array(canonicalEncoding().utf8)).map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }

    /// One line per entity, entities sorted by kind then ID; strings length-prefixed so no value
    /// can imitate a separator.
    public func canonicalEncoding() -> String {
        var out = "kanban-state-v1\n"
        out += "B \(board.id) \(board.created ? 1 : 0) \(enc(board.title) { s($0) })\n"
        for id in columns.keys.sorted() {
            let c = columns[id]!
            out += "C \(id) \(c.created ? 1 : 0) \(enc(c.title) { s($0) }) \(enc(c.position) { $0.rawValue }) \(enc(c.deleted) { $0 ? "1" : "0" })\n"
        }
        for id in tasks.keys.sorted() {
            let t = tasks[id]!
            out += "T \(id) \(t.created ? 1 : 0) \(enc(t.title) { s($0) }) \(enc(t.description) { s($0) }) "
            out += "\(enc(t.place) { "\($0.column)/\($0.position)" }) \(enc(t.deleted) { $0 ? "1" : "0" })\n"
        }
        return out
    }

    private func enc<V>(_ register: Register<V>?, _ value: (V) -> String) -> String {
        guard let register else { return "-" }
        return "[\(register.stamp)|\(register.op)|\(value(register.value))]"
    }

    private func s(_ text: String) -> String { "\(text.utf8.count):\(text)" }
}
