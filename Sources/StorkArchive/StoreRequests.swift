import Foundation
import StorkNet
#if canImport(Glibc)
import Glibc
#endif

/// Escapes `text` as AWS's SigV4 canonical form wants it (RFC 3986 unreserved characters kept,
/// every other byte `%XX` in upper case; `/` kept when `keepSlash`). libcurl 7.88 signs the URL's
/// path and query as they are written, so they must be written in this form.
func awsEscape(_ text: String, keepSlash: Bool = false) -> String {
    var out = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        case UInt8(ascii: "/") where keepSlash:
            out.append("/")
        default:
            out += String(format: "%%%02X", byte)
        }
    }
    return out
}

/// A GET into `<target>.stork-part`, renamed to `target` when it succeeded: false (and nothing
/// left) when the response says the object is `missing`, `failure` for any other non-2xx.
func downloadThroughPartFile(to target: String, get: (Int32) throws -> HTTPResponse, missing: (HTTPResponse) -> Bool,
                             failure: (HTTPResponse) -> ArchiveError) throws -> Bool {
    let path = target + ".stork-part"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ArchiveError("cannot write \(path): \(String(cString: strerror(errno)))") }
    var keep = false
    defer {
        close(fd)
        if !keep { unlink(path) }
    }
    let response = try get(fd)
    if missing(response) { return false }
    guard (200..<300).contains(response.status) else { throw failure(response) }
    guard rename(path, target) == 0 else {
        throw ArchiveError("cannot rename \(path) to \(target): \(String(cString: strerror(errno)))")
    }
    keep = true
    return true
}
