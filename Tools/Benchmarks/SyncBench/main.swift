print("kanban-sync-bench: see Tools/Benchmarks/RESULTS.md")
