"""What of the hidden world no cold decider can know, part by part (README "Evaluation").

For every test inference of the default grid, Opt's rule is applied to the true costs with one
unlearnable part taken away at a time -- the held-out network's interaction terms (no inference
of it yet), the energy estimator's bias (no power meter on a phone), both (= Opt (informed)) --
and the share of inferences whose Fig. 13 category still equals Opt's is printed.

    .venv/bin/python scripts/informed_parts.py [SEED ...]    # default: the held-out seeds
"""

from __future__ import annotations

import sys

from services.evaluation.config import HELD_OUT_SEEDS, EvalConfig
from services.evaluation.scoring import category
from services.evaluation.simulator import informed_opt
from services.evaluation.world import world_of


def shares(seed: int) -> dict[str, float]:
    cfg = EvalConfig(seed=seed, seeds=[seed])
    hits = {"interaction unknown": 0, "estimator bias unknown": 0, "both (Opt informed)": 0}
    n = 0
    for device in cfg.devices:
        w = world_of(cfg, device)
        for m in w.features:
            case = w.case(m)
            ids = case.column_ids
            for s in w.scenarios:
                b = w.block(m, s, "test", cfg.test_runs)
                assert b.est_bias is not None  # the hidden world's estimator (sigma > 0)
                x, bias = b.condition_arrays(), b.est_bias[: len(case.candidates)]
                picks = {
                    "interaction unknown": informed_opt(case, x, w.truth, bias, estimator=False),
                    "estimator bias unknown": informed_opt(case, x, w.truth, bias, interaction=True),
                    "both (Opt informed)": b.informed,
                }
                opt_cat = [category(ids[j]) for j in b.opt.tolist()]
                for k, p in picks.items():
                    hits[k] += sum(category(ids[j]) == o for j, o in zip(p.tolist(), opt_cat, strict=True))
                n += b.n
    return {k: v / n for k, v in hits.items()}


def main(argv: list[str]) -> None:
    for seed in [int(a) for a in argv] or list(HELD_OUT_SEEDS):
        cells = ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares(seed).items())
        print(f"seed {seed}: category accuracy against Opt with {cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
