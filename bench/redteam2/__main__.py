"""Domain-randomised red team for refguard's fraud engine.

    .venv/bin/python -m bench.redteam2 --seeds 1-20            # the tuning set
    .venv/bin/python -m bench.redteam2 --seeds 101-130         # the report set
    .venv/bin/python -m bench.redteam2 --quick --seeds 1-3     # smaller programs, ~1 min a seed
    .venv/bin/python -m bench.redteam2 --quick --seeds 1-10 --ablate   # and the ablation table

Each seed draws one program's 60 days (bench/redteam2/scenario.py), writes MaxMind-format geo
databases for its address plan, and drives a fresh refguard through its public interfaces only:
`refguard migrate`, `token create`, `serve --no-jobs` on a free port (program, referrers and
links through the API), `import`, `attribution run`, `fraud scan`, `rewards release`, then
GET /api/v1/rewards and /api/v1/fraud/flags. Prints one line a seed and the mean and worst seed
of every figure; writes JSON to bench/results/redteam2-<time>.json.

`--ablate` adds, after each seed's normal run and scoring, the engine's decisions re-combined
without each family of evidence and without the supervised model (bench/redteam2/ablate.py:
evaluation, which imports the engine; the generator does not).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.redteam2.drive import Refguard, write_ndjson
from bench.redteam2.scenario import Scenario, default_anchor
from bench.redteam2.score import MIN_N, anomaly_figures, score, summarise
from bench.results import code_digest, save


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            seeds += range(int(a), int(b) + 1)
        elif part:
            seeds.append(int(part))
    return seeds


def fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "  -  "
    return f"{v * 100:5.1f}%" if pct else f"{v:.3f}"


def run_seed(seed: int, quick: bool, base: Path, anchor: datetime, *, keep: bool,
             geo: bool, ablate: bool = False,
             make: Callable[[int, bool], Scenario] = Scenario,
             prefix: str = "rt2") -> dict[str, Any]:
    """One seed: `make(seed, quick)` draws the program (a Scenario or a subclass), the program
    is called `<prefix>-<seed>`."""
    t0 = time.monotonic()
    scen = make(seed, quick)
    slug = f"{prefix}-{seed}"
    data = scen.finish(slug, anchor)
    gen_s = round(time.monotonic() - t0, 2)
    workdir = base / f"seed{seed}-{os.getpid()}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    record: dict[str, Any] = {
        "seed": seed, "quick": quick, "params": scen.p.as_dict(),
        "counts": {**scen.counts, "referrers": len(data["referrers"]),
                   "clicks": len(data["clicks"]), "conversions": len(data["conversions"]),
                   "labelled_purchases": len(data["labels"]),
                   "fraud_purchases": sum(1 for v in data["labels"].values() if v["fraud"]),
                   "rings": len(data["rings"])},
    }
    geo_dir = workdir / "geo" if geo else None
    if geo_dir is not None:
        scen.world.write_geo(geo_dir)
    write_ndjson(workdir / "clicks.ndjson", data["clicks"])
    write_ndjson(workdir / "conversions.ndjson", data["conversions"])
    rg = Refguard(workdir, geo_dir)
    try:
        rg.start()
        rg.setup_program(slug, data["referrers"])
        record["pipeline"] = rg.run_pipeline(workdir / "clicks.ndjson",
                                             workdir / "conversions.ndjson")
        rewards, flags = rg.results(slug)
        settings = rg.call("GET", f"/api/v1/programs/{slug}")["settings"] if ablate else {}
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-3000:]
        record["outputs"] = rg.outputs
        return record
    finally:
        rg.stop()
        record["timings"] = {"generate": gen_s, **rg.timings}
        record["seconds"] = round(time.monotonic() - t0, 1)
        if not keep and "error" not in record:
            shutil.rmtree(workdir, ignore_errors=True)
    record["score"] = score(data["labels"], data["rings"], rewards, flags)
    record["anomaly"] = anomaly_figures(data["labels"], data["referrers"], flags)
    record["seconds"] = round(time.monotonic() - t0, 1)
    if ablate:
        from bench.redteam2.ablate import ablate as ablation

        try:
            record["ablation"] = ablation(data["labels"], data["rings"], rewards, flags,
                                          settings)
        except Exception as exc:  # the normal run's record stands without it
            record["ablation_error"] = f"{type(exc).__name__}: {exc}"
    return record


def seed_line(r: dict[str, Any]) -> str:
    c = r["counts"]
    head = (f"seed {r['seed']:>4} {'Q' if r['quick'] else 'F'} {r['params']['home']} "
            f"refs {c['referrers']:>5} clicks {c['clicks']:>6} fraud {c['fraud_purchases']:>4}"
            f"/{c['labelled_purchases']:<5}")
    if "score" not in r:
        return f"{head} | FAILED: {r.get('error', '?')[:200]} ({r.get('seconds')} s)"
    s = r["score"]
    mechs = s["recall_by_mechanism"]
    big = {k: v for k, v in mechs.items() if v["n"] >= MIN_N} or mechs
    worst = min(big.items(), key=lambda kv: kv[1]["recall"] or 0) if big else None
    looks = {k: v for k, v in s["held_by_lookalike"].items() if v["n"] >= MIN_N}
    worst_look = max(looks.items(), key=lambda kv: kv[1]["held"] or 0) if looks else None
    rings = s["rings"]
    ring = (f"ringJ {min(x['jaccard'] for x in rings):.2f}" if rings else "ringJ  -  ")
    return (f"{head} | P {fmt(s['precision'])} R {fmt(s['recall'])} "
            f"held {fmt(s['clean_held'], True)}"
            f" | worst mech {worst[0] if worst else '-'} {fmt(worst[1]['recall']) if worst else ''}"
            f" | worst look {worst_look[0] if worst_look else '-'} "
            f"{fmt(worst_look[1]['held'], True) if worst_look else ''} | {ring}"
            f" | anomaly {r['anomaly']['named']} ({r['anomaly']['mostly_fraud']} mostly fraud)"
            f" | {r['seconds']:.0f} s")


def print_summary(summ: dict[str, Any]) -> None:
    def row(name: str, agg: dict[str, Any] | None, pct: bool = False) -> None:
        if agg is None:
            print(f"  {name:<40} -")
            return
        pooled = (f"   pooled {fmt(agg['pooled'], pct)} of {agg['n']:>5}" if "pooled" in agg
                  else "")
        print(f"  {name:<40} mean {fmt(agg['mean'], pct)}   worst {fmt(agg['worst'], pct)} "
              f"(seed {agg['worst_seed']:>3})   seeds {agg['seeds']:>2}{pooled}")

    print()
    print(f"seeds: {len(summ['seeds'])}, failed: {summ['failed'] or 'none'}")
    row("precision", summ["precision"])
    row("recall", summ["recall"])
    row("recall (reversed not counted)", summ["recall_strict"])
    row("clean held", summ["clean_held"], True)
    print(" recall per mechanism:")
    for k, v in summ["recall_by_mechanism"].items():
        row(k, v)
    print(" recall per variant:")
    for k, v in summ["recall_by_variant"].items():
        row(k, v)
    print(" held per look-alike (clean population):")
    for k, v in summ["held_by_lookalike"].items():
        row(k, v, True)
    row("ring Jaccard (all planted rings)", summ["ring_jaccard"])
    for k, v in summ["ring_jaccard_by_variant"].items():
        row(f"ring Jaccard: {k}", v)
    a = summ["anomaly"]
    print(f"  {'anomaly flags (referrers, no decision)':<40} named {a['named']}: mostly fraud "
          f"{a['mostly_fraud']}, partly {a['partly_fraud']}, clean {a['clean']}, "
          f"unlabelled {a['unlabelled']}")
    row("seconds per seed", summ["seconds_per_seed"])


def main(argv: list[str] | None = None, *, generator: str = "redteam2", doc: str | None = __doc__,
         make: Callable[[int, bool], Scenario] = Scenario, prefix: str = "rt2") -> int:
    """The command line; another red team built on this one (bench/redteam3) passes its own
    name, docstring, scenario class and program slug prefix."""
    ap = argparse.ArgumentParser(prog=f"python -m bench.{generator}",
                                 description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1-20", help="e.g. 1-20, 101-130 or 1,4,7")
    ap.add_argument("--quick", action="store_true", help="smaller programs (100-280 referrers, "
                    "3k-8k visitors)")
    ap.add_argument("--basetemp", type=Path,
                    default=Path(tempfile.gettempdir()) / "h-rt" / generator,
                    help="where each seed's data dir, geo databases and files go")
    ap.add_argument("--keep", action="store_true", help="keep each seed's folder")
    ap.add_argument("--no-geo", action="store_true", help="run without geo databases")
    ap.add_argument("--anchor", help="first day of the 60 (YYYY-MM-DD, UTC); default: they end "
                    "today at midnight")
    ap.add_argument("--name", default=generator, help="results file name prefix")
    ap.add_argument("--ablate", action="store_true", help="also re-decide each seed without "
                    "each family of evidence and the supervised model, and "
                    "print the table (bench/redteam2/ablate.py)")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        ap.error(f"--seeds: not a list of numbers and ranges: {args.seeds!r}")
    if not seeds:
        ap.error("no seeds")
    anchor = (datetime.strptime(args.anchor, "%Y-%m-%d").replace(tzinfo=UTC) if args.anchor
              else default_anchor())
    base = args.basetemp
    base.mkdir(parents=True, exist_ok=True)
    print(f"{generator}: {len(seeds)} seed(s), {'quick' if args.quick else 'full'} programs, "
          f"60 days from {anchor:%Y-%m-%d}, work in {base}", flush=True)
    runs = []
    code = code_digest()
    changed: list[int] = []  # seeds during which the engine's files changed
    for seed in seeds:
        record = run_seed(seed, args.quick, base, anchor, keep=args.keep,
                          geo=not args.no_geo, ablate=args.ablate, make=make,
                          prefix=prefix)
        now = code_digest()
        record["code"] = now
        if now != code:
            changed.append(seed)
            record["code_changed"] = True
            code = now
        runs.append(record)
        print(seed_line(record), flush=True)
        if record.get("code_changed"):
            print(f"WARNING: the engine's files changed during seed {seed}: the seeds of this "
                  "run ran different code, their figures are not comparable", flush=True)
    summ = summarise(runs)
    if changed:
        summ["code_changed"] = changed
        print(f"WARNING: code changed during seeds {changed}: rerun on a fixed tree")
    print_summary(summ)
    if args.ablate:
        from bench.redteam2.ablate import print_table

        summ["ablation"] = print_table(runs)
        errors = {r["seed"]: r["ablation_error"] for r in runs if "ablation_error" in r}
        if errors:
            summ["ablation_errors"] = errors
            print(f"ablation failed on: {errors}")
        # The full-engine line must be the normal run: otherwise the recombination is wrong.
        if errors or any(summ["ablation"].get("full_differs", {}).values()):
            summ["failed"] = summ["failed"] or ["ablation"]
    save(args.name, {"generator": f"bench.{generator}", "quick": args.quick,
                     "anchor": anchor.isoformat(), "argv": sys.argv[1:], "summary": summ,
                     "runs": runs})
    return 1 if summ["failed"] or changed else 0


if __name__ == "__main__":
    sys.exit(main())
