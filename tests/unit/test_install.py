"""A non-editable install (no checkout around it) finds its presets and ZeRO configs and gives the commands."""

import subprocess
import sys

from tests.helpers import REPO


def test_non_editable_install_resolves_presets_and_ds_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import megarecipe, megarecipe.config as c; assert megarecipe.__file__.startswith(%r), megarecipe.__file__;"
        "cfg = c.load_config('300m', ['parallel.ds_config=zero3']);"
        "print(c.resolve_layout(cfg, 8).zero_stage, c.resolve_ds_config('zero2').name)" % str(target)
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["3", "zero2.json"]
    scripts = {p.name for p in (target / "bin").iterdir()}
    assert {"megarecipe-train", "megarecipe-prepare-data", "megarecipe-fit-scaling"} <= scripts
