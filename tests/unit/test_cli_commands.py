"""Every subcommand of the `tagwarden` click group, found by walking the group: `--help`
works, and run against services that are not there it exits with one line of error, never a
traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from service.ops.cli.main import cli

pytestmark = pytest.mark.unit

TAGWARDEN = str(Path(sys.executable).parent / "tagwarden")
# `dev` starts redis, a registry, the gateway and a worker: covered by test_dev_stack
NOT_RUN_HERE = {("dev",)}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = _commands(cli)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _argv(path: tuple[str, ...], tmp_path: Path, port: int) -> list[str]:
    """The subcommand with every required option and argument given a value."""
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            argv.append(str(tmp_path / "missing.file"))
        elif isinstance(param, click.Option) and param.required:
            value = {"--out": str(tmp_path / "out"), "--config": str(tmp_path / "config.yml"),
                     "--to": "develop", "--env": "develop"}.get(param.opts[0], "team/app")
            argv += [param.opts[0], value]
    if "--tag" in {o for p in command.params for o in p.opts}:
        argv += ["--tag", "v1.0.0"]
    if any(p.name == "url" for p in command.params):
        argv += [next(p for p in command.params if p.name == "url").opts[0],
                 f"http://127.0.0.1:{port}", "--timeout", "2"]
    return argv


def test_the_group_has_the_commands_the_docs_name():
    assert {" ".join(path) for path in COMMANDS} == {
        "approve", "backup", "dev", "gc", "healthcheck", "history", "nginx-config", "openapi",
        "promote", "registry-config", "restore", "rollback", "scan", "status", "timeline",
        "verify", "vulndb import", "worker"}


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]):
    from service.ops.cli.main import main

    assert main([*path, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"Usage: tagwarden {' '.join(path)} ")


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in NOT_RUN_HERE], ids=" ".join)
def test_no_command_prints_a_traceback(path: tuple[str, ...], tmp_path: Path):
    port = _dead_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")}
    env.update(TAGWARDEN_REDIS_URL=f"redis://127.0.0.1:{port}/0",
               TAGWARDEN_BIND=f"127.0.0.1:{port}", TAGWARDEN_URL=f"http://127.0.0.1:{port}")
    argv = _argv(path, tmp_path, port)
    if path == ("worker",):
        argv.append("--burst")
    done = subprocess.run([TAGWARDEN, *argv], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert "Traceback" not in done.stderr, (argv, done.stderr)
    assert done.returncode in (0, 1), (argv, done.returncode, done.stderr)
    if done.returncode:
        assert done.stderr.strip() and len(done.stderr.splitlines()) <= 3, done.stderr
