"""The one Lua loader (podjobs.gateway): include lines expanded at load time, errors that
name the file and line, and the shared pieces kept in one place. No servers."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from podjobs import gateway
from podjobs.errors import ConfigurationError
from podjobs.gateway import ScriptError, expand

LUA = resources.files("podjobs").joinpath("lua")


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda rel: files.get(rel)


def test_an_include_line_is_replaced_by_the_include_once() -> None:
    files = {"include/clock.lua": "local function now_ms() return 1 end",
             "include/twice.lua": "--! include clock\nlocal function two() return now_ms() * 2 end"}
    src = "-- header\n--! include clock\n--! include twice\nreturn two()\n"
    got = expand("x", src, reader(files))
    assert got == ("-- header\nlocal function now_ms() return 1 end\n"
                   "local function two() return now_ms() * 2 end\nreturn two()\n")


def test_a_missing_include_names_the_file_the_line_and_what_exists() -> None:
    with pytest.raises(ScriptError) as exc:
        expand("retry", "-- a\n-- b\n--! include clok\nreturn 1\n", reader({}))
    msg = str(exc.value)
    assert "lua/retry.lua line 3" in msg and "'clok'" in msg and "lua/include/clok.lua" in msg
    assert "clock" in msg  # the includes that do exist


def test_a_missing_include_inside_an_include_names_the_include_file() -> None:
    with pytest.raises(ScriptError, match=r"lua/include/a\.lua line 2: include 'nope'"):
        expand("s", "--! include a\n", reader({"include/a.lua": "-- a\n--! include nope\n"}))


def test_an_unknown_directive_is_refused_with_its_line() -> None:
    with pytest.raises(ScriptError, match=r"lua/s\.lua line 1: '--! inclde clock' is not a directive"):
        expand("s", "--! inclde clock\n", reader({}))


def test_ordinary_comments_are_kept() -> None:
    assert expand("s", "-- KEYS[1] x\n--- doc\nreturn 1", reader({})) == "-- KEYS[1] x\n--- doc\nreturn 1\n"


def test_every_script_loads_and_none_keeps_a_directive() -> None:
    names = [s.name for s in gateway.scripts()]
    assert {"enqueue", "reserve", "iter_start", "carry", "mark_moving"} <= set(names)
    for s in gateway.scripts():
        assert "--!" not in s.text, s.name
        assert gateway.script(s.name) is s  # loaded once


def test_the_shared_pieces_live_only_in_their_includes() -> None:
    """The Redis clock, the status-record write and the iteration run fence are written
    once, in lua/include/; a script that needs one includes it."""
    for f in LUA.iterdir():
        if not f.name.endswith(".lua"):
            continue
        src = f.read_text()
        assert "redis.call('TIME')" not in src, f"{f.name}: use '--! include clock' (now_ms())"
        assert not re.search(r"pairs\(cjson\.decode", src), f"{f.name}: use '--! include status'"
        assert "HGET', h, 'run') ~=" not in src, f"{f.name}: use '--! include iter_run'"
        uses = {"clock": "now_ms(", "status": "write_status(", "iter_run": "is_current_run("}
        for inc, call in uses.items():
            if call in src:
                assert f"--! include {inc}" in src, f"{f.name} calls {call}) without its include"


def test_no_script_builds_a_key_from_a_literal_prefix() -> None:
    """Key names come from podjobs.keys / iterkeys (in KEYS, or a prefix in ARGV)."""
    for s in gateway.scripts():
        assert not re.search(r"['\"]pj:", s.text), f"{s.name} names a key itself"


# -- Sentinel URLs (issue 17 item 5) ---------------------------------------------------------

@pytest.mark.parametrize("url,expect", [
    ("redis://127.0.0.1:6379/0", None),
    ("redis+sentinel://10.0.0.5:26379,10.0.0.6:26380/pod1?db=2",
     gateway.SentinelURL((("10.0.0.5", 26379), ("10.0.0.6", 26380)), "pod1", 2)),
    ("redis+sentinel://:s3cret@h:1/p?wait=1&wait_ms=500",
     gateway.SentinelURL((("h", 1),), "p", 0, "s3cret", 1, 500)),
    ("redis+sentinel://h:1/p", gateway.SentinelURL((("h", 1),), "p")),
])
def test_sentinel_urls_parse(url: str, expect: object) -> None:
    assert gateway.sentinel_url(url) == expect


@pytest.mark.parametrize("url,says", [
    ("redis+sentinel://h/p", "'h' is not HOST:PORT"),
    ("redis+sentinel://h:1,h2:x/p", "'h2:x' is not HOST:PORT"),
    ("redis+sentinel://h:1/", "no service name"),
    ("redis+sentinel://h:1/p?timeout=3", "unknown or bad option 'timeout=3'"),
    ("redis+sentinel://:pw@h:1/p?db=x", "unknown or bad option 'db=x'"),
])
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)) as exc:
        gateway.sentinel_url(url)
    assert "pw" not in str(exc.value)  # the password is redacted


@pytest.mark.parametrize("message,never", [
    ("Error 111 connecting to 127.0.0.1:6379. Connection refused.", True),
    ("The previous master is now a slave", True),
    ("Connection closed by server.", False),
])
def test_which_connection_errors_mean_nothing_was_sent(message: str, never: bool) -> None:
    import redis

    assert gateway.never_sent(redis.ConnectionError(message)) is never
    assert gateway.never_sent(gateway.MasterNotFoundError("No master found for 'p'"))
