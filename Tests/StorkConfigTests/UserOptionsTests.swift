import Testing
@testable import StorkConfig

@Suite("initdb and pg_basebackup options (Patroni's process_user_options)")
struct UserOptionsTests {
    @Test func listForm() throws {
        let v: JSONValue = .array([.string("data-checksums"), .object(["encoding": .string("UTF8")]),
                                   .object(["locale": .string("en_US.UTF-8")]), .object(["wal-segsize": .int(64)])])
        #expect(try UserOptions.initdbArguments(v) == ["--data-checksums", "--encoding=UTF8", "--locale=en_US.UTF-8", "--wal-segsize=64"])
    }

    @Test func mapForm() throws {
        let v: JSONValue = .object(["max-rate": .string("100M"), "checkpoint": .string("fast"), "verbose": .bool(true),
                                    "progress": .bool(false), "label": .null, "waldir": .string("")])
        // Keys in sorted order; true is a bare switch; false, null and "" leave the option out.
        #expect(try UserOptions.basebackupArguments(v) == ["--checkpoint=fast", "--max-rate=100M", "--verbose"])
    }

    @Test func fromYAML() throws {
        let list = try ConfigLoader.yamlValue("- data-checksums\n- encoding: UTF8\n- auth-local: peer\n")
        #expect(try UserOptions.initdbArguments(list) == ["--data-checksums", "--encoding=UTF8", "--auth-local=peer"])
        let map = try ConfigLoader.yamlValue("max-rate: 100M\ncheckpoint: fast\n")
        #expect(try UserOptions.basebackupArguments(map) == ["--checkpoint=fast", "--max-rate=100M"])
    }

    @Test func nothingGivesNothing() throws {
        #expect(try UserOptions.initdbArguments(nil) == [])
        #expect(try UserOptions.initdbArguments(.null) == [])
        #expect(try UserOptions.basebackupArguments(.array([])) == [])
    }

    @Test func valuesAreUnquotedLikePatroni() throws {
        let v: JSONValue = .array([.object(["foo": .string("bar baz")]), .object(["q": .string("\"bar baz\"")]),
                                   .object(["s": .string("'it''s'")]), .object(["u": .string("unbalanced \"quote")])])
        #expect(try UserOptions.initdbArguments(v) == ["--foo=bar baz", "--q=bar baz", "--s=its", "--u=unbalanced \"quote"])
        #expect(UserOptions.unquote("\"a multi\" \"quoted string\"") == "\"a multi\" \"quoted string\"")
        #expect(UserOptions.shellWords("a 'b c' \"d\\\"e\" f\\ g") == ["a", "b c", "d\"e", "f g"])
        #expect(UserOptions.shellWords("'open") == nil)
    }

    @Test func refusedInitdbOptions() {
        for name in ["pgdata", "nosync", "pwfile", "sync-only", "version"] {
            #expect(throws: ConfigError("bootstrap.initdb", "option \"\(name)\" is set by Stork and cannot be given")) {
                try UserOptions.initdbArguments(.array([.string(name)]))
            }
            #expect(throws: ConfigError("bootstrap.initdb", "option \"\(name)\" is set by Stork and cannot be given")) {
                try UserOptions.initdbArguments(.object([name: .string("x")]))
            }
        }
        #expect(throws: ConfigError("bootstrap.initdb", "option \"pgdata\" is set by Stork and cannot be given")) {
            try UserOptions.initdbArguments(.array([.object(["--pgdata": .string("/x")])]))
        }
    }

    @Test func refusedBasebackupOptions() {
        let names = ["pgdata", "format", "wal-method", "xlog-method", "gzip", "version", "compress",
                     "dbname", "host", "port", "username", "password"]
        for name in names {
            #expect(throws: ConfigError("postgresql.basebackup", "option \"\(name)\" is set by Stork and cannot be given")) {
                try UserOptions.basebackupArguments(.array([.object([name: .string("x")])]))
            }
        }
        // initdb's own refusals do not apply to pg_basebackup and the reverse.
        #expect((try? UserOptions.basebackupArguments(.array([.string("nosync")]))) == ["--nosync"])
        #expect((try? UserOptions.initdbArguments(.array([.object(["username": .string("postgres")])]))) == ["--username=postgres"])
    }

    @Test func badShapesCollectEveryIssue() {
        let v: JSONValue = .array([.object(["a": .string("1"), "b": .string("2")]), .int(5), .string("pgdata"),
                                   .object(["c": .array([.string("x")])]), .string("ok")])
        do {
            _ = try UserOptions.initdbArguments(v)
            Issue.record("expected an error")
        } catch {
            #expect(error.lines == [
                "bootstrap.initdb: item 1: a map item must have exactly one key, found 2 (a, b)",
                "bootstrap.initdb: item 2: expected an option name or a single-key map",
                "bootstrap.initdb: option \"pgdata\" is set by Stork and cannot be given",
                "bootstrap.initdb: option \"c\": expected a single value (item 4)",
            ])
        }
        #expect(throws: ConfigError("postgresql.basebackup", "expected a list or a map of options")) {
            try UserOptions.basebackupArguments(.string("--checkpoint=fast"))
        }
        #expect(throws: ConfigError("x.y", "expected a list or a map of options")) {
            try UserOptions.arguments(.int(1), refused: [], path: "x.y")
        }
    }
}
