"""The `propensity` command line, run as a user would (typer's runner, real registry on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def stdout_of(*args: str) -> str:
    """What the command writes to stdout only (the registry line goes to stderr)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_import_list_show_verify(env: Path) -> None:
    code, out = run("registry", "list")
    assert code == 0 and "no versions" in out
    code, out = run("import-notebook")
    assert code == 0 and "propensity/v1 (production)" in out
    code, out = run("registry", "list")
    assert code == 0 and "v1" in out and "production" in out and "0.8022" in out
    code, out = run("registry", "show", "production")
    assert code == 0 and "cutoff 0.712" in out and "x5_saturday" in out
    assert json.loads(stdout_of("registry", "show", "v1", "--json"))["version"] == "v1"
    code, out = run("registry", "verify", "production")
    assert code == 0 and "OK" in out


def test_promote_rollback_and_errors(env: Path) -> None:
    run("import-notebook")
    run("import-notebook")
    code, out = run("registry", "promote", "v2")
    assert code == 2 and "--reason" in out  # production moves only with a why
    code, out = run("registry", "promote", "v2", "--reason", "the second import")
    assert code == 0 and "production -> v2 (previous: v1)" in out
    code, out = run("registry", "rollback", "--reason", "back to the first")
    assert code == 0 and "production -> v1" in out
    code, out = run("registry", "promote", "v2", "--alias", "prodution")
    assert code == 1 and "no alias 'prodution'" in out and "--create-alias" in out
    code, out = run("registry", "promote", "v2", "--alias", "champion", "--create-alias")
    assert code == 0 and "champion -> v2" in out
    code, out = run("registry", "alias-delete", "production")
    assert code == 1 and "promote another version" in out
    code, out = run("registry", "alias-delete", "champion", "--reason", "a test alias")
    assert code == 0 and "deleted alias champion (it named v2)" in out
    code, out = run("registry", "history")
    lines = out.splitlines()[1:]  # after the registry line
    assert [line.split()[1] for line in lines] == [
        "promote",
        "promote",
        "rollback",
        "promote",
        "alias-delete",
    ]
    assert 'production: v1 -> v2, cutoff 0.712  "the second import"' in lines[1]
    assert 'production: v2 -> v1  "back to the first"' in lines[2]
    assert "champion: v2 -> (deleted)" in lines[4]
    code, out = run("registry", "promote", "v7", "--reason", "a typo")
    assert code == 1 and "no version or alias 'v7'" in out
    model = env / "artifacts" / "propensity" / "v2" / "model.joblib"
    model.write_bytes(b"tampered")
    code, out = run("registry", "verify", "v2")
    assert code == 1 and "sha256" in out


def test_keygen_sign_and_a_verifying_check(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("import-notebook")
    code, out = run("registry", "keygen", str(env / "keys"))
    assert code == 0 and "mode 0600" in out
    monkeypatch.setenv("PROPENSITY_VERIFY_KEY_FILE", str(env / "keys" / "verify-key.pem"))
    code, out = run("registry", "verify", "production")
    assert code == 1 and "not signed" in out
    code, out = run("registry", "sign", "production")
    assert code == 1 and "PROPENSITY_SIGNING_KEY_FILE" in out
    monkeypatch.setenv("PROPENSITY_SIGNING_KEY_FILE", str(env / "keys" / "signing-key.pem"))
    code, out = run("registry", "sign", "production")
    assert code == 0 and "propensity/v1: signed" in out
    code, out = run("registry", "verify", "production")
    assert code == 0 and "OK (sha256 verified, signed by key " in out
    code, out = run("registry", "upgrade", "v1")
    assert code == 0 and "already has scorer.json" in out
    code, out = run("registry", "keygen", str(env / "keys"))
    assert code == 1 and "refusing to overwrite" in out


def test_make_data_and_train(env: Path) -> None:
    csv = env / "train.csv"
    code, out = run("make-data", "--rows", "3000", "--seed", "4", "--out", str(csv))
    assert code == 0 and "wrote 3000 rows" in out
    frame = pd.read_csv(csv)
    assert frame.shape == (3000, 101) and set(frame["y"].unique()) == {0, 1}
    code, out = run("make-data", "--rows", "10", "--out", str(env / "test.csv"), "--no-target")
    assert code == 0 and "y" not in pd.read_csv(env / "test.csv").columns
    code, out = run("train", "--data", str(csv))
    assert code == 0 and "registered propensity/v1" in out and "AUC" in out
    assert json.loads(stdout_of("registry", "show", "v1", "--json"))["training"]["splits"] == {
        "train": 2400,
        "val": 300,
        "test": 300,
    }
    code, out = run("train", "--data", str(csv))  # the same bytes, the same recipe: not registered again
    assert code == 0 and "not registered: v1 was trained on the same data" in out
    run("import-notebook")  # v2: the approved model, on its own data
    code, out = run("registry", "list")
    assert code == 0 and "compare across holdouts with diff" in out
    code, out = run("registry", "diff", "v1", "v2")
    assert code == 0 and "measured on different holdouts" in out
    cutoff = next(line for line in out.splitlines() if line.startswith("cutoff"))
    assert cutoff.split()[-2:] == ["0.712", "*"] and "x5_saturday" in out


def test_export_and_import_between_directories(env: Path) -> None:
    run("import-notebook")
    run("import-notebook")
    code, out = run("registry", "export", str(env / "copy"))
    assert code == 0 and "copied v1, v2; production -> v1" in out
    code, out = run("registry", "export", str(env / "copy"))
    assert code == 0 and "copied none" in out
    code, out = run("registry", "import", str(env / "copy"), "--artifacts-dir", str(env / "back"))
    assert code == 0 and "copied v1, v2" in out
    assert (env / "back" / "propensity" / "v2" / "scorer.json").is_file()


def test_train_bad_data_exits_nonzero_and_writes_nothing(env: Path) -> None:
    csv = env / "bad.csv"
    run("make-data", "--rows", "300", "--out", str(csv))
    frame = pd.read_csv(csv)
    frame["x7"] = frame["x7"].astype(object)
    frame.loc[[4, 6], "x7"] = "garbage"
    frame.to_csv(csv, index=False)
    code, out = run("train", "--data", str(csv))
    assert code == 1 and "column x7" in out and "4 ('garbage'" in out and "6 ('garbage'" in out
    assert not (env / "artifacts" / "propensity").exists() or not any(
        p.name.startswith("v") for p in (env / "artifacts" / "propensity").iterdir()
    )
