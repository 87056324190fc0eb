"""Every command README.md shows, run in document order on a tiny copy of the repository.

The copy is the DVC pipeline tests' tiny repository after one `dvc repro` (16 generated demo images,
one epoch at 64 px; pipeline_repo.py). Shell blocks run as they are written, with bash -euo pipefail;
params snippets (YAML blocks starting `# cfg/params.yaml`) are merged into a copy of the params file and
converted with `fdpose convert --params`; Python blocks run with the venv's interpreter. Three kinds of
block are handled apart:
- the Quick start (`make demo`, `make test`) is checked to be exactly those two commands, not run
  (it is the whole pipeline and the whole suite);
- blocks naming GPUs (`--device 0`, `--device 0,1`) run too: where the machine has as many CUDA devices
  as the block names they must succeed; where it has fewer (none, or one for a two-GPU block) they must
  fail with one clear `Error:` line (no traceback), which is what the README says happens there;
- blocks for a live Label Studio server (`http://localhost:8080`, project 1) run against the test
  suite's real server on loopback (conftest `label_studio`), with its URL, a project made here from the
  tiny demo export, and the key in the environment only;
- blocks for the team's S3 remote (endpoint `https://s3.example.com`, `dvc push`/`dvc pull`) run
  against moto's S3 server on loopback (s3_server.py), with its URL and the key in the environment only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pipeline_repo import BIN, REPO, clone_built, experiments, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

README = REPO / "README.md"
LS_URL = "http://localhost:8080"
LS_PROJECT = re.compile(r"(--project |project: )1\b")
GPU_DEVICE = re.compile(r"--device ([0-9]+(?:,[0-9]+)*)")
S3_ENDPOINT = "https://s3.example.com"
S3_COMMAND = re.compile(r"^dvc (push|pull)\b", re.MULTILINE)
PARAMS_SNIPPET = "# cfg/params.yaml"


@dataclass
class Block:
    language: str
    text: str
    section: str  # the heading it sits under
    line: int  # where it starts in README.md (1-based), for failure messages

    @property
    def label(self) -> str:
        return f"README.md:{self.line} ({self.section})"


def readme_blocks() -> list[Block]:
    """The fenced code blocks of README.md (indented ones in lists included), in order."""
    blocks, section = [], ""
    lines = README.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            indent, language, start = fence.group(1), fence.group(2), index + 1
            body = []
            index += 1
            while not lines[index].strip().startswith("```"):
                body.append(lines[index][len(indent):] if lines[index].startswith(indent) else lines[index])
                index += 1
            blocks.append(Block(language, "\n".join(body) + "\n", section, start))
        index += 1
    return blocks


def is_quick_start(block: Block) -> bool:
    return block.section == "Quick start"


def needs_label_studio(block: Block) -> bool:
    return LS_URL in block.text


def needs_s3(block: Block) -> bool:
    return S3_ENDPOINT in block.text or S3_COMMAND.search(block.text) is not None


def gpus_needed(block: Block) -> int:
    """How many CUDA devices the block names (``--device 0,1``: 2); 0 for a block that names none."""
    return max((len(match.group(1).split(",")) for match in GPU_DEVICE.finditer(block.text)), default=0)


def cuda_devices() -> int:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, check=True)
    return int(probe.stdout.strip())


def run_block(repo: Path, block: Block, number: int, extra_env: dict[str, str] | None = None) -> None:
    """Run one block in ``repo``; fail naming the block and showing its output."""
    if block.language == "bash":
        result = run(repo, "bash", "-euo", "pipefail", "-c", block.text, check=False, extra_env=extra_env)
    elif block.language == "python":
        script = repo / "runs" / f"readme_block_{number}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(block.text, encoding="utf-8")
        result = run(repo, str(BIN / "python"), str(script), check=False, extra_env=extra_env)
    elif block.language == "yaml" and block.text.startswith(PARAMS_SNIPPET):
        params = yaml.safe_load((repo / "cfg/params.yaml").read_text(encoding="utf-8"))
        for section, values in yaml.safe_load(block.text).items():
            params[section].update(values)
        snippet_params = repo / "runs" / f"params_block_{number}.yaml"
        snippet_params.parent.mkdir(parents=True, exist_ok=True)
        snippet_params.write_text(yaml.safe_dump(params), encoding="utf-8")
        out = repo / "runs" / f"params_block_{number}"
        result = run(repo, "fdpose", "convert", "--params", str(snippet_params), "--out", str(out), "--quiet",
                     check=False, extra_env=extra_env)
        if result.returncode == 0:
            summary = json.loads((out / "report.json").read_text(encoding="utf-8"))["summary"]
            assert summary["images"] > 0 and summary["instances"] > 0, f"{block.label}: nothing converted"
    else:
        raise AssertionError(f"{block.label}: a ```{block.language} block the test does not know how to run")

    if gpus_needed(block) > cuda_devices():
        lines = result.stdout.strip().splitlines()
        context = f"{block.label}:\n{result.stdout}"
        assert result.returncode == 1 and "Traceback" not in result.stdout, context
        assert lines[-1].startswith("Error:") and "not available" in lines[-1], context
        return
    assert result.returncode == 0, (f"{block.label} exited {result.returncode}:\n{block.text}\n"
                                    f"{result.stdout[-6000:]}")


@pytest.fixture(scope="module")
def readme_repo(tiny_pipeline, tmp_path_factory) -> Path:
    return clone_built(tiny_pipeline[0], tmp_path_factory.mktemp("readme") / "repo")


def test_quick_start_is_the_two_make_targets():
    (quick_start,) = [block for block in readme_blocks() if is_quick_start(block)]
    commands = [line.split("#")[0].strip() for line in quick_start.text.splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)


def test_readme_commands_run(readme_repo, s3):
    blocks = [block for block in readme_blocks()
              if not is_quick_start(block) and not needs_label_studio(block)]
    assert len(blocks) >= 15  # the README's examples are all here (a parsing slip would skip them)
    assert sum(map(needs_s3, blocks)) >= 2  # the remote's setup and push, a teammate's pull
    for number, block in enumerate(blocks):
        if needs_s3(block):
            block = Block(block.language, block.text.replace(S3_ENDPOINT, s3.url), block.section, block.line)
            run_block(readme_repo, block, number, s3.env())
        else:
            run_block(readme_repo, block, number)
    # `dvc exp run -S cfg/params.yaml:train.epochs=N` reached cfg/params.yaml and the model in the
    # workspace is the experiment's; plots were drawn; the package and predictions exist.
    readme = README.read_text(encoding="utf-8")
    epochs = int(re.search(r"dvc exp run -S cfg/params\.yaml:train\.epochs=(\d+)", readme).group(1))
    params = yaml.safe_load((readme_repo / "cfg/params.yaml").read_text(encoding="utf-8"))
    assert params["train"]["epochs"] == epochs
    # `dvc exp show` reads the commit and the experiment too (a root params.yaml link would break that).
    shown = experiments(readme_repo)
    assert all(data["error"] is None for data in shown.values()), shown
    ran = [data for data in shown.values() if data["experiment"]]
    assert all(data["metrics"]["reports/eval/metrics.json"]["data"]["oks_map50"] >= 0 for data in ran)
    assert any(data["params"]["cfg/params.yaml"]["data"]["train"]["epochs"] == epochs for data in ran)
    # Team scale: both queued experiments are listed with their seed, and `dvc exp apply` brought the
    # last one's params back; the remote holds what was pushed, the key is in no file.
    queued = re.findall(r"dvc exp run --queue -n (\S+) -S cfg/params\.yaml:train\.seed=(\d+)", readme)
    assert len(queued) == 2
    for name, seed in queued:
        assert shown[name]["params"]["cfg/params.yaml"]["data"]["train"]["seed"] == int(seed), shown[name]
        assert "oks_map50" in shown[name]["metrics"]["reports/eval/metrics.json"]["data"]
    applied = re.search(r"dvc exp apply (\S+)", readme).group(1)
    assert params["train"]["seed"] == int(dict(queued)[applied])
    config = (readme_repo / ".dvc" / "config").read_text(encoding="utf-8")
    assert s3.url in config and s3.secret_access_key not in config and s3.access_key_id not in config
    for path in readme_repo.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert s3.secret_access_key.encode() not in path.read_bytes(), path
    trained = json.loads((readme_repo / "models/train/metrics.json").read_text(encoding="utf-8"))
    assert trained["epochs"] == epochs
    assert (readme_repo / "dvc_plots" / "index.html").is_file()
    assert (readme_repo / "runs" / "package.zip").is_file()
    assert list((readme_repo / "runs" / "predict").iterdir())


def _label_studio_project(server, repo: Path) -> int:
    """A project on the test server holding the tiny demo: images in local-files storage, and the
    export's annotations, so that live reads and prediction uploads have something to work on."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=server.url, api_key=server.api_key)
    folder = server.local_files_root / "fdpose-readme"
    shutil.copytree(repo / "data/raw/demo/images", folder)
    config = (repo / "data/raw/demo/label_config.xml").read_text(encoding="utf-8")
    project = client.projects.create(title="fdpose README", label_config=config)
    storage = client.import_storage.local.create(project=project.id, path=str(folder), recursive_scan=True,
                                                 regex_filter=r".*\.jpg", use_blob_urls=True, title="demo")
    client.import_storage.local.sync(id=storage.id)
    export = json.loads((repo / "data/raw/demo/export.json").read_text(encoding="utf-8"))
    # The export names images as uploads (/data/upload/<project>/<8 hex>-<name>): match by name.
    results = {task["data"]["image"].rsplit("/", 1)[1].split("-", 1)[1]: task["annotations"][-1]["result"]
               for task in export if task.get("annotations")}
    tasks = list(client.tasks.list(project=project.id))
    assert len(tasks) == len(list(folder.iterdir()))
    for task in tasks:
        name = task.data["image"].rsplit("/", 1)[1]
        if name in results:
            client.annotations.create(id=task.id, result=results[name])
    return project.id


def test_readme_label_studio_commands_run(readme_repo, label_studio):
    """After test_readme_commands_run (its package is predicted with): the live server blocks."""
    if not (readme_repo / "runs" / "package" / "model.safetensors").is_file():
        # Under CI the whole module runs in order, so the package must be there: a missing one is a failure.
        if os.environ.get("CI") == "true":
            pytest.fail("the package made by test_readme_commands_run is missing")
        pytest.skip("needs the package made by test_readme_commands_run")
    project = _label_studio_project(label_studio, readme_repo)
    blocks = [block for block in readme_blocks() if needs_label_studio(block)]
    assert len(blocks) >= 3  # the params snippet, the live convert and the prediction upload
    key = {"LABEL_STUDIO_API_KEY": label_studio.api_key}
    for number, block in enumerate(blocks):
        text = block.text.replace(LS_URL, label_studio.url)
        text = LS_PROJECT.sub(lambda m: f"{m.group(1)}{project}", text)
        run_block(readme_repo, Block(block.language, text, block.section, block.line), 100 + number, key)
    converted = json.loads((readme_repo / "runs/dataset-from-server/report.json").read_text(encoding="utf-8"))
    assert converted["summary"]["images"] == len(list((readme_repo / "data/raw/demo/images").iterdir()))
    # The key never lands in a file the commands wrote.
    for path in (readme_repo / "runs").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".yaml", ".md", ".txt", ".html"}:
            assert label_studio.api_key not in path.read_text(encoding="utf-8", errors="replace"), path


def test_gpu_blocks_name_their_device_count():
    """The DDP block needs two GPUs and runs only where two exist; with one GPU its refusal is checked."""
    ddp = [block for block in readme_blocks() if "--device 0,1" in block.text]
    assert ddp and all(gpus_needed(block) == 2 for block in ddp)
    assert gpus_needed(Block("bash", "fdpose train --device 0 --epochs 1", "x", 1)) == 1
    assert gpus_needed(Block("bash", "fdpose train --device cpu", "x", 1)) == 0
