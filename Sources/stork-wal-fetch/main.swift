// stork-wal-fetch [--bootstrap-source] CONFIG NAME TARGET: `stork wal-fetch` for PostgreSQL's
// restore_command, which runs once per WAL segment. It links nothing but the C library, so
// that serving a segment the prefetcher already put in the spool costs a few milliseconds (the
// full `stork`, with Foundation, libcurl and libarchive, takes ~25 ms just to start). Anything
// else (a miss, a history file, a spool file that fails its check) runs the full
// `stork wal-fetch`, which fetches from the archive and starts the prefetcher.
#if canImport(Glibc)
import Glibc
#endif
import StorkSpool

/// The full `stork` beside this program.
func storkExecutable() -> String {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = buffer.withUnsafeMutableBytes { readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4095) }
    guard n > 0 else { return "stork" }
    let me = String(decoding: buffer[0..<n], as: UTF8.self)
    return String(me[..<(me.lastIndex(of: "/") ?? me.startIndex)]) + "/stork"
}

let arguments = Array(CommandLine.arguments.dropFirst())
let flags = arguments.filter { $0.hasPrefix("--") }
let words = arguments.filter { !$0.hasPrefix("--") }
let stork = storkExecutable()
if words.count == 3, flags.allSatisfy({ $0 == "--bootstrap-source" }), let size = WALSpool.serve(words[1], to: words[2]) {
    if !WALSpool.prefetcherRunning() {
        WALSpool.startPrefetcher(WALSpool.prefetchCommand(stork: stork, config: words[0], flags: flags, after: words[1], segmentSize: size))
    }
    exit(0)
}
// Everything else: the full command, which says what is wrong when something is.
let cArgs = ([stork, "wal-fetch"] + arguments).map { strdup($0) } + [nil]
execv(stork, cArgs)
let message = Array("stork-wal-fetch: cannot run \(stork): \(String(cString: strerror(errno)))\n".utf8)
_ = write(2, message, message.count)
exit(255)
