"""`cto policy`: replay simulated contacts through a queue under several policies; orders vs FIFO."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = (
    "Policy simulator: orders won by acting on the scores (queue priority, callbacks, follow-ups)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contacts", type=int, default=100_000, help="Simulated contacts (all channels)."
    )
    parser.add_argument("--weeks", type=int, default=2, help="Weeks they arrive in (>= 2).")
    parser.add_argument(
        "--seed", type=int, help="Seed (default: settings.seed); training uses seed + 1."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/policy"),
        help="Writes policy.json and policy.png here.",
    )
    parser.add_argument(
        "--boost-seconds",
        type=float,
        default=180.0,
        help="Largest head start a priority policy gives.",
    )
    parser.add_argument(
        "--follow-up-budget",
        type=float,
        default=0.5,
        help="Daily follow-ups as a share of served contacts.",
    )
    parser.add_argument(
        "--explore-share",
        type=float,
        default=0.1,
        help="Share of logged follow-up decisions made at random.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")


def run(args: argparse.Namespace) -> int:
    from features.errors import CTOError
    from features.settings import get_settings
    from training.policy import simulate_policies

    settings = get_settings()
    if args.contacts < 5_000:
        raise CTOError(f"--contacts {args.contacts}: at least 5,000 (a queue needs volume)")
    if not 0 < args.follow_up_budget <= 1:
        raise CTOError(f"--follow-up-budget {args.follow_up_budget}: a share in (0, 1]")
    if not 0 < args.explore_share <= 1:
        raise CTOError(f"--explore-share {args.explore_share}: a share in (0, 1]")
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(
                f"[policy {time.perf_counter() - started:6.1f}s] {message}",
                file=sys.stderr,
                flush=True,
            )

    seed = args.seed if args.seed is not None else settings.seed
    result = simulate_policies(
        args.contacts,
        seed,
        weeks=args.weeks,
        boost_seconds=args.boost_seconds,
        follow_up_budget_share=args.follow_up_budget,
        explore_share=args.explore_share,
        num_threads=settings.num_threads,
        out=args.out,
        progress=say,
    )
    print(f"{result['queued_contacts']:,} queued contacts over {result['days']} days (seed {seed})")
    print(
        f"{'policy':26}{'orders':>8}{'vs FIFO (95% CI)':>32}{'mean wait':>10}{'p95 wait':>9}{'abandon':>8}"
    )
    for name, p in result["policies"].items():
        diff = f"{p['diff_vs_fifo']:+d} ({p['diff_vs_fifo_relative']:+.1%}) [{p['diff_ci_low']:+.0f}, {p['diff_ci_high']:+.0f}]"
        print(
            f"{name:26}{p['orders']:>8,}{diff:>32}{p['mean_wait_s']:>9.0f}s{p['p95_wait_s']:>8.0f}s{p['abandonment_rate']:>8.1%}"
        )
    print("follow-ups under a daily budget: incremental orders per follow-up (95% CI)")
    for name, f in result["follow_up_targeting"].items():
        print(
            f"  {name:14}{f['incremental_per_follow_up']:.4f} [{f['ci_low']:.4f}, {f['ci_high']:.4f}]"
        )
    r = result["uplift_vs_p_order"]
    print(
        f"uplift-targeted / P(order)-targeted: {r['ratio_realised']:.2f}x [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]"
    )
    print(f"wrote {args.out / 'policy.json'} and {args.out / 'policy.png'}")
    return 0
