"""The CLI conventions: --json prints one object, errors are one paragraph without traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vdeblur.cli import main
from vdeblur.models.registry import PRESETS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vdeblur", *args], capture_output=True, text=True, check=False)


def test_models_json_is_one_object_listing_every_preset() -> None:
    proc = run("models", "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # exactly one JSON document on stdout
    names = [p["name"] for p in payload["presets"]]
    assert names == list(PRESETS)
    assert {"mtu2", "mmprnn_a7b8c16"} <= set(names)
    mtu2 = next(p for p in payload["presets"] if p["name"] == "mtu2")
    assert mtu2["family"] == "mtu" and mtu2["kind"] == "step" and mtu2["config"]["skip_corr_index"] == [1]
    # only the families that exist are listed (the registry knows none by name)
    assert [f["name"] for f in payload["families"]] == ["ahfnet", "arvo", "dstnet", "dstnet_L", "mmprnn", "mtu"]


def test_json_flag_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "models"]) == 0
    assert "presets" in json.loads(capsys.readouterr().out)


def test_models_text_is_a_table() -> None:
    proc = run("models")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].split()[:2] == ["preset", "family"]
    assert any(line.startswith("mtu10_L") for line in proc.stdout.splitlines())


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: vdeblur: argument COMMAND: invalid choice")
    assert "Traceback" not in proc.stderr


def test_no_command() -> None:
    proc = run()
    assert proc.returncode == 2 and "no command given" in proc.stderr


def test_debug_shows_the_traceback() -> None:
    proc = run("--debug", "frobnicate")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_unknown_model_error_style() -> None:
    from vdeblur.errors import UsageError
    from vdeblur.models import create

    with pytest.raises(UsageError, match=r"^nope: unknown model\. Expected a preset or a family: \w+, "):
        create("nope")


def test_json_errors_are_one_object_on_stdout(tmp_path: Path) -> None:
    """--json answers errors too: {"error": {...}} on stdout, the paragraph on stderr, non-zero exit."""
    proc = run("run", str(tmp_path / "no-artifact"), str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), "--json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["exit_code"] == proc.returncode and error["type"].endswith("Error")
    assert error["message"] in proc.stderr
    usage = run("export", "--json")  # argparse's own usage errors answer in JSON too
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"]["type"] == "UsageError"
