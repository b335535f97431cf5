"""One module per CLI subcommand. Each defines ``register(subparsers)``; bot.cli finds them all."""
