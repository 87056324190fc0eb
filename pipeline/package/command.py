"""``fdpose package``: the command that merges the ``package`` params with its options and runs the
stage (:func:`pipeline.package.stage.package`), and ``fdpose package verify PATH``.

``--verify PATH`` and ``--bench PATH`` (now ``fdpose package verify`` and ``fdpose bench package``)
still work for one release, each with one deprecation line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import PARAMS_FILE, load_section, overridden
from pipeline.package.archive import verify
from pipeline.package.stage import package


def _deprecated(old: str, new: str) -> None:
    click.echo(f"fdpose package {old} is deprecated and goes in the next release: use {new}", err=True)


@click.group("package", invoke_without_command=True)
@click.option("--weights", type=click.Path(path_type=Path), help="Trained checkpoint (e.g. weights/best.pt).")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path), help="fdpose eval output folder.")
@click.option("--out", type=click.Path(path_type=Path), help="Package folder to write (and OUT.zip).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="data.yaml (default: the checkpoint's training data, when it still exists).")
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="Real image for the ONNX check (default: one from the data).")
@click.option("--imgsz", type=int, default=None,
              help="ONNX input size (default: package.imgsz, else the training size).")
@click.option("--latency", is_flag=True, default=False,
              help="Measure each format's batch-1 latency into the model card (the package then differs "
                   "from build to build).")
@click.option("--comparison", type=click.Path(file_okay=False), default=None,
              help="An `fdpose compare` report folder (summary.json, report.md): the model card links its "
                   "verdict.  [params: package.comparison]")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file (section package).")
@click.option("--verify", "verify_path", type=click.Path(path_type=Path), default=None,
              help="Deprecated: use `fdpose package verify PATH`.")
@click.option("--bench", "bench_path", type=click.Path(path_type=Path), default=None,
              help="Deprecated: use `fdpose bench package PATH`.")
@click.option("--sizes", default="320,640", show_default=True, help="Input sizes for --bench (deprecated).")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs for --bench (deprecated).")
@click.option("--threads", type=int, default=None, help="Intra-op threads for --bench (deprecated).")
@click.option("--bench-json", type=click.Path(path_type=Path), default=None,
              help="JSON output of --bench (deprecated).")
@click.pass_context
def package_command(ctx: click.Context, weights: Path | None, eval_dir: Path | None, out: Path | None,
                    data: Path | None, image: Path | None, imgsz: int | None, latency: bool,
                    comparison: str | None, params_path: Path, verify_path: Path | None,
                    bench_path: Path | None, sizes: str, runs: int, threads: int | None,
                    bench_json: Path | None) -> None:
    """Package weights as model.pt, model.safetensors + model.yaml, model.onnx (and model.xml + model.bin
    with fdpose[openvino]), MODEL_CARD.md, SHA256SUMS."""
    if ctx.invoked_subcommand is not None:
        return
    if verify_path is not None:
        _deprecated("--verify PATH", "fdpose package verify PATH")
        click.echo(verify(verify_path).summary())
        return
    if bench_path is not None:
        from pipeline.bench.package import command as bench_command

        _deprecated("--bench PATH", "fdpose bench package PATH")
        ctx.invoke(bench_command, package_dir=bench_path, sizes=sizes, runs=runs, threads=threads,
                   json_path=bench_json)
        return
    params = load_section("package", params_path)  # a bad params file stops packaging before anything is read
    if weights is None or eval_dir is None or out is None:
        raise click.UsageError("--weights, --eval and --out are required (or use `fdpose package verify`)")
    params = overridden(params, "command line", imgsz=imgsz, comparison=comparison)
    result = package(weights, eval_dir, out, params, data=data, image=image, latency=latency,
                     eval_params=load_section("eval", params_path))
    click.echo(result.summary())


@package_command.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def verify_command(path: Path) -> None:
    """Check a package folder (or its zip) against its SHA256SUMS; name every mismatched, missing or
    unlisted file."""
    click.echo(verify(path).summary())
