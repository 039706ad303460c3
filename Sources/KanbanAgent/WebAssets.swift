import Foundation
import HTTPTypes
import Hummingbird

/// The web board: plain HTML, CSS and JavaScript modules from the package resources, loaded
/// once at start-up and served from memory.
struct WebAssets {
    let files: [String: (contentType: String, body: ByteBuffer)]

    init() {
        var files: [String: (String, ByteBuffer)] = [:]
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                     "css": "text/css; charset=utf-8", "svg": "image/svg+xml"]
        if let dir = Bundle.module.resourceURL?.appendingPathComponent("Web"),
           let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) {
            for name in names {
                guard let type = types[(name as NSString).pathExtension],
                      let data = FileManager.default.contents(atPath: dir.appendingPathComponent(name).path)
                else { continue }
                files["/" + name] = (type, ByteBuffer(bytes: data))
            }
        }
        files["/"] = files["/index.html"]
        self.files = files
    }

    func register(on router: some RouterMethods<BasicRequestContext>) {
        for (path, file) in files {
            router.get(RouterPath(path)) { _, _ in
                Response(status: .ok, headers: [.contentType: file.contentType, .cacheControl: "no-cache"],
                         body: .init(byteBuffer: file.body))
            }
        }
    }
}
