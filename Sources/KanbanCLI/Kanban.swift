import ArgumentParser

@main
struct Kanban: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kanban",
        abstract: "An offline-first Kanban board with live sync.",
        discussion: """
            Run `kanban agent` to start your local agent and open the board URL it prints.
            The other commands talk to that agent.
            """,
        subcommands: [AgentCommand.self, RelayCommand.self, DemoCommand.self, DoctorCommand.self, BoardCommand.self, ColumnCommand.self, AddCommand.self, MoveCommand.self, EditCommand.self, RemoveCommand.self, RestoreCommand.self, ConflictsCommand.self, QueuedCommand.self, WatchCommand.self, DebugCommand.self]
    )
}
