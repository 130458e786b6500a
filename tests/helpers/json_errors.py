"""Checking an error a script reads: with ``--json``, one JSON object on stderr (README, Exit codes)."""

from __future__ import annotations

import json


def json_error(result, exit_code: int, code: str, **named) -> dict:
    """Exit ``exit_code``, nothing on stdout, and stderr exactly one JSON object with ``error``,
    ``code``, ``exit`` and the fields ``named``; returns it. ``result`` has ``code``, ``out``, ``err``."""
    assert result.code == exit_code, (result.code, result.err)
    assert result.out == "" and "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    error = json.loads(lines[0])
    assert (error["code"], error["exit"]) == (code, exit_code) and error["error"], error
    assert "osmo: error" not in error["error"]
    for key, value in named.items():
        assert error[key] == value, (key, error)
    return error
