"""What every ``pfdist`` command shares: the app, one-line errors, option parsing and progress bars."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from pfdist.errors import PFDistError


class _OneLineErrors(TyperGroup):
    """Every command's bad input and file-system failure ends as one line on stderr, exit code 2."""

    def invoke(self, ctx):
        import warnings

        from pfdist.atomic import CorruptFileWarning

        show = warnings.showwarning

        def one_line(message, category, *args, **kwargs):
            if issubclass(category, CorruptFileWarning):
                typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        try:
            return super().invoke(ctx)
        except PFDistError as e:
            fail(str(e))
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e} (check the path, its permissions and free disk space).")
        finally:
            warnings.showwarning = show


app = typer.Typer(
    cls=_OneLineErrors,
    help="Probability flow distance (PFD) for measuring generalization in diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Probability flow distance (PFD) for measuring generalization in diffusion models."""


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

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr, disable=disable)


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


def train_bar(disable: bool = False):
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr, disable=disable)

    def update(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        if step % 20 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()

    return bar, update
