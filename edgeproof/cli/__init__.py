"""The `edgeproof` console script: one small module per subcommand."""
