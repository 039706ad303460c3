import CompressNIO
import Foundation
import KanbanModel
import KanbanProtocol
import NIOCore

/// What one permessage-deflate compressor costs (window 2^12 as the relay negotiates) at each zlib
/// memLevel: RSS growth of `count` live compressors, each having compressed one typical message,
/// and the compression ratio each gets on a stream of typical `ops` messages (context takeover).
/// swift-websocket uses memLevel 8 unless `memoryLevel:` is passed to `.perMessageDeflate(...)`.
func runZlibMemBench(count: Int) throws {
    var rows: [[String]] = []
    var factory = OpFactory(replica: "zwriter", board: EntityID.make(), seed: 11)
    let messages: [String] = (0..<2000).map { i in
        SyncMessage.ops(.init(board: factory.board, ops: [.init(seq: Int64(i + 1), op: factory.typical())], head: Int64(i + 1))).text
    }
    for level in [8, 4, 2, 1] {
        let rss0 = rssKiB() ?? 0
        var keep: [ZlibCompressor] = []
        keep.reserveCapacity(count)
        for i in 0..<count {
            let c = try ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 12, compressionLevel: -1, memoryLevel: Int32(level)))
            var b = ByteBuffer(string: messages[i % messages.count])
            _ = try b.compressStream(with: c, flush: .sync, allocator: ByteBufferAllocator())
            keep.append(c)
        }
        let rss1 = rssKiB() ?? 0
        // Ratio on one long-lived stream.
        let stream = try ZlibCompressor(algorithm: .deflate, configuration: .init(windowSize: 12, compressionLevel: -1, memoryLevel: Int32(level)))
        var plain = 0, packed = 0
        for m in messages {
            var b = ByteBuffer(string: m)
            plain += b.readableBytes
            let out = try b.compressStream(with: stream, flush: .sync, allocator: ByteBufferAllocator())
            packed += out.readableBytes - 4
        }
        rows.append(["\(level)", "\(count)", num(Double(rss1 - rss0) * 1024 / Double(count) / 1024), String(format: "%.2fx", Double(plain) / Double(packed))])
        keep.removeAll()
    }
    printTable("zlib deflate state per connection (window 2^12) by memLevel: RSS of \(count) live compressors; ratio on 2,000 typical `ops` messages",
               ["memLevel", "compressors", "KiB each", "compression ratio (payload)"], rows)
}
