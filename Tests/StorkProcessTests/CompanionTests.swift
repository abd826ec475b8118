import Foundation
import Testing
import StorkProcess
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Companion: a process that outlives its starter")
struct CompanionTests {
    /// In its own session; it reads what is sent and sees end-of-file when its starter closes
    /// its end, even while another child (which would inherit a descriptor without
    /// close-on-exec) still runs.
    @Test func itGetsTheLinesAndSeesTheEndWhileOtherChildrenRun() async throws {
        let dir = TestSupport.makeTempDir("stork-companion")
        defer { TestSupport.removeTree(dir) }
        let out = dir + "/out"
        let companion = try Companion.start(["/bin/sh", "-c", "cat > \(out); echo done >> \(out)"], environment: [])
        #expect(getsid(companion.pid) == companion.pid)
        #expect(companion.send("arm 1\n"))
        let other = Process()
        other.executableURL = URL(fileURLWithPath: "/bin/sleep")
        other.arguments = ["20"]
        try other.run()
        defer { kill(other.processIdentifier, SIGKILL); other.waitUntilExit() }
        companion.close()
        let ended = await TestSupport.waitUntil(timeout: 5) { (try? String(contentsOfFile: out, encoding: .utf8)) == "arm 1\ndone\n" }
        #expect(ended, "\((try? String(contentsOfFile: out, encoding: .utf8)) ?? "nothing")")
        var status: Int32 = 0
        #expect(waitpid(companion.pid, &status, 0) == companion.pid)
    }

    @Test func aProgramThatCannotStartIsToldByName() {
        #expect(throws: ProcessError.self) { try Companion.start(["/nonexistent/stork-fence"], environment: []) }
    }
}
