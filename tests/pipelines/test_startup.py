"""Start-up (README, Start-up): a plain `matteflow run` imports only what it uses; serving,
reviewing, converting weights, writing PSD and reading RAW import their packages where they
are needed, so a run that needs none of them does not pay for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Packages a plain run must not import, and who needs them.
UNUSED_BY_A_PLAIN_RUN = (
    "fastapi",  # matteflow serve
    "uvicorn",  # matteflow serve, review
    "starlette",  # fastapi's
    "selenium",  # the review page's browser tests
    "onnx",  # converting an ONNX export to safetensors (once per model)
    "psd_tools",  # outputs.psd
    "rawpy",  # RAW inputs
)

_PROBE = """
import json, sys
from matteflow.pipelines.cli import main
try:
    main()
except SystemExit as end:
    code = end.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_a_plain_run_does_not_import_what_it_does_not_use(tmp_path: Path) -> None:
    image = REPO / "examples" / "sample" / "chelsea.jpg"
    out = tmp_path / "out"
    argv = ["run", "--manifest", str(image), "--output", str(out), "--model", "tiny-isnet"]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0, proc.stderr[-2000:]
    assert (out / "cutouts" / "chelsea.png").is_file()  # the run did run
    imported = {name.split(".")[0] for name in result["modules"]}
    assert "torch" in imported and "apache_beam" in imported
    assert imported.isdisjoint(UNUSED_BY_A_PLAIN_RUN), imported & set(UNUSED_BY_A_PLAIN_RUN)
