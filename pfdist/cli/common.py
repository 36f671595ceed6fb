"""What every ``pfdist`` command shares: the app, one-line errors, option parsing and progress bars."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from pfdist.errors import PFDistError


class _PlainHelp:
    """Help without typer's ``<bool>`` after flags and ``{a}`` around required arguments: flags
    show no type, arguments show their name in capitals (``A``, ``[A]`` when optional)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
            elif (getattr(param, "is_flag", False) or getattr(param, "count", False)) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(_PlainHelp, TyperCommand):
    """Every ``pfdist`` command's class (``@app.command(cls=Command)``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class Group(_PlainHelp, TyperGroup):
    """A group of commands (``pfdist teacher``) with the same help."""


class _OneLineErrors(_PlainHelp, TyperGroup):
    """Every command's bad input and file-system failure ends as one line on stderr, exit code 2."""

    def invoke(self, ctx):
        import warnings

        from pfdist.atomic import CorruptFileWarning
        from pfdist.errors import PFDistWarning

        show = warnings.showwarning

        package = str(Path(__file__).resolve().parents[1])

        def one_line(message, category, filename, *args, **kwargs):
            # pfdist's own warnings (a corrupt cache file, a fit that could not be made) are
            # messages for the user: one line, without Python's source-line echo, silenced by --quiet.
            if (issubclass(category, (CorruptFileWarning, PFDistWarning))
                    or str(Path(filename).resolve()).startswith(package)):
                log.warning("%s", message)
            else:
                show(message, category, filename, *args, **kwargs)

        warnings.showwarning = one_line
        level, handlers = log.level, list(log.handlers)  # the callback's -v / -q last for this command
        try:
            return super().invoke(ctx)
        except UsageError as e:  # a value the option's type refuses, a missing option, an unknown command
            if type(e).__name__ == "NoArgsIsHelpError":  # the help itself, shown for a bare command
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            fail(f"{' '.join(e.format_message().split())} (see {where} --help)")
        except PFDistError as e:
            fail(str(e))
        except KeyboardInterrupt as e:  # Ctrl-C: one line saying what is kept, no traceback
            typer.secho(f"\n{e or 'interrupted.'}", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None
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


SPEC_HELP = ("Descriptor: 'pixels' (the default); a JSON spec, e.g. '{\"type\": \"kernel\", \"num_features\": 4096}' or "
             "'{\"type\": \"sscd\", \"path\": \"sscd.pt\"}'; or a file (.safetensors kernel descriptor, no code; "
             "TorchScript / .pt2, which are CODE and run when loaded: trusted files only).")

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
    from pfdist import checks

    if not value:
        return {}
    text = value
    if not value.lstrip().startswith(("{", "[")):  # not inline JSON: the name of a file
        forms = "a key.path=value dot-list, " if what == "set" else ""
        path = checks.existing_file(value, f"--{what} file", f"give {forms}a JSON object or the path of a .json file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            fail(f"--{what} file {path} is not a text file; give a .json file.")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        where = "" if text is value else f" in {value}"
        fail(f"--{what} must be a JSON object or a .json file (invalid JSON{where}: {e}).")
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
