import Foundation
import StorkConfig

/// The archive in an S3 bucket (or an S3-compatible server).
public struct S3Store: ArchiveStore {
    public init(_ location: ArchiveSettings.S3Location, environment: [String: String]) throws {
        throw ArchiveError("s3:// archives are not supported yet")
    }
    public func describe(_ key: String) -> String { key }
    public func uploadPath(for key: String, scratch: String) -> String { scratch }
    public func create(_ key: String, fromFile path: String) throws -> Bool { false }
    public func download(_ key: String, to path: String) throws -> Bool { false }
    public func localPath(_ key: String) -> String? { nil }
    public func list(prefix: String) throws -> [StoredObject] { [] }
    public func delete(_ key: String) throws {}
}

/// A read-only archive served over HTTPS.
public struct HTTPSStore: ArchiveStore {
    public init(baseURL: String) throws {
        throw ArchiveError("https:// archives are not supported yet")
    }
    public func describe(_ key: String) -> String { key }
    public func uploadPath(for key: String, scratch: String) -> String { scratch }
    public func create(_ key: String, fromFile path: String) throws -> Bool { false }
    public func download(_ key: String, to path: String) throws -> Bool { false }
    public func localPath(_ key: String) -> String? { nil }
    public func list(prefix: String) throws -> [StoredObject] { [] }
    public func delete(_ key: String) throws {}
}
