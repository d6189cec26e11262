"""`python -m matteflow`: the same command as `matteflow`."""

from __future__ import annotations

from matteflow.pipelines.cli import main

main()
