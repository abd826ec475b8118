/// The one long task an agent runs at a time (bootstrap, clone, start, demotion, promotion,
/// reinitialize), as Patroni's AsyncExecutor holds one action: the loop keeps beating while
/// it runs, and starting another returns the name of the one that runs.
struct LongTasks {
    enum State {
        case idle
        case running(name: String, task: Task<Void, Never>)
    }

    private(set) var state: State = .idle

    /// The name of the task that runs, if one does.
    var running: String? {
        if case .running(let name, _) = state { return name }
        return nil
    }

    /// Starts `body` unless a task runs; nil when started, else the name of the one that runs.
    mutating func start(_ name: String, _ body: @escaping @Sendable () async -> Void) -> String? {
        if let running { return running }
        state = .running(name: name, task: Task { await body() })
        return nil
    }

    mutating func finished() { state = .idle }

    /// Cancels the task that runs (the process runner tears its commands down) and waits for it.
    func cancelAndWait() async {
        guard case .running(_, let task) = state else { return }
        task.cancel()
        await task.value
    }

    /// Waits for the task that runs, if one does.
    func wait() async {
        guard case .running(_, let task) = state else { return }
        await task.value
    }
}

extension Agent {
    /// Starts a long task unless one runs: nil when started, else the name of the one that
    /// runs (every caller says what it did not do). The member's state shows `state` meanwhile.
    func startLongTask(_ name: String, state: String, _ body: @escaping @Sendable (Agent) async -> Void) -> String? {
        if let running = longTasks.running { return running }
        status.update { $0.state = state; $0.task = name }
        return longTasks.start(name) { [self] in
            await body(self)
            await self.finishLongTask()
        }
    }

    private func finishLongTask() {
        longTasks.finished()
        status.update { $0.task = nil }
        // The loop runs at once, not after loop_wait; but a chain that failed waits a cycle
        // (as Patroni's does), or a method that keeps failing at once would run in a tight loop.
        wakeRequested = !waitBeforeNextCycle
        waitBeforeNextCycle = false
    }
}
