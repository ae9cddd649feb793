"""A script and a WAIT in one round trip; a server that lost its scripts gets them again."""

from __future__ import annotations

import fakeredis

from service.store import script_then


def test_the_script_runs_with_what_follows_it_and_survives_a_flushed_script_cache():
    client = fakeredis.FakeRedis(decode_responses=True)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    assert script_then(client, script, ["n"], [], then=lambda p: p.get("n")) == [1, "1"]
    client.script_flush()  # a restarted or failed-over server knows no script
    assert script_then(client, script, ["n"], []) == [2]
    assert client.get("n") == "2"  # the refused EVALSHA ran nothing: one increment per call
