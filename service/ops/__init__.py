"""The tools: the `tagwarden` CLI, the API client it uses, `make run` supervision."""
