"""Developer tools (run from the repository root); `tools.peerkit` is the peers tool's library."""
