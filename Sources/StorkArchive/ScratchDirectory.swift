import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A directory of this process's own for files on their way to or from the archive: made by
/// `mkdtemp` (mode 0700, a name no one can guess or plant beforehand), removed with all in it.
/// A root process (`stork restore`, `stork backup`) writes nothing under a predictable name.
struct ScratchDirectory {
    let path: String

    init(in parent: String = NSTemporaryDirectory(), prefix: String = "stork") throws {
        var template = Array("\(parent)/\(prefix)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ArchiveError("cannot create a scratch directory in \(parent): \(String(cString: strerror(errno)))")
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
