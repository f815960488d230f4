"""The numbered notebooks: their one skeleton (:func:`start`, :class:`Stage`) and their execution.

Inside a notebook, the cell after the parameters calls ``stage = notebooks.start("NN_name",
globals())``; the notebook then shows and saves every figure with ``stage.figure``, stops on bad
input with ``stage.stop(err)`` and ends with ``stage.finish(...)``, which writes its manifest. Why
one skeleton: the seven notebooks used to time themselves, stop, show figures and name themselves
in several ways each (tests/test_notebook_source.py checks that they use this one).

Outside, ``make all`` runs a notebook with papermill under a parameter profile
(:func:`execute`, once per notebook; the sweep once per grid cell). Parameters are validated
against the notebook's ``parameters`` cell before the kernel starts, and the executed notebook is
written atomically together with an HTML rendering for the supervisor (who reads, and runs nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from valuealign import config, locks, paths, provenance

# Stages whose outputs are per run folder (each locked by valuealign.training while it is
# written) or per evaluation: parallel sweep cells run them at once, so they take no stage lock.
PER_RUN_STAGES = ("03_finetune", "04_evaluate")
LOCKS_DIR = ".locks"  # under the repository root (git-ignored): one lock file per shared stage


class StageStopped(RuntimeError):
    """A notebook stopped on bad input or a failed step (:meth:`Stage.stop`); the message says why."""


@dataclass
class Stage:
    """One run of a notebook: its validated parameters and its manifest, timed from :func:`start`.

    Made by :func:`start`; the notebook shows figures with :meth:`figure`, stops with :meth:`stop`
    and ends with :meth:`finish`.
    """

    name: str
    params: dict[str, Any]
    manifest: provenance.Manifest

    @property
    def elapsed_s(self) -> float:
        """Seconds since :func:`start` (for the notebook's own progress lines)."""
        return time.time() - self.manifest.started

    def figure(self, fig: Any, name: str, *, inputs: Iterable[Path | str] = (), run: str | None = None) -> None:
        """Save ``fig`` as ``figures/<name>.pdf/.png`` (recorded as this notebook's, from ``inputs``),
        show the saved PNG, and close the figure.

        Why the saved PNG: the kernels run with the Agg backend, where ``display(fig)`` showed only
        ``<Figure ...>``; the executed notebook and its HTML now show the very file the thesis gets.
        """
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        from valuealign import plotting

        written = plotting.save_figure(fig, name, notebook=self.name, inputs=inputs, run=run)
        png = next(p for p in written if p.suffix == ".png")
        display(Image(filename=str(png), width=round(float(fig.get_size_inches()[0]) * 96)))
        plt.close(fig)

    def stop(self, err: BaseException | str) -> NoReturn:
        """Show why the notebook cannot go on and stop it, without a deep library traceback."""
        from IPython.display import Markdown, display

        what = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
        display(Markdown(f"**{self.name} stopped.** {what}"))
        raise StageStopped(f"{self.name} stopped: {what}") from None

    def finish(
        self, record: Path | str | None = None, *, inputs: Iterable[Path | str] = (),
        outputs: Iterable[Path | str] = (), extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the stage's manifest (parameters, seed, input and output hashes, ``extra``, wall time
        since :func:`start`) to ``record`` (default ``data/processed/<name>.manifest.json``), and
        drop from ``figures/manifest.json`` what this notebook recorded before this execution and
        did not make again (:func:`valuealign.artefacts.forget_unmade`)."""
        from IPython.display import Markdown, display

        from valuealign import artefacts

        target = Path(record) if record is not None else paths.PROCESSED / f"{self.name}.manifest.json"
        self.manifest.add_inputs(inputs)
        self.manifest.add_outputs(outputs)
        if extra is not None:
            self.manifest.extra = dict(extra)
        self.manifest.__exit__(None, None, None)
        self.manifest.write(target)
        dropped = artefacts.forget_unmade(self.name, self.manifest.started)
        display(Markdown(f"**{self.name}** done in {self.manifest.wall_time_s:.1f} s; "
                         f"manifest `{paths.relative(target)}`."
                         + (f" No longer made, so dropped from figures/: {', '.join(dropped)}." if dropped else "")))


def start(notebook: str, namespace: Mapping[str, Any]) -> Stage:
    """Begin notebook ``notebook`` (its file name without ``.ipynb``): check the parameters in effect
    in ``namespace`` (the notebook's ``globals()``) against its parameters cell, name it as the
    producer of the figures it saves, and start its manifest's clock (seed: its ``seed`` parameter)."""
    params = config.check_parameters(notebook, namespace)
    return Stage(notebook, params, provenance.Manifest(notebook, parameters=params, seed=params.get("seed")))


def stage_locks(src: Path, out_dir: Path, stage: bool = True) -> list[tuple[Path, str]]:
    """The locks a notebook run holds: its executed copy in ``out_dir`` and, with ``stage`` (a
    pipeline run, ``make all``), for stages that write shared outputs (data/processed, figures)
    the stage itself (two profiles, one tree). Sweep cells lock their own folder instead."""
    held = [(out_dir / f".{src.stem}.lock", f"notebook {src.stem} -> {paths.relative(out_dir)}")]
    if stage and src.stem not in PER_RUN_STAGES:
        held.append((paths.ROOT / LOCKS_DIR / f"{src.stem}.lock", f"stage {src.stem} (its outputs)"))
    return held


def render_html(executed: Path, target: Path | None = None) -> Path:
    """HTML rendering of an executed notebook (inputs kept: the notebooks are thin)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = target or executed.with_suffix(".html")
    return provenance.write_text(body, target)


def execute(
    notebook: str | Path,
    out_dir: Path,
    parameters: dict[str, Any] | None = None,
    *,
    profile: Path | None = None,
    html: bool = True,
    log_output: bool = False,
    lock_timeout: float | None = None,
    stage_lock: bool = False,
) -> Path:
    """Run one notebook into ``out_dir/<name>.ipynb`` (+ ``.html``); return the executed path.

    A failing notebook is still written (papermill keeps the failing cell and its traceback)
    and the error is re-raised. While it runs, the notebook holds :func:`stage_locks` (the
    stage's own lock only with ``stage_lock``, as the command line, i.e. ``make all``, asks)
    (``lock_timeout`` seconds to wait for another process holding one; None: the
    ``$VALUEALIGN_LOCK_TIMEOUT`` default); a lock held elsewhere is a ``LockHeldError``
    naming the holder, raised before anything is written.
    """
    import papermill as pm

    src = config.notebook_path(notebook)
    params = dict(parameters or {})
    if profile is not None:
        params = {**config.parameters_for(src, profile), **params}
    params = config.validate(params, config.notebook_parameters(src), where=str(src.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / src.name
    tmp = out_dir / f".{src.stem}.running.ipynb"
    t0 = time.time()
    with contextlib.ExitStack() as held:
        for lock_file, what in stage_locks(src, out_dir, stage=stage_lock):
            held.enter_context(locks.hold(lock_file, what, lock_timeout))
        os.environ["VALUEALIGN_NOTEBOOK"] = src.stem
        try:
            pm.execute_notebook(
                str(src), str(tmp), parameters=params, kernel_name="python3",
                cwd=str(src.parent), progress_bar=False, log_output=log_output,
                request_save_on_cell_execute=False,
            )
        finally:
            if tmp.exists():
                os.replace(tmp, target)
                if html:
                    render_html(target)
    print(f"[{src.stem}] done in {time.time() - t0:.1f} s -> {paths.relative(target)}")
    return target


def failure_summary(err: BaseException, limit: int = 2000) -> str:
    """One line naming the real error (exception type and message), then the end of the traceback.

    Why: papermill's error text is the whole cell traceback, and cutting it at ``limit``
    characters from the start used to drop its last line, the one that says what went wrong.
    """
    import re

    ename = getattr(err, "ename", None) or type(err).__name__
    evalue = str(getattr(err, "evalue", None) if getattr(err, "ename", None) else err)
    cell = getattr(err, "exec_count", None)
    head = f"{ename}: {evalue}" + (f" (in cell [{cell}])" if cell is not None else "")
    if not getattr(err, "traceback", None):
        return head[:limit]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(err.traceback))  # ANSI colours of IPython
    room = max(0, limit - len(head) - 40)
    tail = plain[-room:] if room else ""
    return f"{head}\n--- end of the traceback ---\n{tail}" if tail else head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", help="notebook name (e.g. 00_survey_data) or path")
    ap.add_argument("--profile", type=Path, default=paths.CONFIGS / "smoke.yaml")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default executed/<profile>)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "YAML"),
                    help="override one parameter (value parsed as YAML)")
    ap.add_argument("--stamp", type=Path, default=None, help="touch this file on success (make)")
    ap.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                    help="wait this long for another process holding this stage or a run folder "
                         f"(default ${locks.TIMEOUT_ENV} or 0: refuse at once, naming the holder)")
    args = ap.parse_args(argv)
    import yaml

    if args.lock_timeout is not None:  # the kernel inherits it (run folders locked by training)
        os.environ[locks.TIMEOUT_ENV] = str(args.lock_timeout)
    overrides = {}
    for key, text in args.param:
        try:
            overrides[key] = config.safe_load_unique(text)
        except yaml.YAMLError as err:
            reason = " ".join(str(getattr(err, "problem", None) or err).split())
            print(f"error: -p {key} {text!r}: not a valid YAML value ({reason}); quote strings, "
                  "write lists as [a, b]", file=sys.stderr)
            return 2
    out = args.out or paths.EXECUTED / args.profile.stem
    try:
        execute(args.notebook, out, overrides, profile=args.profile, stage_lock=True)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except locks.LockHeldError as err:
        print(f"error: notebook {args.notebook} not run: {err}", file=sys.stderr)
        return 3
    except Exception as err:  # papermill's PapermillExecutionError carries the cell's traceback
        print(f"error: notebook {args.notebook} failed: {failure_summary(err)}", file=sys.stderr)
        return 1
    if args.stamp:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        args.stamp.touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
