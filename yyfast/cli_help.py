"""The ``--help`` layout every ``python -m yyfast.*`` CLI shares: examples kept as written, real defaults only."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog (the examples) keep their line breaks; an option's help gains
    "(default: X)" only where X is a real value (not None/False, and not already stated in the help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # identity, not ==: 0 (e.g. --seed) is a real default, though 0 == False
        no_value = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or no_value or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def parser(prog: str, description: str, examples: str, **kwargs) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``python -m yyfast.<prog>``: one-line ``description``, ``examples`` in the epilog,
    no abbreviated options (a typo must not silently pick another option)."""
    return argparse.ArgumentParser(prog=f"python -m yyfast.{prog}", description=description,
                                   epilog="examples:\n" + examples.strip("\n"), formatter_class=HelpFormatter,
                                   allow_abbrev=False, **kwargs)
