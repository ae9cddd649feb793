"""`python -m service.ops.cli`: the `tagwarden` command."""

from service.ops.cli.main import main

raise SystemExit(main())
