"""The `tagwarden` command (entry point `service.ops.cli.main:main`)."""
