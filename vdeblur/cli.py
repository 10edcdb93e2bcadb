"""`vdeblur <command>`: a thin layer that parses, calls the library and prints.

Every command takes ``--json`` (print exactly one JSON object on stdout) and ``--debug`` (show
tracebacks). Errors exit non-zero with a one-paragraph message on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from vdeblur import __version__
from vdeblur.errors import UsageError, VdeblurError


def _cmd_models(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from vdeblur.models.registry import FAMILY_NAMES, is_available, list_presets

    presets = [
        {
            "name": p.name,
            "family": p.family,
            "available": is_available(p.family),
            "config": p.config,
            "summary": p.summary,
        }
        for p in list_presets()
    ]
    families = [{"name": f, "available": is_available(f)} for f in FAMILY_NAMES]
    width = max(len(p["name"]) for p in presets)
    lines = [f"{'preset':<{width}}  {'family':<8}  {'status':<15}  summary"]
    for p in presets:
        status = "available" if p["available"] else "not implemented"
        lines.append(f"{p['name']:<{width}}  {p['family']:<8}  {status:<15}  {p['summary']}")
    lines.append("")
    lines.append("families: " + ", ".join(f["name"] + ("" if f["available"] else " (not implemented)")
                                          for f in families))
    return {"presets": presets, "families": families}, "\n".join(lines)


_COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], tuple[dict[str, Any], str]]]] = {
    "models": ("list the model presets and families", _cmd_models),
}


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--json", action="store_true", default=default,
                        help="print one JSON object on stdout and nothing else")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks on errors")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}. See `{self.prog} --help`.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdeblur", description="Deploy video-deblurring models.")
    parser.add_argument("--version", action="version", version=f"vdeblur {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        debug = bool(args.debug)
        if args.command is None:
            raise UsageError("vdeblur: no command given. Run `vdeblur --help` for the list of commands.")
        payload, text = _COMMANDS[args.command][1](args)
        if args.json:
            print(json.dumps(payload))
        else:
            print(text)
        return 0
    except VdeblurError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: no traceback without --debug
        if debug:
            traceback.print_exc()
        print(f"error: internal error ({type(e).__name__}: {e}). Re-run with --debug for the traceback "
              "and report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
