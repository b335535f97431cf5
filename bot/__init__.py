"""hubwatch service side: Hub access, watcher, alerts, Discord, and the CLI."""
