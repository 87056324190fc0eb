"""The parts of ``fdpose compare`` that need no training: stock twins, run keys and folders, the
per-keypoint PCK table, the summary and its reports, and the ``compare:`` params section."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pipeline.compare import labels_for, stock_model_file
from pipeline.compare.cost import ModelCost
from pipeline.compare.report import markdown, pck_rows, summarize, write_reports
from pipeline.compare.runs import RunRecord, RunSettings, RunSpec, eval_key, key_hash, run_folder, run_key
from pipeline.config import load_section
from pipeline.errors import FdposeError

REPO = Path(__file__).resolve().parents[2]
FDCONV_YAML = str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")


def test_stock_twin_is_the_same_family_and_scale_without_fdconv():
    assert stock_model_file("yolov8n-pose-C2f_FDConv.yaml") == "yolov8n-pose.yaml"
    assert stock_model_file("cfg/models/yolov8s-pose-C2f_FDConv.yaml") == "yolov8s-pose.yaml"
    assert stock_model_file("yolo11m-pose-C3k2_FDConv.yaml") == "yolo11m-pose.yaml"
    with pytest.raises(FdposeError, match="stock twin"):
        stock_model_file("yolov8n-pose.yaml")


def test_labels_tell_duplicates_apart():
    assert labels_for(["cfg/models/yolov8n-pose-C2f_FDConv.yaml", "yolov8n-pose.yaml"]) == [
        "yolov8n-pose-C2f_FDConv", "yolov8n-pose"]
    assert labels_for(["yolov8n-pose.yaml", "yolov8n-pose.yaml"]) == ["yolov8n-pose", "yolov8n-pose#2"]


def settings(tmp_path: Path, **changes) -> RunSettings:
    values = {"data": tmp_path / "data.yaml", "epochs": 15, "imgsz": 192, "batch": 16, "device": "cpu",
              "hyp": {"nbs": 16}, "split": "val", "eval_imgsz": 192, "eval_params": {"conf": 0.001}}
    return RunSettings(**{**values, **changes})


def test_run_key_covers_what_determines_a_run(tmp_path):
    spec = RunSpec("fd", FDCONV_YAML, 0)
    base = key_hash(run_key(spec, settings(tmp_path), "data-a"))
    assert key_hash(run_key(spec, settings(tmp_path), "data-a")) == base
    changed = [
        run_key(RunSpec("fd", FDCONV_YAML, 1), settings(tmp_path), "data-a"),
        run_key(spec, settings(tmp_path), "data-b"),
        run_key(spec, settings(tmp_path, epochs=16), "data-a"),
        run_key(spec, settings(tmp_path, hyp={"nbs": 64}), "data-a"),
        run_key(RunSpec("fd", "yolov8n-pose.yaml", 0), settings(tmp_path), "data-a"),
        run_key(RunSpec("fd", FDCONV_YAML.replace("yolov8n", "yolov8s"), 0), settings(tmp_path), "data-a"),
    ]
    start = tmp_path / "stock.pt"
    start.write_bytes(b"a stock checkpoint")
    started = RunSpec("fd", FDCONV_YAML, 0, pretrained=str(start))
    changed.append(run_key(started, settings(tmp_path), "data-a"))
    assert len({key_hash(key) for key in changed} | {base}) == len(changed) + 1
    # The report's label is not part of the run: the same model and seed share one folder.
    relabelled = key_hash(run_key(RunSpec("other", FDCONV_YAML, 0), settings(tmp_path), "data-a"))
    assert relabelled == base
    assert run_folder(tmp_path, spec, base) == run_folder(tmp_path, RunSpec("other", FDCONV_YAML, 0), base)
    assert run_folder(tmp_path, spec, base).name == f"yolov8n-pose-C2f_FDConv-seed0-{base[:12]}"
    # Evaluation settings are the eval key's, not the training's.
    assert key_hash(run_key(spec, settings(tmp_path, eval_imgsz=256, split="test"), "data-a")) == base
    scoring = {key_hash(eval_key(settings(tmp_path, **change))) for change in (
        {}, {"eval_imgsz": 256}, {"split": "test"}, {"eval_params": {"conf": 0.01}})}
    assert len(scoring) == 4
    assert key_hash(eval_key(settings(tmp_path, eval_params={"conf": 0.001, "grid_images": 8}))) == \
        key_hash(eval_key(settings(tmp_path)))  # report drawing settings do not change the numbers


def test_missing_model_is_one_error(tmp_path):
    with pytest.raises(FdposeError, match="not found"):
        run_key(RunSpec("x", str(tmp_path / "nothing.yaml"), 0), settings(tmp_path), "d")


def record(label: str, seed: int, oks: float, pck: dict[str, float | None], folder: str) -> RunRecord:
    keypoints = [{"class": "person", "keypoint": name, "count": 3.0, "pck@0.05": value, "pck@0.1": value,
                  "mean_px_error": 1.0} for name, value in pck.items()]
    metrics = {"oks_map": oks, "oks_map50": oks + 0.2, "oks_map75": oks - 0.1, "box_map": oks + 0.1,
               "box_map50": oks + 0.3}
    return RunRecord(label, f"{label}.yaml", seed, "k" * 64, "e" * 12, folder, metrics, keypoints,
                     100.0 + seed, 15)


def test_pck_rows_average_over_seeds_and_keep_every_keypoint():
    runs = [record("fd", 0, 0.5, {"nose": 0.5, "left_eye": None}, "a"),
            record("fd", 1, 0.5, {"nose": 0.7, "left_eye": None}, "b"),
            record("stock", 0, 0.5, {"nose": 0.4, "left_eye": 0.2}, "c")]
    rows = pck_rows(["fd", "stock"], runs, ["nose", "left_eye", "right_eye"], [0.05, 0.1])
    assert [row["keypoint"] for row in rows] == ["nose", "left_eye", "right_eye"]
    assert rows[0]["fd pck@0.05"] == pytest.approx(0.6) and rows[0]["stock pck@0.05"] == pytest.approx(0.4)
    assert rows[0]["difference pck@0.1"] == pytest.approx(0.2)
    assert rows[1]["fd pck@0.05"] is None and rows[1]["difference pck@0.05"] is None  # nothing matched
    assert rows[2]["stock pck@0.1"] is None


def make_summary():
    # Six seeds: the fewest with which the sign-flip test can reach p < 0.05.
    runs = [record("fd", s, 0.60 + 0.01 * s, {"nose": 0.5}, f"fd-seed{s}") for s in range(6)]
    runs += [record("stock", s, 0.55 + 0.012 * s, {"nose": 0.4}, f"stock-seed{s}") for s in range(6)]
    latencies = {run.folder: (12.0 if run.label == "fd" else 10.0) + 0.1 * run.seed for run in runs}
    costs = {"fd": ModelCost(3_400_000, 9.6), "stock": ModelCost(3_300_000, 9.2)}
    settings_ = {"data": "d/data.yaml", "models": ["fd.yaml", "stock.yaml"], "seeds": list(range(6)),
                 "epochs": 15, "imgsz": 192, "batch": 16, "device": "cpu", "hyp": {}, "pretrained": None,
                 "split": "val", "eval_imgsz": 192, "latency_threads": 1, "runs": "r"}
    pck = pck_rows(["fd", "stock"], runs, ["nose"], [0.05, 0.1])
    return summarize(settings_, ["fd", "stock"], ["fd.yaml", "stock.yaml"], runs, costs, latencies, pck)


def test_summary_means_differences_and_ratios():
    summary = make_summary()
    fd, stock = summary.models
    assert fd.mean["oks_map"] == pytest.approx(0.625)
    assert fd.std["oks_map"] == pytest.approx(0.01 * 1.8708287)  # 0.01 x the sd of 0..5
    assert fd.latency_ms == pytest.approx(12.25) and stock.latency_ms == pytest.approx(10.25)
    assert summary.ratios["latency"] == pytest.approx(12.25 / 10.25)
    assert summary.ratios["parameters"] == pytest.approx(34 / 33)
    assert summary.ratios["train_time"] == pytest.approx(1.0)
    comparison = summary.comparisons["oks_map"]
    assert comparison.differences == pytest.approx([0.05, 0.048, 0.046, 0.044, 0.042, 0.04])
    assert comparison.p_value == pytest.approx(2 / 64) and comparison.ci_low > 0
    assert comparison.significant and "significantly higher" in comparison.verdict()


def test_reports_agree_with_the_summary(tmp_path):
    summary = make_summary()
    files = write_reports(summary, tmp_path)
    assert [path.name for path in files] == ["runs.csv", "summary.json", "oks_map_vs_latency.png",
                                             "report.md", "report.html"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert len(rows) == 12 and rows[0]["oks_map"] == "0.600000" and rows[0]["latency_ms"] == "12.000"
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["oks_map"]["difference"] == pytest.approx(0.045)
    assert data["oks_map"]["p_value"] == pytest.approx(2 / 64)
    assert data["oks_map"]["fd"] == pytest.approx(0.625)
    assert data["verdict"] == summary.comparisons["oks_map"].verdict()
    text = markdown(summary)
    assert (tmp_path / "report.md").read_text() == text
    assert "| fd | 6 | 0.6250 ± 0.0187 |" in text and "| ratio fd / stock | 1.0303 | 1.0435 | 1.195 |" in text
    assert "| 0 | +0.0500 |" in text and "| 95% t interval | [+0.0411, +0.0489] |" in text
    assert "| sign-flip p | 0.031 |" in text and "Evaluation noise: not measured" in text
    assert (tmp_path / "oks_map_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_compare_params_section(tmp_path):
    defaults = load_section("compare", tmp_path / "missing.yaml")
    assert defaults.seeds == [0, 1, 2] and defaults.models == ["yolov8n-pose-C2f_FDConv.yaml"]
    bad = tmp_path / "params.yaml"
    bad.write_text("compare:\n  seeds: [0, 0]\n")
    with pytest.raises(FdposeError, match="compare.seeds"):
        load_section("compare", bad)
    bad.write_text("compare:\n  models: [a.yaml, b.yaml, c.yaml]\n")
    with pytest.raises(FdposeError, match="compare.models"):
        load_section("compare", bad)


def fake_stages(patch: pytest.MonkeyPatch, calls: list[dict]) -> None:
    """Train and eval stages that write what the real ones leave behind, and record their calls."""
    import pipeline.compare.runs as runs_module

    def train(data, out, model=None, **kwargs):
        calls.append({"stage": "train", "model": model, **kwargs})
        (Path(out) / "weights").mkdir(parents=True)
        (Path(out) / "weights" / "best.pt").write_bytes(b"weights")
        (Path(out) / "metrics.json").write_text(json.dumps({"epochs": 15}))

    def evaluate(weights, data, out, **kwargs):
        calls.append({"stage": "eval", **kwargs})
        (Path(out) / "plots").mkdir(parents=True)
        (Path(out) / "metrics.json").write_text(json.dumps({"oks_map": 0.4, "oks_map50": 0.6}))
        (Path(out) / "plots" / "keypoints.csv").write_text(
            "class,keypoint,count,pck@0.05,pck@0.1,mean_px_error\nperson,nose,4,0.25,,2.5\n")

    patch.setattr(runs_module, "train", train)
    patch.setattr(runs_module, "evaluate", evaluate)


def test_an_interrupted_training_is_resumed_and_its_time_added(tmp_path, monkeypatch):
    from pipeline.compare.runs import execute

    spec, run_settings = RunSpec("fd", FDCONV_YAML, 0), settings(tmp_path)
    folder = run_folder(tmp_path / "runs", spec, key_hash(run_key(spec, run_settings, "data")))
    (folder / "train.partial" / "weights").mkdir(parents=True)
    (folder / "train.partial" / "weights" / "last.pt").write_bytes(b"epoch 7")
    (folder / "train_time.json").write_text(json.dumps({"seconds": 50.0}))
    calls: list[dict] = []
    fake_stages(monkeypatch, calls)
    record = execute(spec, run_settings, tmp_path / "runs", "data")
    assert [call["stage"] for call in calls] == ["train", "eval"]
    assert calls[0]["resume"] is True and calls[0]["model"] is None
    assert calls[1]["params"].split == "val" and calls[1]["params"].imgsz == 192
    assert record.train_seconds >= 50.0 and record.epochs == 15 and not record.cached
    assert record.metrics["oks_map"] == 0.4 and record.metrics["box_map"] is None
    assert record.keypoints == [{"class": "person", "keypoint": "nose", "count": 4.0, "pck@0.05": 0.25,
                                 "pck@0.1": None, "mean_px_error": 2.5}]
    again = execute(spec, run_settings, tmp_path / "runs", "data")
    assert len(calls) == 2 and again.cached and again.metrics == record.metrics  # done: read back


def test_a_fresh_run_starts_the_clock_at_zero(tmp_path, monkeypatch):
    from pipeline.compare.runs import execute

    start = tmp_path / "stock.pt"
    start.write_bytes(b"a stock checkpoint")
    spec, run_settings = RunSpec("fd", FDCONV_YAML, 3, pretrained=str(start)), settings(tmp_path)
    folder = run_folder(tmp_path / "runs", spec, key_hash(run_key(spec, run_settings, "data")))
    folder.mkdir(parents=True)
    (folder / "train_time.json").write_text(json.dumps({"seconds": 999.0}))  # a run killed before any epoch
    calls: list[dict] = []
    fake_stages(monkeypatch, calls)
    record = execute(spec, run_settings, tmp_path / "runs", "data")
    assert calls[0]["model"] == FDCONV_YAML and calls[0]["seed"] == 3 and calls[0]["epochs"] == 15
    assert calls[0]["hyp"] == {"nbs": 16} and "resume" not in calls[0]
    assert calls[0]["pretrained"] == str(start)  # the same start for both models: train converts it
    assert record.train_seconds < 999.0


def test_other_eval_settings_evaluate_again_without_training(tmp_path, monkeypatch):
    from pipeline.compare.runs import execute

    spec = RunSpec("fd", FDCONV_YAML, 0)
    calls: list[dict] = []
    fake_stages(monkeypatch, calls)
    first = execute(spec, settings(tmp_path), tmp_path / "runs", "data")
    second = execute(spec, settings(tmp_path, eval_imgsz=256), tmp_path / "runs", "data")
    assert [call["stage"] for call in calls] == ["train", "eval", "eval"] and calls[2]["params"].imgsz == 256
    assert first.folder == second.folder and first.eval_key != second.eval_key
    assert sorted(p.name for p in Path(first.folder).glob("run-*.json")) == sorted(
        f"run-{record.eval_key}.json" for record in (first, second))
