"""The review workbench on plain data: decisions as Parquet, undo, export, summary, the eval
report's figures, and the JSON API of a real server on 127.0.0.1 (concurrent clients, a killed
server)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from matteflow.pipelines.report import RunResult, Sample, write_report
from matteflow.pipelines.review import (
    SCHEMA,
    Decision,
    DecisionLog,
    ReviewError,
    export,
    latest,
    load_items,
    read_decisions,
    review_stats,
    summary,
    write_decisions,
)
from matteflow.transforms.metrics import SCHEMA as METRICS_SCHEMA
from matteflow.transforms.metrics import read_metrics
from tests.pipelines.review_fixtures import CATEGORIES, free_port, make_run, running_server

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def _d(item: str, decision: str, at: int, score: int | None = None, **kw: object) -> Decision:
    """A decision on item `at` seconds after T0."""
    return Decision(
        item,
        item,
        decision,
        score,
        kw.get("model"),  # type: ignore[arg-type]
        str(kw.get("reviewer", "ann")),
        float(kw.get("seconds", 2.0)),  # type: ignore[arg-type]
        T0 + timedelta(seconds=at),
    )


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_items_are_the_review_list_most_uncertain_first_or_every_row(out: Path) -> None:
    assert [i.id for i in load_items(str(out))] == ["a", "b", "c", "d", "e"]
    assert [i.id for i in load_items(str(out), all_rows=True)] == ["a", "b", "c", "d", "e", "f"]
    first = load_items(str(out))[0]
    assert (first.uncertainty, first.category) == (0.9, "shoes")
    assert first.cutout_uri == str(out / "cutouts" / "a.png")


def test_a_folder_without_run_json_is_not_reviewed(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match=r"no run\.json"):
        load_items(str(tmp_path))


def test_each_write_is_one_part_file_with_the_schema(out: Path) -> None:
    first = write_decisions(str(out), [_d("a", "accept", 0, 4)])
    second = write_decisions(str(out), [_d("b", "retry", 1, model="isnet-general-use")])
    assert first != second
    parts = sorted((out / "reviews").glob("part-*.parquet"))
    assert [str(p) for p in parts] == sorted([first, second])
    table = pq.read_table(parts[0])
    assert table.schema.equals(SCHEMA)
    assert not [p for p in (out / "reviews").iterdir() if p.name.startswith(".")]
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert {(r["id"], r["decision"], r["score"], r["model_suggested"]) for r in rows} == {
        ("a", "accept", 4, None),
        ("b", "retry", None, "isnet-general-use"),
    }


def test_latest_decision_wins_and_undo_takes_back_one(out: Path) -> None:
    # Written out of time order, in separate files: reading orders by decided_at.
    write_decisions(str(out), [_d("a", "reject", 2)])
    write_decisions(str(out), [_d("a", "accept", 1)])
    write_decisions(str(out), [_d("a", "undo", 3), _d("b", "accept", 3), _d("b", "undo", 4)])
    write_decisions(str(out), [_d("c", "undo", 5)])  # nothing to take back: no effect
    standing = latest(read_decisions(str(out)))
    assert {i: d.decision for i, d in standing.items()} == {"a": "accept"}


def test_a_decision_log_sees_what_other_writers_add(out: Path) -> None:
    mine, theirs = DecisionLog(str(out)), DecisionLog(str(out))
    assert mine.decisions() == []
    write_decisions(str(out), [_d("a", "accept", 5)])
    assert [d.id for d in mine.decisions()] == ["a"]
    write_decisions(str(out), [_d("b", "reject", 1)])  # earlier, written later
    assert [d.id for d in mine.decisions()] == ["b", "a"]
    assert theirs.decisions() == mine.decisions() == read_decisions(str(out))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("decision", "maybe", "decision"),
        ("score", 6, "score"),
        ("score", 0, "score"),
        ("seconds", -1.0, "seconds"),
        ("seconds", float("nan"), "seconds"),
    ],
)
def test_a_bad_decision_is_refused(field: str, value: object, message: str) -> None:
    fields = {"decision": "accept", "score": 3, "seconds": 1.0} | {field: value}
    with pytest.raises(ReviewError, match=message):
        Decision("a", "a", fields["decision"], fields["score"], None, "ann", fields["seconds"])  # type: ignore[arg-type]


def test_export_writes_rework_with_models_and_rejected(out: Path) -> None:
    write_decisions(
        str(out),
        [
            _d("a", "retry", 0, model="isnet-general-use"),
            _d("b", "retry", 1),  # no model suggested: the run's
            _d("c", "reject", 2, 1, reviewer="bo"),
            _d("d", "accept", 3, 5),
            _d("e", "reject", 4),
            _d("e", "undo", 5),  # taken back: neither list
        ],
    )
    rework, rejected, n_rework, n_rejected = export(str(out))
    assert (n_rework, n_rejected) == (2, 1)
    assert _csv(Path(rework)) == [
        {
            "id": "a",
            "uri": str(out.parent / "src/a.png"),
            "output_key": "a",
            "model": "isnet-general-use",
        },
        {"id": "b", "uri": str(out.parent / "src/b.png"), "output_key": "b", "model": "tiny-isnet"},
    ]
    assert _csv(Path(rejected)) == [
        {
            "id": "c",
            "uri": str(out.parent / "src/c.png"),
            "output_key": "c",
            "score": "1",
            "reviewer": "bo",
            "decided_at": (T0 + timedelta(seconds=2)).isoformat(timespec="seconds"),
        }
    ]


def test_export_with_no_decisions_writes_headers_only(out: Path) -> None:
    rework, rejected, *_ = export(str(out))
    assert Path(rework).read_text() == "id,uri,output_key,model\n"
    assert Path(rejected).read_text() == "id,uri,output_key,score,reviewer,decided_at\n"


def test_summary_counts_standing_decisions(out: Path) -> None:
    write_decisions(
        str(out),
        [
            _d("a", "accept", 0, 4, seconds=3.0),
            _d("b", "reject", 1, 2, seconds=5.0),
            _d("c", "retry", 2, seconds=10.0, reviewer="bo"),
            _d("c", "undo", 3, reviewer="bo"),
            _d("f", "accept", 4),  # not on the review list: not counted
        ],
    )
    figures = summary(load_items(str(out)), read_decisions(str(out)))
    assert figures == {
        "items": 5,
        "decided": 2,
        "pending": 3,
        "accept": 1,
        "reject": 1,
        "retry": 0,
        "mean_score": 3.0,
        "median_seconds": 4.0,
        "reviewers": ["ann", "bo"],
    }


def test_review_stats_for_the_eval_report(out: Path) -> None:
    decisions = [
        _d("a", "reject", 0, 1, seconds=10.0),  # uncertainty 0.9
        _d("b", "retry", 1, 2, seconds=8.0),  # 0.8
        _d("c", "accept", 2, 4, seconds=4.0),  # 0.7
        _d("d", "accept", 3, 5, seconds=2.0),  # 0.6
        _d("e", "accept", 4, seconds=1.0),  # 0.55, not scored
    ]
    stats = review_stats(decisions, read_metrics(str(out)), CATEGORIES)
    assert (stats.decided, stats.scored, stats.mean_score) == (5, 4, 3.0)
    assert stats.score_counts == {1: 1, 2: 1, 3: 0, 4: 1, 5: 1}
    assert stats.score_uncertainty_rho == pytest.approx(-1.0)  # scores fall as doubt rises
    assert stats.uncertainty_accepted == pytest.approx((0.7 + 0.6 + 0.55) / 3)
    assert stats.uncertainty_sent_back == pytest.approx(0.85)
    assert stats.acceptance_by_category == {"(none)": (1, 1), "bags": (2, 2), "shoes": (0, 2)}
    assert (stats.mean_seconds, stats.median_seconds) == (5.0, 4.0)


def test_review_stats_without_enough_scores_has_no_correlation(out: Path) -> None:
    stats = review_stats([_d("a", "accept", 0, 4)], read_metrics(str(out)), {})
    assert stats.score_uncertainty_rho is None
    assert stats.acceptance_by_category == {"(none)": (1, 1)}


def test_eval_report_shows_human_review_when_a_run_has_decisions(out: Path) -> None:
    decisions = [_d("a", "reject", 0, 1, seconds=12.0), _d("c", "accept", 1, 4, seconds=6.0)]
    samples = [Sample(i, "unused", "unused", c) for i, c in CATEGORIES.items()]
    metrics = read_metrics(str(out))
    plain = write_report(str(out / "eval-plain"), samples, [RunResult("r", metrics)], sheet_rows=0)
    assert "human-review" not in Path(plain).read_text()
    index = write_report(
        str(out / "eval"), samples, [RunResult("r", metrics, decisions)], sheet_rows=0
    )
    page = Path(index).read_text()
    assert '<table id="human-review">' in page
    row = page.split('<table id="human-review">')[1].split("</table>")[0]
    # decided, scored, mean score, counts, rho (2 pairs: none), uncertainty, seconds mean/median
    assert '<td class="num">2</td><td class="num">2</td><td class="num">2.50</td>' in row
    assert '<td class="num">1 / 0 / 0 / 1 / 0</td>' in row
    assert '<td class="num">9.0</td><td class="num">9.0</td>' in row
    acceptance = page.split('<table id="acceptance">')[1].split("</table>")[0]
    assert '<tr><th>bags</th><td class="num">1 of 1 (100%)</td></tr>' in acceptance
    assert '<tr><th>shoes</th><td class="num">0 of 1 (0%)</td></tr>' in acceptance


# --- the JSON API of a real server -----------------------------------------------------------


def test_api_items_decisions_and_summary(out: Path) -> None:
    with running_server(out, reviewer="ann") as url, httpx.Client(base_url=url) as client:
        items = client.get("/api/items").json()
        assert [i["id"] for i in items] == ["a", "b", "c", "d", "e"]
        assert set(items[0]) >= {"id", "output_key", "uncertainty", "cutout", "mask", "source"}
        assert items[0]["decision"] is None
        body = {
            "id": "b",
            "decision": "retry",
            "score": 2,
            "seconds": 3.5,
            "model": "isnet-general-use",
        }
        answer = client.post("/api/decisions", json=body)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["decision"], answer.json()["model"]) == ("retry", "isnet-general-use")
        assert client.get("/api/items").json()[1]["decision"] == "retry"
        figures = client.get("/api/summary").json()
        assert (figures["decided"], figures["retry"], figures["reviewer"]) == (1, 1, "ann")
    [row] = [d for d in read_decisions(str(out))]
    assert (row.id, row.decision, row.score, row.model_suggested) == (
        "b",
        "retry",
        2,
        "isnet-general-use",
    )
    assert (row.reviewer, row.seconds) == ("ann", 3.5)


@pytest.mark.parametrize(
    "body",
    [
        {"id": "zz", "decision": "accept"},
        {"id": "a", "decision": "maybe"},
        {"id": "a", "decision": "accept", "score": 9},
        {"id": "a", "decision": "retry", "model": "no-such-model"},
        {"id": "a", "decision": "accept", "model": "tiny-isnet"},
        {"id": "a", "decision": "accept", "seconds": -2},
    ],
)
def test_api_refuses_a_bad_decision_and_writes_nothing(out: Path, body: dict[str, object]) -> None:
    with running_server(out) as url:
        assert httpx.post(f"{url}/api/decisions", json=body).status_code == 400
    assert not (out / "reviews").exists()


def test_api_serves_item_images(out: Path) -> None:
    with running_server(out) as url, httpx.Client(base_url=url) as client:
        item = client.get("/api/items").json()[0]
        cutout = client.get(item["cutout"])
        assert cutout.headers["content-type"] == "image/png"
        assert cutout.content == (out / "cutouts" / "a.png").read_bytes()
        thumb = Image.open(io.BytesIO(client.get(item["cutout"], params={"size": 20}).content))
        assert (thumb.size, thumb.mode) == ((20, 15), "RGBA")
        source = client.get(item["source"])
        assert source.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(source.content)).size == (40, 30)
        edge = Image.open(io.BytesIO(client.get(item["edge"]).content))
        assert edge.size == (30, 30)  # the window is as large as the image allows
        assert client.get("/img/99/cutout").status_code == 404
        assert client.get("/img/0/passwd").status_code == 404
        assert client.get("/static/../review.py").status_code == 404


def test_api_reads_no_output_outside_the_run(tmp_path: Path) -> None:
    out = make_run(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes((out / "cutouts" / "a.png").read_bytes())
    # A metrics row naming a cutout outside OUT (tampered, or a copied run) is not served.
    table = read_metrics(str(out)).to_pylist()
    table[0]["cutout_uri"] = str(out / "cutouts" / ".." / ".." / "secret.png")
    pq.write_table(
        pa.Table.from_pylist(table, schema=METRICS_SCHEMA), out / "metrics" / "part-0.parquet"
    )
    with running_server(out) as url:
        answer = httpx.get(f"{url}/img/0/cutout")
    assert answer.status_code == 404
    assert "not under" in answer.json()["detail"]


@pytest.mark.parametrize("servers", [1, 2], ids=["one-server", "a-server-each"])
def test_two_concurrent_reviewers_lose_no_decision(out: Path, servers: int) -> None:
    per_client = 15
    ids = ["a", "b", "c", "d", "e"]
    errors: list[str] = []

    def client_posts(url: str, name: str) -> None:
        with httpx.Client(base_url=url) as client:
            for n in range(per_client):
                body = {"id": ids[n % 5], "decision": "accept", "score": 1 + n % 5, "seconds": n}
                answer = client.post("/api/decisions", json=body)
                if answer.status_code != 200:
                    errors.append(f"{name}: {answer.status_code} {answer.text}")

    with ExitStack() as stack:
        urls = [stack.enter_context(running_server(out, reviewer=f"r{k}")) for k in range(servers)]
        threads = [
            threading.Thread(target=client_posts, args=(urls[k % servers], f"c{k}"))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Each server sees every decision, its own and the other's.
        seen = [httpx.get(f"{url}/api/summary").json()["reviewers"] for url in urls]
    assert errors == []
    decisions = read_decisions(str(out))
    assert len(decisions) == 2 * per_client
    assert sorted(d.seconds for d in decisions) == sorted([float(n) for n in range(per_client)] * 2)
    assert seen == [[f"r{k}" for k in range(servers)]] * servers


def test_a_server_killed_mid_stream_leaves_no_partial_part_file(out: Path, tmp_path: Path) -> None:
    port = free_port()
    cli = Path(sys.executable).with_name("matteflow")
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [str(cli), "review", str(out), "--port", str(port), "--reviewer", "kim"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    acknowledged = 0
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/api/summary", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        stop = threading.Event()

        def kill_soon() -> None:
            time.sleep(1.0)
            os.kill(server.pid, signal.SIGKILL)
            stop.set()

        killer = threading.Thread(target=kill_soon)
        killer.start()
        with httpx.Client(base_url=url, timeout=5) as client:
            while not stop.is_set():
                body = {"id": "a", "decision": "reject", "score": 2, "seconds": 1.0}
                try:
                    if client.post("/api/decisions", json=body).status_code == 200:
                        acknowledged += 1
                except httpx.TransportError:
                    break
        killer.join()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        log.close()
    assert server.returncode == -signal.SIGKILL
    assert acknowledged > 0
    parts = sorted((out / "reviews").glob("part-*.parquet"))
    for part in parts:  # every visible part file is complete Parquet with the schema
        assert pq.read_table(part).schema.equals(SCHEMA)
    # Each acknowledged decision is on disk; at most the one in flight at the kill also is.
    assert acknowledged <= len(read_decisions(str(out))) <= acknowledged + 1


def test_api_answers_loopback_host_names_only(out: Path) -> None:
    with running_server(out) as url:
        assert httpx.get(f"{url}/api/summary").status_code == 200
        rebound = httpx.get(f"{url}/api/summary", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


def test_matteflow_eval_reports_the_decisions_under_a_run(out: Path, tmp_path: Path) -> None:
    from matteflow.pipelines.evaluate import main as eval_main

    labelled = tmp_path / "labelled.csv"
    with labelled.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "uri", "ground_truth_uri", "category"])
        for item, category in CATEGORIES.items():
            src, mask = out.parent / "src" / f"{item}.png", out / "masks" / f"{item}.png"
            writer.writerow([item, src, mask, category])
    evaluation = tmp_path / "eval"
    argv = ["--data", str(labelled), "--output", str(evaluation), "--sheet_rows", "0"]
    argv += ["--predictions", str(out / "masks"), "--name", "masks"]
    assert eval_main(argv) == 0
    assert "human-review" not in (evaluation / "report" / "index.html").read_text()
    run = str(evaluation / "runs" / "masks")
    write_decisions(run, [_d("a", "accept", 0, 5, seconds=7.0), _d("b", "reject", 1, 2)])
    # Adding another run rewrites the report over every run, the reviewed one included.
    assert eval_main([*argv[:-1], "other"]) == 0
    page = (evaluation / "report" / "index.html").read_text()
    row = page.split('<table id="human-review">')[1].split("</table>")[0]
    assert "<tr><th>masks</th>" in row and "<th>other</th>" not in row
    assert '<td class="num">2</td><td class="num">2</td><td class="num">3.50</td>' in row
    assert '<tr><th>shoes</th><td class="num">1 of 2 (50%)</td></tr>' in page


def test_a_run_without_a_review_list_is_reviewed_with_all(out: Path) -> None:
    (out / "review" / "manifest.csv").unlink()
    with pytest.raises(ReviewError, match="--all"):
        load_items(str(out))
    assert len(load_items(str(out), all_rows=True)) == 6


def test_the_edge_zoom_shows_the_densest_soft_edge(out: Path) -> None:
    # Opaque everywhere but a soft square in the bottom-right corner (the edge band).
    alpha = np.full((300, 400), 255, np.uint8)
    alpha[220:280, 300:380] = 128
    rgb = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(out / "cutouts" / "a.png")
    with running_server(out) as url:
        edge = np.asarray(Image.open(io.BytesIO(httpx.get(f"{url}/img/0/edge").content)))
    # 192 px windows in 96 px steps: the one at (192, 96) holds the whole soft square.
    expected = np.dstack([rgb, alpha])[96:288, 192:384]
    assert np.array_equal(edge, expected)


def test_a_moved_run_shows_its_own_outputs(tmp_path: Path) -> None:
    moved = shutil.move(make_run(tmp_path / "first"), tmp_path / "moved")
    item = load_items(str(moved))[0]
    assert item.cutout_uri == str(Path(moved) / "cutouts" / "a.png")
    with running_server(Path(moved)) as url:
        answer = httpx.get(f"{url}/img/0/cutout")
    assert answer.content == (Path(moved) / "cutouts" / "a.png").read_bytes()


def test_the_cli_exports_and_refuses_a_folder_that_is_no_run(out: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from matteflow.pipelines.cli import app

    write_decisions(str(out), [_d("a", "retry", 0), _d("b", "reject", 1)])
    result = CliRunner().invoke(app, ["review", str(out), "--export"])
    assert result.exit_code == 0, result.output
    assert "(1 rows)" in result.output
    assert len(_csv(out / "review" / "rework.csv")) == 1
    assert len(_csv(out / "review" / "rejected.csv")) == 1
    refused = CliRunner().invoke(app, ["review", str(tmp_path / "nothing"), "--export"])
    assert refused.exit_code == 1
    assert "no run.json" in refused.output


def test_rework_is_a_manifest_the_job_takes_with_a_model_per_row(out: Path) -> None:
    from matteflow.transforms.manifest import read_records, to_task

    write_decisions(str(out), [_d("a", "retry", 0, model="rvm-mobilenetv3"), _d("b", "retry", 1)])
    rework, *_ = export(str(out))
    tasks = [to_task(r, str(out / "review") + "/", "") for r in read_records(rework)]
    assert [(t.id, t.source_uri, dict(t.settings)["model"]) for t in tasks] == [
        ("a", str(out.parent / "src" / "a.png"), "rvm-mobilenetv3"),
        ("b", str(out.parent / "src" / "b.png"), "tiny-isnet"),
    ]


def test_exported_cells_a_spreadsheet_would_run_are_neutralised(out: Path) -> None:
    write_decisions(str(out), [_d("c", "reject", 0, reviewer="=HYPERLINK(1)")])
    _, rejected, *_ = export(str(out))
    assert _csv(Path(rejected))[0]["reviewer"] == "'=HYPERLINK(1)"
