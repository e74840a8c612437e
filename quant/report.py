"""results.md (a table), results.png (three bar charts) and scatter.png (memory vs KL)
from the harness's results."""
from __future__ import annotations

from pathlib import Path

from live.contract.files import save_figure

MB = 1e6  # decimal megabytes


def _fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def _div(value, by: float):
    return None if value is None else value / by


def markdown_table(results: dict) -> str:
    """One row per plan; failed plans show their reason."""
    lines = [
        f"Model `{results['model']}`, source `{results['source']}` ({results['windows']} windows, "
        f"{results['window_source']}), device {results['device_name']}, reference plan "
        f"`{results['reference']}`, up to {results['max_new_tokens']} new tokens per window.",
        "",
        "| plan | status | weights est. (MB) | weights meas. (MB) | host (MB) | footprint (MB) | peak (MB) "
        "| window peak est. / meas. (MB) | load (s) | quantize (s) | prefill (s) | decode (tok/s) | label agree "
        "| mean KL (nats) | text sim. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["plans"]:
        if p["status"] != "ok":
            reason = p.get("error", "").replace("|", "/")
            lines.append(f"| {p['name']} | failed: {reason} |" + " |" * 13)
            continue
        w = p["weights"]
        lines.append(
            "| {} | ok | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |".format(
                p["name"],
                _fmt(w["estimated"] / MB, ".3f"),
                _fmt(w["measured"] / MB, ".3f"),
                _fmt(w.get("measured_host", 0) / MB, ".3f"),
                _fmt(w["footprint"] / MB, ".3f"),
                _fmt(p["peak_bytes"] / MB, ".1f"),
                _fmt(_div(p.get("peak_window_estimated"), MB), ".1f"),
                _fmt(_div(p.get("peak_window_bytes"), MB), ".1f"),
                _fmt(p["load_s"], ".2f"),
                _fmt(p.get("quantize_s"), ".2f"),
                _fmt(p["prefill_s"], ".3f"),
                _fmt(p["decode_tokens_per_s"], ".1f"),
                f'{p["label_agreement"]:.2f} ({p["labels_found"]}/{len(p["windows"])} labelled)',
                _fmt(p["kl_mean"], ".2e"),
                _fmt(p["text_similarity"], ".2f"),
            )
        )
    peak_kind = next((p["peak_kind"] for p in results["plans"] if p["status"] == "ok"), "")
    lines += [
        "",
        "Weights: device-resident; estimated = `quant.estimate` from shapes; measured = parameters + "
        "buffers + what quantized layers hold outside them (bitsandbytes quant state, HQQ scales/zeros); "
        "host = tables the plan keeps in host memory; footprint = "
        "`get_memory_footprint()` (misses the quant state, prices torchao weights as float). "
        "Quantize: the direct conversion by the plan's methods, part of load. "
        f"Peak: {peak_kind}, over loading and all windows. Window peak: `quant.window_memory`'s "
        "estimate / the largest `torch.cuda.max_memory_allocated()` of one window (– on a CPU). "
        "Label agreement counts two missing "
        "labels as agreeing. KL: teacher-forced on the reference's answer.",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(markdown_table(results))
    return path


def write_plot(results: dict, path: str | Path) -> Path:
    """Weights (estimated vs measured), decode speed and KL per plan, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [p for p in results["plans"] if p["status"] == "ok"]
    names = [p["name"] for p in ok]
    x = range(len(ok))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    ax.bar([i - 0.2 for i in x], [p["weights"]["estimated"] / MB for p in ok], 0.4, label="estimated")
    ax.bar([i + 0.2 for i in x], [p["weights"]["measured"] / MB for p in ok], 0.4, label="measured")
    ax.set_title("weights (MB)")
    ax.legend()
    axes[1].bar(x, [p["decode_tokens_per_s"] or 0.0 for p in ok], color="tab:green")
    axes[1].set_title("decode (tokens/s)")
    axes[2].bar(x, [p["kl_mean"] for p in ok], color="tab:red")
    axes[2].set_title(f"mean KL vs {results['reference']} (nats)")
    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right")
    failed = [p["name"] for p in results["plans"] if p["status"] != "ok"]
    title = f"{Path(results['model']).name} on {results['device_name']}"
    if failed:
        title += f" — failed: {', '.join(failed)}"
    fig.suptitle(title)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def write_scatter(results: dict, path: str | Path) -> Path:
    """Device weights (measured, MB) against mean KL vs the reference, one labelled point
    per plan that ran (the reference sits at KL 0); failed plans are named in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [p for p in results["plans"] if p["status"] == "ok"]
    points: dict[tuple, list[str]] = {}  # plans at the same point share one label
    for p in ok:
        points.setdefault((p["weights"]["measured"] / MB, p["kl_mean"]), []).append(p["name"])
    fig, ax = plt.subplots(figsize=(7, 5))
    for (x, y), names in points.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    positive = [y for _, y in points if y > 0]
    if positive:  # KL spans orders of magnitude; the reference sits at 0
        ax.set_yscale("symlog", linthresh=min(positive))
    ax.set_xlabel("device weights, measured (MB)")
    ax.set_ylabel(f"mean KL vs {results['reference']} (nats)")
    ax.grid(alpha=0.3)
    failed = [p["name"] for p in results["plans"] if p["status"] != "ok"]
    title = f"memory vs KL: {Path(results['model']).name} on {results['device_name']}"
    if failed:
        title += f"\nfailed: {', '.join(failed)}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
