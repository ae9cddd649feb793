"""The `tagwarden` command, a click group (entry point `service.ops.cli.main:main`)."""
