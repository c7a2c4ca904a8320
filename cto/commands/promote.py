"""`cto promote`: gate a registered version into the champion alias."""

from __future__ import annotations

import argparse

HELP = "Promote a model version to champion if it beats the champion on the same test window."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        required=True,
        help="A task (conversion-arrival, conversion-after-contact, dropoff-reason, contacts-to-order) "
        "or a full registered model name.",
    )
    parser.add_argument("--version", required=True, help="The registered version to promote.")


def run(args: argparse.Namespace) -> int:
    from features.settings import get_settings
    from training.promote import promote

    decision = promote(args.task, args.version, get_settings())
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    print(f"{decision.model_name} v{decision.challenger_version}: {verdict}: {decision.reason}")
    return 0 if decision.promoted or decision.champion_version == decision.challenger_version else 1
