import Foundation
import StorkConfig
import StorkPostgres
import Testing
@testable import StorkMethods

@Suite("rsync delta: which files a re-sync copies, and the progress meters")
struct RsyncDeltaTests {
    static let cutoff = Date(timeIntervalSince1970: 1_800_000_000)

    func control(timeline: Int = 1, redo: String = "0/3000028", checkpointTime: String = "Fri Jan 15 08:00:00 2027",
                 backupStart: String = "0/0") -> ControlData {
        ControlData(systemIdentifier: "1", clusterState: "shut down in recovery", timeline: timeline, checkpointLSN: 0, fields: [
            "Time of latest checkpoint": checkpointTime,
            "Latest checkpoint's REDO location": redo,
            "Backup start location": backupStart,
            "Backup end location": "0/0",
            "End-of-backup record required": "no",
        ])
    }

    @Test func listingLines() {
        let file = SourceFile(listing: "-rw-------      1073741824 2027/01/15 08:00:01 base/5/16384.1")
        #expect(file == SourceFile(path: "base/5/16384.1", size: 1 << 30, modified: Date(timeIntervalSince1970: 1_800_000_001)))
        #expect(SourceFile(listing: "-rw-------       8,192 2027/01/15 08:00:01 global/pg_control")?.size == 8192)
        #expect(SourceFile(listing: "drwx------        4096 2027/01/15 08:00:01 base/5")?.isDirectory == true)
        #expect(SourceFile(listing: "drwx------        4096 2027/01/15 08:00:01 .") == nil)
        #expect(SourceFile(listing: "lrwxrwxrwx          10 2027/01/15 08:00:01 pg_wal -> /wal") == nil)
        #expect(SourceFile(listing: "rsync: [sender] link_stat \"/x\" failed: No such file or directory (2)") == nil)
        #expect(SourceFile(listing: "-rw------- 12 2027/01/15 08:00:01 a name with spaces")?.path == "a name with spaces")
    }

    @Test func checkpointTimeIsReadInUTC() {
        #expect(control(checkpointTime: "Fri Jan 15 08:00:00 2027").checkpointTime == Self.cutoff)
        // %c pads a one-digit day with a space.
        #expect(control(checkpointTime: "Thu Jan  7 08:00:00 2027").checkpointTime == Self.cutoff.addingTimeInterval(-8 * 86400))
        #expect(control(checkpointTime: "garbage").checkpointTime == nil)
    }

    @Test func relationFiles() {
        for path in ["base/5/16384", "base/5/16384.12", "base/5/16384_vm", "base/1/2619_init", "global/1262", "global/1262_vm.1"] {
            #expect(RsyncDelta.isRelationFile(path), "\(path)")
        }
        for path in ["base/5/16384_fsm", "global/pg_control", "global/pg_filenode.map", "base/5/PG_VERSION", "pg_xact/0000",
                     "base/5/pg_internal.init", "base/pgsql_tmp/x", "base/5/16384.", "base/5/16384.1a", "postgresql.conf",
                     "base/x/1", "base/5/_vm", "pg_tblspc/16400/PG_15_202209061/5/16401"] {
            #expect(!RsyncDelta.isRelationFile(path), "\(path)")
        }
    }

    /// The case rsync's quick check misses: same size, same modification time as the copy,
    /// different bytes. Written after the cutoff, the file is copied whatever its stamps say.
    @Test func aFileWrittenAfterTheCutoffIsCopiedWhateverItsStampsSay() {
        let before = Self.cutoff.addingTimeInterval(-1), after = Self.cutoff.addingTimeInterval(1)
        let listing = [
            SourceFile(path: "base", size: 4096, modified: after, isDirectory: true),
            SourceFile(path: "base/5/100", size: 8192, modified: before),      // cold: left alone
            SourceFile(path: "base/5/101", size: 8192, modified: after),       // written since: copied
            SourceFile(path: "base/5/102", size: 8192, modified: Self.cutoff), // at the cutoff: copied
            SourceFile(path: "base/5/103", size: 16384, modified: before),     // other size in the copy: copied
            SourceFile(path: "base/5/104", size: 8192, modified: before),      // not in the copy: copied
            SourceFile(path: "base/5/100_fsm", size: 24576, modified: before), // free-space map: always copied
            SourceFile(path: "pg_xact/0000", size: 8192, modified: before),    // not a relation file: always copied
        ]
        let targetSizes = ["base/5/100": 8192, "base/5/101": 8192, "base/5/102": 8192, "base/5/103": 8192,
                           "base/5/100_fsm": 24576, "pg_xact/0000": 8192]
        let plan = RsyncDelta.plan(listing, cutoff: Self.cutoff) { targetSizes[$0] }
        #expect(plan.copy.map(\.path) == ["base", "base/5/101", "base/5/102", "base/5/103", "base/5/104", "base/5/100_fsm", "pg_xact/0000"])
        #expect(plan.unchanged == 1)
        #expect(plan.bytesToCopy == 8192 * 4 + 16384 + 24576)
    }

    @Test func whenTheCopysCheckpointCanBeTrusted() {
        let start = LSN.parse("0/5000000")
        func choose(_ target: ControlData?, hasData: Bool = true, label: Bool = false, timeline: Int? = 1,
                    section: [String: JSONValue] = [:]) -> RsyncDelta {
            RsyncDelta.choose(hasData: hasData, target: target, targetHasBackupLabel: label, sourceTimeline: timeline,
                              backupStart: start, section: section)
        }
        #expect(choose(control(), hasData: false) == .full)
        #expect(choose(control()) == .changedSince(cutoff: Self.cutoff.addingTimeInterval(-RsyncDelta.defaultClockSkew), checkpoint: Self.cutoff))
        #expect(choose(control(), section: ["max_clock_skew": .int(60)]) == .changedSince(cutoff: Self.cutoff.addingTimeInterval(-60), checkpoint: Self.cutoff))
        #expect(choose(control(), section: ["delta": .string("checksum")]) == .checksum("as postgresql.rsync.delta asks"))
        for (target, label, timeline) in [(control(), true, 1), (control(backupStart: "0/2000028"), false, 1),
                                          (control(timeline: 2), false, 1), (control(redo: "0/6000028"), false, 1),
                                          (control(checkpointTime: "?"), false, 1)] as [(ControlData, Bool, Int)] {
            guard case .checksum = choose(target, label: label, timeline: timeline) else {
                Issue.record("\(target.fields) label \(label) timeline \(timeline): expected checksums")
                continue
            }
        }
        guard case .checksum = choose(nil) else { Issue.record("no pg_control: expected checksums"); return }
    }

    @Test func progressMeters() {
        #expect(RsyncDelta.progressBytes("    104857600  48%   95.37MB/s    0:00:01 (xfr#3, to-chk=10/40)") == 104_857_600)
        #expect(RsyncDelta.progressBytes("              2 100%    0.00kB/s    0:00:00") == 2)
        #expect(RsyncDelta.progressBytes("sending incremental file list") == nil)
        #expect(PostgresNode.basebackupProgress("  51234/1079301 kB (4%), 0/1 tablespace")! == (51234 * 1024, 1079301 * 1024))
        #expect(PostgresNode.basebackupProgress("1079301/1079301 kB (100%), 1/1 tablespace (...data/base/5/16384)")! == (1079301 * 1024, 1079301 * 1024))
        #expect(PostgresNode.basebackupProgress("pg_basebackup: error: connection to server failed") == nil)
        #expect(PostgresNode.basebackupProgress("waiting for checkpoint") == nil)
    }

    @Test func filesAreSharedAmongStreamsBySize() {
        let t = Self.cutoff
        let listing = [
            SourceFile(path: "base", size: 4096, modified: t, isDirectory: true),
            SourceFile(path: "base/5", size: 4096, modified: t, isDirectory: true),
            SourceFile(path: "base/5/1", size: 100, modified: t), SourceFile(path: "base/5/2", size: 60, modified: t),
            SourceFile(path: "base/5/3", size: 50, modified: t), SourceFile(path: "base/5/4", size: 10, modified: t),
            SourceFile(path: "global/pg_control", size: 8, modified: t),
        ]
        let two = RsyncMethod.share(listing, among: 2)
        #expect(two == [["base", "base/5", "base/5/1", "base/5/4", "global/pg_control"], ["base", "base/5", "base/5/2", "base/5/3"]])
        // Every file exactly once, whatever the count; a stream that would get no file is not started.
        for count in 1...5 {
            let shares = RsyncMethod.share(listing, among: count)
            let files = shares.flatMap { $0.filter { !["base", "base/5"].contains($0) } }
            #expect(files.sorted() == ["base/5/1", "base/5/2", "base/5/3", "base/5/4", "global/pg_control"], "\(count)")
            #expect(shares.count == min(count, 5) && shares.allSatisfy { $0.prefix(2) == ["base", "base/5"] }, "\(count)")
        }
        #expect(RsyncMethod.share(listing.filter(\.isDirectory), among: 3) == [["base", "base/5"]])
    }

    /// What the removal before a copy takes away: what the source does not list, or lists as
    /// another type, and everything in pg_wal; never pg_wal itself or Stork's backup_label.
    @Test func extraneousFilesOfTheCopy() throws {
        let target = FileManager.default.temporaryDirectory.appendingPathComponent("stork-extraneous-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: target) }
        let fm = FileManager.default
        for dir in ["base/5", "base/6/sub", "global", "pg_wal/archive_status"] {
            try fm.createDirectory(atPath: target + "/" + dir, withIntermediateDirectories: true)
        }
        for file in ["base/5/1", "base/5/2", "base/6/7", "global/pg_control", "pg_wal/000000010000000000000001",
                     "backup_label", "postmaster.pid", "pg_xact", "PG_VERSION"] {
            #expect(fm.createFile(atPath: target + "/" + file, contents: Data("x".utf8)))
        }
        try fm.createSymbolicLink(atPath: target + "/stray-link", withDestinationPath: "/etc")
        let t = Self.cutoff
        let listing = [
            SourceFile(path: "base", size: 0, modified: t, isDirectory: true), SourceFile(path: "base/5", size: 0, modified: t, isDirectory: true),
            SourceFile(path: "base/5/1", size: 1, modified: t), SourceFile(path: "global", size: 0, modified: t, isDirectory: true),
            SourceFile(path: "global/pg_control", size: 1, modified: t), SourceFile(path: "pg_wal", size: 0, modified: t, isDirectory: true),
            SourceFile(path: "pg_xact", size: 0, modified: t, isDirectory: true), SourceFile(path: "PG_VERSION", size: 1, modified: t),
        ]
        let found = RsyncDelta.extraneous(in: target, listing: listing)
        #expect(Set(found) == ["base/5/2", "base/6", "pg_wal/000000010000000000000001", "pg_wal/archive_status", "postmaster.pid", "pg_xact", "stray-link"],
                "\(found)")
        // A pg_wal that is a link to a directory elsewhere stays a link; its contents go.
        let wal = target + "-wal"
        defer { try? fm.removeItem(atPath: wal) }
        try fm.moveItem(atPath: target + "/pg_wal", toPath: wal)
        try fm.createSymbolicLink(atPath: target + "/pg_wal", withDestinationPath: wal)
        let linked = RsyncDelta.extraneous(in: target, listing: listing.filter { $0.path != "pg_wal" })
        #expect(linked.contains("pg_wal/000000010000000000000001") && !linked.contains("pg_wal"), "\(linked)")
    }
}

