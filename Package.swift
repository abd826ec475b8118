// swift-tools-version: 6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Stork",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stork", targets: ["stork"]),
        .executable(name: "stork-wal-fetch", targets: ["stork-wal-fetch"]),
        .executable(name: "stork-fence", targets: ["stork-fence"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),

        // The one way an external program runs: no shell, its own session, a teardown that
        // reaches the whole group.
        .target(name: "StorkProcess", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Subprocess", package: "swift-subprocess"),
        ], swiftSettings: strict),
        .target(name: "StorkConfig", dependencies: [
            "StorkProcess",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // The one libcurl wrapper: etcd, the S3 and HTTPS stores, members' REST APIs.
        .target(name: "StorkNet", dependencies: ["CCurl"], swiftSettings: strict),
        .target(name: "StorkDCS", dependencies: [
            "StorkConfig", "StorkNet",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "StorkPostgres", dependencies: [
            "StorkConfig", "StorkProcess", "CLibPQ",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "StorkMethods", dependencies: [
            "StorkConfig", "StorkProcess", "StorkPostgres", "StorkArchive",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // The spool of prefetched WAL: the C library only, for the lean stork-wal-fetch.
        .target(name: "StorkSpool", swiftSettings: strict),
        .executableTarget(name: "stork-wal-fetch", dependencies: ["StorkSpool"], swiftSettings: strict),
        // The self-fence beside a primary: the C library only, so that it keeps working when
        // the agent does not.
        .executableTarget(name: "stork-fence", swiftSettings: strict),
        .target(name: "StorkArchive", dependencies: [
            "StorkConfig", "StorkProcess", "StorkPostgres", "StorkSpool", "StorkNet", "CArchive",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "StorkHA", dependencies: [
            "StorkConfig", "StorkProcess", "StorkDCS", "StorkPostgres", "StorkMethods",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "StorkAPI", dependencies: [
            "StorkConfig", "StorkDCS", "StorkPostgres", "StorkMethods", "StorkHA",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .executableTarget(name: "stork", dependencies: [
            "StorkConfig", "StorkProcess", "StorkDCS", "StorkPostgres", "StorkHA", "StorkAPI", "StorkArchive",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),

        // Real services for tests: free ports, temporary directories owned by the postgres user, etcd.
        .target(name: "StorkTestSupport", dependencies: [
            "StorkConfig", "StorkProcess", "StorkPostgres",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),

        .testTarget(name: "StorkProcessTests", dependencies: ["StorkProcess", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkConfigTests", dependencies: ["StorkConfig", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkDCSTests", dependencies: ["StorkDCS", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkPostgresTests", dependencies: ["StorkPostgres", "StorkProcess", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkArchiveTests", dependencies: ["StorkArchive", "StorkSpool", "StorkConfig", "StorkPostgres", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkMethodsTests", dependencies: ["StorkMethods", "StorkConfig"], swiftSettings: strict),
        .testTarget(name: "StorkHATests", dependencies: ["StorkHA", "StorkTestSupport"], swiftSettings: strict),
        .testTarget(name: "StorkAPITests", dependencies: [
            "StorkAPI", "StorkHA", "StorkDCS", "StorkConfig", "StorkPostgres", "StorkTestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .testTarget(name: "StorkCLITests", dependencies: ["stork", "StorkConfig", "StorkDCS"], swiftSettings: strict),
        .testTarget(name: "StorkIntegrationTests", dependencies: [
            "StorkConfig", "StorkDCS", "StorkProcess", "StorkPostgres", "StorkTestSupport",
        ], swiftSettings: strict),
    ]
)
