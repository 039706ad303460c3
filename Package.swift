// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "kanban-sync",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kanban", targets: ["KanbanCLI"]),
        .library(name: "KanbanModel", targets: ["KanbanModel"]),
        .library(name: "KanbanStore", targets: ["KanbanStore"]),
        .library(name: "KanbanProtocol", targets: ["KanbanProtocol"]),
        .library(name: "KanbanAgent", targets: ["KanbanAgent"]),
        .library(name: "KanbanRelay", targets: ["KanbanRelay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // Pure core: IDs, clocks, fractional positions, operations, merge rules. No I/O.
        .target(
            name: "KanbanModel",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // An SQLite VFS that writes each transaction's WAL frames in one pwrite (walbuffer.c).
        .target(
            name: "CKanbanWALBuffer",
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // SQLite replica + op log + outbox + cursors, on GRDB over the system libsqlite3.
        .target(
            name: "KanbanStore",
            dependencies: [
                "KanbanModel", "CKanbanWALBuffer", .product(name: "GRDB", package: "GRDB.swift"),
                // The C API, to bind hot-path arguments without building `StatementArguments`.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        // Agent <-> relay wire protocol: messages, codec, close codes, session state machine.
        .target(
            name: "KanbanProtocol",
            dependencies: ["KanbanModel"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KanbanAgent",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSCompression", package: "hummingbird-websocket"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "WSCompression", package: "swift-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Web")],
            swiftSettings: swiftSettings
        ),
        // The system zlib, for the relay's own permessage-deflate (KanbanRelay/RelayDeflate.swift).
        .target(
            name: "CRelayZlib",
            linkerSettings: [.linkedLibrary("z")]
        ),
        .target(
            name: "KanbanRelay",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanProtocol", "CRelayZlib",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Seeded multi-replica workloads shared by property tests, benchmarks and soak tools.
        .target(
            name: "KanbanSimulation",
            dependencies: ["KanbanModel"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "KanbanCLI",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanProtocol", "KanbanAgent", "KanbanRelay", "KanbanSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmarks: run with `swift run -c release kanban-store-bench`.
        .executableTarget(
            name: "kanban-store-bench",
            dependencies: ["KanbanModel", "KanbanStore", "KanbanSimulation", .product(name: "GRDB", package: "GRDB.swift")],
            path: "Tools/Benchmarks/StoreBench",
            swiftSettings: swiftSettings
        ),
        // End-to-end sync benchmarks: `swift run -c release kanban-sync-bench --help`.
        .executableTarget(
            name: "kanban-sync-bench",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanProtocol", "KanbanAgent", "KanbanRelay",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "WSCompression", package: "swift-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tools/Benchmarks/SyncBench",
            swiftSettings: swiftSettings
        ),
        // Helpers shared by the test targets.
        .target(
            name: "KanbanTestSupport",
            path: "Tests/KanbanTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KanbanModelTests",
            dependencies: ["KanbanModel", "KanbanSimulation"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KanbanStoreTests",
            dependencies: ["KanbanModel", "KanbanStore", "KanbanSimulation", "KanbanTestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KanbanAgentTests",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanAgent",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSTesting", package: "hummingbird-websocket"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KanbanSyncTests",
            dependencies: [
                "KanbanModel", "KanbanStore", "KanbanProtocol", "KanbanAgent", "KanbanRelay", "KanbanTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
