"""``fdpose compare`` end to end on CPU, tiny: the n-scale C2f_FDConv model against its stock twin, two
seeds, one epoch at 64 px on a small generated dataset — every report file, the run cache (a new
seed trains only its runs), an interrupted compare that resumes, and two identical models."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import pipeline.compare.runs as runs_module
from pipeline.cli import main
from pipeline.compare import compare
from pipeline.config import CompareParams, ConvertParams, load_section, overridden
from pipeline.convert import convert
from pipeline.demo import demo_data
from pipeline.skeleton import COCO_PERSON_KEYPOINTS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FDCONV_YAML = str(REPO / "cfg" / "models" / "yolov8n-pose-C2f_FDConv.yaml")
SKELETON = REPO / "cfg" / "skeletons" / "coco_person.yaml"
TINY = {"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu"}


def tiny(params_file: Path, seeds: list[int], runs: Path) -> CompareParams:
    """The test's compare: section with the FDConv model, ``seeds``, ``runs`` and the tiny settings."""
    return overridden(load_section("compare", params_file), models=[FDCONV_YAML], seeds=seeds, runs=str(runs),
                      **TINY)


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-demo")
    raw = demo_data(root / "raw", images=14, seed=3, size=64).out
    result = convert(root / "dataset", ConvertParams(from_="label-studio", input=str(raw / "export.json"),
                                                     images=str(raw / "images"),
                                                     label_config=str(raw / "label_config.xml"),
                                                     skeleton=str(SKELETON), split=[0.7, 0.3, 0.0], seed=0))
    return result.out / "data.yaml"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump({"compare": {"latency_repeats": 2, "resamples": 10, "hyp": {}}}))
    return path


class Calls:
    """Counts the train and eval stage calls the compare makes (and can interrupt one)."""

    def __init__(self, patch: pytest.MonkeyPatch, interrupt_eval_at: int | None = None) -> None:
        self.train: list[Path] = []
        self.eval: list[Path] = []
        train, evaluate = runs_module.train, runs_module.evaluate

        def counted_train(data, out, *args, **kwargs):
            self.train.append(Path(out))
            return train(data, out, *args, **kwargs)

        def counted_eval(weights, data, out, **kwargs):
            self.eval.append(Path(out))
            if interrupt_eval_at is not None and len(self.eval) == interrupt_eval_at:
                raise KeyboardInterrupt
            return evaluate(weights, data, out, **kwargs)

        patch.setattr(runs_module, "train", counted_train)
        patch.setattr(runs_module, "evaluate", counted_eval)


@pytest.fixture(scope="module")
def first(tmp_path_factory, data_yaml, params_file):
    """One FDConv model (so its stock twin is the second), seeds 0 and 1."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        calls = Calls(patch)
        result = compare(data_yaml, root / "report", tiny(params_file, [0, 1], root / "runs"))
    return root, result, calls


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_writes_every_file(first):
    root, result, calls = first
    assert len(calls.train) == 4 and len(calls.eval) == 4
    report = root / "report"
    for name in ("runs.csv", "summary.json", "report.md", "report.html", "oks_map_vs_latency.png"):
        assert (report / name).is_file(), name
    rows = read_csv(report / "runs.csv")
    assert sorted((r["model"], r["seed"]) for r in rows) == [
        ("yolov8n-pose", "0"), ("yolov8n-pose", "1"), ("yolov8n-pose-C2f_FDConv", "0"),
        ("yolov8n-pose-C2f_FDConv", "1")]
    for row in rows:
        # The table's figures are those fdpose eval wrote for that run (one epoch: the figures themselves
        # judge nothing; the learning test judges trained ones).
        evaluated = list((root / "runs" / row["run"]).glob("eval-*/metrics.json"))
        assert len(evaluated) == 1
        figures = json.loads(evaluated[0].read_text())
        for column in ("oks_map", "oks_map50", "oks_map75", "box_map"):
            assert float(row[column]) == pytest.approx(figures[column], abs=1e-6), column
        assert float(row["train_seconds"]) > 0 and row["epochs"] == "1" and float(row["latency_ms"]) > 0
        assert len(list((root / "runs" / row["run"]).glob("run-*.json"))) == 1  # the run's record

    summary = json.loads((report / "summary.json").read_text())
    fd, stock = summary["models"]
    assert fd["model"] == FDCONV_YAML and stock["model"] == "yolov8n-pose.yaml"  # the stock twin
    assert fd["parameters"] > stock["parameters"] > 0 and fd["gflops"] > 0
    runs = {(r["label"], r["seed"]): r for r in summary["runs"]}
    difference = [runs[(fd["label"], s)]["metrics"]["oks_map"] - runs[(stock["label"], s)]["metrics"][
        "oks_map"] for s in (0, 1)]
    comparison = summary["comparisons"]["oks_map"]
    assert comparison["differences"] == pytest.approx(difference)
    # The t interval of two differences (1 degree of freedom) is far wider than their range; the
    # sign-flip test of two pairs gives 0.5 (same sign) or 1.0: never significant.
    assert comparison["ci_low"] <= min(difference) <= comparison["mean"] <= max(difference) \
        <= comparison["ci_high"]
    assert comparison["p_value"] in (0.5, 1.0) and not comparison["significant"]
    noise = summary["image_noise"]
    assert noise["resamples"] == 10 and noise["images"] > 0 and set(noise["per_seed"]) == {"0", "1"}
    assert noise["per_seed"]["0"]["difference"] == pytest.approx(difference[0], abs=1e-6)
    assert summary["ratios"]["latency"] == pytest.approx(fd["latency_ms"] / stock["latency_ms"])
    assert summary["ratios"]["train_time"] > 0
    assert [row["keypoint"] for row in summary["pck"]] == COCO_PERSON_KEYPOINTS
    assert {f"{label} pck@{t}" for label in (fd["label"], stock["label"]) for t in (0.05, 0.1)} < \
        set(summary["pck"][0])

    markdown = (report / "report.md").read_text()
    assert comparison["verdict"] in markdown and "Per-keypoint PCK" in markdown and "left_wrist" in markdown
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "GFLOPs" in html


def test_a_new_seed_trains_only_its_runs(first, tmp_path, data_yaml, params_file):
    root, result, _ = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    with pytest.MonkeyPatch.context() as patch:
        calls = Calls(patch)
        again = compare(data_yaml, tmp_path / "report", tiny(params_file, [0, 1, 2], tmp_path / "runs"))
    assert sorted(path.parent.name.split("-seed")[1][0] for path in calls.train) == ["2", "2"]
    assert len(calls.eval) == 2
    assert len(read_csv(tmp_path / "report" / "runs.csv")) == 6
    kept = {(r.label, r.seed): r.metrics for r in result.report.runs}
    assert all(r.metrics == kept[(r.label, r.seed)] for r in again.report.runs if r.seed < 2)
    assert len(again.trained) == 2


def test_an_interrupted_compare_resumes(first, tmp_path, data_yaml, params_file):
    root, result, _ = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    stock_1 = next(Path(r.folder).name for r in result.report.runs if r.seed == 1 and "C2f" not in r.label)
    shutil.rmtree(tmp_path / "runs" / stock_1)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        Calls(patch, interrupt_eval_at=1)  # killed after that run's training, before its evaluation
        compare(data_yaml, tmp_path / "report", tiny(params_file, [0, 1], tmp_path / "runs"))
    half = tmp_path / "runs" / stock_1
    assert (half / "train" / "weights" / "best.pt").is_file() and not list(half.glob("run-*.json"))
    assert not (tmp_path / "report").exists()
    with pytest.MonkeyPatch.context() as patch:
        calls = Calls(patch)
        resumed = compare(data_yaml, tmp_path / "report", tiny(params_file, [0, 1], tmp_path / "runs"))
    assert calls.train == [] and [path.parent.name for path in calls.eval] == [stock_1]  # evaluated only
    assert len(read_csv(tmp_path / "report" / "runs.csv")) == 4
    assert resumed.trained == [stock_1]


def test_two_jobs_train_the_same_runs_at_once(first, tmp_path, data_yaml, params_file):
    """compare.jobs 2: the runs train two at a time in worker processes, into the run folders (keys) a
    one-job compare uses, each with its record, and the report is whole."""
    root, result, _ = first
    parallel = compare(data_yaml, tmp_path / "report",
                       overridden(tiny(params_file, [0, 1], tmp_path / "runs"), jobs=2))
    assert sorted(parallel.trained) == sorted(Path(r.folder).name for r in result.report.runs)
    pairs = [(r.label, r.seed) for r in result.report.runs]
    assert [(r.label, r.seed) for r in parallel.report.runs] == pairs
    assert all(list((tmp_path / "runs" / name).glob("run-*.json")) for name in parallel.trained)
    assert len(read_csv(tmp_path / "report" / "runs.csv")) == 4


def test_the_ledger_brings_finished_runs_to_a_new_machine(first, tmp_path, data_yaml, params_file):
    """A compare with a ledger writes one entry per run; on a "new machine" (an empty run cache, the
    ledger as git would bring it) the same compare trains nothing and reports the same figures."""
    from pipeline.compare.ledger import find

    root, result, _ = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    ledger = tmp_path / "ledger"
    with_ledger = overridden(tiny(params_file, [0, 1], tmp_path / "runs"), ledger=str(ledger))
    before = compare(data_yaml, tmp_path / "report", with_ledger)
    entries = sorted(ledger.glob("*-seed*.json"))
    assert len(entries) == 4 and len(list(ledger.glob("image-noise-*.json"))) == 1
    with pytest.MonkeyPatch.context() as patch:
        calls = Calls(patch)
        after = compare(data_yaml, tmp_path / "report2",
                        overridden(with_ledger, runs=str(tmp_path / "new-machine-runs")))
    assert calls.train == [] and calls.eval == [] and after.trained == []
    assert not (tmp_path / "new-machine-runs").exists() or not any((tmp_path / "new-machine-runs").iterdir())
    metrics = {(r.label, r.seed): r.metrics for r in before.report.runs}
    assert {(r.label, r.seed): r.metrics for r in after.report.runs} == metrics
    first_summary, again = (json.loads((tmp_path / folder / "summary.json").read_text())
                            for folder in ("report", "report2"))
    assert again["comparisons"] == first_summary["comparisons"]
    assert again["image_noise"] == first_summary["image_noise"]
    assert again["ratios"] == first_summary["ratios"]  # cost and latency as the ledger recorded them
    assert again["settings"]["latency_measured_now"] == 0 and "from the sitting that last timed them" in \
        (tmp_path / "report2" / "report.md").read_text()
    # An entry is reused only under the key it was computed from.
    entry = json.loads(entries[0].read_text())
    folder = tmp_path / "runs" / entries[0].name.rsplit("-", 1)[0]
    assert find(ledger, folder, entry["key"]["key"], entry["record"]["eval_key"]) is not None
    assert find(ledger, folder, "0" * 64, entry["record"]["eval_key"]) is None


def test_two_identical_models_show_no_significant_difference(first, tmp_path, params_file, data_yaml):
    """The stock model against a copy of itself under another name: the copy's runs train now, in run
    folders of their own, and reproduce the cached stock runs exactly (training is deterministic), so the
    verdict rests on two trainings per seed, not on one cache read twice."""
    import ultralytics

    root, _, _ = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    twin = tmp_path / "yolov8n-pose-twin.yaml"  # the scale letter after the digits, as ultralytics reads it
    shutil.copy(Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8-pose.yaml", twin)
    runner = CliRunner()
    done = runner.invoke(main, [
        "compare", "--data", str(data_yaml), "--models", f"yolov8n-pose.yaml,{twin}",
        "--seeds", "0,1", "--out", str(tmp_path / "report"), "--runs", str(tmp_path / "runs"),
        "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--effect", "0.01",
        "--params", str(params_file)])
    assert done.exit_code == 0, done.output
    assert "2 run now, 2 cached" in done.output  # the stock runs of the first compare; the twin's trained
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    folders = {run["folder"] for run in summary["runs"]}
    assert len(folders) == 4  # four run folders: nothing shared between the two sides
    comparison = summary["comparisons"]["oks_map"]
    assert comparison["differences"] == [0.0, 0.0] and not comparison["significant"]
    assert "no significant difference" in comparison["verdict"]
    assert "a difference of 0.01 cannot be planned for" in comparison["verdict"]  # no spread to go by
    assert summary["image_noise"]["mean_sd"] == 0.0
    assert "no significant difference" in (tmp_path / "report" / "report.md").read_text()


def test_bad_input_is_one_error_line(tmp_path, data_yaml, params_file):
    done = CliRunner().invoke(main, ["compare", "--data", str(data_yaml), "--models", "yolov8n-pose.yaml",
                                     "--out", str(tmp_path / "r"), "--params", str(params_file)])
    assert done.exit_code == 1 and "Error:" in done.output and "stock twin" in done.output
    assert not (tmp_path / "r").exists()
