"""The dashboard's pure parts: the signed session cookie, CSRF, and the page helpers."""

from __future__ import annotations

import time

import pytest

from podjobs.surface.api.auth import Principal, TokenStore, digest
from podjobs.surface.web import session as sessions
from podjobs.surface.web.routes import _dur, templates

KEY = b"k" * 32


def test_a_sealed_session_opens_with_its_key_only_and_until_it_expires() -> None:
    s = sessions.new_session("ab" * 32, now=1000.0, ttl_s=60)
    cookie = sessions.seal(KEY, s)
    assert sessions.unseal(KEY, cookie, now=1059.0) == s
    assert sessions.unseal(KEY, cookie, now=1061.0) is None          # expired
    assert sessions.unseal(b"x" * 32, cookie, now=1000.0) is None    # another key


@pytest.mark.parametrize("cookie", [None, "", "no-dot", "a.b.c", "!!!.???", "e30.AAAA"])
def test_malformed_cookies_open_to_nothing(cookie: str | None) -> None:
    assert sessions.unseal(KEY, cookie, now=time.time()) is None


def test_a_tampered_cookie_opens_to_nothing() -> None:
    s = sessions.new_session("cd" * 32, now=time.time())
    body, mac = sessions.seal(KEY, s).split(".")
    forged = sessions._b64(sessions._unb64(body).replace(b"cd", b"ef", 1))
    assert sessions.unseal(KEY, f"{forged}.{mac}", now=time.time()) is None


def test_csrf_token_must_match() -> None:
    s = sessions.new_session("ab" * 32, now=0)
    assert sessions.csrf_ok(s, s.csrf)
    assert not sessions.csrf_ok(s, None) and not sessions.csrf_ok(s, "") and not sessions.csrf_ok(s, s.csrf + "x")


def test_a_session_names_its_principal_by_digest_while_the_token_is_in_the_file() -> None:
    p = Principal("ops", operator=True)
    store = TokenStore(entries={digest("t" * 20): p})
    assert store.principal_of_digest(digest("t" * 20).hex()) == p
    assert store.principal_of_digest(digest("u" * 20).hex()) is None
    assert store.principal_of_digest("not hex") is None


@pytest.mark.parametrize("s,text", [(None, "-"), ("", "-"), (0.25, "0.2s"), (90, "90.0s"),
                                    (600, "10.0m"), (7200, "2.0h")])
def test_durations(s: float | None, text: str) -> None:
    assert _dur(s) == text


def test_every_template_compiles_and_escapes() -> None:
    env = templates()
    for name in env.list_templates():
        env.get_template(name)
    html = env.get_template("error.html").render(title="<b>x</b>", detail="<script>", nav=[],
                                                 principal=None, msg="", csrf="", here="/ui/")
    assert "<script>" not in html and "&lt;script&gt;" in html
