"""`cmdm serve`'s helpers: a password hash that verifies, a token whose sha256 the config takes, and a
refusal to serve a project that has no users."""

from __future__ import annotations

import hashlib
import io
import re

from argon2 import PasswordHasher

from cmdm_pipeline.cli import main


def test_hash_password_reads_stdin_and_prints_an_argon2_hash(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["serve", "--hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$") and PasswordHasher().verify(printed, "correct horse")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["serve", "--hash-password"]) == 2


def test_new_token_prints_the_token_and_its_sha256(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "--new-token", "webshop"]) == 0
    out = capsys.readouterr().out
    token = re.search(r"not stored\): (\S+)", out).group(1)  # type: ignore[union-attr]
    digest = re.search(r"token_hash: ([0-9a-f]{64})", out).group(1)  # type: ignore[union-attr]
    assert hashlib.sha256(token.encode()).hexdigest() == digest


def test_serve_refuses_a_project_without_users(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    assert main(["serve", "--config", str(config.base_dir / "cmdm.yaml")]) == 2
    assert "no users under web.users" in capsys.readouterr().err


def test_serve_before_any_run_says_to_run_first(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline_tests.web.conftest import WEB_SETTINGS, web_block

    config = make_project(**WEB_SETTINGS, web=web_block())
    assert main(["serve", "--config", str(config.base_dir / "cmdm.yaml")]) == 1
    assert "run `cmdm run` first" in capsys.readouterr().err
