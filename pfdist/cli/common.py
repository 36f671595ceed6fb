"""What every ``pfdist`` command shares: the app, one-line errors, option parsing and progress bars."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import typer
from typer.core import TyperGroup

from pfdist.errors import PFDistError


class _OneLineErrors(TyperGroup):
    """Every command's bad input and file-system failure ends as one line on stderr, exit code 2."""

    def invoke(self, ctx):
        import warnings

        from pfdist.atomic import CorruptFileWarning
        from pfdist.errors import PFDistWarning

        show = warnings.showwarning

        def one_line(message, category, *args, **kwargs):
            if issubclass(category, (CorruptFileWarning, PFDistWarning)):
                log.warning("%s", message)  # one line, silenced by --quiet
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        level, handlers = log.level, list(log.handlers)  # the callback's -v / -q last for this command
        try:
            return super().invoke(ctx)
        except PFDistError as e:
            fail(str(e))
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e} (check the path, its permissions and free disk space).")
        finally:
            warnings.showwarning = show
            log.handlers[:] = handlers
            log.setLevel(level)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Probability flow distance (PFD) for measuring generalization in diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


log = logging.getLogger("pfdist")


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More on stderr: -v progress of runs (info), -vv debug."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors only: no warnings, no progress bars."),
) -> None:
    """Probability flow distance (PFD) for measuring generalization in diffusion models."""
    if quiet and verbose:
        fail("--quiet and --verbose contradict each other; give one.")
    configure_logging(logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)])


class _Stderr(logging.Handler):
    """One line per record on the current stderr (a test runner swaps it), warnings in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelno
        color = typer.colors.YELLOW if level == logging.WARNING else typer.colors.RED if level > logging.WARNING else None
        typer.secho(f"{record.levelname.lower()}: {self.format(record)}", fg=color, err=True)


def configure_logging(level: int) -> None:
    """The ``pfdist`` logger at ``level``, printing to stderr (replacing an earlier command's handler)."""
    for handler in [h for h in log.handlers if isinstance(h, _Stderr)]:
        log.removeHandler(handler)
    log.addHandler(_Stderr())
    log.setLevel(level)


def quiet() -> bool:
    """True under ``--quiet``: progress bars are off."""
    return not log.isEnabledFor(logging.WARNING)


DESCRIPTOR_HELP = ("Descriptor file; default: pixels. A .safetensors kernel descriptor (no code), or a TorchScript / "
                   ".pt2 network such as SSCD. TorchScript and .pt2 files are CODE and run when loaded: use only "
                   "files you trust.")


AUTOCAST_HELP = "bf16: run the networks' layers in bfloat16 (autocast; the ODE state stays float32). Default: float32."
CHANNELS_LAST_HELP = "Channels-last (NHWC) memory for image networks (faster convolutions on GPUs)."
COMPILE_HELP = "torch.compile the networks (a one-off compilation per batch shape)."

# Under torchrun, ranks that train different students (or wait while rank 0 trains) wait for
# each other at the next collective longer than torch's default 30 minutes.
RANKS_TIMEOUT_DAYS = 7


def fail(message: str | None) -> None:
    """Exit with status 2 and one line (none on the non-zero ranks of a process group)."""
    if message is not None:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def progress_bar(total: int, desc: str, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr, disable=disable or quiet())


def json_option(value: Optional[str], what: str) -> dict:
    """A JSON object given inline or as a path to a .json file."""
    if not value:
        return {}
    text = Path(value).read_text() if value.endswith(".json") and Path(value).is_file() else value
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"--{what} must be a JSON object or a .json file ({e}).")
    if not isinstance(obj, dict):
        fail(f"--{what} must be a JSON object, e.g. '{{\"epochs\": 20}}'.")
    return obj


def set_options(values: Sequence[str] | None, what: str = "set") -> list[dict]:
    """Each ``--set`` as a nested dict, in order: a JSON object, a .json file, or a dot-list item
    ``key.path=value`` (the value read as a JSON literal when it is one, else as a string)."""
    changes = []
    for value in values or ():
        key, eq, text = value.partition("=")
        if value.lstrip().startswith("{") or value.endswith(".json") or not eq:
            changes.append(json_option(value, what))
            continue
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key.strip()):
            raise PFDistError(f"--{what} {value!r}: {key!r} is not a key path such as eval.num_samples.")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
        for part in reversed(key.strip().split(".")):
            parsed = {part: parsed}
        changes.append(parsed)
    return changes


def train_bar(disable: bool = False):
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr, disable=disable or quiet())

    def update(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        if step % 20 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()

    return bar, update
