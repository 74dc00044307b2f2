"""Command-line interface."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after an option's help, except when the help already says what
    the default is, the default is None (which would print "(default: None)") or the
    option is a flag (store_true: "(default: False)" says nothing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag = isinstance(action, argparse._StoreTrueAction)
        if action.default is None or flag or "default" in text:
            return text
        return super()._get_help_string(action)
