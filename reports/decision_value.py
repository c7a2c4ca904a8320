"""Report section "What acting on the scores is worth": from the policy simulator or a logged experiment.

Reads the files the commands write: ``policy.json`` of ``cto policy`` (simulated contacts under
the simulator's laws) and ``analysis.json`` of ``cto experiment analyse`` (a real switchback). The
section says which one it shows: a simulated estimate is not a measurement on the centre's data.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from features.errors import CTOError
from reports import html, plots

LABELS = {
    "priority_p_order": "Serve high P(order) first (head start)",
    "priority_expected_value": "Serve high expected order value first",
    "callback_by_model": "Offer callbacks by the model",
}


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise CTOError(f"{what}: {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise CTOError(f"{what}: {path} is not JSON ({exc.msg}, line {exc.lineno})") from exc


def decision_value_section(
    policy: Path | None = None, experiment: Path | None = None
) -> html.Section:
    section = html.Section(
        "decision-value",
        "What acting on the scores is worth",
        "Orders won by acting on the model: measured in a switchback experiment where one was run, "
        "estimated by the policy simulator otherwise.",
    )
    if experiment is not None:
        a = _read(experiment, "--experiment")
        missing = {"effect", "ci_low", "ci_high", "ratio_on", "ratio_off"} - set(a)
        if missing:
            raise CTOError(
                f"--experiment {experiment}: not an analysis.json of cto experiment analyse (no {', '.join(sorted(missing))})"
            )
        section.add(
            "<h3>Logged switchback experiment (measured on this centre's contacts)</h3>",
            html.paragraph(
                f"ON slices: {a['ratio_on']:.2%} of {a.get('contacts_on', 0):,} contacts led to an order; "
                f"OFF slices: {a['ratio_off']:.2%} of {a.get('contacts_off', 0):,}. Effect "
                f"{a['effect'] * 100:+.2f} points (95% CI {a['ci_low'] * 100:+.2f} to {a['ci_high'] * 100:+.2f}; "
                f"randomisation p = {a.get('p_value_randomisation', float('nan')):.3f})."
            ),
        )
    if policy is not None:
        p = _read(policy, "--policy")
        if "policies" not in p or "fifo" not in p.get("policies", {}):
            raise CTOError(f"--policy {policy}: not a policy.json of cto policy (no policies.fifo)")
        rows = [
            {
                "policy": LABELS[name],
                "diff": r["diff_vs_fifo"],
                "relative": r["diff_vs_fifo_relative"],
                "ci": f"{r['diff_ci_low']:+,.0f} to {r['diff_ci_high']:+,.0f}",
                "wait": r["mean_wait_s"],
                "abandon": r["abandonment_rate"],
            }
            for name, r in p["policies"].items()
            if name in LABELS
        ]
        frame = pl.DataFrame(rows)
        section.add(
            "<h3>Policy simulator (simulated contacts, not measured on this centre)</h3>",
            html.note(
                f"Estimate from `cto policy` on {p['queued_contacts']:,} simulated queued contacts over "
                f"{p['days']} days (seed {p['seed']}): the same arrivals replayed under each policy, orders "
                "from the simulator's laws. Use it to choose what to test, then measure with a switchback."
            ),
            html.figure(
                plots.lever_bars(
                    [r["policy"] for r in rows],
                    [r["diff"] for r in rows],
                    xlabel="orders vs first-come-first-served",
                ),
                "Extra orders against first-come-first-served, same staffing (simulated).",
            ),
            html.table(
                frame,
                [
                    html.ColumnFormat("policy", "Policy"),
                    html.ColumnFormat("diff", "Orders vs FIFO", lambda v: f"{v:+,}", numeric=True),
                    html.ColumnFormat("relative", "Change", lambda v: f"{v:+.1%}", numeric=True),
                    html.ColumnFormat("ci", "95% interval", numeric=True),
                    html.ColumnFormat("wait", "Mean wait", lambda v: f"{v:.0f} s", numeric=True),
                    html.ColumnFormat("abandon", "Abandoned", lambda v: f"{v:.1%}", numeric=True),
                ],
                table_id="decision-value-policies",
            ),
        )
        ft = p.get("follow_up_targeting", {})
        if {"random", "p_order", "uplift"} <= set(ft):
            section.add(
                html.paragraph(
                    "Follow-ups under a daily budget, incremental orders per follow-up (simulated): "
                    f"at random {ft['random']['incremental_per_follow_up']:.3f}, to the highest P(order) "
                    f"{ft['p_order']['incremental_per_follow_up']:.3f}, to the highest uplift "
                    f"{ft['uplift']['incremental_per_follow_up']:.3f}."
                )
            )
    return section
